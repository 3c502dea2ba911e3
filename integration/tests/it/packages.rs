//! The Debian packages: built with cargo-deb, clean under lintian, installed
//! with dpkg, used by Docker (as a runtime and a logging plugin), ctr --cni
//! and containerd's binary logger from their installed paths and
//! configuration, then purged without a trace.

use berth_integration::appender::{arrivals, AppenderConfig};
use berth_integration::broker::Broker;
use berth_integration::cmd::{command, run, try_run, try_sh};
use berth_integration::cni::{ctr_with_cni, host_local};
use berth_integration::engines::containerd::containerd;
use berth_integration::engines::docker::docker;
use berth_integration::names::unique;
use berth_integration::net::ParentLink;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PACKAGES: [&str; 3] = ["berth-runtime", "berth-cni-plugins", "berth-log-appender"];

/// The .debs: `BERTH_DEBS_DIR` (scripts/test builds them first), or built now.
fn debs() -> Vec<PathBuf> {
    let dir = match std::env::var_os("BERTH_DEBS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            run(Command::new(root.join("scripts/package")).current_dir(&root));
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("debian")
        }
    };
    PACKAGES
        .iter()
        .map(|p| {
            let d = dir.join(format!("{p}_0.1.0-1_amd64.deb"));
            assert!(d.is_file(), "{} was not built", d.display());
            d
        })
        .collect()
}

/// Installed packages, purged when dropped (also when the test fails).
struct Installed;

impl Installed {
    fn new(debs: &[PathBuf]) -> Installed {
        purge();
        let r = try_run(command("dpkg").arg("-i").args(debs));
        assert!(r.ok(), "dpkg -i: {}\n{}", r.stdout, r.stderr);
        // postinst says how to wire each component in, and restarts nothing.
        assert!(
            r.stdout.contains("daemon.json") && r.stdout.contains("Nothing was restarted"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("not enabled by this package"),
            "{}",
            r.stdout
        );
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
    }
}

fn purge() {
    let _ = try_run(command("dpkg").arg("--purge").args(PACKAGES));
}

fn installed_files() -> Vec<PathBuf> {
    PACKAGES
        .iter()
        .flat_map(|p| {
            run(command("dpkg").args(["-L", p]))
                .lines()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn debian_packages_pass_lintian_install_serve_the_engines_and_purge_clean() {
    let debs = debs();
    for d in &debs {
        let r = try_sh("lintian", ["--fail-on", "error", d.to_str().unwrap()]);
        assert!(
            r.ok(),
            "lintian errors in {}:\n{}{}",
            d.display(),
            r.stdout,
            r.stderr
        );
    }
    let pkgs = Installed::new(&debs);
    let files = installed_files();
    for f in [
        "/usr/bin/berth-runtime",
        "/usr/bin/berth-nri",
        "/lib/systemd/system/berth-nri.service",
        "/usr/share/doc/berth-runtime/examples/containerd-nri.toml",
        "/usr/lib/x86_64-linux-gnu/berth/libberth_cpus.so",
        "/etc/berth/runtime.toml",
        "/opt/cni/bin/berth-macvlan",
        "/opt/cni/bin/berth-ovs-vlan",
        "/etc/berth/cni.toml",
        "/usr/bin/berth-log-appender",
        "/etc/berth/log-appender.yaml",
        "/lib/systemd/system/berth-log-appender.service",
        "/usr/share/berth-log-appender/docker-plugin/install",
        "/usr/share/berth-log-appender/docker-plugin/build",
        "/usr/share/berth-log-appender/docker-plugin/config.json",
        "/usr/sbin/berth-cni-gc",
        "/lib/systemd/system/berth-cni-gc.service",
        "/lib/systemd/system/berth-cni-gc.timer",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    // The installed GC trigger with no engine to ask: no GC, exit 2.
    let r = try_run(command("/usr/sbin/berth-cni-gc").args([
        "--cri-socket",
        "/nonexistent/containerd.sock",
        "--conf-dir",
        "/nonexistent",
    ]));
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    for p in ["berth-macvlan", "berth-ovs-vlan"] {
        let l = std::fs::read_link(format!("/usr/lib/cni/{p}")).expect("/usr/lib/cni link");
        assert_eq!(l, Path::new("/opt/cni/bin").join(p));
    }
    let conffiles = run(command("dpkg-query")
        .args(["-W", "-f=${Conffiles}\n"])
        .args(PACKAGES));
    for c in [
        "/etc/berth/runtime.toml",
        "/etc/berth/cni.toml",
        "/etc/berth/log-appender.yaml",
    ] {
        assert!(conffiles.contains(c), "{c} is not a conffile: {conffiles}");
    }
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/berth-log-appender.service")
            .exists(),
        "the daemon was enabled behind the admin's back"
    );

    // Docker with the installed runtime and its packaged configuration.
    {
        let _cpus = berth_integration::berth::cpu_lock();
        let d = docker();
        let image = d.busybox_image();
        let r = d.run(&[
            "run",
            "--rm",
            "--runtime",
            "berth-pkg",
            "--cpus",
            "1",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "nproc; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ]);
        assert!(
            r.ok(),
            "docker run --runtime berth-pkg: {}\n{}",
            r.stdout,
            r.stderr
        );
        assert_eq!(r.stdout.lines().next(), Some("1"), "{}", r.stdout);
        assert!(
            r.stdout.contains("100000"),
            "no CFS quota from the split: {}",
            r.stdout
        );
        // docs/install.md's `--cpus 2.5`: 2 exclusive cores plus a fragment;
        // a host with fewer than 3 CPUs must refuse it clearly.
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let r = d.run(&[
            "run",
            "--rm",
            "--runtime",
            "berth-pkg",
            "--cpus",
            "2.5",
            "--network",
            "none",
            image,
            "true",
        ]);
        if cpus >= 3 {
            assert!(r.ok(), "--cpus 2.5: {}", r.stderr);
        } else {
            assert!(!r.ok(), "--cpus 2.5 ran on a {cpus}-CPU host");
            assert!(
                r.stderr.to_lowercase().contains("cpu"),
                "the refusal does not say why: {}",
                r.stderr
            );
        }
    }

    // ctr run --cni with the installed plugin (found in /opt/cni/bin) and Debian's host-local.
    let master = ParentLink::new();
    let dir = berth_integration::artifacts::fresh_dir("ipam");
    let conflist = json!({
        "cniVersion": "1.0.0", "name": unique(),
        "plugins": [{"type": "berth-macvlan", "master": master.name,
            "ipam": host_local("10.222.0.0/24", "10.222.0.1", &dir),
            "capabilities": {"bandwidth": true}}]
    });
    let image = containerd().busybox_image();
    let r = ctr_with_cni(
        &conflist,
        &[],
        &[
            "run",
            "--rm",
            "--cni",
            image,
            &unique(),
            "ip",
            "-o",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert!(r.ok(), "ctr run --cni: {}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("10.222.0."), "{}", r.stdout);

    // The installed appender as containerd's binary logger.
    let broker = Broker::start();
    let id = unique();
    broker.create_topic(&id, 1);
    let cfg = AppenderConfig::new(&format!(
        "kafka:\n  brokers: [\"{}\"]\n  topic: \"{{container_name}}\"\n",
        broker.bootstrap()
    ));
    let uri = format!(
        "binary:///usr/bin/berth-log-appender?config={}",
        cfg.path.display()
    );
    let r = containerd().ctr_run(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        image,
        &id,
        "sh",
        "-c",
        &format!("echo {id}-0; echo {id}-1 >&2"),
    ]);
    assert!(r.ok(), "ctr --log-uri: {}\n{}", r.stdout, r.stderr);
    let a = arrivals(&broker.bootstrap(), &id, &id, 2, Duration::from_secs(30));
    assert!(a.missing.is_empty(), "{:?}", a.missing);

    // Docker's logging plugin, built from the installed binary by the
    // installed script (docs/install.md), on the private dockerd.
    {
        let d = docker();
        let plugin = format!("{id}pkg");
        let r = try_run(
            command("/usr/share/berth-log-appender/docker-plugin/install")
                .arg(&plugin)
                .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
                // Debian's docker CLI, as on a fresh machine.
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        );
        assert!(
            r.ok(),
            "the plugin install script: {}\n{}",
            r.stdout,
            r.stderr
        );
        let yaml = "/etc/berth/pkg-test.yaml";
        std::fs::write(
            yaml,
            format!(
                "kafka:\n  brokers: [\"{}\"]\n  topic: \"{{container_name}}\"\n",
                broker.bootstrap()
            ),
        )
        .expect("write /etc/berth/pkg-test.yaml");
        let name = format!("{id}-docker");
        broker.create_topic(&name, 1);
        let r = d.run(&[
            "run",
            "--name",
            &name,
            "--network",
            "none",
            "--log-driver",
            &plugin,
            "--log-opt",
            &format!("config={yaml}"),
            d.busybox_image(),
            "sh",
            "-c",
            &format!("echo {name}-0; echo {name}-1"),
        ]);
        assert!(r.ok(), "docker run --log-driver {plugin}: {}", r.stderr);
        let logs = d.run(&["logs", &name]);
        assert_eq!(
            logs.stdout,
            format!("{name}-0\n{name}-1\n"),
            "{}",
            logs.stderr
        );
        let a = arrivals(
            &broker.bootstrap(),
            &name,
            &name,
            2,
            Duration::from_secs(30),
        );
        assert!(a.missing.is_empty(), "via the plugin: {:?}", a.missing);
        let _ = d.run(&["rm", "-f", &name]);
        run(d.cli().args(["plugin", "disable", "-f", &plugin]));
        run(d.cli().args(["plugin", "rm", "-f", &plugin]));
        std::fs::remove_file(yaml).expect("remove /etc/berth/pkg-test.yaml");
    }

    // Purge: nothing of the packages remains.
    drop(pkgs);
    for f in files
        .iter()
        .filter(|f| !f.is_dir() || f.starts_with("/etc/berth"))
    {
        if [
            "/usr/bin",
            "/etc",
            "/opt",
            "/usr/lib",
            "/lib/systemd/system",
        ]
        .iter()
        .any(|d| f == Path::new(d))
        {
            continue;
        }
        assert!(!f.is_file(), "{} survived the purge", f.display());
    }
    for gone in [
        "/etc/berth",
        "/usr/lib/cni/berth-macvlan",
        "/usr/lib/cni/berth-ovs-vlan",
        "/opt/cni/bin/berth-macvlan",
        "/usr/sbin/berth-cni-gc",
        "/var/lib/berth/log-appender",
        "/var/lib/berth/cni",
        "/usr/lib/x86_64-linux-gnu/berth",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} survived the purge"
        );
    }
    for p in PACKAGES {
        let st = try_run(command("dpkg-query").args(["-W", "-f=${Status}", p]));
        assert!(!st.stdout.contains("installed"), "{p}: {}", st.stdout);
    }
}

#[test]
fn the_host_sysctl_profile_names_real_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/sysctl.d/90-berth-host.conf");
    let text = std::fs::read_to_string(&root).expect("profile");
    let mut keys = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once('=').expect("key = value");
        let (k, v) = (k.trim(), v.trim());
        let proc = Path::new("/proc/sys").join(k.replace('.', "/"));
        assert!(proc.exists(), "{k} does not exist on this kernel");
        assert!(v.parse::<u64>().is_ok(), "{k} = {v:?} is not a number");
        keys += 1;
    }
    assert_eq!(keys, 3, "the profile's three settings");
    // Its comment block explains each line.
    for k in [
        "vm.swappiness",
        "vm.dirty_background_bytes",
        "fs.inotify.max_user_watches",
    ] {
        let at = text.find(k).expect(k);
        assert!(
            text[..at]
                .trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with('#')),
            "{k} has no explanation above it"
        );
    }
}
