//! `berth-demo`: the README's demo. Builds a small glibc image, then runs it
//! through `berth-runtime` (on runc, crun, or the built-in libcontainer
//! backend when neither is installed) with a CPU limit of one CPU
//! and an embedded default Berth configuration, and shows what Berth did:
//! the sysctl policy applied, the program seeing one CPU through the preload
//! library, the container on a macvlan network (berth-macvlan, with egress
//! shaping) reaching a neighbour, its output forwarded to Kafka (a local
//! tansu broker) by berth-log-appender, and the `io.berth.applied` record in
//! the rewritten config.json.
//!
//! Usage: `berth-demo [TARGET_DIR]` (as root; `scripts/demo` builds and runs it).

use berth_integration::artifacts::{fresh_dir, scratch};
use berth_integration::broker::Broker;
use berth_integration::cmd::sh;
use berth_integration::cni::{host_local, Call};
use berth_integration::images::{dynamic_rootfs, edit_config};
use berth_integration::net::{Netns, ParentLink};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    berth_integration::cleanup::tear_down_on_panic();
    berth_integration::require_root();
    let target = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .expect("exe")
                .parent()
                .expect("dir")
                .to_path_buf()
        });
    let target = std::fs::canonicalize(&target).expect("target directory");
    let runtime = target.join("berth-runtime");
    let library = target.join("libberth_cpus.so");
    let macvlan = target.join("berth-macvlan");
    let appender = target.join("berth-log-appender");
    for p in [&runtime, &library, &macvlan, &appender] {
        assert!(
            p.is_file(),
            "{} is not built (scripts/demo builds it)",
            p.display()
        );
    }
    let host_cpus = sh("nproc", std::iter::empty::<&str>()).trim().to_string();

    step("1. An embedded default Berth configuration (instead of /etc/berth/runtime.toml)");
    let etc = scratch().join("etc");
    std::fs::create_dir_all(&etc).expect("mkdir etc");
    std::fs::write(
        etc.join("machine.toml"),
        "[sysctl]\n\"net.ipv4.tcp_keepalive_time\" = \"600\"\n",
    )
    .expect("machine.toml");
    let config = etc.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"auto\"\nstate_dir = \"{}\"\n\n[sysctl]\nmachine_class_file = \"{}\"\n\n[preload]\nlibrary = \"{}\"\n\n[cpus]\nbase = 100\n",
            scratch().join("state").display(),
            etc.join("machine.toml").display(),
            library.display()
        ),
    )
    .expect("runtime.toml");
    println!("{}", std::fs::read_to_string(&config).expect("read"));

    step("2. A busybox image with glibc's nproc, and an OCI bundle limited to 1.5 CPUs asking for them (annotation io.berth.cpus)");
    let bundle = fresh_dir("bundle");
    let rootfs = dynamic_rootfs(&[Path::new("/usr/bin/nproc")]);
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libdl.so.2",
        rootfs.join("lib/x86_64-linux-gnu/libdl.so.2"),
    )
    .expect("libdl");
    std::fs::rename(&rootfs, bundle.join("rootfs")).expect("move rootfs");
    // A template config.json from berth-runtime itself (runc's, or the
    // built-in backend's when no runc is installed).
    let status = Command::new(&runtime)
        .arg("--berth-config")
        .arg(&config)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .expect("berth-runtime spec");
    assert!(status.success(), "berth-runtime spec failed");
    let version = Command::new(&runtime)
        .arg("--berth-config")
        .arg(&config)
        .arg("--version")
        .output()
        .expect("berth-runtime --version");
    print!("{}", String::from_utf8_lossy(&version.stdout));
    let script = format!(
        "echo \"host CPUs: {host_cpus}; cpuset: $(cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus.effective); CPU quota: $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null)/100000\"; \
         echo \"CPUs this container sees: $(/usr/bin/nproc)\"; \
         echo \"net.ipv4.tcp_keepalive_time in the container: $(cat /proc/sys/net/ipv4/tcp_keepalive_time)\""
    );
    step("3. A macvlan network: berth-macvlan ADD (host-local IPAM, 50 Mbit/s egress) into the container's netns and a neighbour's");
    // A private bridge stands in for the physical NIC; eth0 is never touched.
    let master = ParentLink::new();
    let (netns, neighbour) = (Netns::new(), Netns::new());
    let ipam_dir = scratch().join("ipam");
    let net = json!({
        "cniVersion": "1.1.0", "name": "berth-demo", "type": "berth-macvlan",
        "master": master.name, "mode": "bridge",
        "ipam": host_local("10.251.0.0/24", "10.251.0.1", &ipam_dir),
        "bandwidth": {"egressRate": 50_000_000},
    });
    let mut neighbour_net = net.clone();
    neighbour_net.as_object_mut().map(|o| o.remove("bandwidth"));
    let cni = |verb: &str, id: &str, ns: &Netns, conf: &Value| {
        Call::new(&macvlan, verb, id, Some(&ns.path())).run(conf)
    };
    let added = cni("ADD", "demo-container", &netns, &net);
    println!("container: {}", added.result());
    let n = cni("ADD", "demo-neighbour", &neighbour, &neighbour_net);
    let neighbour_ip = n.result()["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string();
    println!("neighbour: {neighbour_ip}");
    let script = format!(
        "{script}; echo \"network: $(ip -o -4 addr show eth0 | awk '{{print $2, $4}}'), $(ip link show eth0 | grep -o 'qdisc [a-z]*')\"; \
         ping -c 2 -W 2 {neighbour_ip} | grep -E 'transmitted|round-trip'"
    );
    edit_config(&bundle, |c| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["process"]["terminal"] = json!(false);
        // The engine's limit (as `--cpus 1.5` sets it); the annotation may
        // ask for that much, never more ([cpus] annotations = "within-limit").
        c["linux"]["resources"]["cpu"] = json!({"quota": 150000, "period": 100000});
        c["annotations"] = json!({"io.berth.cpus": "1.5"});
        // busybox ping needs a raw socket.
        for set in ["bounding", "effective", "permitted"] {
            if let Some(caps) = c["process"]["capabilities"][set].as_array_mut() {
                caps.push(json!("CAP_NET_RAW"));
            }
        }
        if let Some(nss) = c["linux"]["namespaces"].as_array_mut() {
            for ns in nss.iter_mut() {
                if ns["type"] == "network" {
                    ns["path"] = json!(netns.path());
                }
            }
        }
    });
    println!("bundle: {}", bundle.display());

    step("4. berth-runtime create + start (runc's command line; Berth rewrites config.json, plans CPUs, then runs the container on runc, crun or its built-in backend)");
    let root = scratch().join("runtime-root");
    let id = format!("berth-demo-{}", std::process::id());
    let berth = || {
        let mut c = Command::new(&runtime);
        c.arg("--berth-config")
            .arg(&config)
            .arg("--root")
            .arg(&root);
        c
    };
    // The container's stdout and stderr go into berth-log-appender, which
    // forwards them to a local Kafka-protocol broker.
    let broker = Broker::start();
    broker.create_topic("berth-demo", 1);
    let log_cfg = scratch().join("log-appender.yaml");
    std::fs::write(
        &log_cfg,
        format!(
            "kafka:\n  brokers: [\"{}\"]\n  topic: berth-demo\nspill:\n  dir: {}\nmetrics:\n  log_interval_secs: 0\n",
            broker.bootstrap(),
            scratch().join("spill").display()
        ),
    )
    .expect("log-appender.yaml");
    let mut forwarder = Command::new(&appender)
        .arg("--config")
        .arg(&log_cfg)
        .args(["--stdin", "--name", "berth-demo"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start berth-log-appender");
    let pipe = forwarder.stdin.take().expect("appender stdin");
    let pipe_fd: std::os::fd::OwnedFd = pipe.into();
    let status = berth()
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdout(Stdio::from(pipe_fd))
        .status()
        .expect("run berth-runtime");
    assert!(status.success(), "berth-runtime create failed: {status}");
    println!("\n--- berth-runtime cpus (the host's CPU ledger while the container exists)");
    let _ = berth().arg("cpus").status();
    println!("--- the container runs; its output goes to berth-log-appender");
    assert!(
        berth()
            .args(["start", &id])
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        "start failed"
    );
    let stopped = || {
        berth()
            .args(["state", &id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"stopped\""))
            .unwrap_or(true)
    };
    for _ in 0..200 {
        if stopped() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        berth()
            .args(["delete", "--force", &id])
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        "delete failed"
    );

    step("5. The container's output, forwarded to Kafka by berth-log-appender (topic berth-demo)");
    let _ = forwarder.wait();
    let lines = berth_integration::broker::consume(
        &broker.bootstrap(),
        "berth-demo",
        usize::MAX,
        std::time::Duration::from_secs(3),
    );
    for r in &lines {
        let v: Value = serde_json::from_slice(&r.value).unwrap_or_default();
        println!(
            "{}  [{}] {}",
            v["ts"].as_str().unwrap_or(""),
            v["stream"].as_str().unwrap_or(""),
            v["line"].as_str().unwrap_or("")
        );
    }
    if let Some(r) = lines.first() {
        println!(
            "\none record as Kafka has it: {}",
            String::from_utf8_lossy(&r.value)
        );
    }

    step("6. What Berth changed (annotation io.berth.applied in the rewritten config.json)");
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("read config"))
            .expect("json");
    let applied: Value = serde_json::from_str(
        spec["annotations"]["io.berth.applied"]
            .as_str()
            .unwrap_or("{}"),
    )
    .unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&applied).expect("json"));
    step("7. After delete the allocation is released (berth-runtime cpus), and berth-macvlan DEL frees the addresses");
    let _ = Command::new(&runtime)
        .arg("--berth-config")
        .arg(&config)
        .arg("cpus")
        .status();
    for (id, ns, conf) in [
        ("demo-container", &netns, &net),
        ("demo-neighbour", &neighbour, &neighbour_net),
    ] {
        let d = cni("DEL", id, ns, conf);
        assert!(d.ok, "DEL {id}: {}", d.stdout);
    }
    let leases: Vec<String> = std::fs::read_dir(ipam_dir.join("berth-demo"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    println!("IPAM leases left after DEL: {leases:?}");
    println!("plugin log: {}", scratch().join("cni.log").display());
    println!("\nDone.");
}

fn step(title: &str) {
    println!("\n=== {title}");
}
