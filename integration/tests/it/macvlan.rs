//! `berth-macvlan` against the reference plugin, real namespaces, iperf3,
//! `ctr run --cni` and podman.

use berth_integration::artifacts::fresh_dir;
use berth_integration::cmd::{command, sh, try_run};
use berth_integration::cni::{
    berth_macvlan, ctr_with_cni, host_local, Answer, Call, REFERENCE_MACVLAN,
};
use berth_integration::engines::containerd::containerd;
use berth_integration::engines::podman::podman;
use berth_integration::names::unique;
use berth_integration::net::{iperf, Netns, ParentLink};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

fn conf(version: &str, master: &str, extra: Value) -> Value {
    let mut c =
        json!({"cniVersion": version, "name": unique(), "type": "macvlan", "master": master});
    if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
        o.extend(e);
    }
    c
}

fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut v = vec!["-j", "-d"];
    v.extend_from_slice(args);
    serde_json::from_str(&ns.ip(&v)).expect("ip -j output")
}

/// What the kernel shows of `eth0` in `ns`: kind, mode, MTU, flags, MAC,
/// addresses, the routes, and `arp_notify`.
fn link_state(ns: &Netns, ifname: &str) -> Value {
    let l = &ip_json(ns, &["link", "show", ifname])[0];
    let addrs: Vec<String> = ip_json(ns, &["addr", "show", ifname])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let mut routes: Vec<String> = ip_json(ns, &["route", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} via {} dev {}", r["dst"], r["gateway"], r["dev"]))
        .collect();
    routes.sort();
    let arp_notify = ns
        .exec(
            "cat",
            &[&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify")],
        )
        .stdout;
    json!({
        "kind": l["linkinfo"]["info_kind"],
        "mode": l["linkinfo"]["info_data"]["mode"],
        "mtu": l["mtu"],
        "up": l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "mac": l["address"],
        "addrs": addrs,
        "routes": routes,
        "arp_notify": arp_notify.trim(),
    })
}

/// A result with what legitimately differs between two attachments
/// (random MACs, netns paths) replaced, and an empty `dns` dropped.
fn normalise(r: &Value, fixed_mac: bool) -> Value {
    let mut r = r.clone();
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for i in ifs {
            let mac = i["mac"].as_str().unwrap_or_default();
            assert_eq!(mac.len(), 17, "interface MAC {mac:?}");
            if !fixed_mac {
                i["mac"] = json!("<mac>");
            }
            i["sandbox"] = json!("<netns>");
            if let Some(o) = i.as_object_mut() {
                o.remove("mtu");
            }
        }
    }
    if r["dns"] == json!({}) {
        r.as_object_mut().unwrap().remove("dns");
    }
    r
}

struct Case {
    name: &'static str,
    extra: Value,
    args: &'static str,
    ipam: bool,
    fixed_mac: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "bridge mode with host-local",
            extra: json!({"mode": "bridge"}),
            ipam: true,
            fixed_mac: false,
            args: "",
        },
        Case {
            name: "private mode, MTU 1400, DNS",
            extra: json!({"mode": "private", "mtu": 1400, "dns": {"nameservers": ["10.203.0.53"], "search": ["berth.test"]}}),
            ipam: true,
            fixed_mac: false,
            args: "",
        },
        Case {
            name: "vepa mode with a fixed MAC",
            extra: json!({"mode": "vepa", "mac": "0a:58:0a:cb:00:42"}),
            ipam: true,
            fixed_mac: true,
            args: "",
        },
        Case {
            name: "MAC from CNI_ARGS",
            extra: json!({"mac": "0a:58:0a:cb:00:42"}),
            ipam: true,
            fixed_mac: true,
            args: "IgnoreUnknown=1;K8S_POD_NAME=web-0;MAC=0a:58:0a:cb:00:43",
        },
        Case {
            name: "passthru mode",
            extra: json!({"mode": "passthru"}),
            ipam: true,
            fixed_mac: false,
            args: "",
        },
        Case {
            name: "L2 only: no ipam",
            extra: json!({}),
            ipam: false,
            fixed_mac: false,
            args: "",
        },
    ]
}

/// One ADD + DEL with `plugin` in a fresh namespace; the result and the link.
fn attach_once(plugin: &Path, c: &Value, args: &str) -> (Answer, Option<Value>, Answer) {
    let ns = Netns::new();
    let id = unique();
    let add = Call::new(plugin, "ADD", &id, Some(&ns.path()))
        .args(args)
        .run(c);
    let state = add.ok.then(|| link_state(&ns, "eth0"));
    let del = Call::new(plugin, "DEL", &id, Some(&ns.path())).run(c);
    let left = ip_json(&ns, &["link", "show"]);
    assert_eq!(
        left.as_array().map(Vec::len),
        Some(1),
        "{}: DEL left links behind: {left}",
        plugin.display()
    );
    (add, state, del)
}

#[test]
fn same_results_and_link_state_as_the_reference_plugin_for_every_version() {
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        for case in cases() {
            let master = ParentLink::new();
            let label = format!("{version} / {}", case.name);
            let mut c = conf(version, &master.name, case.extra.clone());
            let (ref_dir, our_dir) = (fresh_dir("ipam-ref"), fresh_dir("ipam-berth"));
            let with_ipam = |c: &Value, dir: &Path| {
                let mut c = c.clone();
                if case.ipam {
                    let mut i = host_local("10.203.0.0/24", "10.203.0.1", dir);
                    i["routes"] = json!([{"dst": "10.204.0.0/16"}, {"dst": "0.0.0.0/0"}]);
                    c["ipam"] = i;
                }
                c
            };
            // The reference (containernetworking-plugins 1.1.1) stops at
            // 1.0.0: for 1.1.0 it must refuse, and Berth's 1.1.0 result is
            // compared with its 1.0.0 one.
            let ref_conf = if version == "1.1.0" {
                let refused = Call::new(Path::new(REFERENCE_MACVLAN), "ADD", &unique(), Some("/x"))
                    .run(&with_ipam(&c, &ref_dir));
                assert_eq!(refused.code(), Some(1), "{label}: {}", refused.stdout);
                let mut r = with_ipam(&c, &ref_dir);
                r["cniVersion"] = json!("1.0.0");
                r
            } else {
                with_ipam(&c, &ref_dir)
            };
            let (radd, rstate, rdel) =
                attach_once(Path::new(REFERENCE_MACVLAN), &ref_conf, case.args);
            c["type"] = json!("berth-macvlan");
            let (badd, bstate, bdel) =
                attach_once(&berth_macvlan(), &with_ipam(&c, &our_dir), case.args);
            assert!(rdel.ok && bdel.ok, "{label}: DEL failed: {rdel:?} {bdel:?}");
            let mut ours = normalise(badd.result(), case.fixed_mac);
            if version == "1.1.0" {
                let mtu = badd.result()["interfaces"][0]["mtu"].clone();
                assert_eq!(
                    mtu,
                    bstate.as_ref().unwrap()["mtu"],
                    "{label}: 1.1.0 reports the interface MTU"
                );
                ours["cniVersion"] = json!("1.0.0");
            }
            assert_eq!(
                ours,
                normalise(radd.result(), case.fixed_mac),
                "{label}: results differ"
            );
            let (mut r, mut b) = (rstate.unwrap(), bstate.unwrap());
            if !case.fixed_mac {
                r["mac"] = json!("<random>");
                b["mac"] = json!("<random>");
            }
            assert_eq!(b, r, "{label}: link state differs");
        }
    }
}

/// (what, stdin, netns, the reference's code, Berth's code, words Berth's
/// message must contain)
type BadInput = (&'static str, Vec<u8>, String, u64, u64, &'static str);

#[test]
fn bad_input_gets_the_spec_codes_and_names_the_key() {
    let master = ParentLink::new();
    let ns = Netns::new();
    let ok = conf("1.0.0", &master.name, json!({}));
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    let table: Vec<BadInput> = vec![
        (
            "JSON that does not decode",
            b"{\"cniVersion\":".to_vec(),
            ns.path(),
            6,
            6,
            "not valid JSON",
        ),
        (
            "unsupported cniVersion",
            with("cniVersion", json!("9.9.9")).to_string().into_bytes(),
            ns.path(),
            1,
            1,
            "9.9.9",
        ),
        (
            "no name",
            {
                let mut c = ok.clone();
                c.as_object_mut().unwrap().remove("name");
                c.to_string().into_bytes()
            },
            ns.path(),
            7,
            7,
            "name",
        ),
        (
            "master that does not exist",
            with("master", json!("btnomaster0"))
                .to_string()
                .into_bytes(),
            ns.path(),
            999,
            7,
            "master \"btnomaster0\"",
        ),
        (
            "mtu above the master's",
            with("mtu", json!(9000)).to_string().into_bytes(),
            ns.path(),
            999,
            7,
            "mtu 9000",
        ),
        (
            "unknown mode",
            with("mode", json!("fast")).to_string().into_bytes(),
            ns.path(),
            999,
            7,
            "mode \"fast\"",
        ),
        (
            "malformed mac",
            with("mac", json!("zz")).to_string().into_bytes(),
            ns.path(),
            999,
            7,
            "mac \"zz\"",
        ),
        (
            "ipam plugin missing",
            with("ipam", json!({"type": "btnoipam"}))
                .to_string()
                .into_bytes(),
            ns.path(),
            999,
            7,
            "ipam.type \"btnoipam\"",
        ),
        (
            "netns missing",
            ok.to_string().into_bytes(),
            "/run/netns/btnonetns0".into(),
            999,
            5,
            "CNI_NETNS",
        ),
    ];
    // The reference runs in a netns of its own: on an IPAM failure it leaks
    // its link (1.1.1 shadows `err` in cmdAdd, so its deferred cleanup never
    // runs), which must not be counted against Berth.
    let ref_ns = Netns::new();
    for (what, stdin, netns, ref_code, our_code, words) in table {
        let ref_netns = if netns == ns.path() {
            ref_ns.path()
        } else {
            netns.clone()
        };
        let reference = Call::new(
            Path::new(REFERENCE_MACVLAN),
            "ADD",
            &unique(),
            Some(&ref_netns),
        )
        .run_raw(&stdin);
        let mut s: Value = serde_json::from_slice(&stdin).unwrap_or(Value::Null);
        let ours = if s.is_object() {
            s["type"] = json!("berth-macvlan");
            Call::new(&berth_macvlan(), "ADD", &unique(), Some(&netns)).run(&s)
        } else {
            Call::new(&berth_macvlan(), "ADD", &unique(), Some(&netns)).run_raw(&stdin)
        };
        assert_eq!(
            reference.code(),
            Some(ref_code),
            "reference, {what}: {}",
            reference.stdout
        );
        assert_eq!(
            ours.code(),
            Some(our_code),
            "berth, {what}: {}",
            ours.stdout
        );
        let msg = ours.json.as_ref().unwrap()["msg"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains(words),
            "berth, {what}: {msg:?} should name {words:?}"
        );
        assert_eq!(
            ours.stdout.lines().count(),
            1,
            "stdout carries only the error JSON"
        );
        assert!(!ours.ok);
    }
    let missing_env = {
        let mut c = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&ns.path()));
        c.unset = vec!["CNI_IFNAME"];
        c.run(&ok)
    };
    assert_eq!(missing_env.code(), Some(4), "{}", missing_env.stdout);
    let left = ip_json(&ns, &["link", "show"]);
    assert_eq!(
        left.as_array().map(Vec::len),
        Some(1),
        "a refused ADD left something in the netns: {left}"
    );
    // A burst that cannot hold one frame would black-hole the container.
    let tiny = with(
        "bandwidth",
        json!({"egressRate": 1_000_000, "egressBurst": 800}),
    );
    let mut tiny = tiny;
    tiny["type"] = json!("berth-macvlan");
    let a = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&ns.path())).run(&tiny);
    assert_eq!(a.code(), Some(7), "{}", a.stdout);
    assert!(a.stdout.contains("bandwidth.egressBurst"), "{}", a.stdout);
}

/// A child process killed (by pid) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn berth_conf(master: &str, subnet: &str, gw: &str, extra: Value) -> (Value, PathBuf) {
    let dir = fresh_dir("ipam");
    let mut c = conf("1.1.0", master, extra);
    c["type"] = json!("berth-macvlan");
    c["ipam"] = host_local(subnet, gw, &dir);
    (c, dir)
}

fn leases(dir: &Path, c: &Value) -> Vec<String> {
    let d = dir.join(c["name"].as_str().unwrap());
    let mut v: Vec<String> = std::fs::read_dir(&d)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn neighbours_reach_each_other_announce_themselves_and_private_mode_isolates() {
    let master = ParentLink::new();
    let (c, dir) = berth_conf(&master.name, "10.205.0.0/24", "10.205.0.1", json!({}));
    let (a, b) = (Netns::new(), Netns::new());
    // Listen on the master for the gratuitous ARP of the first ADD.
    let mut tcpdump = Reaped(
        command("tcpdump")
            .args([
                "-n",
                "-l",
                "-c",
                "1",
                "-i",
                &master.name,
                "arp and src host 10.205.0.2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump"),
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    let (ida, idb) = (unique(), unique());
    let ra = Call::new(&berth_macvlan(), "ADD", &ida, Some(&a.path())).run(&c);
    let rb = Call::new(&berth_macvlan(), "ADD", &idb, Some(&b.path())).run(&c);
    let ip_a = ra.result()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ip_b = rb.result()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(a.pings(&ip_b), "{ip_a} cannot reach {ip_b}");
    assert!(b.pings(&ip_a), "{ip_b} cannot reach {ip_a}");
    let out = tcpdump.0.wait_with_output_timeout();
    assert!(
        out.contains("10.205.0.2") && out.to_lowercase().contains("arp"),
        "no gratuitous ARP seen on the master: {out:?}"
    );
    for (id, ns) in [(&ida, &a), (&idb, &b)] {
        assert!(
            Call::new(&berth_macvlan(), "DEL", id, Some(&ns.path()))
                .run(&c)
                .ok
        );
    }
    assert!(
        leases(&dir, &c).is_empty(),
        "leases left: {:?}",
        leases(&dir, &c)
    );

    let (mut p, pdir) = berth_conf(
        &master.name,
        "10.206.0.0/24",
        "10.206.0.1",
        json!({"mode": "private"}),
    );
    p["name"] = json!(unique());
    let ra = Call::new(&berth_macvlan(), "ADD", &ida, Some(&a.path())).run(&p);
    let rb = Call::new(&berth_macvlan(), "ADD", &idb, Some(&b.path())).run(&p);
    let ip_b = rb.result()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(ra.ok);
    assert!(
        !a.pings(&ip_b),
        "private-mode siblings must not reach each other"
    );
    for (id, ns) in [(&ida, &a), (&idb, &b)] {
        assert!(
            Call::new(&berth_macvlan(), "DEL", id, Some(&ns.path()))
                .run(&p)
                .ok
        );
    }
    assert!(leases(&pdir, &p).is_empty());
}

trait WaitTimeout {
    fn wait_with_output_timeout(&mut self) -> String;
}

impl WaitTimeout for Child {
    /// Waits up to 5 s for the child, then kills it; returns its stdout.
    fn wait_with_output_timeout(&mut self) -> String {
        use std::io::Read;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.kill();
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    }
}

#[test]
fn bandwidth_is_shaped_both_ways_within_15_percent() {
    let master = ParentLink::new();
    let (mut c, dir) = berth_conf(&master.name, "10.207.0.0/24", "10.207.0.1", json!({}));
    let (shaped, other) = (Netns::new(), Netns::new());
    let (egress, ingress) = (20_000_000u64, 40_000_000u64);
    let mut cs = c.clone();
    // The standard capability, as a runtime passes it.
    cs["runtimeConfig"] = json!({"bandwidth": {"egressRate": egress, "ingressRate": ingress}});
    let (ids, ido) = (unique(), unique());
    let rs = Call::new(&berth_macvlan(), "ADD", &ids, Some(&shaped.path())).run(&cs);
    let ro = Call::new(&berth_macvlan(), "ADD", &ido, Some(&other.path())).run(&c);
    let ip_s = rs.result()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ip_o = ro.result()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let up = iperf(&other, &shaped, &ip_o, false, 4);
    let down = iperf(&other, &shaped, &ip_o, true, 4);
    let within = |got: f64, want: u64| (got / want as f64 - 1.0).abs() <= 0.15;
    assert!(
        within(up, egress),
        "from the container: {up:.0} bit/s, configured {egress}"
    );
    assert!(
        within(down, ingress),
        "to the container: {down:.0} bit/s, configured {ingress}"
    );
    // CHECK sees the shaping; and notices when it is gone.
    let mut chk = cs.clone();
    chk["prevResult"] = rs.result().clone();
    let ok = Call::new(&berth_macvlan(), "CHECK", &ids, Some(&shaped.path())).run(&chk);
    assert!(ok.ok, "CHECK: {}", ok.stdout);
    sh(
        "tc",
        ["-n", &shaped.name, "qdisc", "del", "dev", "eth0", "root"],
    );
    let bad = Call::new(&berth_macvlan(), "CHECK", &ids, Some(&shaped.path())).run(&chk);
    assert!(
        !bad.ok && bad.stdout.contains("egress shaping"),
        "{}",
        bad.stdout
    );
    let _ = ip_s;
    for (id, ns, conf) in [(&ids, &shaped, &cs), (&ido, &other, &c)] {
        assert!(
            Call::new(&berth_macvlan(), "DEL", id, Some(&ns.path()))
                .run(conf)
                .ok
        );
    }
    assert_eq!(
        ip_json(&shaped, &["link", "show"]).as_array().map(Vec::len),
        Some(1),
        "the ifb or the macvlan survived DEL"
    );
    c["name"] = json!("unused");
    assert!(leases(&dir, &cs).is_empty());
}

#[test]
fn del_never_fails_for_what_is_already_gone_and_check_finds_drift() {
    let master = ParentLink::new();
    let (c, dir) = berth_conf(
        &master.name,
        "10.208.0.0/24",
        "10.208.0.1",
        json!({"mtu": 1400}),
    );
    let id = unique();
    {
        let ns = Netns::new();
        let r = Call::new(&berth_macvlan(), "ADD", &id, Some(&ns.path())).run(&c);
        let mut chk = c.clone();
        chk["prevResult"] = r.result().clone();
        assert!(
            Call::new(&berth_macvlan(), "CHECK", &id, Some(&ns.path()))
                .run(&chk)
                .ok
        );
        ns.ip(&["link", "set", "eth0", "mtu", "1300"]);
        let bad = Call::new(&berth_macvlan(), "CHECK", &id, Some(&ns.path())).run(&chk);
        assert!(bad.stdout.contains("MTU 1300"), "{}", bad.stdout);
        // The link vanished behind our back: DEL still succeeds and frees the lease.
        ns.ip(&["link", "del", "eth0"]);
        let d = Call::new(&berth_macvlan(), "DEL", &id, Some(&ns.path())).run(&c);
        assert!(d.ok, "{}", d.stdout);
        assert!(leases(&dir, &c).is_empty());
    }
    // The netns is gone entirely, or was never passed, or the master is gone.
    let ns = Netns::new();
    let r = Call::new(&berth_macvlan(), "ADD", &id, Some(&ns.path())).run(&c);
    assert!(r.ok);
    let path = ns.path();
    drop(ns);
    assert!(
        Call::new(&berth_macvlan(), "DEL", &id, Some(&path))
            .run(&c)
            .ok
    );
    assert!(Call::new(&berth_macvlan(), "DEL", &id, None).run(&c).ok);
    let mut gone = c.clone();
    gone["master"] = json!("btnomaster1");
    assert!(Call::new(&berth_macvlan(), "DEL", &id, None).run(&gone).ok);
    assert!(leases(&dir, &c).is_empty(), "{:?}", leases(&dir, &c));
    // VERSION, STATUS and GC (1.1).
    let v = Call::new(&berth_macvlan(), "VERSION", "", None).run(&json!({"cniVersion": "1.1.0"}));
    assert!(v.result()["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
    assert!(Call::new(&berth_macvlan(), "STATUS", "", None).run(&c).ok);
    let st = Call::new(&berth_macvlan(), "STATUS", "", None).run(&gone);
    assert_eq!(st.code(), Some(50), "{}", st.stdout);
    // A master that is down cannot serve an ADD either: 50, naming the cause.
    let master = c["master"].as_str().unwrap().to_string();
    sh("ip", ["link", "set", master.as_str(), "down"]);
    let st = Call::new(&berth_macvlan(), "STATUS", "", None).run(&c);
    sh("ip", ["link", "set", master.as_str(), "up"]);
    assert_eq!(st.code(), Some(50), "{}", st.stdout);
    assert!(st.stdout.contains("is down"), "{}", st.stdout);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(Call::new(&berth_macvlan(), "GC", "", None).run(&gc).ok);
}

#[test]
fn a_thousand_add_del_cycles_leave_nothing_behind() {
    let master = ParentLink::new();
    let (c, dir) = berth_conf(
        &master.name,
        "10.209.0.0/24",
        "10.209.0.1",
        json!({"bandwidth": {"ingressRate": 100_000_000, "egressRate": 100_000_000}}),
    );
    let mut c = c;
    c["cniVersion"] = json!("1.0.0");
    let ns = Netns::new();
    for i in 0..1000 {
        let id = format!("{}-{i}", unique());
        let a = Call::new(&berth_macvlan(), "ADD", &id, Some(&ns.path())).run(&c);
        assert!(a.ok, "cycle {i}: ADD {}", a.stdout);
        let d = Call::new(&berth_macvlan(), "DEL", &id, Some(&ns.path())).run(&c);
        assert!(d.ok, "cycle {i}: DEL {}", d.stdout);
    }
    let links = ip_json(&ns, &["link", "show"]);
    assert_eq!(links.as_array().map(Vec::len), Some(1), "left: {links}");
    let q = sh("tc", ["-n", &ns.name, "qdisc", "show"]);
    assert!(
        !q.contains("tbf") && !q.contains("ingress"),
        "qdiscs left: {q}"
    );
    assert!(leases(&dir, &c).is_empty(), "{:?}", leases(&dir, &c));
    let host = sh("ip", ["-br", "link", "show"]);
    assert!(
        !host.lines().any(|l| l.starts_with("bmv")),
        "temporary macvlans on the host: {host}"
    );
}

#[test]
fn ctr_run_cni_and_podman_attach_through_berth_macvlan() {
    let master = ParentLink::new();
    let dir = fresh_dir("ipam");
    let name = unique();
    let conflist = json!({
        "cniVersion": "1.0.0", "name": name,
        "plugins": [{
            "type": "berth-macvlan", "master": master.name,
            "ipam": host_local("10.210.0.0/24", "10.210.0.1", &dir),
            "capabilities": {"bandwidth": true},
            "bandwidth": {"egressRate": 50_000_000}
        }]
    });
    let c = containerd();
    let image = c.busybox_image();
    let id = unique();
    let r = ctr_with_cni(
        &conflist,
        &["berth-macvlan", "host-local"],
        &[
            "run",
            "--rm",
            "--cni",
            image,
            &id,
            "sh",
            "-c",
            "ip -o addr show eth0; ip link show eth0",
        ],
    );
    assert!(r.ok(), "ctr run --cni: {}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("10.210.0."),
        "no address from the conflist: {}",
        r.stdout
    );
    assert!(r.stdout.contains("tbf"), "no egress shaping: {}", r.stdout);
    let leases_dir = dir.join(&name);
    let left: Vec<_> = std::fs::read_dir(&leases_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "ctr --rm did not DEL: leases {left:?}");

    let p = podman();
    let pname = unique();
    let mut pl = conflist.clone();
    pl["name"] = json!(pname);
    pl["plugins"][0]["ipam"] = host_local("10.211.0.0/24", "10.211.0.1", &dir);
    std::fs::write(
        p.cni_config_dir.join(format!("{pname}.conflist")),
        pl.to_string(),
    )
    .unwrap();
    let mut args = p.run_args();
    args.extend([
        "--rm".into(),
        "--network".into(),
        pname.clone(),
        p.busybox_image().into(),
        "ip".into(),
        "-o".into(),
        "addr".into(),
    ]);
    let r = try_run(p.cmd().args(&args));
    let _ = std::fs::remove_file(p.cni_config_dir.join(format!("{pname}.conflist")));
    assert!(r.ok(), "podman: {}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("10.211.0."), "{}", r.stdout);
}

#[test]
fn link_in_container_and_static_ips_without_ipam() {
    // The master lives inside the container's netns (an SR-IOV VF moved
    // there, say); here a bridge created in it.
    let ns = Netns::new();
    ns.ip(&["link", "add", "vf0", "type", "bridge"]);
    ns.ip(&["link", "set", "vf0", "up"]);
    let mut c = conf(
        "1.1.0",
        "vf0",
        json!({"linkInContainer": true, "mode": "bridge"}),
    );
    c["type"] = json!("berth-macvlan");
    // No ipam: the ips capability is assigned as given.
    c["runtimeConfig"] = json!({"ips": ["10.223.0.7/24"]});
    let id = unique();
    let r = Call::new(&berth_macvlan(), "ADD", &id, Some(&ns.path())).run(&c);
    assert_eq!(r.result()["ips"][0]["address"], "10.223.0.7/24");
    let l = link_state(&ns, "eth0");
    assert_eq!(l["kind"], "macvlan");
    assert_eq!(l["addrs"], json!(["10.223.0.7/24"]));
    // A master that is only on the host is not found in the container.
    let host_master = ParentLink::new();
    let mut wrong = c.clone();
    wrong["master"] = json!(host_master.name);
    let e = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&ns.path()))
        .ifname("net1")
        .run(&wrong);
    assert_eq!(e.code(), Some(7), "{}", e.stdout);
    assert!(
        e.stdout.contains("in the container's netns"),
        "{}",
        e.stdout
    );
    assert!(
        Call::new(&berth_macvlan(), "DEL", &id, Some(&ns.path()))
            .run(&c)
            .ok
    );
    assert_eq!(
        ip_json(&ns, &["link", "show"]).as_array().map(Vec::len),
        Some(2),
        "only lo and vf0 may remain"
    );
    // CNI_IFNAME already taken in the netns: refused (code 4), and the
    // rollback removes only what this ADD made, never the existing eth0.
    ns.ip(&["link", "add", "eth0", "type", "bridge"]);
    let e = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&ns.path())).run(&c);
    assert_eq!(e.code(), Some(4), "{}", e.stdout);
    let names: Vec<String> = ip_json(&ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["lo", "vf0", "eth0"],
        "the existing eth0 must survive, nothing else remain"
    );
    assert_eq!(link_state(&ns, "eth0")["kind"], "bridge");
    // Without ipam, an IP without a prefix length is refused, naming the key.
    let mut bad = c.clone();
    bad["runtimeConfig"] = json!({"ips": ["10.223.0.8"]});
    let e = Call::new(&berth_macvlan(), "ADD", &unique(), Some(&ns.path())).run(&bad);
    assert_eq!(e.code(), Some(7));
    assert!(e.stdout.contains("runtimeConfig.ips"), "{}", e.stdout);
}

/// A network config's `logFile` outside `[cni] allowed_log_dirs` (network
/// configs may come from tenants; the plugin runs as root) is never opened:
/// the plugin logs where the host says, and says there why.
#[test]
fn a_log_file_outside_the_allowed_dirs_is_never_opened() {
    let master = ParentLink::new();
    let target = fresh_dir("tenant-log").join("owned-by-root.log");
    let (mut c, _dir) = berth_conf(&master.name, "10.223.0.0/24", "10.223.0.1", json!({}));
    c["logFile"] = json!(target);
    let ns = Netns::new();
    let id = unique();
    let a = Call::new(&berth_macvlan(), "ADD", &id, Some(&ns.path())).run(&c);
    assert!(a.ok, "ADD: {}", a.stdout);
    let d = Call::new(&berth_macvlan(), "DEL", &id, Some(&ns.path())).run(&c);
    assert!(d.ok, "DEL: {}", d.stdout);
    assert!(
        !target.exists(),
        "the plugin opened a tenant-chosen log file"
    );
    let log = std::fs::read_to_string(berth_integration::artifacts::scratch().join("cni.log"))
        .unwrap_or_default();
    assert!(
        log.contains(&format!(
            "logFile {} is not inside [cni] allowed_log_dirs",
            target.display()
        )),
        "the refusal is not logged"
    );
}

/// GC collects exactly what is not in `cni.dev/valid-attachments`: the
/// link and its ifb where the netns still exists, and the lease (Debian's
/// host-local predates CNI 1.1 GC: by DEL with the stale container ID)
/// also where the netns is gone. It waits for an ADD in progress, and a
/// second GC finds nothing more to do.
#[test]
fn gc_collects_exactly_the_attachments_not_in_the_valid_list() {
    let master = ParentLink::new();
    let (c, dir) = berth_conf(
        &master.name,
        "10.213.0.0/24",
        "10.213.0.1",
        json!({"bandwidth": {"ingressRate": 100_000_000, "ingressBurst": 1_000_000}}),
    );
    let (keep, lost, deleted) = (Netns::new(), Netns::new(), Netns::new());
    let ids: Vec<String> = (0..3).map(|_| unique()).collect();
    for (ns, id) in [&keep, &lost, &deleted].iter().zip(&ids) {
        let r = Call::new(&berth_macvlan(), "ADD", id, Some(&ns.path())).run(&c);
        assert!(r.ok, "ADD: {}", r.stdout);
    }
    assert_eq!(leases(&dir, &c).len(), 3);
    let links = |ns: &Netns| ns.ip(&["-o", "link", "show"]);
    assert!(links(&lost).contains("ifb"), "{}", links(&lost));
    // The engine lost track of one, and another's netns was deleted behind
    // its back (its link went with it; its lease did not).
    let deleted_path = deleted.path();
    drop(deleted);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": ids[0], "ifname": "eth0"}]);
    // An ADD in progress (holding the network's records shared) holds GC off.
    let lock_path = berth_integration::artifacts::scratch()
        .join("cni-state/berth-macvlan")
        .join(c["name"].as_str().unwrap())
        .join(".lock");
    let lock = std::fs::File::open(&lock_path).expect("the network's record lock");
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) }, 0);
    let call = Call::new(&berth_macvlan(), "GC", "", None);
    let (gc2, call2) = (gc.clone(), call.clone());
    let running = std::thread::spawn(move || call2.run(&gc2));
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        !running.is_finished(),
        "GC ran while an ADD held the records"
    );
    drop(lock);
    let r = running.join().unwrap();
    assert!(r.ok, "GC: {}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.trim().is_empty(),
        "GC prints nothing: {}",
        r.stdout
    );
    // Exactly the two stale ones are gone.
    assert!(links(&keep).contains("eth0"), "{}", links(&keep));
    assert!(links(&keep).contains("ifb"), "{}", links(&keep));
    assert!(!links(&lost).contains("eth0"), "{}", links(&lost));
    assert!(!links(&lost).contains("ifb"), "{}", links(&lost));
    let left = leases(&dir, &c);
    assert_eq!(left.len(), 1, "{left:?}");
    let lease = std::fs::read_to_string(dir.join(c["name"].as_str().unwrap()).join(&left[0]))
        .unwrap_or_default();
    assert!(
        lease.contains(&ids[0]),
        "the kept lease is the valid one: {lease}"
    );
    assert!(!std::path::Path::new(&deleted_path).exists());
    // Idempotent.
    assert!(call.run(&gc).ok);
    assert_eq!(leases(&dir, &c).len(), 1);
    // The valid one still DELs cleanly.
    assert!(
        Call::new(&berth_macvlan(), "DEL", &ids[0], Some(&keep.path()))
            .run(&c)
            .ok
    );
    assert!(leases(&dir, &c).is_empty());
}
