//! The shared CNI library against real peers: IPAM delegation to Debian's
//! host-local plugin, and entering real network namespaces.

use berth_cni::env::Env;
use berth_cni::{ipam, netns, Code, Failure};
use berth_integration::artifacts::fresh_dir;
use berth_integration::names::unique;
use berth_integration::net::{Netns, Veth};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn env(command: &str, ns: &Netns) -> Env {
    let m: BTreeMap<&str, String> = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", unique()),
        ("CNI_NETNS", ns.path()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
    ]
    .into_iter()
    .collect();
    Env::from_fn(|k| m.get(k).cloned()).expect("env")
}

#[test]
fn host_local_ipam_add_and_del_through_the_library() {
    let ns = Netns::new();
    let data = fresh_dir("host-local");
    let conf = json!({
        "cniVersion": "1.0.0", "name": unique(), "type": "berth-macvlan",
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.212.0.0/24", "gateway": "10.212.0.1"}]]}
    });
    let bytes = serde_json::to_vec(&conf).unwrap();
    let mut add_env = env("ADD", &ns);
    let r = ipam::add("host-local", &add_env, &bytes).expect("host-local ADD");
    assert_eq!(r.ips.len(), 1);
    assert_eq!(r.ips[0].address, "10.212.0.2/24");
    assert_eq!(r.ips[0].gateway.as_deref(), Some("10.212.0.1"));
    // The result converts for older callers.
    assert_eq!(r.to_json("0.3.1").unwrap()["ips"][0]["version"], "4");
    let lease = data.join(conf["name"].as_str().unwrap()).join("10.212.0.2");
    assert!(lease.is_file(), "host-local recorded no lease");
    add_env.command = berth_cni::env::Command::Del;
    ipam::del("host-local", &add_env, &bytes).expect("host-local DEL");
    assert!(!lease.exists(), "DEL did not release the lease");
    // The delegate's own errors come back with their codes.
    let bad = json!({"cniVersion": "1.0.0", "name": "x", "type": "t", "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "not-a-subnet"}]]}});
    let e = ipam::add(
        "host-local",
        &env("ADD", &ns),
        &serde_json::to_vec(&bad).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("IPAM plugin host-local:"), "{e}");
    let e = ipam::add("no-such-ipam", &env("ADD", &ns), &bytes).unwrap_err();
    assert_eq!(e.code(), Code::InvalidConfig);
    assert!(e.to_string().contains("no-such-ipam"));
}

fn devices() -> String {
    std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
}

#[test]
fn work_runs_inside_the_namespace_and_nowhere_else() {
    let ns = Netns::new();
    let mut veth = Veth::new();
    veth.move_peer(&ns, "eth7", None);
    let inside = netns::run_in(Path::new(&ns.path()), devices).expect("enter netns");
    assert!(inside.contains("eth7:"), "{inside}");
    assert!(!inside.contains(&format!("{}:", veth.host)));
    let outside = devices();
    assert!(
        !outside.contains("eth7:"),
        "the calling thread must stay in the host namespace"
    );
    assert!(outside.contains(&format!("{}:", veth.host)));
    let e = netns::run_in(&PathBuf::from("/run/netns/does-not-exist"), || ()).unwrap_err();
    assert_eq!(e.code(), Code::Io);
    assert!(e.to_string().contains("/run/netns/does-not-exist"));
}
