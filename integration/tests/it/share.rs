//! Guaranteed, borrowable, prioritised bandwidth (`bandwidthShare`) on a
//! "physical" link: a veth whose far end sits in a peer netns running the
//! iperf3 servers. The link's 100 Mbit/s is enforced by the tree's root
//! class, so results do not depend on the machine's speed.
//!
//! The tests that measure rates and RTTs form the measured tier: marked
//! `#[ignore]`, so the parallel run skips them, and run by `scripts/test`
//! afterwards with one thread (`--ignored --test-threads 1`), since two
//! cores shared with other tests' traffic distort what they measure.

use berth_integration::cmd::{command, sh, try_run, try_sh};
use berth_integration::cni::{berth_macvlan, berth_ovs_vlan, host_config, Answer, Call};
use berth_integration::names::unique;
use berth_integration::net::{iperf, Netns, Veth};
use berth_integration::ovs::{ovs, OvsBridge};
use serde_json::{json, Value};
use std::path::PathBuf;

const M: u64 = 1_000_000;

/// The shared link: `veth.host` on the host (the macvlan master), its peer
/// `eth0` with `10.<net>.0.1/24` in `peer`.
struct Wire {
    veth: Veth,
    peer: Netns,
    net: u8,
    /// The plugin, and its own keys.
    plugin: PathBuf,
    keys: Value,
    /// OVS: the bridge whose uplink (an access port on VLAN 100) is the veth.
    _bridge: Option<OvsBridge>,
}

/// Which plugin attaches the containers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    Macvlan,
    Ovs,
}

impl Wire {
    fn new(flavor: Flavor, net: u8) -> Wire {
        let mut veth = Veth::new();
        let peer = Netns::new();
        veth.move_peer(&peer, "eth0", Some(&format!("10.{net}.0.1/24")));
        let (plugin, keys, bridge) = match flavor {
            Flavor::Macvlan => (berth_macvlan(), json!({"master": veth.host}), None),
            Flavor::Ovs => {
                let br = OvsBridge::new();
                br.add_access_port(&veth.host, 100);
                let keys = json!({"bridge": br.name, "vlan": 100, "uplink": veth.host,
                    "socket_file": format!("unix:{}", ovs().db_socket.display())});
                (berth_ovs_vlan(), keys, Some(br))
            }
        };
        Wire {
            veth,
            peer,
            net,
            plugin,
            keys,
            _bridge: bridge,
        }
    }

    fn call(&self, verb: &str, id: &str, ns: Option<&str>) -> Call {
        Call::new(&self.plugin, verb, id, ns)
    }

    fn server(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    /// A network on this link sharing 100 Mbit/s each way, 5 kept for the host.
    fn conf(&self, extra: Value) -> Value {
        let mut share = json!({"linkRate": 100 * M, "hostShare": 5 * M});
        if let (Some(o), Value::Object(e)) = (share.as_object_mut(), extra) {
            o.extend(e);
        }
        let mut c = json!({"cniVersion": "1.0.0", "name": unique(), "bandwidthShare": share});
        c["type"] = json!(self.plugin.file_name().unwrap().to_string_lossy());
        for (k, v) in self.keys.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// `tc` output for the link and its ifb.
    fn tc(&self, what: &str) -> String {
        let mut out = sh("tc", [what, "show", "dev", &self.veth.host]);
        let ifb = ifb_of(&self.veth.host);
        if link_exists(&ifb) {
            out += &sh("tc", [what, "show", "dev", &ifb]);
        }
        out
    }

    /// The attachment classes (`be00:10` and up) on the link and the ifb.
    fn classes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tc("class")
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .filter(|h| h.starts_with("be00:") && h.len() > 6)
            .collect();
        v.sort();
        v
    }

    /// True when nothing of the share is left on the link.
    fn bare(&self) -> Result<(), String> {
        let q = sh("tc", ["qdisc", "show", "dev", &self.veth.host]);
        let q = if self._bridge.is_some() {
            q.replace("qdisc ingress ffff: parent ffff:fff1 ----------------", "")
        } else {
            q
        };
        let f = sh("tc", ["filter", "show", "dev", &self.veth.host, "ingress"]);
        if q.contains("htb") || q.contains("ingress") || !f.trim().is_empty() {
            return Err(format!("left on the link: {q}{f}"));
        }
        if link_exists(&ifb_of(&self.veth.host)) {
            return Err("the ifb is left".into());
        }
        Ok(())
    }
}

fn link_exists(name: &str) -> bool {
    try_sh("ip", ["link", "show", name]).ok()
}

/// The ifb name Berth derives from the link's (FNV-1a, as the library).
fn ifb_of(link: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in link.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("bsi{h:08x}")
}

/// A container on the wire: its netns, id and address.
struct Ctr {
    ns: Netns,
    id: String,
    ip: String,
}

fn add(w: &Wire, c: &Value, host: u8, args: &str) -> (Ctr, Answer) {
    let ns = Netns::new();
    let id = unique();
    let ip = format!("10.{}.0.{host}", w.net);
    let mut c = c.clone();
    c["runtimeConfig"]["ips"] = json!([format!("{ip}/24")]);
    let a = w.call("ADD", &id, Some(&ns.path())).args(args).run(&c);
    (Ctr { ns, id, ip }, a)
}

fn del(w: &Wire, c: &Value, ctr: &Ctr) -> Answer {
    w.call("DEL", &ctr.id, Some(&ctr.ns.path())).run(c)
}

/// Both flows at once (`reverse`: from the peer to the containers), bits/s.
fn together(w: &Wire, a: &Ctr, b: &Ctr, reverse: bool) -> (f64, f64) {
    std::thread::scope(|s| {
        let ta = s.spawn(|| iperf(&w.peer, &a.ns, &w.server(), reverse, 6));
        let tb = s.spawn(|| iperf(&w.peer, &b.ns, &w.server(), reverse, 6));
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

/// RTTs (ms) of `n` pings from `from` to the peer.
fn rtts(w: &Wire, from: &Ctr, n: u32) -> Vec<f64> {
    let r = from.ns.exec(
        "busybox",
        &["ping", "-c", &n.to_string(), "-i", "0.05", &w.server()],
    );
    let mut v: Vec<f64> = r
        .stdout
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    assert!(v.len() as u32 >= n * 9 / 10, "pings lost: {}", r.stdout);
    v
}

fn p99(v: &[f64]) -> f64 {
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn mbit(b: f64) -> f64 {
    b / 1e6
}

/// Guarantee, borrowing and admission, both ways, on one link; and CHECK.
fn guarantees_borrowing_and_admission(flavor: Flavor, net: u8) {
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({}));
    let (a, ra) = add(
        &w,
        &c,
        2,
        "BERTH_EGRESS_GUARANTEE=30000000;BERTH_INGRESS_GUARANTEE=30000000",
    );
    let prev = ra.result().clone();
    let mut cb = c.clone();
    cb["runtimeConfig"] =
        json!({"bandwidth": {"berthEgressGuarantee": 60 * M, "berthIngressGuarantee": 60 * M}});
    let (b, r) = add(&w, &cb, 3, "");
    r.result();
    assert_eq!(w.classes().len(), 4, "{}", w.tc("class"));
    let mut rows = Vec::new();
    for reverse in [false, true] {
        let dir = if reverse { "ingress" } else { "egress" };
        let (ra, rb) = together(&w, &a, &b, reverse);
        rows.push(format!(
            "{dir} guarantee: A {:.1} (30), B {:.1} (60), link {:.1}",
            mbit(ra),
            mbit(rb),
            mbit(ra + rb)
        ));
        assert!(
            ra >= 0.9 * 30e6,
            "{dir}: A got {:.1} Mbit/s of 30 guaranteed",
            mbit(ra)
        );
        assert!(
            rb >= 0.9 * 60e6,
            "{dir}: B got {:.1} Mbit/s of 60 guaranteed",
            mbit(rb)
        );
        assert!(
            ra + rb >= 0.9 * 100e6,
            "{dir}: the link carried {:.1} Mbit/s",
            mbit(ra + rb)
        );
        // B idle: A borrows up to its ceiling (the link).
        let alone = iperf(&w.peer, &a.ns, &w.server(), reverse, 5);
        rows.push(format!(
            "{dir} borrow: A alone {:.1} (ceiling 100)",
            mbit(alone)
        ));
        assert!(
            alone >= 0.85 * 100e6,
            "{dir}: A alone got {:.1} Mbit/s",
            mbit(alone)
        );
    }
    // Admission: 30 + 60 + 5 for the host leave 5.
    let (x, r) = add(&w, &c, 4, "BERTH_EGRESS_GUARANTEE=10000000");
    assert_eq!(r.code(), Some(110), "{}", r.stdout);
    for needle in [
        &w.veth.host as &str,
        "egress",
        "asked 10000000",
        "90000000 bit/s already guaranteed to 2",
        "5000000 bit/s left",
    ] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }
    assert_eq!(
        x.ns.ip(&["-br", "link"]).lines().count(),
        1,
        "a refused ADD leaves no link"
    );
    // CHECK verifies the class, and finds it changed behind its back.
    let mut chk = c.clone();
    chk["runtimeConfig"]["ips"] = json!([format!("{}/24", a.ip)]);
    chk["prevResult"] = prev;
    let args = "BERTH_EGRESS_GUARANTEE=30000000;BERTH_INGRESS_GUARANTEE=30000000";
    let ok = w
        .call("CHECK", &a.id, Some(&a.ns.path()))
        .args(args)
        .run(&chk);
    assert!(ok.ok, "CHECK: {}", ok.stdout);
    let other = w
        .call("CHECK", &a.id, Some(&a.ns.path()))
        .args("BERTH_EGRESS_GUARANTEE=20000000")
        .run(&chk);
    assert_eq!(other.code(), Some(101), "{}", other.stdout);
    let minor = w.classes()[0].clone();
    sh(
        "tc",
        [
            "class",
            "change",
            "dev",
            &w.veth.host,
            "parent",
            "be00:1",
            "classid",
            &minor,
            "htb",
            "rate",
            "1mbit",
            "ceil",
            "100mbit",
        ],
    );
    let bad = w
        .call("CHECK", &a.id, Some(&a.ns.path()))
        .args(args)
        .run(&chk);
    assert_eq!(bad.code(), Some(101), "{}", bad.stdout);
    // DEL frees the guarantee: the refused ADD now succeeds.
    assert!(del(&w, &cb, &b).ok);
    let (y, r) = add(&w, &c, 5, "BERTH_EGRESS_GUARANTEE=10000000");
    r.result();
    for ctr in [&a, &y] {
        assert!(del(&w, &c, ctr).ok);
    }
    w.bare().unwrap();
    eprintln!("share results (Mbit/s):\n  {}", rows.join("\n  "));
}

/// Priority: both borrow, the higher takes the spare first and its pings
/// do not wait behind the lower one's queue.
fn priority_decides_who_borrows_and_who_waits(flavor: Flavor, net: u8) {
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({}));
    let (a, r) = add(
        &w,
        &c,
        2,
        "BERTH_EGRESS_GUARANTEE=10000000;BERTH_INGRESS_GUARANTEE=10000000;BERTH_PRIORITY=1",
    );
    r.result();
    let (lo, r) = add(
        &w,
        &c,
        3,
        "BERTH_EGRESS_GUARANTEE=10000000;BERTH_INGRESS_GUARANTEE=10000000;BERTH_PRIORITY=6",
    );
    r.result();
    let mut rows = Vec::new();
    for reverse in [false, true] {
        let dir = if reverse { "ingress" } else { "egress" };
        let (ra, rc) = together(&w, &a, &lo, reverse);
        // The spare is what is left after the guarantees and the host's share.
        let spare = 100e6 - 20e6 - 5e6;
        rows.push(format!(
            "{dir} priority: A (1) {:.1}, C (6) {:.1}; A's part of the spare {:.0} %",
            mbit(ra),
            mbit(rc),
            100.0 * (ra - 10e6) / spare
        ));
        assert!(
            ra - 10e6 >= 0.75 * spare && rc < ra / 3.0,
            "{dir}: A (priority 1) got {:.1}, C (priority 6) {:.1} Mbit/s",
            mbit(ra),
            mbit(rc)
        );
        let idle = rtts(&w, &a, 60);
        let busy = std::thread::scope(|s| {
            let flood = s.spawn(|| iperf(&w.peer, &lo.ns, &w.server(), reverse, 6));
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let v = rtts(&w, &a, 60);
            flood.join().unwrap();
            v
        });
        rows.push(format!(
            "{dir} latency: A's p99 RTT idle {:.3} ms, under C's flood {:.3} ms",
            p99(&idle),
            p99(&busy)
        ));
        assert!(
            p99(&busy) <= p99(&idle) + 2.0,
            "{dir}: A's p99 RTT {:.3} ms under C's flood, {:.3} idle",
            p99(&busy),
            p99(&idle)
        );
    }
    for ctr in [&a, &lo] {
        assert!(del(&w, &c, ctr).ok);
    }
    w.bare().unwrap();
    eprintln!("share results (Mbit/s):\n  {}", rows.join("\n  "));
}

fn share_cli(args: &[&str]) -> berth_integration::cmd::Ran {
    try_run(
        command(berth_integration::artifacts::binary("berth-cni-share"))
            .env("BERTH_CNI_CONFIG", host_config())
            .args(args),
    )
}

fn ifindex(ctr: &Ctr) -> u64 {
    let l: Value = serde_json::from_str(&ctr.ns.ip(&["-j", "link", "show", "eth0"])).unwrap();
    l[0]["ifindex"].as_u64().unwrap()
}

/// `berth-cni-share set` changes a running attachment's guarantee and
/// priority without touching its link, within admission; traffic follows.
fn values_change_in_place(flavor: Flavor, net: u8) {
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({"guarantee": 30 * M}));
    let (a, ra) = add(&w, &c, 2, "");
    let prev = ra.result().clone();
    let (b, r) = add(&w, &c, 3, "");
    r.result();
    let before = ifindex(&a);
    let link = w.veth.host.clone();
    let set = share_cli(&[
        "set",
        &link,
        "--container",
        &a.id,
        "--egress-guarantee",
        "60000000",
        "--priority",
        "1",
    ]);
    assert!(set.ok(), "{}", set.stderr);
    let classes = w.tc("class");
    assert!(
        classes.lines().any(|l| l.contains("prio 1 rate 60Mbit")),
        "{classes}"
    );
    assert_eq!(ifindex(&a), before, "the link was recreated");
    let list = share_cli(&["list", &link]);
    assert!(list.ok(), "{}", list.stderr);
    assert!(
        list.stdout.lines().any(|l| l.starts_with(&a.id)
            && l.contains("60000000/100000000")
            && l.ends_with("1 (set)")),
        "{}",
        list.stdout
    );
    // The new guarantee holds under contention.
    let (ga, gb) = together(&w, &a, &b, false);
    assert!(
        ga >= 0.9 * 60e6,
        "A got {:.1} Mbit/s of 60 guaranteed (B {:.1})",
        mbit(ga),
        mbit(gb)
    );
    // Beyond what is left: refused, nothing changed.
    let over = share_cli(&[
        "set",
        &link,
        "--container",
        &a.id,
        "--egress-guarantee",
        "66000000",
    ]);
    assert!(
        !over.ok() && over.stderr.contains("refused"),
        "{}",
        over.stderr
    );
    assert!(w.tc("class").contains("rate 60Mbit"), "{}", w.tc("class"));
    let none = share_cli(&["set", &link, "--container", "nosuch", "--priority", "2"]);
    assert!(
        !none.ok() && none.stderr.contains("no grant"),
        "{}",
        none.stderr
    );
    // CHECK keeps passing with the configuration the ADD had.
    let mut chk = c.clone();
    chk["runtimeConfig"]["ips"] = json!([format!("{}/24", a.ip)]);
    chk["prevResult"] = prev;
    let ok = w.call("CHECK", &a.id, Some(&a.ns.path())).run(&chk);
    assert!(ok.ok, "CHECK: {}", ok.stdout);
    for ctr in [&a, &b] {
        assert!(del(&w, &c, ctr).ok);
    }
    w.bare().unwrap();
    eprintln!(
        "share set: A {:.1} Mbit/s with 60 guaranteed, B {:.1}",
        mbit(ga),
        mbit(gb)
    );
}

/// 20 ADDs at once asking 10 each of the 95 the host leaves: exactly 9 win.
fn parallel_adds_admit_exactly_what_fits(flavor: Flavor, net: u8) {
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({}));
    let answers: Vec<(Ctr, Answer)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20u8)
            .map(|i| {
                let (w, c) = (&w, &c);
                s.spawn(move || add(w, c, 10 + i, "BERTH_EGRESS_GUARANTEE=10000000"))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&(Ctr, Answer)> = answers.iter().filter(|(_, a)| a.ok).collect();
    let refused = answers
        .iter()
        .filter(|(_, a)| a.code() == Some(110))
        .count();
    assert_eq!(
        (won.len(), refused),
        (9, 11),
        "{:?}",
        answers.iter().map(|(_, a)| &a.stdout).collect::<Vec<_>>()
    );
    assert_eq!(w.classes().len(), 18, "{}", w.tc("class"));
    let filters = w.tc("filter").matches("flowid be00:").count();
    assert_eq!(filters, 18, "{}", w.tc("filter"));
    for (ctr, a) in &answers {
        let d = del(&w, &c, ctr);
        assert!(d.ok, "{} / {}", a.stdout, d.stdout);
    }
    w.bare().unwrap();
}

/// kill -9 at random points of ADD and DEL, then GC: the kernel holds
/// exactly the live attachments' classes.
fn kill9_anywhere_then_gc_leaves_exactly_the_live_shares(flavor: Flavor, net: u8) {
    use std::process::{Command, Stdio};
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({}));
    let mut live: Vec<Ctr> = Vec::new();
    let mut gone: Vec<Ctr> = Vec::new();
    let plugin = w.plugin.clone();
    let spawn = |verb: &str, ctr: &Ctr, conf: &Value| {
        let mut ch = Command::new(&plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &ctr.id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", ctr.ns.path())
            .env("CNI_PATH", "/nonexistent")
            .env(
                "CNI_ARGS",
                "BERTH_EGRESS_GUARANTEE=5000000;BERTH_INGRESS_GUARANTEE=5000000",
            )
            .env("BERTH_CNI_CONFIG", host_config())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut conf = conf.clone();
        conf["runtimeConfig"]["ips"] = json!([format!("{}/24", ctr.ip)]);
        let _ = ch
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes());
        ch
    };
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for i in 0..16u8 {
        let ctr = Ctr {
            ns: Netns::new(),
            id: unique(),
            ip: format!("10.{}.0.{}", w.net, 10 + i),
        };
        let mut ch = spawn("ADD", &ctr, &c);
        std::thread::sleep(std::time::Duration::from_micros(rnd(30_000)));
        let _ = ch.kill();
        let st = ch.wait().unwrap();
        if st.success() && rnd(2) == 0 {
            live.push(ctr);
            continue;
        }
        // Its ADD was killed (or it is being taken down): DEL, killed too.
        let mut ch = spawn("DEL", &ctr, &c);
        std::thread::sleep(std::time::Duration::from_micros(rnd(20_000)));
        let _ = ch.kill();
        let _ = ch.wait();
        gone.push(ctr);
    }
    let mut gc = c.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!(live
        .iter()
        .map(|l| json!({"containerID": l.id, "ifname": "eth0"}))
        .collect::<Vec<_>>());
    // Before GC the kernel may hold more than the live shares (killed ADDs).
    let before = w.classes().len();
    let r = w.call("GC", "", None).run(&gc);
    assert!(r.ok, "GC: {}", r.stdout);
    eprintln!(
        "kill -9: {} live, {} killed or deleted; {before} classes before GC",
        live.len(),
        gone.len()
    );
    // Each live attachment has its classes and filters; nothing else does.
    assert_eq!(
        w.classes().len(),
        2 * live.len(),
        "{} live\n{}",
        live.len(),
        w.tc("class")
    );
    assert_eq!(
        w.tc("filter").matches("flowid be00:").count(),
        2 * live.len(),
        "{}",
        w.tc("filter")
    );
    for g in &gone {
        assert_eq!(
            g.ns.ip(&["-br", "link"]).lines().count(),
            1,
            "GC left {}'s link: {}",
            g.id,
            g.ns.ip(&["-d", "link"])
        );
    }
    if let Some(br) = &w._bridge {
        // OVSDB holds the live ports and the uplink, nothing else.
        let ports = ovs().vsctl(&["list-ports", &br.name]);
        assert_eq!(ports.lines().count(), live.len() + 1, "{ports}");
    }
    for l in &live {
        assert!(del(&w, &c, l).ok);
    }
    w.bare().unwrap();
}

/// ADD/DEL cycles leave no class, filter, qdisc or ifb behind.
fn add_del_cycles_leave_nothing_behind(flavor: Flavor, net: u8, cycles: u32) {
    let w = Wire::new(flavor, net);
    let c = w.conf(json!({}));
    let ns = Netns::new();
    let mut cc = c.clone();
    cc["runtimeConfig"]["ips"] = json!([format!("10.{net}.0.9/24")]);
    for i in 0..cycles {
        let id = format!("{}-{i}", unique());
        let call = |verb: &str| {
            w.call(verb, &id, Some(&ns.path()))
                .args("BERTH_EGRESS_GUARANTEE=50000000;BERTH_PRIORITY=2")
                .run(&cc)
        };
        let a = call("ADD");
        assert!(a.ok, "cycle {i}: ADD {}", a.stdout);
        let d = call("DEL");
        assert!(d.ok, "cycle {i}: DEL {}", d.stdout);
    }
    w.bare().unwrap();
    let books: Vec<PathBuf> = std::fs::read_dir(
        berth_integration::artifacts::scratch()
            .join("cni-state")
            .join("share"),
    )
    .map(|d| d.flatten().map(|e| e.path()).collect())
    .unwrap_or_default();
    assert!(
        !books
            .iter()
            .any(|p| p.to_string_lossy().contains(&w.veth.host)
                && p.extension().is_some_and(|x| x == "json")),
        "a book is left: {books:?}"
    );
    assert_eq!(ns.ip(&["-br", "link"]).lines().count(), 1);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_guarantees_borrowing_and_admission_macvlan() {
    guarantees_borrowing_and_admission(Flavor::Macvlan, 61);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_guarantees_borrowing_and_admission_ovs() {
    guarantees_borrowing_and_admission(Flavor::Ovs, 71);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_priority_decides_who_borrows_and_who_waits_macvlan() {
    priority_decides_who_borrows_and_who_waits(Flavor::Macvlan, 62);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_priority_decides_who_borrows_and_who_waits_ovs() {
    priority_decides_who_borrows_and_who_waits(Flavor::Ovs, 72);
}

#[test]
fn share_parallel_adds_admit_exactly_what_fits_macvlan() {
    parallel_adds_admit_exactly_what_fits(Flavor::Macvlan, 63);
}

#[test]
fn share_parallel_adds_admit_exactly_what_fits_ovs() {
    parallel_adds_admit_exactly_what_fits(Flavor::Ovs, 73);
}

#[test]
fn share_kill9_anywhere_then_gc_leaves_exactly_the_live_shares_macvlan() {
    kill9_anywhere_then_gc_leaves_exactly_the_live_shares(Flavor::Macvlan, 64);
}

#[test]
fn share_kill9_anywhere_then_gc_leaves_exactly_the_live_shares_ovs() {
    kill9_anywhere_then_gc_leaves_exactly_the_live_shares(Flavor::Ovs, 74);
}

#[test]
fn share_add_del_cycles_leave_nothing_behind_macvlan() {
    add_del_cycles_leave_nothing_behind(Flavor::Macvlan, 65, 500);
}

#[test]
fn share_add_del_cycles_leave_nothing_behind_ovs() {
    add_del_cycles_leave_nothing_behind(Flavor::Ovs, 75, 500);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_values_change_in_place_macvlan() {
    values_change_in_place(Flavor::Macvlan, 66);
}

#[test]
#[ignore = "measured tier: scripts/test runs it after the rest, one at a time"]
fn share_values_change_in_place_ovs() {
    values_change_in_place(Flavor::Ovs, 76);
}
