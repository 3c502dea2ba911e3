//! `berth-log-appender` against the real Kafka-protocol broker (tansu):
//! every accepted line arrives, in order per container, through outages,
//! rate limits, full spills, crashes, reloads and containerd's binary logger.

use berth_integration::appender::{arrivals, Appender, AppenderConfig};
use berth_integration::artifacts::bin_dir;
use berth_integration::broker::Broker;
use berth_integration::engines::containerd::containerd;
use berth_integration::names::unique;
use berth_integration::process::Daemon;
use std::time::{Duration, Instant};

pub(crate) fn yaml(bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        "kafka:\n  brokers: [\"{bootstrap}\"]\n  topic: \"{topic}\"\n  message_timeout_ms: 5000\n  linger_ms: 5\n{extra}\n"
    )
}

pub(crate) fn no_loss(a: &berth_integration::appender::Arrival, what: &str) {
    assert!(
        a.missing.is_empty(),
        "{what}: {} lines missing, first {:?}",
        a.missing.len(),
        &a.missing[..a.missing.len().min(10)]
    );
    assert!(
        a.out_of_order.is_empty(),
        "{what}: out of order {:?}",
        &a.out_of_order[..a.out_of_order.len().min(5)]
    );
    if a.duplicates > 0 {
        eprintln!("{what}: {} duplicates (at-least-once)", a.duplicates);
    }
}

#[test]
fn normal_flow_every_line_arrives_in_order_with_its_envelope() {
    let broker = Broker::start();
    let name = unique();
    let topic = format!("{name}-logs");
    broker.create_topic(&topic, 3);
    let cfg = AppenderConfig::new(&yaml(
        &broker.bootstrap(),
        "{container_name}-logs",
        "fields_from_env: [APP_TIER]\n",
    ));
    let mut app = Appender::start(&cfg, &name, &[("APP_TIER", "gold")]);
    let n = 20_000;
    for i in 0..n {
        app.line(&format!("{name}-{i}"));
    }
    assert!(
        app.finish(Duration::from_secs(60)),
        "appender did not finish: {}",
        app.log()
    );
    let a = arrivals(
        &broker.bootstrap(),
        &topic,
        &name,
        n,
        Duration::from_secs(30),
    );
    no_loss(&a, "normal flow");
    let e = &a.envelopes[0];
    assert_eq!(e["container_name"], name.as_str());
    assert_eq!(e["stream"], "stdout");
    assert_eq!(e["fields"]["APP_TIER"], "gold");
    assert!(e["ts"].as_str().unwrap().ends_with('Z'));
    assert!(!e["host"].as_str().unwrap().is_empty());
    let c = app.final_counts();
    assert_eq!(c.get("received"), Some(&n), "{c:?}");
    assert_eq!(c.get("dropped"), Some(&0), "{c:?}");
}

/// Writes `n` lines `"{prefix}-{i}"` at about `per_sec`, calling `at(i)`
/// before each one (to kill or restart things mid-stream).
fn write_paced(app: &mut Appender, prefix: &str, n: u64, per_sec: u64, mut at: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..n {
        at(i);
        app.line(&format!("{prefix}-{i}"));
        let due = start + Duration::from_secs_f64(i as f64 / per_sec as f64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}

#[test]
fn over_the_rate_limit_spills_then_drains_in_order() {
    let (broker, name, cfg) = live(1, "rate_limit:\n  lines_per_sec: 2000\n");
    let mut app = Appender::start(&cfg, &name, &[]);
    let n = 12_000;
    let t = Instant::now();
    for i in 0..n {
        app.line(&format!("{name}-{i}"));
    }
    assert!(app.finish(Duration::from_secs(60)), "{}", app.log());
    let took = t.elapsed();
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        n,
        Duration::from_secs(30),
    );
    no_loss(&a, "rate limit");
    let c = app.final_counts();
    assert!(c["spilled"] > 5000, "the excess was not spilled: {c:?}");
    // 12000 lines at 2000/s with a one-second bucket: at least ~5 s.
    assert!(
        took >= Duration::from_secs(4),
        "drained too fast for the limit: {took:?}"
    );
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until the appender has taken in `n` lines and settled them (none
/// in memory or in flight); returns its counters.
fn settled(app: &Appender, n: u64) -> std::collections::BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = app.scrape();
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        if get("received_total") == n
            && get("memory_queue_records") == 0
            && get("inflight_records") == 0
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "appender did not settle: {m:?}\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A broker with topic `name` in `partitions` partitions, and an appender
/// configuration (with `extra`) pointing at it.
fn live(partitions: u32, extra: &str) -> (Broker, String, AppenderConfig) {
    let broker = Broker::start();
    let name = unique();
    broker.create_topic(&name, partitions);
    let cfg = AppenderConfig::new(&yaml(&broker.bootstrap(), &name, extra));
    (broker, name, cfg)
}

/// A broker with topic `name` in `partitions` partitions, and an appender
/// configuration (with `extra`) whose broker address is dead: everything
/// heads for the spill until [`restart_against`].
fn outage(partitions: u32, extra: &str) -> (Broker, String, AppenderConfig) {
    let broker = Broker::start();
    let name = unique();
    broker.create_topic(&name, partitions);
    let dead = format!("127.0.0.1:{}", free_port());
    let cfg = AppenderConfig::new(&yaml(&dead, &name, extra));
    (broker, name, cfg)
}

/// Points `cfg` at the live broker (with `extra`), runs the appender of
/// source `name` until it has delivered what it holds and ended, and
/// returns what arrived of `n` lines, with that appender's log.
fn restart_against(
    broker: &Broker,
    cfg: &AppenderConfig,
    name: &str,
    extra: &str,
    n: u64,
) -> (berth_integration::appender::Arrival, String) {
    cfg.write(&yaml(&broker.bootstrap(), name, extra));
    let mut again = Appender::start(cfg, name, &[]);
    assert!(again.finish(Duration::from_secs(60)), "{}", again.log());
    let a = arrivals(&broker.bootstrap(), name, name, n, Duration::from_secs(10));
    (a, again.log())
}

#[test]
fn a_full_spill_drops_and_counts_exactly_and_a_restart_replays_the_rest() {
    // First no broker at all: everything heads for a small spill.
    let spill = "spill:\n  dir: SPILL_DIR\n  max_bytes: 262144\n  segment_bytes: 65536\n  when_full: drop_newest\n";
    let metrics = format!("metrics:\n  listen: \"127.0.0.1:{}\"\n", free_port());
    let (broker, name, cfg) = outage(1, &format!("{spill}{metrics}"));
    let mut app = Appender::start(&cfg, &name, &[]);
    let n = 5000;
    let pad = "x".repeat(100);
    for i in 0..n {
        app.line(&format!("{name}-{i} {pad}"));
    }
    let m = settled(&app, n);
    let (pending, full, mem) = (
        m["spill_records"],
        m["dropped_total{reason=\"spill_full\"}"],
        m["dropped_total{reason=\"memory_full\"}"],
    );
    assert!(full > 0, "the spill never filled: {m:?}");
    assert_eq!(
        pending + full + mem,
        n,
        "every line is either spilled or counted as dropped: {m:?}"
    );
    app.kill9();
    // Against the live broker, a restart delivers exactly what was spilled.
    let (a, log) = restart_against(&broker, &cfg, &name, spill, n);
    assert_eq!(
        a.missing.len() as u64,
        full + mem,
        "delivered must be exactly what was not dropped; restart log:\n{log}"
    );
    assert_eq!(a.duplicates, 0);
    assert!(a.out_of_order.is_empty(), "{:?}", a.out_of_order);
}

#[test]
fn kill_minus_nine_then_restart_replays_the_spool_past_a_torn_tail() {
    let metrics = format!("metrics:\n  listen: \"127.0.0.1:{}\"\n", free_port());
    let (broker, name, cfg) = outage(2, &metrics);
    let mut app = Appender::start(&cfg, &name, &[]);
    let n = 3000;
    for i in 0..n {
        app.line(&format!("{name}-{i}"));
    }
    let m = settled(&app, n);
    assert_eq!(m["spill_records"], n, "{m:?}");
    app.kill9();
    // A write torn by the crash: half a frame at the end of the last segment.
    let dir = cfg.spill_dir.join(&name);
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().expect("a segment");
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .unwrap()
        .write_all(&[200, 0, 0, 0, 1, 2])
        .unwrap();
    let (a, log) = restart_against(&broker, &cfg, &name, "", n);
    assert!(
        log.contains("torn"),
        "the torn tail was not reported: {log}"
    );
    no_loss(&a, "kill -9 and restart");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".lock")
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "segments left after replay: {left:?}");
}

#[test]
fn a_reload_mid_stream_switches_the_topic_without_losing_lines() {
    let broker = Broker::start();
    let name = unique();
    let (t1, t2) = (format!("{name}-a"), format!("{name}-b"));
    broker.create_topic(&t1, 1);
    broker.create_topic(&t2, 1);
    let cfg = AppenderConfig::new(&yaml(&broker.bootstrap(), &t1, ""));
    let mut app = Appender::start(&cfg, &name, &[]);
    let n = 4000;
    write_paced(&mut app, &name, n, 1000, |i| {
        if i == 1500 {
            // An invalid change first: refused, the old config stays.
            cfg.write("kafka: [not, a, map]\n");
        }
        if i == 2000 {
            cfg.write(&yaml(&broker.bootstrap(), &t2, ""));
        }
    });
    assert!(app.finish(Duration::from_secs(60)), "{}", app.log());
    assert!(
        app.log().contains("refused"),
        "the invalid change was not reported: {}",
        app.log()
    );
    let a = arrivals(&broker.bootstrap(), &t1, &name, n, Duration::from_secs(4));
    let b = arrivals(&broker.bootstrap(), &t2, &name, n, Duration::from_secs(4));
    let missing: Vec<u64> = a
        .missing
        .iter()
        .filter(|i| b.missing.contains(i))
        .copied()
        .collect();
    assert!(missing.is_empty(), "lost across the reload: {missing:?}");
    let in_a = n - a.missing.len() as u64;
    let in_b = n - b.missing.len() as u64;
    assert!(
        in_a >= 1500 && in_b >= 1500,
        "topic did not switch: {in_a} in {t1}, {in_b} in {t2}"
    );
    assert!(a.out_of_order.is_empty() && b.out_of_order.is_empty());
}

#[test]
fn containerd_binary_logger_forwards_stdout_and_stderr() {
    let broker = Broker::start();
    let id = unique();
    broker.create_topic(&id, 1);
    let cfg = AppenderConfig::new(&yaml(&broker.bootstrap(), "{container_name}", ""));
    let c = containerd();
    let image = c.busybox_image();
    let uri = format!(
        "binary://{}?config={}",
        bin_dir().join("berth-log-appender").display(),
        cfg.path.display()
    );
    let r = c.ctr_run(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        image,
        &id,
        "sh",
        "-c",
        &format!("i=0; while [ $i -lt 100 ]; do echo {id}-$i; echo {id}-$((i+100)) >&2; i=$((i+1)); done"),
    ]);
    assert!(r.ok(), "ctr run --log-uri: {}\n{}", r.stdout, r.stderr);
    let a = arrivals(&broker.bootstrap(), &id, &id, 200, Duration::from_secs(30));
    assert!(a.missing.is_empty(), "missing {:?}", a.missing);
    let streams: std::collections::BTreeSet<String> = a
        .envelopes
        .iter()
        .map(|e| e["stream"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        streams.into_iter().collect::<Vec<_>>(),
        ["stderr", "stdout"]
    );
    assert!(a.envelopes.iter().all(|e| e["container_id"] == id.as_str()));
}

/// A daemon-mode appender (`--listen`) for `cfg`, with `args`, once its
/// socket exists: the daemon (stopped when dropped), the socket and the log.
fn daemon(cfg: &AppenderConfig, args: &[&str]) -> (Daemon, std::path::PathBuf, std::path::PathBuf) {
    let sock = cfg.spill_dir.with_file_name("appender.sock");
    let log = cfg.path.with_extension("daemon.log");
    let d = Daemon::spawn(
        "berth-log-appender",
        std::process::Command::new(bin_dir().join("berth-log-appender"))
            .arg("--config")
            .arg(&cfg.path)
            .arg("--listen")
            .arg(&sock)
            .args(args)
            .env("BERTH_LOG", "info"),
        &log,
    );
    assert!(
        berth_integration::process::wait_until(Duration::from_secs(10), || sock.exists()),
        "no socket: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (d, sock, log)
}

#[test]
fn daemon_mode_takes_many_clients_on_a_unix_socket() {
    let (broker, name, cfg) = live(2, "fields_from_env: [TIER]\n");
    let (daemon, sock, _log) = daemon(&cfg, &[]);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let sock = sock.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
                writeln!(s, "BERTH-HELLO {{\"container_id\": \"c{c}\", \"container_name\": \"app{c}\", \"env\": {{\"TIER\": \"t{c}\"}}}}").unwrap();
                for i in 0..500 {
                    writeln!(s, "{name}-{}", c * 500 + i).unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        2000,
        Duration::from_secs(30),
    );
    drop(daemon);
    no_loss(&a, "daemon mode");
    for e in &a.envelopes {
        let c = e["container_id"]
            .as_str()
            .unwrap()
            .trim_start_matches('c')
            .to_string();
        assert_eq!(e["container_name"], format!("app{c}").as_str());
        assert_eq!(e["fields"]["TIER"], format!("t{c}").as_str());
    }
}

#[test]
fn disk_first_mode_spills_everything_and_ships_it_in_order() {
    let (broker, name, cfg) = live(1, "mode: disk_first\nrate_limit:\n  lines_per_sec: 5000\n");
    let mut app = Appender::start(&cfg, &name, &[]);
    let n = 8000;
    for i in 0..n {
        app.line(&format!("{name}-{i}"));
    }
    assert!(app.finish(Duration::from_secs(60)), "{}", app.log());
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        n,
        Duration::from_secs(30),
    );
    no_loss(&a, "disk_first");
    let c = app.final_counts();
    assert_eq!(
        c["spilled"], n,
        "disk_first writes every line to the spill first: {c:?}"
    );
    assert_eq!(c["replayed"], n, "{c:?}");
    assert_eq!(c["sent"], 0, "nothing bypasses the spill: {c:?}");
}

/// Records Kafka can never take, in the middle of a stream: a topic name
/// Kafka refuses (a daemon client named `bad/name` under
/// `topic: "…-{container_name}"`), a topic the broker does not have (found
/// out only in librdkafka's delivery report), and a line over
/// `kafka.message_max_bytes`. Each goes to the dead-letter file, counted by
/// reason; every other line is delivered, in order, and the appender ends.
#[test]
fn poison_records_are_dead_lettered_and_stop_nothing() {
    let broker = Broker::start();
    let name = unique();
    let good = format!("{name}-good");
    broker.create_topic(&good, 1);
    let cfg = AppenderConfig::new(&yaml(
        &broker.bootstrap(),
        &format!("{name}-{{container_name}}"),
        "  message_max_bytes: 2000\n",
    ));
    let (mut daemon, sock, log) = daemon(&cfg, &["--drain-seconds", "60"]);
    use std::io::Write;
    let connect = |container: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        writeln!(
            s,
            "BERTH-HELLO {{\"container_id\": \"{container}\", \"container_name\": \"{container}\"}}"
        )
        .unwrap();
        s
    };
    let (mut ok, mut bad, mut unknown) = (connect("good"), connect("bad/name"), connect("nosuch"));
    let big = "x".repeat(5000);
    for i in 0..300 {
        writeln!(ok, "{name}-{i}").unwrap();
        if i % 100 == 50 {
            writeln!(bad, "poison {i}").unwrap();
            writeln!(unknown, "nowhere {i}").unwrap();
            writeln!(ok, "{big}").unwrap(); // too large
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop((ok, bad, unknown));
    let a = arrivals(
        &broker.bootstrap(),
        &good,
        &name,
        300,
        Duration::from_secs(60),
    );
    no_loss(&a, "good lines around poison records");
    // The unknown topic's records fail in their delivery reports (after the
    // metadata propagation time, 2.5 s here); then the spill is empty.
    let dead = cfg.spill_dir.join("daemon");
    let file = std::fs::read_dir(&cfg.spill_dir)
        .unwrap()
        .flatten()
        .map(|d| d.path().join("dead-letter"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no dead-letter file under {}", dead.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = |file: &std::path::Path| {
        berth_log_appender::deadletter::read(file)
            .map(|v| v.len())
            .unwrap_or(0)
    };
    while count(&file) < 9 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let letters = berth_log_appender::deadletter::read(&file).unwrap();
    let mut by_reason = std::collections::BTreeMap::new();
    for (reason, r) in &letters {
        by_reason
            .entry(reason.as_str())
            .or_insert_with(Vec::new)
            .push(r.topic.clone());
    }
    assert_eq!(
        by_reason.get("invalid_topic").map(Vec::len),
        Some(3),
        "{by_reason:?}"
    );
    assert_eq!(
        by_reason.get("too_large").map(Vec::len),
        Some(3),
        "{by_reason:?}"
    );
    assert_eq!(
        by_reason.get("unknown_topic").map(Vec::len),
        Some(3),
        "{by_reason:?}"
    );
    assert!(by_reason["unknown_topic"]
        .iter()
        .all(|t| *t == format!("{name}-nosuch")));
    // Stopped, it ends at once with nothing left to deliver: no record
    // held up the spill (a stuck one would keep it for the drain time).
    let stopping = Instant::now();
    daemon.stop(Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("dead_lettered=9") && stopping.elapsed() < Duration::from_secs(20),
        "{text}"
    );
}

/// With `kafka.dead_letter_topic`, what Kafka can never take goes to that
/// topic, with its reason and the topic it was meant for; what cannot go
/// there either (too large) stays in the dead-letter file.
#[test]
fn a_dead_letter_topic_gets_what_kafka_cannot_take() {
    let broker = Broker::start();
    let name = unique();
    let (good, dlt) = (format!("{name}-good"), format!("{name}-dlt"));
    broker.create_topic(&good, 1);
    broker.create_topic(&dlt, 1);
    let cfg = AppenderConfig::new(&yaml(
        &broker.bootstrap(),
        &format!("{name}-{{container_name}}"),
        &format!("  message_max_bytes: 2000\n  dead_letter_topic: {dlt}\n"),
    ));
    let (mut daemon, sock, _log) = daemon(&cfg, &[]);
    use std::io::Write;
    let connect = |container: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        writeln!(
            s,
            "BERTH-HELLO {{\"container_id\": \"{container}\", \"container_name\": \"{container}\"}}"
        )
        .unwrap();
        s
    };
    let (mut ok, mut bad) = (connect("good"), connect("bad/name"));
    for i in 0..100 {
        writeln!(ok, "{name}-{i}").unwrap();
        if i % 25 == 0 {
            writeln!(bad, "poison {i}").unwrap();
            writeln!(ok, "{}", "x".repeat(5000)).unwrap();
        }
    }
    drop((ok, bad));
    no_loss(
        &arrivals(
            &broker.bootstrap(),
            &good,
            &name,
            100,
            Duration::from_secs(30),
        ),
        "good lines",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let got = berth_integration::broker::consume(
            &broker.bootstrap(),
            &dlt,
            4,
            Duration::from_secs(3),
        );
        if got.len() >= 4 || Instant::now() > deadline {
            break got;
        }
    };
    let mut lines: Vec<String> = letters
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["dead_letter"]["reason"], "invalid_topic", "{v}");
            assert_eq!(v["dead_letter"]["topic"], format!("{name}-bad/name"), "{v}");
            v["line"].as_str().unwrap().to_string()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, ["poison 0", "poison 25", "poison 50", "poison 75"]);
    daemon.stop(Duration::from_secs(30));
    let file = cfg.spill_dir.join("daemon").join("dead-letter");
    let kept = berth_log_appender::deadletter::read(&file).unwrap();
    assert_eq!(kept.len(), 4, "the too-large ones stay in the file");
    assert!(kept
        .iter()
        .all(|(r, _)| *r == berth_log_appender::deadletter::Reason::TooLarge));
}

/// True when the appender closes `s` within 10 s: a read sees EOF (or the
/// connection reset) rather than timing out.
fn closed_by_peer(s: &mut std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The daemon socket trusts nobody: connections beyond `max_connections`
/// and a hello line that never ends are closed at once (memory does not
/// grow), and clients within the limits are served meanwhile.
#[test]
fn the_daemon_socket_caps_clients_and_hello_lines() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let broker = Broker::start();
    let name = unique();
    broker.create_topic(&name, 1);
    let cfg = AppenderConfig::new(&format!(
        "{}max_connections: 2\n",
        yaml(&broker.bootstrap(), &name, "")
    ));
    let (_daemon, sock, _log) = daemon(&cfg, &[]);
    // Two idle clients take the two places; a third is closed at once.
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = UnixStream::connect(&sock).unwrap();
    assert!(
        closed_by_peer(&mut third),
        "a client over max_connections was served"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    // A hello line that never ends: closed after 64 KiB, not read forever.
    let mut endless = UnixStream::connect(&sock).unwrap();
    let mut junk = b"BERTH-HELLO {\"container_id\": \"".to_vec();
    junk.extend(std::iter::repeat_n(b'a', 200 * 1024));
    endless
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = endless.write_all(&junk); // may fail once the appender closed it
    assert!(
        closed_by_peer(&mut endless),
        "an endless hello line was read on"
    );
    // A well-behaved client is served.
    let mut ok = UnixStream::connect(&sock).unwrap();
    writeln!(ok, "BERTH-HELLO {{\"container_id\": \"c1\"}}").unwrap();
    for i in 0..100 {
        writeln!(ok, "{name}-{i}").unwrap();
    }
    drop(ok);
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        100,
        Duration::from_secs(30),
    );
    no_loss(&a, "a client within the limits");
}

/// A source name that would put the spill outside `spill.dir` is refused.
#[test]
fn a_name_that_leaves_the_spill_directory_is_refused() {
    let cfg = AppenderConfig::new(&yaml("127.0.0.1:1", "logs", ""));
    for bad in ["..", ".", ""] {
        let r = berth_integration::cmd::try_run(
            std::process::Command::new(bin_dir().join("berth-log-appender"))
                .arg("--config")
                .arg(&cfg.path)
                .args(["--stdin", "--name", bad])
                .stdin(std::process::Stdio::null()),
        );
        assert!(
            !r.ok() && r.stderr.contains("cannot name a spill directory"),
            "--name {bad:?}: {}",
            r.stderr
        );
    }
    assert!(
        !cfg.spill_dir.parent().unwrap().join(".lock").exists(),
        "a spill was opened in the parent directory"
    );
}

/// A small tmpfs, unmounted when dropped (also after a failed assertion).
pub(crate) struct SmallTmpfs(pub(crate) std::path::PathBuf);

impl SmallTmpfs {
    pub(crate) fn mount(bytes: u64) -> SmallTmpfs {
        let dir = berth_integration::artifacts::fresh_dir("tmpfs");
        berth_integration::cmd::run(
            berth_integration::cmd::command("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(&dir),
        );
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = berth_integration::cmd::try_run(
            berth_integration::cmd::command("umount")
                .arg("-l")
                .arg(&self.0),
        );
    }
}

/// The spill's disk fills to the brim during an outage: every line is
/// either spilled or counted as dropped, nothing spilled before the fault
/// (or after it, once space returns) is lost, and a restart against the
/// broker delivers exactly what was not dropped, in order.
#[test]
fn a_full_disk_loses_nothing_that_was_safe_and_recovers_when_space_returns() {
    let disk = SmallTmpfs::mount(1 << 20);
    // Most of the disk is taken by something else.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 700 * 1024]).unwrap();
    let spill = format!(
        "spill:\n  dir: {}\n  segment_bytes: 16777216\n",
        disk.0.join("spill").display()
    );
    let metrics = format!("metrics:\n  listen: \"127.0.0.1:{}\"\n", free_port());
    let (broker, name, cfg) = outage(1, &format!("{spill}{metrics}"));
    let mut app = Appender::start(&cfg, &name, &[]);
    let pad = "x".repeat(200);
    let mut written = 0;
    let mut write = |app: &mut Appender, n: u64| {
        for _ in 0..n {
            app.line(&format!("{name}-{written} {pad}"));
            written += 1;
        }
    };
    // Fits; then far more than fits (the disk fills, mid-frame).
    write(&mut app, 300);
    settled(&app, 300);
    write(&mut app, 2000);
    let m = settled(&app, 2300);
    let dropped = m["dropped_total{reason=\"spill_full\"}"];
    assert!(dropped > 0, "the disk never filled: {m:?}");
    // Space returns: the appender takes lines into the spill again.
    std::fs::remove_file(&filler).unwrap();
    write(&mut app, 300);
    let m = settled(&app, 2600);
    assert_eq!(
        m["dropped_total{reason=\"spill_full\"}"], dropped,
        "lines dropped after space returned: {m:?}"
    );
    assert_eq!(
        m["spill_records"] + dropped + m["dropped_total{reason=\"memory_full\"}"],
        2600,
        "every line is either spilled or counted as dropped: {m:?}"
    );
    std::thread::sleep(Duration::from_millis(1500)); // the spill's fsync
    app.kill9();
    // Against the live broker, a restart delivers exactly what was spilled.
    let (a, log) = restart_against(&broker, &cfg, &name, &format!("{spill}{metrics}"), 2600);
    assert_eq!(
        a.missing.len() as u64,
        dropped,
        "delivered must be exactly what was not dropped; restart log:\n{log}"
    );
    assert!(
        a.missing.iter().all(|i| (300..2300).contains(i)),
        "lines from before the fault or after it were lost: {:?}",
        &a.missing[..a.missing.len().min(10)]
    );
    assert!(a.out_of_order.is_empty(), "{:?}", a.out_of_order);
}

/// An appender that found its source's spill locked (the previous one still
/// draining) spills beside it, in `<name>.<pid>`; the next start for that
/// source adopts that spill, so its lines are delivered too, after the
/// others.
#[test]
fn a_spill_left_beside_a_locked_one_is_adopted_at_the_next_start() {
    let (broker, name, cfg) = outage(1, "mode: disk_first\n");
    let mut first = Appender::start(&cfg, &name, &[]);
    for i in 0..100 {
        first.line(&format!("{name}-{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut second = Appender::start(&cfg, &name, &[]);
    for i in 100..200 {
        second.line(&format!("{name}-{i}"));
    }
    std::thread::sleep(Duration::from_millis(2500)); // spilled and fsynced
    assert!(
        second.log().contains("spill directory in use"),
        "{}",
        second.log()
    );
    second.kill9();
    first.kill9();
    let (a, log) = restart_against(&broker, &cfg, &name, "", 200);
    no_loss(&a, &format!("adopted spill; log:\n{log}"));
    let left: Vec<_> = std::fs::read_dir(&cfg.spill_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "the spill beside was not removed: {left:?}");
}

/// A client inside a container cannot write as another: in the default
/// `identity: peer` mode the container ID comes from the connecting
/// process's cgroup (here a cgroup named as an engine names a container's),
/// not from its hello line, which claims another container and env. A
/// client whose process is gone before the daemon looks (here: the daemon
/// is stopped until the client has written and exited) is not taken at its
/// word either: it is "unknown", not the host process a gone pid looks like.
#[test]
fn a_daemon_client_in_a_container_is_known_by_its_cgroup_not_its_claim() {
    let (broker, name, cfg) = live(1, "fields_from_env: [TIER]\n");
    let (daemon, sock, _log) = daemon(&cfg, &[]);
    // A cgroup as Docker names a container's: the run prefix, then the ID.
    let id: String = format!("{:0>64}", format!("{:x}", std::process::id()))
        .chars()
        .rev()
        .collect();
    let cg = std::path::Path::new("/sys/fs/cgroup/pids").join(format!("{name}-{id}"));
    std::fs::create_dir(&cg).unwrap();
    // Lines `first`..`first + 50`; `linger`: the client waits for the
    // daemon to close the connection before it exits.
    let client = |first: u32, linger: bool| {
        let script = format!(
            "import socket\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect({sock:?})\n\
             s.sendall(b'BERTH-HELLO {{\"container_id\": \"victim\", \"container_name\": \"victim\", \"env\": {{\"TIER\": \"gold\"}}}}\\n')\n\
             for i in range({first}, {first} + 50):\n    s.sendall(b'{name}-%d\\n' % i)\n\
             s.shutdown(socket.SHUT_WR)\n\
             {wait}\n\
             s.close()\n",
            sock = sock.display().to_string(),
            wait = if linger { "s.recv(1)" } else { "pass" },
        );
        berth_integration::cmd::try_run(
            berth_integration::cmd::command("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec /usr/bin/python3 -c \"$0\"",
                    cg.display()
                ))
                .arg(&script),
        )
    };
    let alive = client(0, true);
    let stopped = daemon.pid() as libc::pid_t;
    assert_ne!(stopped, 0, "the daemon has no pid");
    // SAFETY: signals to the daemon this test started.
    unsafe { libc::kill(stopped, libc::SIGSTOP) };
    let gone = client(50, false);
    // SAFETY: as above.
    unsafe { libc::kill(stopped, libc::SIGCONT) };
    let _ = std::fs::remove_dir(&cg);
    assert!(alive.ok(), "client: {}", alive.stderr);
    assert!(gone.ok(), "client: {}", gone.stderr);
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        100,
        Duration::from_secs(30),
    );
    no_loss(&a, "clients in a container");
    for e in &a.envelopes {
        let n: u32 = e["line"].as_str().unwrap()[name.len() + 1..]
            .parse()
            .unwrap();
        let want = if n < 50 { id.as_str() } else { "unknown" };
        assert_eq!(e["container_id"], want, "{e}");
        assert_eq!(e["container_name"], want, "{e}");
        assert!(
            e["fields"].get("TIER").is_none(),
            "a claimed env was taken: {e}"
        );
    }
}

/// Two containers with the binary logger at once, `metrics.listen` set: a
/// binary logger binds no port (the second would find it taken and its
/// container would not start); each writes its counters for node_exporter's
/// textfile collector instead, labelled by source, and removes them at exit.
#[test]
fn binary_loggers_bind_no_port_and_write_textfile_metrics() {
    let broker = Broker::start();
    let ids = [unique(), unique()];
    for id in &ids {
        broker.create_topic(id, 1);
    }
    let textfiles = berth_integration::artifacts::fresh_dir("textfile");
    let cfg = AppenderConfig::new(&yaml(
        &broker.bootstrap(),
        "{container_name}",
        &format!(
            "metrics:\n  listen: \"127.0.0.1:{}\"\n  textfile_dir: {}\n",
            free_port(),
            textfiles.display()
        ),
    ));
    let c = containerd();
    let image = c.busybox_image();
    let uri = format!(
        "binary://{}?config={}",
        bin_dir().join("berth-log-appender").display(),
        cfg.path.display()
    );
    let prom = || -> Vec<String> {
        std::fs::read_dir(&textfiles)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".prom"))
            .collect()
    };
    let seen = std::thread::scope(|s| {
        let runs: Vec<_> = ids
            .iter()
            .map(|id| {
                let (uri, c) = (&uri, &c);
                s.spawn(move || {
                    c.ctr_run(&[
                        "run",
                        "--rm",
                        "--log-uri",
                        uri,
                        image,
                        id,
                        "sh",
                        "-c",
                        &format!("i=0; while [ $i -lt 40 ]; do echo {id}-$i; i=$((i+1)); sleep 0.1; done"),
                    ])
                })
            })
            .collect();
        let both =
            berth_integration::process::wait_until(Duration::from_secs(20), || prom().len() == 2);
        let files: Vec<String> = prom()
            .iter()
            .map(|f| std::fs::read_to_string(textfiles.join(f)).unwrap_or_default())
            .collect();
        for r in runs {
            let r = r.join().unwrap();
            assert!(r.ok(), "ctr run --log-uri: {}\n{}", r.stdout, r.stderr);
        }
        (both, files)
    });
    let (both, files) = seen;
    assert!(both, "not one textfile per running logger");
    for id in &ids {
        assert!(
            files.iter().any(|f| f.contains(&format!(
                "received_total{{source=\"{}-{id}\"}}",
                c.namespace
            ))),
            "no counters for {id}: {files:?}"
        );
        let a = arrivals(&broker.bootstrap(), id, id, 40, Duration::from_secs(30));
        assert!(a.missing.is_empty(), "{id}: missing {:?}", a.missing);
    }
    assert!(
        berth_integration::process::wait_until(Duration::from_secs(20), || prom().is_empty()),
        "textfiles left after the loggers ended: {:?}",
        prom()
    );
}

/// A slow broker: tansu stopped (SIGSTOP) for 10 s mid-stream, so
/// connections stay open but nothing is answered. The writer is never held
/// up (no write into the appender's pipe takes long), and once the broker
/// runs again every line arrives, in order.
#[test]
fn a_broker_stopped_mid_stream_blocks_no_writer_and_loses_nothing() {
    let (broker, name, cfg) = live(1, "");
    let mut app = Appender::start(&cfg, &name, &[]);
    let rate = 1000;
    let n = 20 * rate;
    let signal = |sig: i32| {
        // SAFETY: kill(2) on the broker this test started, by its pid.
        unsafe { libc::kill(broker.pid() as i32, sig) };
    };
    let mut slowest = Duration::ZERO;
    let mut stopped_at = None;
    let start = Instant::now();
    for i in 0..n {
        if i == 3 * rate {
            signal(libc::SIGSTOP);
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(10)) {
            signal(libc::SIGCONT);
            stopped_at = None;
        }
        let t = Instant::now();
        app.line(&format!("{name}-{i}"));
        slowest = slowest.max(t.elapsed());
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    if stopped_at.is_some() {
        signal(libc::SIGCONT);
    }
    assert!(app.finish(Duration::from_secs(120)), "{}", app.log());
    let a = arrivals(
        &broker.bootstrap(),
        &name,
        &name,
        n,
        Duration::from_secs(30),
    );
    no_loss(&a, &format!("a stopped broker; log:\n{}", app.log()));
    assert!(
        slowest < Duration::from_millis(200),
        "a write waited {slowest:?} while the broker was stopped"
    );
    eprintln!(
        "slow broker: {} lines, slowest write {slowest:?}, {} duplicates",
        n, a.duplicates
    );
}
