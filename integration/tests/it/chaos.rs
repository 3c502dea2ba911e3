//! The appender's chaos matrix, for real: a busybox container on containerd
//! writes paced lines through the binary logger (`ctr run --log-uri
//! binary://…`) to tansu while one fault strikes. Each row prints
//! `CHAOS | fault | written | delivered | lost | duplicated | writer`, the
//! line the README's table is made of, and asserts the row's goal: nothing
//! lost that the appender read (except what a full disk's `drop_newest`
//! counted, exactly, and what a killed worker held in memory), and a writer
//! that never blocked or died.

use super::log_appender::{free_port, yaml, SmallTmpfs};
use berth_integration::appender::{arrivals, Appender, AppenderConfig, Arrival};
use berth_integration::artifacts::{bin_dir, fresh_dir};
use berth_integration::broker::Broker;
use berth_integration::cmd::Ran;
use berth_integration::engines::containerd::containerd;
use berth_integration::names::unique;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// What the container's writer reported.
#[derive(Debug)]
struct Writer {
    /// Lines it wrote.
    written: u64,
    /// Its slowest burst of lines, in ms (10 ms resolution).
    slowest_ms: u64,
}

/// How a writer writes, beyond its pace.
#[derive(Default)]
struct Opts {
    /// Bytes of padding on every line.
    pad: usize,
    /// A line (by number) with this much padding instead.
    poison: Option<(u64, usize)>,
    /// Seconds the container stays after writing (its logger keeps running).
    linger_s: u64,
}

/// A container writing `n` lines `"{id}-{i}"` at about `per_sec` (bursts
/// every 50 ms) through the binary logger, run by `ctr run --rm`.
struct Logged {
    id: String,
    out: PathBuf,
    done: Receiver<Ran>,
    started: Instant,
}

impl Logged {
    /// Starts it. `pairs` are extra `&key=value` URI pairs.
    fn start(cfg: &AppenderConfig, id: &str, n: u64, per_sec: u64, pairs: &str) -> Logged {
        Self::start_with(cfg, id, n, per_sec, pairs, Opts::default())
    }

    fn start_with(
        cfg: &AppenderConfig,
        id: &str,
        n: u64,
        per_sec: u64,
        pairs: &str,
        o: Opts,
    ) -> Logged {
        let out = fresh_dir("writer");
        let burst = (per_sec / 20).max(1);
        let (pline, ppad) = o.poison.unwrap_or((u64::MAX, 0));
        let (pad, linger) = (o.pad, o.linger_s);
        // /proc/uptime in centiseconds, before and after each burst.
        let script = format!(
            r#"x=""; if [ {pad} -gt 0 ]; then x=" $(head -c {pad} /dev/zero | tr '\0' x)"; fi
p=""; if [ {ppad} -gt 0 ]; then p=$(head -c {ppad} /dev/zero | tr '\0' x); fi
i=0; max=0
while [ $i -lt {n} ]; do
  read a r < /proc/uptime; a=${{a%.*}}${{a#*.}}
  j=0
  while [ $j -lt {burst} ] && [ $i -lt {n} ]; do
    if [ $i -eq {pline} ]; then echo "{id}-$i $p"; else echo "{id}-$i$x"; fi
    i=$((i+1)); j=$((j+1))
  done
  read b r < /proc/uptime; b=${{b%.*}}${{b#*.}}
  d=$((b-a)); if [ $d -gt $max ]; then max=$d; fi
  usleep 50000
done
echo "$i $max" > /out/writer
sleep {linger}"#,
            pline = if pline == u64::MAX { -1 } else { pline as i64 },
        );
        let uri = format!(
            "binary://{}?config={}{pairs}",
            bin_dir().join("berth-log-appender").display(),
            cfg.path.display()
        );
        let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
        let (tx, done) = std::sync::mpsc::channel();
        let id2 = id.to_string();
        std::thread::spawn(move || {
            let c = containerd();
            let image = c.busybox_image();
            let r = c.ctr_run(&[
                "run",
                "--rm",
                "--mount",
                &mount,
                "--log-uri",
                &uri,
                image,
                &id2,
                "sh",
                "-c",
                &script,
            ]);
            let _ = tx.send(r);
        });
        Logged {
            id: id.to_string(),
            out,
            done,
            started: Instant::now(),
        }
    }

    /// Seconds since it was started.
    fn at(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the container to end and returns what its writer saw; a
    /// writer that did not finish (blocked, or killed by SIGPIPE) fails the
    /// test.
    fn wait(self, t: Duration) -> Writer {
        let r = match self.done.recv_timeout(t) {
            Ok(r) => r,
            Err(_) => {
                let c = containerd();
                let _ = c.ctr_run(&["task", "kill", "-s", "KILL", &self.id]);
                panic!(
                    "container {} still running after {t:?}: its writer blocked",
                    self.id
                );
            }
        };
        let text = std::fs::read_to_string(self.out.join("writer")).unwrap_or_default();
        let mut f = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        match (f.next(), f.next()) {
            (Some(written), Some(cs)) => Writer {
                written,
                slowest_ms: cs * 10,
            },
            _ => panic!(
                "the writer of {} did not finish (killed by SIGPIPE?): {r:?}",
                self.id
            ),
        }
    }
}

/// The pid of the binary logger's worker for container `id`.
fn worker_pid(id: &str) -> Option<i32> {
    let want = format!("CONTAINER_ID={id}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        let has = |v: &str| vars.contains(&v.as_bytes());
        (has(&want) && has("BERTH_LOG_APPENDER_WORKER=1")).then_some(pid)
    })
}

/// Prints the row and returns the number of lines lost.
fn row(fault: &str, w: &Writer, a: &Arrival, excused: u64) -> u64 {
    let lost = a.missing.len() as u64;
    eprintln!(
        "CHAOS | {fault} | {} | {} | {} | {} | slowest 50-line burst {} ms{}",
        w.written,
        w.written - lost,
        lost.saturating_sub(excused),
        a.duplicates,
        w.slowest_ms,
        if excused > 0 {
            format!(" ({excused} dropped and counted)")
        } else {
            String::new()
        }
    );
    assert!(
        a.out_of_order.is_empty(),
        "{fault}: out of order {:?}",
        &a.out_of_order[..a.out_of_order.len().min(5)]
    );
    // A writer that blocked on a full pipe would take seconds per burst.
    assert!(
        w.slowest_ms < 1000,
        "{fault}: the writer was held up {} ms",
        w.slowest_ms
    );
    lost
}

/// A broker with topic `id` and a configuration pointing at it.
fn setup(broker: &Broker, extra: &str) -> (String, AppenderConfig) {
    let id = unique();
    broker.create_topic(&id, 1);
    let cfg = AppenderConfig::new(&yaml(&broker.bootstrap(), "{container_name}", extra));
    (id, cfg)
}

#[test]
fn chaos_broker_killed_for_30_seconds() {
    let mut broker = Broker::start_persistent();
    let (id, cfg) = setup(&broker, "");
    let n = 40_000;
    let c = Logged::start(&cfg, &id, n, 1000, "");
    while c.at() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill();
    std::thread::sleep(Duration::from_secs(30));
    broker.restart();
    let w = c.wait(Duration::from_secs(120));
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(90));
    assert_eq!(row("broker kill -9 for 30 s", &w, &a, 0), 0);
    assert_eq!(w.written, n);
}

/// kill -9 of the worker mid-stream in `mode`: the supervisor keeps the
/// pipes open and starts another worker, which replays the spill; the
/// container never notices. Lost: only what the killed worker held in
/// memory.
fn worker_killed(mode: &str) {
    let broker = Broker::start();
    let (id, cfg) = setup(&broker, &format!("mode: {mode}\n"));
    let n = 10_000;
    let c = Logged::start(&cfg, &id, n, 1000, "");
    while c.at() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = worker_pid(&id).expect("the worker is running");
    // SAFETY: kill(2) on the worker of the container this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    let again = worker_pid(&id).expect("a new worker was started");
    assert_ne!(again, pid);
    let w = c.wait(Duration::from_secs(60));
    assert_eq!(w.written, n, "the container was hurt by the kill");
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(20));
    let lost = row(&format!("appender worker kill -9 ({mode})"), &w, &a, 0);
    // What one worker can hold: its memory queue and what is in flight.
    assert!(
        lost <= 200,
        "{lost} lines lost: {:?}",
        &a.missing[..10.min(a.missing.len())]
    );
}

#[test]
fn chaos_appender_killed_in_kafka_first_mode() {
    worker_killed("kafka_first");
}

#[test]
fn chaos_appender_killed_in_disk_first_mode() {
    worker_killed("disk_first");
}

#[test]
fn chaos_disk_full_during_an_outage() {
    let broker = Broker::start();
    let id = unique();
    broker.create_topic(&id, 1);
    let disk = SmallTmpfs::mount(1 << 20);
    std::fs::write(disk.0.join("filler"), vec![0u8; 700 * 1024]).unwrap();
    let metrics = fresh_dir("textfile");
    let extra = format!(
        "spill:\n  dir: {}\n  segment_bytes: 16777216\nmetrics:\n  textfile_dir: {}\n",
        disk.0.join("spill").display(),
        metrics.display()
    );
    let dead = format!("127.0.0.1:{}", free_port());
    let cfg = AppenderConfig::new(&yaml(&dead, "{container_name}", &extra));
    let n = 3000;
    let c = Logged::start_with(
        &cfg,
        &id,
        n,
        1000,
        "",
        Opts {
            pad: 200,
            linger_s: 12,
            ..Opts::default()
        },
    );
    // The worker's counters, from its textfile (rewritten every 10 s) while
    // the container lingers; it removes the file when it ends.
    let source = format!("{}-{id}", containerd().namespace);
    let prom = metrics.join(format!("berth_log_appender_{source}.prom"));
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(14);
    while Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(&prom) {
            dropped = t
                .lines()
                .filter(|l| l.contains("dropped_total") && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            let received = t
                .lines()
                .find(|l| l.starts_with("berth_log_appender_received_total"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
            if received == Some(n) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let w = c.wait(Duration::from_secs(60));
    assert!(
        dropped > 0,
        "the disk never filled: {:?}",
        std::fs::read_dir(&metrics).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // The source's next appender, against the live broker, replays it.
    cfg.write(&yaml(&broker.bootstrap(), &id, &extra));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut again = loop {
        // The container's worker may still be draining (the spill locked).
        let a = Appender::start(&cfg, &source, &[]);
        std::thread::sleep(Duration::from_millis(300));
        if !a.log().contains("in use") || Instant::now() > deadline {
            break a;
        }
    };
    assert!(again.finish(Duration::from_secs(60)), "{}", again.log());
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(10));
    row("disk full during an outage", &w, &a, dropped);
    assert_eq!(
        a.missing.len() as u64,
        dropped,
        "delivered must be exactly what was not dropped"
    );
}

#[test]
fn chaos_a_poison_record_mid_stream() {
    let broker = Broker::start();
    let id = unique();
    broker.create_topic(&id, 1);
    // Kafka takes at most 4 KiB here; line 2500 is 6 KiB, one record.
    let cfg = AppenderConfig::new(
        &yaml(
            &broker.bootstrap(),
            "{container_name}",
            "lines:\n  max_bytes: 1048576\n",
        )
        .replace(
            "  linger_ms: 5\n",
            "  linger_ms: 5\n  message_max_bytes: 4096\n",
        ),
    );
    let n = 5000;
    let c = Logged::start_with(
        &cfg,
        &id,
        n,
        1000,
        "",
        Opts {
            poison: Some((2500, 6000)),
            ..Opts::default()
        },
    );
    let w = c.wait(Duration::from_secs(60));
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(20));
    row("a poison record mid-stream", &w, &a, 1);
    assert_eq!(a.missing, [2500], "only the poison record is not delivered");
    let dead = cfg
        .spill_dir
        .join(format!("{}-{id}", containerd().namespace))
        .join("dead-letter");
    let kept = std::fs::read(&dead).unwrap_or_default();
    assert!(
        kept.len() > 6000,
        "the poison record is in {}",
        dead.display()
    );
}

#[test]
fn chaos_a_slow_broker() {
    let broker = Broker::start();
    let (id, cfg) = setup(&broker, "");
    let n = 20_000;
    let c = Logged::start(&cfg, &id, n, 1000, "");
    let signal = |sig: i32| {
        // SAFETY: kill(2) on the broker this test started, by its pid.
        unsafe { libc::kill(broker.pid() as i32, sig) };
    };
    while c.at() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(10));
    signal(libc::SIGCONT);
    let w = c.wait(Duration::from_secs(90));
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(60));
    assert_eq!(row("a slow broker (SIGSTOP 10 s)", &w, &a, 0), 0);
}

#[test]
fn chaos_reload_during_an_outage() {
    let mut broker = Broker::start_persistent();
    let (id, cfg) = setup(&broker, "");
    let n = 15_000;
    let c = Logged::start(&cfg, &id, n, 1000, "");
    let until = |s: u64| {
        while c.at() < Duration::from_secs(s) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until(3);
    broker.kill();
    until(5);
    // New Kafka settings (a new producer) and a rate limit, while down.
    cfg.write(
        &yaml(
            &broker.bootstrap(),
            "{container_name}",
            "rate_limit:\n  lines_per_sec: 5000\n",
        )
        .replace("linger_ms: 5", "linger_ms: 10"),
    );
    until(9);
    broker.restart();
    let w = c.wait(Duration::from_secs(90));
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(60));
    assert_eq!(row("reload during an outage", &w, &a, 0), 0);
}

#[test]
fn chaos_a_configuration_that_cannot_be_loaded_at_start() {
    let broker = Broker::start();
    let (id, cfg) = setup(&broker, "");
    let good = std::fs::read_to_string(&cfg.path).unwrap();
    std::fs::write(&cfg.path, "kafka: [not, a, map]\n").unwrap();
    let n = 6000;
    let c = Logged::start(
        &cfg,
        &id,
        n,
        1000,
        &format!("&spill_dir={}", cfg.spill_dir.display()),
    );
    while c.at() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Fixed while the container runs: what was spilled meanwhile is sent.
    let tmp = cfg.path.with_extension("tmp");
    std::fs::write(&tmp, good).unwrap();
    std::fs::rename(&tmp, &cfg.path).unwrap();
    let w = c.wait(Duration::from_secs(60));
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(30));
    let lost = row("configuration invalid at start, fixed 3 s later", &w, &a, 0);
    assert_eq!(
        lost,
        0,
        "missing {:?}; dead letters: {:?}",
        &a.missing[..a.missing.len().min(60)],
        std::fs::read(
            cfg.spill_dir
                .join(format!("{}-{id}", containerd().namespace))
                .join("dead-letter")
        )
        .map(|b| b.len())
    );
}

#[test]
fn chaos_a_spill_that_cannot_be_opened() {
    let broker = Broker::start();
    let (id, cfg) = setup(&broker, "");
    // A file where the spill directory should be.
    let blocked = fresh_dir("blocked").join("file");
    std::fs::write(&blocked, "not a directory").unwrap();
    let n = 2000;
    let c = Logged::start(
        &cfg,
        &id,
        n,
        1000,
        &format!("&spill_dir={}", blocked.display()),
    );
    let w = c.wait(Duration::from_secs(60));
    // The worker discards (and counts) what it reads: the writer is unhurt.
    assert_eq!(
        w.written, n,
        "the container was hurt by the appender's failure"
    );
    let a = arrivals(&broker.bootstrap(), &id, &id, n, Duration::from_secs(3));
    row(
        "spill directory cannot be created (discarded, counted)",
        &w,
        &a,
        n,
    );
}
