//! `berth-ovs-vlan` against the private userspace-datapath Open vSwitch:
//! VLAN connectivity and isolation, trunk tagging, QoS both ways, cycles,
//! kill -9 mid-ADD, bad input and `ctr run --cni`.

use berth_integration::artifacts::fresh_dir;
use berth_integration::cmd::{command, sh};
use berth_integration::cni::{berth_ovs_vlan, ctr_with_cni, host_local, Call};
use berth_integration::engines::containerd::containerd;
use berth_integration::names::unique;
use berth_integration::net::{iperf, Netns};
use berth_integration::ovs::{ovs, OvsBridge};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A conflist entry for `bridge` with host-local IPAM on `subnet`.
fn conf(bridge: &OvsBridge, subnet: &str, extra: Value) -> (Value, PathBuf) {
    let dir = fresh_dir("ipam");
    let gw = subnet.replace(".0/24", ".1");
    let mut c = json!({
        "cniVersion": "1.1.0", "name": unique(), "type": "berth-ovs-vlan",
        "bridge": bridge.name, "socket_file": format!("unix:{}", ovs().db_socket.display()),
        "ipam": host_local(subnet, &gw, &dir),
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    (c, dir)
}

fn addr(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("address")
        .to_string()
}

/// One attachment, removed (DEL) on drop.
struct Attached {
    ns: Netns,
    id: String,
    conf: Value,
    result: Value,
}

impl Attached {
    fn new(conf: &Value) -> Attached {
        let ns = Netns::new();
        let id = unique();
        let r = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(conf);
        let result = r.result().clone();
        Attached {
            ns,
            id,
            conf: conf.clone(),
            result,
        }
    }

    fn ip(&self) -> String {
        addr(&self.result)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let d =
            Call::new(&berth_ovs_vlan(), "DEL", &self.id, Some(&self.ns.path())).run(&self.conf);
        if !d.ok && !std::thread::panicking() {
            panic!("DEL failed: {}", d.stdout);
        }
    }
}

/// Rows of `table` whose external_ids carry `key=value`, as ovs-vsctl sees them.
fn rows_with(table: &str, key: &str, value: &str) -> usize {
    let out = ovs().vsctl(&[
        "--format=json",
        "--columns=_uuid",
        "find",
        table,
        &format!("external_ids:{key}={value}"),
    ]);
    let v: Value = serde_json::from_str(&out).expect("ovs-vsctl json");
    v["data"].as_array().map(Vec::len).unwrap_or(0)
}

fn host_veths_of(network: &str) -> Vec<String> {
    sh("ip", ["-o", "link", "show"])
        .lines()
        .filter(|l| l.contains(&format!("berth-ovs-vlan network={network} ")))
        .map(|l| l.to_string())
        .collect()
}

fn assert_clean(network: &str) {
    for table in ["Port", "Interface", "QoS", "Queue"] {
        assert_eq!(
            rows_with(table, "berth.network", network),
            0,
            "{table} rows of network {network} left"
        );
    }
    assert!(
        host_veths_of(network).is_empty(),
        "veths left: {:?}",
        host_veths_of(network)
    );
}

#[test]
fn vlan_peers_ping_and_pass_tcp_and_other_vlans_are_isolated() {
    let br = OvsBridge::new();
    let (c100, _d) = conf(&br, "10.213.0.0/24", json!({"vlan": 100}));
    let mut c200 = c100.clone();
    c200["vlan"] = json!(200);
    let a = Attached::new(&c100);
    let b = Attached::new(&c100);
    let c = Attached::new(&c200);
    assert!(
        a.ns.pings(&b.ip()),
        "VLAN 100 peers cannot reach each other"
    );
    assert!(b.ns.pings(&a.ip()));
    assert!(!c.ns.pings(&a.ip()), "VLAN 200 reached VLAN 100");
    assert!(!a.ns.pings(&c.ip()), "VLAN 100 reached VLAN 200");
    let rate = iperf(&b.ns, &a.ns, &b.ip(), false, 2);
    assert!(rate > 1e6, "TCP over VLAN 100: {rate} bit/s");
    // The port carries the tag and our external_ids.
    let port = &a.result["interfaces"][0]["name"];
    let tag = ovs().vsctl(&["get", "Port", port.as_str().unwrap(), "tag"]);
    assert_eq!(tag.trim(), "100");
    let ids = ovs().vsctl(&["get", "Port", port.as_str().unwrap(), "external_ids"]);
    assert!(ids.contains(&a.id), "{ids}");
    let network = c100["name"].as_str().unwrap().to_string();
    drop((a, b, c));
    assert_clean(&network);
}

#[test]
fn trunk_ports_see_802_1q_tagged_frames() {
    let br = OvsBridge::new();
    let (access, _d) = conf(&br, "10.214.0.0/24", json!({"vlan": 100}));
    let (mut trunk, _d2) = conf(
        &br,
        "10.215.0.0/24",
        json!({"trunk": [{"id": 100}, {"minID": 300, "maxID": 310}]}),
    );
    trunk["name"] = json!(unique());
    let a = Attached::new(&access);
    let t = Attached::new(&trunk);
    let tport = t.result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ovs().vsctl(&["get", "Port", &tport, "vlan_mode"]).trim(),
        "trunk"
    );
    let mut dump = command("ip")
        .args([
            "netns", "exec", &t.ns.name, "tcpdump", "-e", "-n", "-l", "-c", "1", "-i", "eth0",
            "vlan 100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(700));
    // An ARP broadcast from the access port floods to the trunk, tagged.
    let _ =
        a.ns.exec("busybox", &["ping", "-c", "2", "-W", "1", "10.214.0.99"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && dump.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = dump.kill();
    let out = dump.wait_with_output().expect("tcpdump output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vlan 100"),
        "no 802.1Q tag 100 on the trunk port: {text:?}"
    );
}

#[test]
fn qos_shapes_both_ways_within_15_percent_and_police_is_verified() {
    let br = OvsBridge::new();
    let (plain, _d) = conf(&br, "10.216.0.0/24", json!({"vlan": 300}));
    let (egress, ingress) = (20_000_000u64, 40_000_000u64);
    let mut shaped = plain.clone();
    shaped["runtimeConfig"] = json!({"bandwidth": {"egressRate": egress, "ingressRate": ingress}});
    let s = Attached::new(&shaped);
    let o = Attached::new(&plain);
    let up = iperf(&o.ns, &s.ns, &o.ip(), false, 4);
    let down = iperf(&o.ns, &s.ns, &o.ip(), true, 4);
    let within = |got: f64, want: u64| (got / want as f64 - 1.0).abs() <= 0.15;
    assert!(
        within(up, egress),
        "from the container (tbf): {up:.0} bit/s, configured {egress}"
    );
    assert!(
        within(down, ingress),
        "to the container (linux-htb): {down:.0} bit/s, configured {ingress}"
    );
    let port = s.result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let qos = ovs().vsctl(&["get", "Port", &port, "qos"]);
    assert_eq!(
        ovs().vsctl(&["get", "QoS", qos.trim(), "type"]).trim(),
        "linux-htb"
    );
    let mut chk = shaped.clone();
    chk["prevResult"] = s.result.clone();
    let ok = Call::new(&berth_ovs_vlan(), "CHECK", &s.id, Some(&s.ns.path())).run(&chk);
    assert!(ok.ok, "CHECK: {}", ok.stdout);
    // ingress_policing_rate needs act_police, which this kernel lacks: OVS
    // ignores it silently, and Berth must notice rather than trust it.
    let mut police = shaped.clone();
    police["egressShaping"] = json!("police");
    let ns = Netns::new();
    let id = unique();
    let r = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(&police);
    let has_police = sh(
        "sh",
        [
            "-c",
            "modinfo act_police >/dev/null 2>&1 && echo y || echo n",
        ],
    );
    if has_police.trim() == "n" {
        assert_eq!(r.code(), Some(7), "{}", r.stdout);
        assert!(r.stdout.contains("ingress_policing_rate"), "{}", r.stdout);
        assert_eq!(
            rows_with("Port", "berth.container_id", &id),
            0,
            "refused ADD left its port"
        );
    } else {
        assert!(r.ok, "{}", r.stdout);
        assert!(
            Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path()))
                .run(&police)
                .ok
        );
    }
}

#[test]
fn two_hundred_add_del_cycles_leave_no_port_qos_row_or_veth() {
    let br = OvsBridge::new();
    let (c, dir) = conf(
        &br,
        "10.217.0.0/24",
        json!({"vlan": 10, "bandwidth": {"ingressRate": 100_000_000, "egressRate": 100_000_000}}),
    );
    let ns = Netns::new();
    for i in 0..200 {
        let id = format!("{}-{i}", unique());
        let a = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(&c);
        assert!(a.ok, "cycle {i}: ADD {}", a.stdout);
        let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path())).run(&c);
        assert!(d.ok, "cycle {i}: DEL {}", d.stdout);
    }
    assert_clean(c["name"].as_str().unwrap());
    let links = sh("ip", ["-n", &ns.name, "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "left in the netns: {links}");
    let leases: Vec<_> = std::fs::read_dir(dir.join(c["name"].as_str().unwrap()))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .into_iter()
        .collect();
    assert_eq!(leases, vec![0], "leases left");
}

#[test]
fn kill_minus_nine_mid_add_leaves_nothing_del_or_gc_cannot_clean() {
    let br = OvsBridge::new();
    let (c, _dir) = conf(
        &br,
        "10.218.0.0/24",
        json!({"vlan": 20, "bandwidth": {"ingressRate": 50_000_000}}),
    );
    let network = c["name"].as_str().unwrap().to_string();
    let mut killed_mid_way = 0;
    for i in 0..12u64 {
        let ns = Netns::new();
        let id = format!("{}-{i}", unique());
        let mut child = Command::new(berth_ovs_vlan())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", berth_integration::cni::cni_path())
            .env("BERTH_CNI_LOG_FILE", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(c.to_string().as_bytes());
        // Spread the kills over the whole ADD (veth, OVSDB, IPAM, netns).
        std::thread::sleep(Duration::from_micros(1_000 + i * 1_500));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if !status.success() {
            killed_mid_way += 1;
        }
        if i % 2 == 0 {
            let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path())).run(&c);
            assert!(d.ok, "DEL after kill: {}", d.stdout);
            assert_eq!(rows_with("Port", "berth.container_id", &id), 0);
        }
    }
    // GC with nothing valid removes what the odd rounds left.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let g = Call::new(&berth_ovs_vlan(), "GC", "", None).run(&gc);
    assert!(g.ok, "GC: {}", g.stdout);
    assert_clean(&network);
    assert!(
        killed_mid_way >= 4,
        "only {killed_mid_way} ADDs were killed mid-way"
    );
}

#[test]
fn bad_input_gets_cni_errors_naming_the_key() {
    let br = OvsBridge::new();
    let (c, _d) = conf(&br, "10.219.0.0/24", json!({"vlan": 5}));
    let ns = Netns::new();
    let with = |k: &str, v: Value| {
        let mut x = c.clone();
        x[k] = v;
        x
    };
    for (what, conf, code, words) in [
        (
            "missing bridge",
            with("bridge", json!("btnobridge")),
            7,
            "bridge \"btnobridge\"",
        ),
        ("VLAN 0", with("vlan", json!(0)), 7, "vlan 0"),
        ("VLAN 4095", with("vlan", json!(4095)), 7, "vlan 4095"),
        (
            "overlapping trunk",
            with("trunk", json!([{"minID": 10, "maxID": 20}, {"id": 15}])),
            7,
            "overlaps",
        ),
        (
            "unreachable socket",
            with("socket_file", json!("unix:/nonexistent/db.sock")),
            11,
            "socket_file",
        ),
        (
            "unreachable tcp socket",
            with("socket_file", json!("tcp:127.0.0.1:1")),
            11,
            "socket_file",
        ),
    ] {
        let r = Call::new(&berth_ovs_vlan(), "ADD", &unique(), Some(&ns.path())).run(&conf);
        assert_eq!(r.code(), Some(code), "{what}: {}", r.stdout);
        let msg = r
            .json
            .as_ref()
            .and_then(|j| j["msg"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(words), "{what}: {msg:?} should name {words:?}");
    }
    let links = sh("ip", ["-n", &ns.name, "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "refused ADDs left links: {links}");
    assert_clean(c["name"].as_str().unwrap());
}

#[test]
fn del_after_the_netns_is_gone_and_ctr_run_cni() {
    let br = OvsBridge::new();
    let (c, _d) = conf(
        &br,
        "10.220.0.0/24",
        json!({"vlan": 7, "bandwidth": {"ingressRate": 10_000_000}}),
    );
    let ns = Netns::new();
    let id = unique();
    assert!(
        Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path()))
            .run(&c)
            .ok
    );
    let path = ns.path();
    drop(ns);
    let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&path)).run(&c);
    assert!(d.ok, "{}", d.stdout);
    assert!(
        Call::new(&berth_ovs_vlan(), "DEL", &id, None).run(&c).ok,
        "second DEL"
    );
    assert_clean(c["name"].as_str().unwrap());

    let name = unique();
    let mut plugin = c.clone();
    plugin.as_object_mut().unwrap().remove("cniVersion");
    plugin.as_object_mut().unwrap().remove("name");
    let conflist = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
    let image = containerd().busybox_image();
    let r = ctr_with_cni(
        &conflist,
        &["berth-ovs-vlan", "host-local"],
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
    assert!(r.stdout.contains("10.220.0."), "{}", r.stdout);
    assert_clean(&name);
}

#[test]
fn ovsdb_over_tcp_works_like_unix() {
    let br = OvsBridge::new();
    let port = 20000 + std::process::id() % 20000;
    let ctl = ovs().rundir.join("ovsdb-server.ctl");
    let added = command("ovs-appctl")
        .arg(format!("--target={}", ctl.display()))
        .args(["ovsdb-server/add-remote", &format!("ptcp:{port}:127.0.0.1")])
        .status()
        .expect("ovs-appctl");
    assert!(added.success(), "cannot add a TCP remote to ovsdb-server");
    let (mut c, _d) = conf(&br, "10.221.0.0/24", json!({"vlan": 9}));
    c["socket_file"] = json!(format!("tcp:127.0.0.1:{port}"));
    let a = Attached::new(&c);
    assert!(a.ip().starts_with("10.221.0."));
    let name = c["name"].as_str().unwrap().to_string();
    assert_eq!(rows_with("Port", "berth.network", &name), 1);
    drop(a);
    assert_clean(&name);
}

/// DEL never fails because the configuration changed since ADD: for each key
/// ADD validates, a DEL whose configuration has that key broken still
/// removes the port, its QoS rows and veth, and releases the IP lease.
/// (`ipam` and `runtimeConfig.ips` are the IPAM plugin's to read: host-local
/// refuses a broken one on DEL too. `socket_file` names where the port is:
/// an unusable one falls back to the default socket, with a log line.)
#[test]
fn del_survives_every_key_add_validates_being_broken_since() {
    let br = OvsBridge::new();
    let broken = [
        ("bridge", json!(5)),
        ("vlan", json!(9999)),
        ("trunk", json!("all")),
        ("mtu", json!("big")),
        ("ovsTimeoutSeconds", json!("soon")),
        ("egressShaping", json!("magic")),
        ("mac", json!("zz:zz")),
        ("bandwidth", json!({"ingressRate": "fast"})),
        ("dns", json!("8.8.8.8")),
    ];
    for (key, bad) in broken {
        let (c, dir) = conf(
            &br,
            "10.221.0.0/24",
            json!({"vlan": 7, "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 100_000}}),
        );
        let ns = Netns::new();
        let id = unique();
        let a = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(&c);
        assert!(a.ok, "ADD: {}", a.stdout);
        let mut edited = c.clone();
        edited[key] = bad;
        let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path())).run(&edited);
        assert!(d.ok, "DEL with {key} broken since ADD: {}", d.stdout);
        let name = c["name"].as_str().unwrap();
        assert_clean(name);
        let leases: Vec<_> = std::fs::read_dir(dir.join(name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default();
        assert!(leases.is_empty(), "{key}: leases left {leases:?}");
    }
}

/// A 200-character network name: the host end's alias (which GC finds
/// leaked veths by) stays within the kernel's limit, so ADD works, and GC
/// still finds a veth whose port never made it.
#[test]
fn a_200_character_network_name_attaches_and_is_collected() {
    let br = OvsBridge::new();
    let (mut c, _d) = conf(&br, "10.222.0.0/24", json!({"vlan": 9}));
    let long = format!("{}-{}", unique(), "n".repeat(190));
    c["name"] = json!(long);
    let ns = Netns::new();
    let id = unique();
    let a = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(&c);
    assert!(a.ok, "ADD with a 200-character network name: {}", a.stdout);
    // The port goes behind the plugin's back: only the veth (by alias) is left.
    let port = sh(
        "ovs-vsctl",
        [
            format!("--db=unix:{}", ovs().db_socket.display()).as_str(),
            "--columns=name",
            "--bare",
            "find",
            "Port",
            &format!("external_ids:berth.network=\"{long}\""),
        ],
    );
    let port = port.trim().to_string();
    assert!(!port.is_empty(), "no port for the network");
    sh(
        "ovs-vsctl",
        [
            format!("--db=unix:{}", ovs().db_socket.display()).as_str(),
            "del-port",
            &port,
        ],
    );
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let g = Call::new(&berth_ovs_vlan(), "GC", &id, None).run(&gc);
    assert!(g.ok, "GC: {}", g.stdout);
    let left = sh("ip", ["-o", "link", "show"]);
    assert!(
        !left.lines().any(|l| l.contains(&port)),
        "GC left the veth of a 200-character network: {left}"
    );
    let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path())).run(&c);
    assert!(d.ok, "DEL: {}", d.stdout);
    assert_clean(&long);
}

/// STATUS tells the truth: 50, naming the cause, when OVSDB cannot be
/// reached, the bridge is missing, or ovs-vswitchd is not running or does
/// not answer (OVSDB alone would take a port nobody adds).
#[test]
fn status_names_what_cannot_serve_an_add() {
    let bridge = OvsBridge::new();
    let (c, _dir) = conf(&bridge, "10.212.0.0/24", json!({"ovsTimeoutSeconds": 1}));
    let status = |c: &Value| Call::new(&berth_ovs_vlan(), "STATUS", "", None).run(c);
    let st = status(&c);
    assert!(
        st.ok,
        "healthy OVS (vswitchd found beside OVSDB): {}",
        st.stdout
    );
    let unavailable = |c: &Value, names: &str| {
        let st = status(c);
        assert_eq!(st.code(), Some(50), "{}", st.stdout);
        assert!(st.stdout.contains(names), "{names}: {}", st.stdout);
    };
    let mut gone = c.clone();
    gone["bridge"] = json!("btnobridge");
    unavailable(&gone, "btnobridge");
    let mut no_db = c.clone();
    no_db["socket_file"] = json!("unix:/nonexistent/db.sock");
    unavailable(&no_db, "/nonexistent/db.sock");
    // A control socket nobody serves: not running.
    let dir = fresh_dir("vswitchd");
    let mut dead = c.clone();
    dead["vswitchd_socket_file"] = json!(dir.join("absent.ctl").display().to_string());
    unavailable(&dead, "ovs-vswitchd does not answer");
    // One that accepts and never answers (a hung vswitchd).
    let hung = dir.join("hung.ctl");
    let _listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
    let mut stuck = c.clone();
    stuck["vswitchd_socket_file"] = json!(format!("unix:{}", hung.display()));
    let t = std::time::Instant::now();
    unavailable(&stuck, "ovs-vswitchd does not answer");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t.elapsed()
    );
    // The real one, named explicitly.
    let mut named = c.clone();
    named["vswitchd_socket_file"] = json!(ovs()
        .db_socket
        .with_file_name("ovs-vswitchd.ctl")
        .display()
        .to_string());
    assert!(status(&named).ok);
    let mut bad = c.clone();
    bad["vswitchd_socket_file"] = json!("relative.ctl");
    let st = status(&bad);
    assert_eq!(st.code(), Some(7), "{}", st.stdout);
}
