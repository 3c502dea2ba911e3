//! The harness self-test: one real thing with each peer.

use berth_integration::broker::{consume, produce, Broker};
use berth_integration::cmd::command;
use berth_integration::engines::{containerd::containerd, docker::docker, podman::podman};
use berth_integration::names::unique;
use berth_integration::net::{Netns, Veth};
use berth_integration::ovs::OvsBridge;
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn docker_runs_busybox() {
    let d = docker();
    let image = d.busybox_image();
    let r = d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "echo",
        "hello from docker",
    ]);
    assert!(r.ok(), "docker run failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from docker");
}

#[test]
fn containerd_runs_busybox() {
    let c = containerd();
    let image = c.busybox_image();
    let id = unique();
    let r = c.ctr_run(&["run", "--rm", image, &id, "echo", "hello from ctr"]);
    assert!(r.ok(), "ctr run failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from ctr");
}

#[test]
fn podman_runs_busybox() {
    let p = podman();
    let image = p.busybox_image();
    let mut args = p.run_args();
    args.extend(
        [
            "--rm",
            "--network",
            "none",
            image,
            "echo",
            "hello from podman",
        ]
        .map(String::from),
    );
    let r = berth_integration::cmd::try_run(p.cmd().args(&args));
    assert!(r.ok(), "podman run failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from podman");
}

#[test]
fn crun_runs_a_bundle() {
    berth_integration::engines::crun::ensure_hugetlb_hierarchy();
    let bundle = berth_integration::images::busybox_bundle(&["echo", "hello from crun"]);
    let id = unique();
    let r = berth_integration::cmd::try_run(
        command("crun")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id),
    );
    assert!(r.ok(), "crun run failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from crun");
}

struct Host {
    ns: Netns,
    _veth: Veth,
}

fn host_on(bridge: &OvsBridge, tag: u16, cidr: &str) -> Host {
    let ns = Netns::new();
    let mut veth = Veth::new();
    veth.move_peer(&ns, "eth1", Some(cidr));
    bridge.add_access_port(&veth.host, tag);
    Host { ns, _veth: veth }
}

#[test]
fn ovs_vlans_connect_and_isolate() {
    let bridge = OvsBridge::new();
    let a = host_on(&bridge, 100, "10.211.0.1/24");
    let b = host_on(&bridge, 100, "10.211.0.2/24");
    let c = host_on(&bridge, 200, "10.211.0.3/24");
    assert!(
        a.ns.pings("10.211.0.2"),
        "VLAN 100 peers cannot reach each other"
    );
    assert!(
        b.ns.pings("10.211.0.1"),
        "VLAN 100 peers cannot reach each other"
    );
    assert!(!c.ns.pings("10.211.0.1"), "VLAN 200 reached VLAN 100");
    assert!(!a.ns.pings("10.211.0.3"), "VLAN 100 reached VLAN 200");
}

#[test]
fn broker_carries_ten_thousand_records() {
    let broker = Broker::start();
    let topic = format!("{}-selftest", unique());
    broker.create_topic(&topic, 3);
    let n = 10_000;
    produce(
        &broker.bootstrap(),
        &topic,
        (0..n).map(|i| {
            (
                format!("k{}", i % 7).into_bytes(),
                format!("record {i}").into_bytes(),
            )
        }),
    );
    let got = consume(&broker.bootstrap(), &topic, n, Duration::from_secs(60));
    assert_eq!(got.len(), n, "consumed {} of {n}", got.len());
    // Every record arrives once, and per key (hence per partition) in order.
    let mut last: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in &got {
        let v = String::from_utf8(r.value.clone()).expect("utf8");
        let i: i64 = v.trim_start_matches("record ").parse().expect("number");
        assert!(seen.insert(i), "record {i} twice");
        let k = r.key.clone().expect("key");
        if let Some(prev) = last.insert(k, i) {
            assert!(prev < i, "record {i} after {prev} for the same key");
        }
    }
}

/// Runs the preflight (`scripts/install-test-deps --check`) with PATH set to
/// one directory holding a link to every listed program except `hidden`.
fn preflight_hiding(hidden: &str) -> berth_integration::cmd::Ran {
    use berth_integration::cmd::{try_run, which};
    let dir = berth_integration::artifacts::fresh_dir("path");
    let mut names: Vec<&str> = berth_integration::deps::programs()
        .iter()
        .map(|e| e.program.as_str())
        .filter(|p| !p.starts_with('/'))
        .collect();
    names.push("cargo");
    for name in names.into_iter().filter(|n| *n != hidden) {
        let real = which(name).unwrap_or_else(|| panic!("{name} is not on PATH"));
        std::os::unix::fs::symlink(real, dir.join(name)).expect("symlink");
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-test-deps");
    try_run(
        command("/bin/bash")
            .arg(script)
            .arg("--check")
            .env("PATH", &dir),
    )
}

#[test]
fn preflight_names_a_missing_program_and_its_package_in_one_line() {
    let all = preflight_hiding("");
    assert!(all.ok() && all.stderr.is_empty(), "{all:?}");
    for (hidden, package) in [("lintian", "lintian"), ("ovs-vsctl", "openvswitch-switch")] {
        let r = preflight_hiding(hidden);
        assert_eq!(r.code, 1, "{r:?}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for one missing program: {r:?}");
        assert!(
            lines[0].contains(&format!("{hidden} is missing"))
                && lines[0].contains(&format!("Debian package {package}")),
            "{}",
            lines[0]
        );
    }
}

/// Every host program the harness and the tests start goes through
/// `cmd::command` (or `sh`/`try_sh`/`run`), which checks it against the
/// install script's list; building a `Command` from a literal program name
/// directly would bypass that.
#[test]
fn no_test_starts_a_host_program_around_the_list() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offenders = Vec::new();
    let mut stack = vec![root.join("src"), root.join("tests")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                for (i, line) in text.lines().enumerate() {
                    if line.contains(concat!("Command::new", "(\"")) {
                        offenders.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use berth_integration::cmd::command(...) so the program is checked against scripts/install-test-deps:\n{}",
        offenders.join("\n")
    );
}
