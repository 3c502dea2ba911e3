//! `berth-cni-gc` against containerd's CRI and podman: containers on a
//! berth-macvlan network, attachments leaked on purpose (an ADD the engine
//! never recorded; a netns deleted behind the engine's back), and the
//! trigger removes exactly those. An engine it cannot reach means no GC at
//! all.

use berth_integration::artifacts::{bin_dir, fresh_dir};
use berth_integration::cmd::{command, sh, try_run};
use berth_integration::cni::{berth_macvlan, host_config, host_local, Call};
use berth_integration::engines::containerd::containerd;
use berth_integration::engines::cri::{cni_dirs, network_ready, Pod};
use berth_integration::engines::podman::podman;
use berth_integration::names::unique;
use berth_integration::net::{Netns, ParentLink};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The conflist and plugin links in containerd's CRI CNI directories,
/// removed on drop.
struct CriNetwork {
    files: Vec<PathBuf>,
}

impl Drop for CriNetwork {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn leases(dir: &Path, network: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(network))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn gc(args: &[&str]) -> berth_integration::cmd::Ran {
    let (conf, bin) = cni_dirs();
    try_run(
        command(bin_dir().join("berth-cni-gc").to_str().unwrap())
            .env("BERTH_CNI_CONFIG", host_config())
            .arg("--conf-dir")
            .arg(&conf)
            .arg("--bin-dir")
            .arg(&bin)
            .args(args),
    )
}

fn links_in(netns_path: &str) -> String {
    let name = Path::new(netns_path).file_name().unwrap().to_str().unwrap();
    sh("ip", ["-n", name, "-o", "link", "show"])
}

#[test]
fn the_gc_trigger_removes_exactly_the_leaked_attachments() {
    let master = ParentLink::new();
    let ipam = fresh_dir("ipam");
    let network = unique();
    let (conf_dir, bin) = cni_dirs();
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let conflist = json!({
        // containerd 1.6 (Debian 12) takes results up to 1.0.0; GC is still
        // asked of the plugin in 1.1.0.
        "cniVersion": "1.0.0", "name": network,
        "plugins": [{"type": "berth-macvlan", "master": master.name,
            "ipam": host_local("10.214.0.0/24", "10.214.0.1", &ipam)}]
    });
    let mut files = vec![conf_dir.join(format!("{network}.conflist"))];
    std::fs::write(&files[0], conflist.to_string()).unwrap();
    for (name, from) in [
        ("berth-macvlan", berth_macvlan()),
        ("host-local", PathBuf::from("/usr/lib/cni/host-local")),
        // CRI sets up `lo` in every pod with it.
        ("loopback", PathBuf::from("/usr/lib/cni/loopback")),
    ] {
        let to = bin.join(name);
        if !to.exists() {
            std::os::unix::fs::symlink(&from, &to).unwrap();
            files.push(to);
        }
    }
    let _net = CriNetwork { files };
    // containerd picks the conflist up within a moment (a pod started
    // before would fail, and containerd 1.6 would leave its netns behind).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !network_ready() {
        assert!(
            Instant::now() < deadline,
            "containerd never loaded the conflist"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pod = || {
        Pod::run_on_pod_network("runc")
            .unwrap_or_else(|e| panic!("a pod on the berth-macvlan network: {e}"))
    };
    let (mut a, mut b, mut c) = (pod(), pod(), pod());
    let (a_ns, b_ns, c_ns) = (a.netns().unwrap(), b.netns().unwrap(), c.netns().unwrap());
    assert!(links_in(&a_ns).contains("eth0"));
    assert_eq!(leases(&ipam, &network).len(), 3);
    // Leak 1: an ADD the engine never recorded (killed before its bookkeeping).
    let lost_ns = Netns::new();
    let lost_id = unique();
    let mut direct = conflist["plugins"][0].clone();
    direct["name"] = json!(network);
    direct["cniVersion"] = json!("1.1.0");
    let r = Call::new(&berth_macvlan(), "ADD", &lost_id, Some(&lost_ns.path())).run(&direct);
    assert!(r.ok, "{}", r.stdout);
    assert_eq!(leases(&ipam, &network).len(), 4);
    // Leak 2: pod b's netns deleted behind containerd's back.
    let _ = try_run(command("umount").arg(&b_ns));
    std::fs::remove_file(&b_ns).unwrap();
    // No engine: no GC at all, never "everything is stale".
    let r = gc(&["--cri-socket", "/nonexistent/containerd.sock"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no GC was run"), "{}", r.stderr);
    assert_eq!(leases(&ipam, &network).len(), 4);
    let socket = containerd().socket.display().to_string();
    // With the default grace, pod b's attachment (cached a moment ago) is
    // kept; the unrecorded one goes.
    let r = gc(&["--cri-socket", &socket]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&network), "{}", r.stdout);
    assert!(
        !links_in(&lost_ns.path()).contains("eth0"),
        "{}",
        links_in(&lost_ns.path())
    );
    assert_eq!(leases(&ipam, &network).len(), 3);
    // Without it, pod b's goes too; a and c stay, link and lease.
    let r = gc(&["--cri-socket", &socket, "--grace-seconds", "0"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let left = leases(&ipam, &network);
    assert_eq!(left.len(), 2, "{left:?}");
    let owners: String = left
        .iter()
        .map(|l| std::fs::read_to_string(ipam.join(&network).join(l)).unwrap_or_default())
        .collect();
    assert!(owners.contains(&a.id) && owners.contains(&c.id), "{owners}");
    assert!(links_in(&a_ns).contains("eth0") && links_in(&c_ns).contains("eth0"));
    // Idempotent.
    let r = gc(&["--cri-socket", &socket, "--grace-seconds", "0"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(leases(&ipam, &network).len(), 2);
    drop((a, b, c));
    assert!(
        leases(&ipam, &network).is_empty(),
        "{:?}",
        leases(&ipam, &network)
    );
}

/// The same through podman (CNI backend): its running container is live,
/// an ADD it never recorded is collected.
#[test]
fn the_gc_trigger_reads_podman_too() {
    let p = podman();
    let master = ParentLink::new();
    let ipam = fresh_dir("ipam");
    let network = unique();
    let conflist = json!({
        "cniVersion": "1.0.0", "name": network,
        "plugins": [{"type": "berth-macvlan", "master": master.name,
            "ipam": host_local("10.215.0.0/24", "10.215.0.1", &ipam)}]
    });
    let file = p.cni_config_dir.join(format!("{network}.conflist"));
    std::fs::write(&file, conflist.to_string()).unwrap();
    let _net = CriNetwork {
        files: vec![file.clone()],
    };
    let name = unique();
    let mut args = p.run_args();
    args.extend([
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--network".into(),
        network.clone(),
        p.busybox_image().into(),
        "sleep".into(),
        "600".into(),
    ]);
    let r = try_run(p.cmd().args(&args));
    assert!(r.ok(), "podman run: {}\n{}", r.stdout, r.stderr);
    let id = r.stdout.trim().to_string();
    assert_eq!(leases(&ipam, &network).len(), 1);
    // A container on no network has a netns and no attachments: it must not
    // look like a live container whose attachments are unknown.
    let other = unique();
    let mut args = p.run_args();
    args.extend([
        "-d".into(),
        "--name".into(),
        other.clone(),
        "--network".into(),
        "none".into(),
        p.busybox_image().into(),
        "sleep".into(),
        "600".into(),
    ]);
    let r = try_run(p.cmd().args(&args));
    assert!(
        r.ok(),
        "podman run --network none: {}\n{}",
        r.stdout,
        r.stderr
    );
    let lost_ns = Netns::new();
    let mut direct = conflist["plugins"][0].clone();
    direct["name"] = json!(network);
    direct["cniVersion"] = json!("1.1.0");
    let r = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&lost_ns.path())).run(&direct);
    assert!(r.ok, "{}", r.stdout);
    assert_eq!(leases(&ipam, &network).len(), 2);
    // podman's private configuration, as the test harness runs it.
    let podman_env: Vec<_> = p
        .cmd()
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let r = try_run(
        command(bin_dir().join("berth-cni-gc").to_str().unwrap())
            .envs(podman_env)
            .env("BERTH_CNI_CONFIG", host_config())
            .args(["--engine", "podman", "--grace-seconds", "0", "--conf-dir"])
            .arg(&p.cni_config_dir)
            .arg("--bin-dir")
            .arg(bin_dir())
            .args(["--bin-dir", "/usr/lib/cni"]),
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!links_in(&lost_ns.path()).contains("eth0"));
    let left = leases(&ipam, &network);
    assert_eq!(left.len(), 1, "{left:?}");
    let owner = std::fs::read_to_string(ipam.join(&network).join(&left[0])).unwrap_or_default();
    assert!(owner.contains(&id), "the container's lease stays: {owner}");
    let r = p.run(&["rm", "-f", "-t", "0", &name, &other]);
    assert!(r.ok(), "{}", r.stderr);
    assert!(leases(&ipam, &network).is_empty());
}
