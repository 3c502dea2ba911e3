//! berth-log-appender as Docker's logging plugin, on the real dockerd
//! (`docker plugin create` from a locally built rootfs) and the real
//! Kafka-protocol broker (tansu): lines delivered in order with their
//! envelope, `docker logs`, bad `--log-opt`s, a broker outage, a plugin
//! restart, and the overload case.

use crate::log_appender::no_loss;
use berth_integration::appender::arrivals;
use berth_integration::broker::Broker;
use berth_integration::engines::docker::DockerContainer;
use berth_integration::engines::log_plugin::{log_plugin, LogPlugin};
use berth_integration::names::unique;
use std::time::Duration;

/// The YAML of one test: its broker, a topic per container.
fn yaml(bootstrap: &str, extra: &str) -> String {
    crate::log_appender::yaml(bootstrap, "{container_name}-logs", extra)
}

/// Compares line lists, reporting the first difference (not thousands of lines).
fn same_lines<S: AsRef<str>>(got: &[S], want: &[String], what: &str) {
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.as_ref() != w.as_str());
    assert!(
        at.is_none() && got.len() == want.len(),
        "{what}: {} lines, {} wanted; first difference at {at:?}: {:?}",
        got.len(),
        want.len(),
        at.map(|i| (got[i].as_ref(), &want[i]))
    );
}

/// A busybox shell loop printing `{name}-0` ... `{name}-{n-1}`, a line
/// every `pause` (0: as fast as it can), then `done` on stderr.
fn counter(name: &str, n: u64, pause_us: u64) -> String {
    let sleep = if pause_us > 0 {
        format!("usleep {pause_us}; ")
    } else {
        String::new()
    };
    format!("i=0; while [ $i -lt {n} ]; do echo {name}-$i; {sleep}i=$((i+1)); done; echo done >&2")
}

/// `docker run -d --log-driver PLUGIN --log-opt config=CFG ...`.
fn run_logged(
    p: &LogPlugin,
    cfg: &str,
    name: &str,
    extra: &[&str],
    script: &str,
) -> DockerContainer {
    let dk = p.docker();
    let driver_opt = format!("config={cfg}");
    let mut args = vec![
        "--name",
        name,
        "--network",
        "none",
        "--log-driver",
        &p.name,
        "--log-opt",
        &driver_opt,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[dk.busybox_image(), "sh", "-c", script]);
    DockerContainer::start(&args)
}

fn wait_exit(p: &LogPlugin, c: &DockerContainer) {
    let r = p.docker().run(&["wait", &c.id]);
    assert!(r.ok(), "docker wait: {}", r.stderr);
}

#[test]
fn lines_from_several_containers_arrive_in_order_with_envelope_and_docker_logs_shows_them() {
    let broker = Broker::start();
    let p = log_plugin();
    let name = unique();
    let cfg = p.write_config(
        &format!("{name}.yaml"),
        &yaml(
            &broker.bootstrap(),
            "fields_from_env: [APP_TIER]\nfields_from_labels: [team]\n",
        ),
    );
    let n = 3000;
    let names: Vec<String> = (0..3).map(|i| format!("{name}-c{i}")).collect();
    // The last one names its own topic and delivery by --log-opt.
    let topics: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c}-{}", if i == 2 { "opt" } else { "logs" }))
        .collect();
    for t in &topics {
        broker.create_topic(t, 3);
    }
    let topic_opt = format!("topic={}", topics[2]);
    let containers: Vec<DockerContainer> = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut extra = vec!["-e", "APP_TIER=gold", "--label", "team=core"];
            if i == 2 {
                extra.extend(["--log-opt", &topic_opt, "--log-opt", "delivery=disk-first"]);
            }
            run_logged(p, &cfg, c, &extra, &counter(c, n, 0))
        })
        .collect();
    for c in &containers {
        wait_exit(p, c);
    }
    for ((c, ctr), topic) in names.iter().zip(&containers).zip(&topics) {
        let a = arrivals(&broker.bootstrap(), topic, c, n, Duration::from_secs(60));
        no_loss(&a, c);
        let e = &a.envelopes[0];
        assert_eq!(e["container_name"], c.as_str(), "{e}");
        assert_eq!(e["container_id"], ctr.id.as_str(), "{e}");
        assert_eq!(e["stream"], "stdout", "{e}");
        assert_eq!(e["fields"]["APP_TIER"], "gold", "{e}");
        assert_eq!(e["fields"]["team"], "core", "{e}");
        // docker logs: every line, in order, stdout and stderr apart.
        if topic.ends_with("-opt") {
            // delivery=disk-first: every line went through the spill.
            let mut spilled = Vec::new();
            berth_integration::process::wait_until(Duration::from_secs(20), || {
                spilled = counter_in_log(&p.log(), &format!("docker-{}", ctr.id), "spilled");
                !spilled.is_empty()
            });
            assert!(
                spilled.iter().any(|s| *s >= n),
                "delivery=disk-first spilled {spilled:?}\n{}",
                p.log()
            );
        }
        let r = p.docker().run(&["logs", &ctr.id]);
        assert!(r.ok(), "docker logs: {}\n{}", r.stderr, p.log());
        let want: Vec<String> = (0..n).map(|i| format!("{c}-{i}")).collect();
        assert_eq!(
            r.stdout.lines().collect::<Vec<_>>(),
            want,
            "docker logs stdout"
        );
        assert_eq!(r.stderr, "done\n");
        // --tail counts entries of both streams (dockerd copies them apart,
        // so `done` may come before the last stdout lines).
        let r = p.docker().run(&["logs", "--tail", "3", &ctr.id]);
        let out: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(out.len() + r.stderr.lines().count(), 3, "--tail 3: {r:?}");
        assert!(
            want.ends_with(&out.iter().map(|l| l.to_string()).collect::<Vec<_>>()),
            "--tail 3: {r:?}"
        );
    }
}

#[test]
fn docker_logs_follow_streams_lines_as_they_come_past_30_s_and_ends_with_the_container() {
    use std::io::{BufRead, BufReader};
    use std::time::Instant;
    let broker = Broker::start();
    let p = log_plugin();
    let name = unique();
    let cfg = p.write_config(&format!("{name}.yaml"), &yaml(&broker.bootstrap(), ""));
    broker.create_topic(&format!("{name}-logs"), 1);
    // 70 lines over 35 s: beyond dockerd's default 30 s plugin timeout.
    let n = 70;
    let c = run_logged(p, &cfg, &name, &[], &counter(&name, n, 500_000));
    let started = Instant::now();
    let mut child = p
        .docker()
        .cli()
        .args(["logs", "-f", &c.id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker logs -f");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut got = Vec::new();
    let mut first_at = None;
    for l in out.lines() {
        let l = l.expect("read docker logs -f");
        first_at.get_or_insert_with(|| started.elapsed());
        got.push(l);
    }
    let ended_at = started.elapsed();
    let status = child.wait().expect("wait docker logs -f");
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    assert!(
        status.success(),
        "docker logs -f failed: {err}\n{}",
        p.log()
    );
    let want: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    same_lines(&got, &want, &format!("docker logs -f ({err})"));
    // Streamed as written, not at the end; and it ended with the container.
    let first_at = first_at.expect("a line");
    assert!(
        first_at < Duration::from_secs(10),
        "the first line came after {first_at:?}"
    );
    assert!(
        ended_at > Duration::from_secs(30),
        "ended after {ended_at:?}, before the container"
    );
    assert!(
        ended_at < Duration::from_secs(60),
        "ended {ended_at:?} after start"
    );
    let a = arrivals(
        &broker.bootstrap(),
        &format!("{name}-logs"),
        &name,
        n,
        Duration::from_secs(30),
    );
    no_loss(&a, "followed container");
}

#[test]
fn a_bad_log_opt_fails_docker_run_with_its_name() {
    let p = log_plugin();
    let name = unique();
    let dk = p.docker();
    for (opt, needle) in [
        (
            "max-size=10m",
            "log-opt max-size: unknown to the berth log driver",
        ),
        (
            "delivery=fast",
            "log-opt delivery: \"fast\" is not kafka_first or disk_first",
        ),
        ("ring-size=1k", "log-opt ring-size"),
        (
            "config=/etc/berth/none.yaml",
            "log-opt config: cannot read /etc/berth/none.yaml",
        ),
        ("partition-key=field:NOPE", "kafka.partition_key"),
    ] {
        let r = dk.run(&[
            "run",
            "--rm",
            "--name",
            &format!("{name}-bad"),
            "--network",
            "none",
            "--log-driver",
            &p.name,
            "--log-opt",
            opt,
            dk.busybox_image(),
            "true",
        ]);
        assert!(!r.ok(), "docker run with --log-opt {opt} succeeded");
        assert!(r.stderr.contains(needle), "--log-opt {opt}: {}", r.stderr);
        let _ = dk.run(&["rm", "-f", &format!("{name}-bad")]);
    }
}

/// The last number of `key=N` in the plugin's log lines that mention `what`.
fn counter_in_log(log: &str, what: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let at = l.find(&format!(" {key}="))? + key.len() + 2;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn the_broker_down_for_30_s_mid_stream_loses_nothing() {
    let mut broker = Broker::start_persistent();
    let p = log_plugin();
    let name = unique();
    let cfg = p.write_config(&format!("{name}.yaml"), &yaml(&broker.bootstrap(), ""));
    broker.create_topic(&format!("{name}-logs"), 1);
    // About 40 s of lines, the broker gone for 30 s of them.
    let n = 4000;
    let c = run_logged(p, &cfg, &name, &[], &counter(&name, n, 10_000));
    std::thread::sleep(Duration::from_secs(4));
    broker.kill();
    std::thread::sleep(Duration::from_secs(30));
    broker.restart();
    wait_exit(p, &c);
    let a = arrivals(
        &broker.bootstrap(),
        &format!("{name}-logs"),
        &name,
        n,
        Duration::from_secs(90),
    );
    no_loss(&a, "broker outage");
    let log = p.log();
    let spilled = counter_in_log(&log, "done", "spilled");
    let replayed = counter_in_log(&log, "done", "replayed");
    assert!(
        spilled.iter().zip(&replayed).any(|(s, r)| *s > 0 && r == s),
        "no container spilled and replayed it all: spilled {spilled:?} replayed {replayed:?}"
    );
}

#[test]
fn a_plugin_restart_while_a_container_runs_replays_what_was_spilled() {
    let mut broker = Broker::start_persistent();
    let id = unique();
    let p = LogPlugin::install(&format!("{id}rs"));
    let name = format!("{id}-r");
    let cfg = p.write_config(&format!("{name}.yaml"), &yaml(&broker.bootstrap(), ""));
    broker.create_topic(&format!("{name}-logs"), 1);
    let n = 3000;
    let c = run_logged(&p, &cfg, &name, &[], &counter(&name, n, 10_000));
    std::thread::sleep(Duration::from_secs(3));
    // Kafka away: what the plugin reads goes to the spill.
    broker.kill();
    std::thread::sleep(Duration::from_secs(5));
    let before = p.docker().run(&["logs", "--tail", "1", &c.id]);
    let last_before: u64 = before
        .stdout
        .trim()
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("docker logs --tail 1: {before:?}"));
    p.disable();
    p.enable();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    wait_exit(&p, &c);
    let a = arrivals(
        &broker.bootstrap(),
        &format!("{name}-logs"),
        &name,
        n,
        Duration::from_secs(60),
    );
    let log = p.log();
    // Everything the plugin had read before it stopped (spilled, as Kafka
    // was away) arrives; so does everything after the new plugin started.
    // dockerd drops what the container writes while no plugin reads (its
    // FIFO write fails): one gap, after the lines read before the restart.
    let gap_ok = a
        .missing
        .first()
        .is_none_or(|first| *first > last_before && a.missing.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(
        gap_ok && a.out_of_order.is_empty(),
        "missing {} lines {:?}..{:?} (the last read before the restart: {last_before}); out of order {:?}\n{log}",
        a.missing.len(),
        a.missing.first(),
        a.missing.last(),
        &a.out_of_order[..a.out_of_order.len().min(5)],
    );
    assert!(
        log.contains("taken up again after a restart"),
        "the new plugin did not take the container up again:\n{log}"
    );
    let replayed = counter_in_log(&log, "done", "replayed");
    assert!(
        replayed.iter().any(|r| *r > last_before / 2),
        "the new plugin replayed {replayed:?} (lines before the restart: {last_before})\n{log}"
    );
    eprintln!(
        "plugin restart: {} lines lost by dockerd while no plugin read the FIFO",
        a.missing.len()
    );
}

/// The overload case: the broker down, a container paced at 100 MB/s.
/// dockerd's RSS stays flat, the plugin keeps reading (it sees every line,
/// and drops and counts what it cannot keep), and the writer is not held to
/// the plugin's pace: at least half of its `--log-driver none` throughput
/// (a plugin that blocked dockerd would give it a few MB/s). The 0.9x goal
/// is a figure of `bench/run docker-log-driver` (release build), not of this
/// debug-build test. Measured alone (`--ignored`).
#[test]
#[ignore = "measured tier: run alone (scripts/test runs it)"]
fn overload_with_the_broker_down_never_holds_dockerd_or_the_writer() {
    use berth_integration::engines::log_plugin::{broker_down_yaml, overload};
    let p = log_plugin();
    let name = unique();
    let cfg = p.write_config(&format!("{name}.yaml"), &broker_down_yaml());
    let opt = format!("config={cfg}");
    let berth = ["--log-driver", p.name.as_str(), "--log-opt", opt.as_str()];
    let none = ["--log-driver", "none"];
    // Warm-up (image, plugin, page cache), then interleaved.
    overload(&berth, 100);
    let mut ratios = Vec::new();
    let mut growth = 0;
    for _ in 0..3 {
        let n = overload(&none, 500);
        let b = overload(&berth, 500);
        eprintln!("overload: none {n:?}\n  berth {b:?}");
        ratios.push(b.mb_per_s / n.mb_per_s);
        growth = growth.max(b.rss_peak_kib.saturating_sub(b.rss_before_kib));
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[1];
    assert!(
        median >= 0.5,
        "the writer got {median:.3}x its --log-driver none throughput ({ratios:?})\n{}",
        p.log()
    );
    assert!(
        growth < 64 * 1024,
        "dockerd's RSS grew by {growth} KiB under the plugin"
    );
    // A pipeline logs its counters once its drain ends (the broker is down:
    // message_timeout_ms + 5 s after the container).
    let mut received = Vec::new();
    berth_integration::process::wait_until(Duration::from_secs(40), || {
        received = counter_in_log(&p.log(), "done", "received");
        received.iter().filter(|r| **r >= 500_000).count() >= 3
    });
    assert!(
        received.iter().filter(|r| **r >= 500_000).count() >= 3,
        "the plugin did not read the writer's lines: received {received:?}"
    );
}

#[test]
fn a_changed_config_file_applies_to_a_running_container_with_its_options_and_metrics_are_written() {
    let broker = Broker::start();
    let p = log_plugin();
    let name = unique();
    let file = format!("{name}.yaml");
    // Metrics for node_exporter's textfile collector, in the state mount.
    let metrics = "metrics:\n  textfile_dir: /var/lib/berth/log-appender/metrics\n";
    std::fs::create_dir_all(p.state_dir.join("metrics")).expect("metrics dir");
    let v1 = format!("{}{metrics}", yaml(&broker.bootstrap(), ""));
    let cfg = p.write_config(&file, &v1);
    for t in ["logs", "v2"] {
        broker.create_topic(&format!("{name}-{t}"), 1);
    }
    let n = 1500;
    // partition-key as an option: it must survive the reload.
    let c = run_logged(
        p,
        &cfg,
        &name,
        &["--log-opt", "partition-key=container_name"],
        &counter(&name, n, 10_000),
    );
    std::thread::sleep(Duration::from_secs(4));
    let prom = p
        .state_dir
        .join("metrics")
        .join(format!("berth_log_appender_docker-{}.prom", c.id));
    let text = std::fs::read_to_string(&prom)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", prom.display(), p.log()));
    assert!(
        text.contains("berth_log_appender_received_total{source=\"docker-"),
        "{text}"
    );
    p.write_config(&file, &v1.replace("-logs\"", "-v2\""));
    wait_exit(p, &c);
    let old = arrivals(
        &broker.bootstrap(),
        &format!("{name}-logs"),
        &name,
        n,
        Duration::from_secs(5),
    );
    let new = arrivals(
        &broker.bootstrap(),
        &format!("{name}-v2"),
        &name,
        n,
        Duration::from_secs(30),
    );
    let lost: Vec<u64> = old
        .missing
        .iter()
        .filter(|i| new.missing.contains(i))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} lines in neither topic, first {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        new.envelopes.len() > 100 && old.envelopes.len() > 100,
        "the reload did not move the topic: {} before, {} after\n{}",
        old.envelopes.len(),
        new.envelopes.len(),
        p.log()
    );
    // The option still applies after the reload.
    let recs = berth_integration::broker::consume(
        &broker.bootstrap(),
        &format!("{name}-v2"),
        usize::MAX,
        Duration::from_secs(3),
    );
    assert!(
        !recs.is_empty()
            && recs
                .iter()
                .all(|r| r.key.as_deref() == Some(name.as_bytes())),
        "after the reload, keys are not the container name: {:?}",
        recs.first().map(|r| &r.key)
    );
    let log = p.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    // Ended with the container: the metrics file goes with it.
    assert!(
        berth_integration::process::wait_until(Duration::from_secs(30), || !prom.exists()),
        "{} outlived its container",
        prom.display()
    );
}
