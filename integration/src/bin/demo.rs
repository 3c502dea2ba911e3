//! `berth-demo`: the README's demo. Builds a small glibc image, then runs it
//! through `berth-runtime` (delegating to runc) with a CPU limit of one CPU
//! and an embedded default Berth configuration, and shows what Berth did:
//! the sysctl policy applied, the program seeing one CPU through the preload
//! library, and the `io.berth.applied` record in the rewritten config.json.
//!
//! Usage: `berth-demo [TARGET_DIR]` (as root; `scripts/demo` builds and runs it).

use berth_integration::artifacts::{fresh_dir, scratch};
use berth_integration::cmd::sh;
use berth_integration::images::{dynamic_rootfs, edit_config};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    for p in [&runtime, &library] {
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
            "delegate = \"auto\"\nstate_dir = \"{}\"\n\n[sysctl]\nmachine_class_file = \"{}\"\n\n[preload]\nlibrary = \"{}\"\n\n[cpus]\nbase = 100\n",
            scratch().join("state").display(),
            etc.join("machine.toml").display(),
            library.display()
        ),
    )
    .expect("runtime.toml");
    println!("{}", std::fs::read_to_string(&config).expect("read"));

    step("2. A busybox image with glibc's nproc, and an OCI bundle asking for 1.5 CPUs (annotation io.berth.cpus)");
    let bundle = fresh_dir("bundle");
    let rootfs = dynamic_rootfs(&[Path::new("/usr/bin/nproc")]);
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libdl.so.2",
        rootfs.join("lib/x86_64-linux-gnu/libdl.so.2"),
    )
    .expect("libdl");
    std::fs::rename(&rootfs, bundle.join("rootfs")).expect("move rootfs");
    sh(
        "runc",
        ["spec".as_ref(), "--bundle".as_ref(), bundle.as_os_str()],
    );
    let script = format!(
        "echo \"host CPUs: {host_cpus}; cpuset: $(cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus.effective); CPU quota: $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null)/100000\"; \
         echo \"CPUs this container sees: $(/usr/bin/nproc)\"; \
         echo \"net.ipv4.tcp_keepalive_time in the container: $(cat /proc/sys/net/ipv4/tcp_keepalive_time)\""
    );
    edit_config(&bundle, |c| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["process"]["terminal"] = json!(false);
        c["annotations"] = json!({"io.berth.cpus": "1.5"});
    });
    println!("bundle: {}", bundle.display());

    step("3. berth-runtime create + start (runc's command line; Berth rewrites config.json, plans CPUs, then execs the delegate)");
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
    let status = berth()
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .status()
        .expect("run berth-runtime");
    assert!(status.success(), "berth-runtime create failed: {status}");
    println!("\n--- berth-runtime cpus (the host's CPU ledger while the container exists)");
    let _ = berth().arg("cpus").status();
    println!("--- the container's output");
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

    step("4. What Berth changed (annotation io.berth.applied in the rewritten config.json)");
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
    step("5. After delete the allocation is released (berth-runtime cpus)");
    let _ = Command::new(&runtime)
        .arg("--berth-config")
        .arg(&config)
        .arg("cpus")
        .status();
    println!("\nDone. (The macvlan network and log forwarding join this demo as they land.)");
}

fn step(title: &str) {
    println!("\n=== {title}");
}
