//! The share model against a fake kernel.

use super::*;
use crate::types::parse_conf;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

/// What the fake kernel holds, shared with the test.
#[derive(Default)]
struct Kernel {
    root: Option<(Dir<u64>, Dir<u64>)>,
    held: BTreeMap<u16, Held>,
    feeds: BTreeSet<String>,
    /// (container, ifname) whose interfaces exist.
    alive: BTreeSet<(String, String)>,
    dismantled: usize,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Kernel>>);

impl Tree for Fake {
    fn ensure_root(&mut self, link: Dir<u64>, host: Dir<u64>) -> Result<(), ShareError> {
        self.0.borrow_mut().root = Some((link, host));
        Ok(())
    }
    fn root(&mut self) -> Result<Option<Dir<u64>>, ShareError> {
        Ok(self.0.borrow().root.map(|r| r.0))
    }
    fn held(&mut self) -> Result<BTreeMap<u16, Held>, ShareError> {
        Ok(self.0.borrow().held.clone())
    }
    fn apply(&mut self, e: &Entry) -> Result<(), ShareError> {
        let mut k = self.0.borrow_mut();
        assert!(k.root.is_some(), "a class applied before its tree");
        let s = e.specs();
        k.held.insert(
            e.minor,
            Held {
                egress: Some(s.egress),
                ingress: Some(s.ingress),
                filters: true,
            },
        );
        if let Some(p) = &e.port {
            k.feeds.insert(p.clone());
        }
        Ok(())
    }
    fn remove(&mut self, minor: u16, port: Option<&str>) -> Result<(), ShareError> {
        let mut k = self.0.borrow_mut();
        k.held.remove(&minor);
        if let Some(p) = port {
            k.feeds.remove(p);
        }
        Ok(())
    }
    fn dismantle(&mut self) -> Result<(), ShareError> {
        let mut k = self.0.borrow_mut();
        k.root = None;
        k.held.clear();
        k.dismantled += 1;
        Ok(())
    }
    fn leftover(&mut self) -> Result<bool, ShareError> {
        let k = self.0.borrow();
        Ok(k.root.is_some() || !k.held.is_empty())
    }
    fn alive(&mut self, e: &Entry) -> bool {
        self.0
            .borrow()
            .alive
            .contains(&(e.container_id.clone(), e.ifname.clone()))
    }
}

fn env(args: &str) -> Env {
    Env::from_fn(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("c".into()),
        "CNI_NETNS" => Some("/run/netns/x".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        "CNI_ARGS" => Some(args.into()),
        _ => None,
    })
    .unwrap()
}

fn conf(v: Value) -> NetConf {
    parse_conf(v.to_string().as_bytes()).unwrap()
}

fn net(share: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-macvlan", "bandwidthShare": share})
}

const M: u64 = 1_000_000;

fn resolved(g: u64, prio: u8) -> Resolved {
    let c = ShareConf::parse(
        &conf(net(
            json!({"linkRate": 100 * M, "guarantee": g * M, "priority": prio}),
        )),
        &env(""),
    )
    .unwrap()
    .unwrap();
    c.resolve("phy", None).unwrap()
}

fn entry(id: &str) -> Entry {
    Entry {
        plugin: "berth-macvlan".into(),
        network: "n".into(),
        container_id: id.into(),
        ifname: "eth0".into(),
        netns: "/run/netns/x".into(),
        netns_inode: None,
        mac: [2, 0, 0, 0, 0, id.len() as u8],
        port: None,
        minor: 0,
        egress: Class {
            guarantee: 0,
            ceiling: 0,
        },
        ingress: Class {
            guarantee: 0,
            ceiling: 0,
        },
        priority: 0,
        pinned: false,
    }
}

/// A fake kernel where the interfaces of `ids` (all `eth0`) exist.
fn with_alive(ids: &[&str]) -> Fake {
    let k = Fake::default();
    for id in ids {
        k.0.borrow_mut()
            .alive
            .insert((id.to_string(), "eth0".into()));
    }
    k
}

/// The container IDs of the grants, in order.
fn ids(s: &Share<Fake>) -> Vec<String> {
    s.entries().iter().map(|e| e.container_id.clone()).collect()
}

fn open(dir: &Path, k: &Fake) -> Share<Fake> {
    Share::open(dir, "phy", k.clone()).unwrap()
}

#[test]
fn keys_take_precedence_conf_then_args_then_runtime_config() {
    let mut c = net(
        json!({"linkRate": {"egress": 100 * M, "ingress": 50 * M}, "guarantee": 10 * M, "priority": 5}),
    );
    let s = ShareConf::parse(&conf(c.clone()), &env(""))
        .unwrap()
        .unwrap();
    assert_eq!(s.guarantee.egress.value, 10 * M);
    assert_eq!(s.priority.value, 5);
    let s = ShareConf::parse(
        &conf(c.clone()),
        &env("BERTH_EGRESS_GUARANTEE=20000000;BERTH_PRIORITY=2"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (s.guarantee.egress.value, s.guarantee.ingress.value),
        (20 * M, 10 * M)
    );
    assert_eq!(s.priority.key, "CNI_ARGS BERTH_PRIORITY");
    c["runtimeConfig"] = json!({"bandwidth": {"berthEgressGuarantee": 30 * M, "berthPriority": 1, "ingressRate": 8 * M}});
    let s = ShareConf::parse(&conf(c), &env("BERTH_EGRESS_GUARANTEE=20000000"))
        .unwrap()
        .unwrap();
    assert_eq!(s.guarantee.egress.value, 30 * M);
    assert_eq!(s.priority.value, 1);
    let r = s.resolve("phy", None).unwrap();
    assert_eq!(
        r.link_rate,
        Dir {
            egress: 100 * M,
            ingress: 50 * M
        }
    );
    assert_eq!(
        r.host_share,
        Dir {
            egress: 5 * M,
            ingress: 2_500_000
        }
    );
    assert_eq!(r.egress.ceiling, 100 * M);
    assert_eq!(r.ingress.ceiling, 50 * M);
}

#[test]
fn bad_requests_name_their_key() {
    let bad = |share: Value, args: &str, rt: Option<Value>, needle: &str| {
        let mut c = net(share);
        if let Some(rt) = rt {
            c["runtimeConfig"] = json!({ "bandwidth": rt });
        }
        let e = ShareConf::parse(&conf(c), &env(args))
            .and_then(|s| s.unwrap().resolve("veth0", None))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidConfig, "{e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    };
    bad(
        json!({"guarantee": M}),
        "",
        None,
        "bandwidthShare.linkRate.egress is required: the speed of \"veth0\" is unknown",
    );
    bad(
        json!({"linkRate": 100 * M, "speed": 1}),
        "",
        None,
        "bandwidthShare.speed: unknown field `speed`",
    );
    bad(
        json!({"linkRate": {"egress": M, "up": 2}}),
        "",
        None,
        "bandwidthShare.linkRate",
    );
    bad(
        json!({"linkRate": 100 * M, "priority": 9}),
        "",
        None,
        "bandwidthShare.priority",
    );
    bad(
        json!({"linkRate": 100 * M, "topPriority": 3}),
        "BERTH_PRIORITY=1",
        None,
        "CNI_ARGS BERTH_PRIORITY 1 is a higher priority than this network allows",
    );
    bad(
        json!({"linkRate": 100 * M, "topPriority": 3}),
        "",
        Some(json!({"berthPriority": 0})),
        "runtimeConfig.bandwidth.berthPriority",
    );
    bad(
        json!({"linkRate": 100 * M}),
        "BERTH_EGRESS_GUARANTEE=lots",
        None,
        "CNI_ARGS BERTH_EGRESS_GUARANTEE",
    );
    bad(
        json!({"linkRate": 100 * M}),
        "",
        Some(json!({"berthEgressCeiling": 200 * M})),
        "berthEgressCeiling 200000000 bit/s is more than the link's 100000000",
    );
    bad(
        json!({"linkRate": 100 * M, "ceiling": 10 * M}),
        "",
        Some(json!({"berthIngressGuarantee": 20 * M})),
        "berthIngressGuarantee 20000000 bit/s is over the ceiling of 10000000",
    );
    bad(
        json!({"linkRate": 100 * M, "hostShare": 200 * M}),
        "",
        None,
        "bandwidthShare.hostShare.egress",
    );
    // Asking for a share where the network has none.
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeConfig": {"bandwidth": {"berthEgressGuarantee": 1}}});
    let e = ShareConf::parse(&conf(c), &env("")).unwrap_err();
    assert!(e.to_string().contains("no bandwidthShare"), "{e}");
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t"});
    assert!(ShareConf::parse(&conf(c.clone()), &env("BERTH_PRIORITY=1")).is_err());
    assert_eq!(ShareConf::parse(&conf(c), &env("")).unwrap(), None);
    // A link that reports its speed needs no linkRate.
    let s = ShareConf::parse(&conf(net(json!({}))), &env(""))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.resolve("eth1", Some(10_000 * M))
            .unwrap()
            .link_rate
            .egress,
        10_000 * M
    );
}

#[test]
fn admission_counts_guarantees_and_names_what_is_left() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&["a", "bb", "ccc"]);
    let mut s = open(d.path(), &k);
    let a = s.admit(entry("a"), &resolved(30, 4)).unwrap();
    let b = s.admit(entry("bb"), &resolved(60, 4)).unwrap();
    assert_ne!(a.minor, b.minor);
    assert!(a.minor >= FIRST_MINOR);
    let e = s.admit(entry("ccc"), &resolved(10, 4)).unwrap_err();
    assert_eq!(e.code(), Code::Plugin(110));
    let msg = e.to_string();
    for needle in [
        "phy egress",
        "asked 10000000",
        "90000000 bit/s already guaranteed to 2",
        "5000000 kept for the host",
        "5000000 bit/s left",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    assert!(!k.0.borrow().held.contains_key(&(b.minor + 1)));
    // Changing one's own guarantee counts only the others.
    let a2 = s.admit(entry("a"), &resolved(35, 2)).unwrap();
    assert_eq!(a2.minor, a.minor);
    assert_eq!(k.0.borrow().held[&a.minor].egress.unwrap().prio, 2);
    assert!(s.admit(entry("a"), &resolved(36, 2)).is_err());
    drop(s);
    // The book survives the process; DEL frees the guarantee.
    let mut s = open(d.path(), &k);
    assert_eq!(s.entries().len(), 2);
    s.release("berth-macvlan", "n", "bb", "eth0").unwrap();
    s.admit(entry("ccc"), &resolved(60, 4)).unwrap();
    s.release("berth-macvlan", "n", "ccc", "eth0").unwrap();
    s.release("berth-macvlan", "n", "a", "eth0").unwrap();
    // The last release takes the trees down and the book with them.
    assert_eq!(k.0.borrow().dismantled, 1);
    assert!(k.0.borrow().held.is_empty());
    assert!(k.0.borrow().root.is_none());
    assert!(!books_dir(d.path()).join("phy.json").exists());
}

#[test]
fn reconcile_repairs_what_a_crash_or_the_kernel_left() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&["a", "bb"]);
    let mut s = open(d.path(), &k);
    let a = s.admit(entry("a"), &resolved(30, 4)).unwrap();
    let b = s.admit(entry("bb"), &resolved(30, 4)).unwrap();
    drop(s);
    // Killed after applying, before committing: a class nobody owns.
    k.0.borrow_mut().held.insert(0x77, Held::default());
    // The kernel lost a's class (the link was recreated, or someone ran tc).
    k.0.borrow_mut().held.remove(&a.minor);
    // b's interface is gone and the kernel lost its class too.
    k.0.borrow_mut().held.remove(&b.minor);
    k.0.borrow_mut()
        .alive
        .remove(&("bb".to_string(), "eth0".to_string()));
    let mut s = open(d.path(), &k);
    s.admit(entry("ccc"), &resolved(10, 4)).unwrap();
    let held = k.0.borrow().held.clone();
    assert!(!held.contains_key(&0x77), "{held:?}");
    assert!(held.contains_key(&a.minor), "a live entry is restored");
    assert_eq!(ids(&s), ["a", "ccc"]);
}

#[test]
fn a_tree_no_book_records_is_removed_by_the_next_del_or_gc() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&[]);
    // An ADD killed after building the tree and a class, before its first
    // commit: the kernel holds a tree, the book holds nothing.
    let mut e = entry("a");
    e.minor = FIRST_MINOR;
    k.clone()
        .ensure_root(
            Dir {
                egress: 100,
                ingress: 100,
            },
            Dir {
                egress: 5,
                ingress: 5,
            },
        )
        .unwrap();
    k.clone().apply(&e).unwrap();
    let mut s = open(d.path(), &k);
    s.gc("berth-macvlan", "n", &[]).unwrap();
    assert_eq!(k.0.borrow().dismantled, 1);
    assert!(!k.clone().leftover().unwrap());
    // With nothing there, nothing is dismantled.
    s.release("berth-macvlan", "n", "a", "eth0").unwrap();
    assert_eq!(k.0.borrow().dismantled, 1);
}

#[test]
fn a_lost_del_does_not_hold_a_guarantee_forever() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&["a"]);
    let mut s = open(d.path(), &k);
    s.admit(entry("a"), &resolved(50, 4)).unwrap();
    s.admit(entry("dead"), &resolved(40, 4)).unwrap();
    // "dead" never got a DEL; its interface is gone. A request that fits
    // only without it is admitted, and the dead grant is freed.
    s.admit(entry("ccc"), &resolved(40, 4)).unwrap();
    assert_eq!(ids(&s), ["a", "ccc"]);
}

#[test]
fn gc_frees_what_is_not_valid_and_keeps_other_networks() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&["a", "bb", "ccc"]);
    let mut s = open(d.path(), &k);
    s.admit(entry("a"), &resolved(10, 4)).unwrap();
    s.admit(entry("bb"), &resolved(10, 4)).unwrap();
    let mut other = entry("ccc");
    other.network = "m".into();
    other.port = Some("p0".into());
    s.admit(other, &resolved(10, 4)).unwrap();
    let valid = [("a".to_string(), "eth0".to_string())];
    s.gc("berth-macvlan", "n", &valid).unwrap();
    assert_eq!(ids(&s), ["a", "ccc"]);
    assert_eq!(k.0.borrow().held.len(), 2);
    assert!(k.0.borrow().feeds.contains("p0"));
    s.gc("berth-macvlan", "m", &[]).unwrap();
    assert!(k.0.borrow().feeds.is_empty());
    assert_eq!(k.0.borrow().dismantled, 0);
    s.gc("berth-macvlan", "n", &[]).unwrap();
    assert_eq!(k.0.borrow().dismantled, 1);
}

#[test]
fn check_compares_the_grant_and_the_kernel() {
    let d = tempfile::tempdir().unwrap();
    let k = Fake::default();
    let mut s = open(d.path(), &k);
    let a = s.admit(entry("a"), &resolved(30, 4)).unwrap();
    s.verify(&entry("a"), &resolved(30, 4)).unwrap();
    let e = s.verify(&entry("a"), &resolved(20, 4)).unwrap_err();
    assert_eq!(e.code(), Code::Plugin(101));
    k.0.borrow_mut().held.get_mut(&a.minor).unwrap().filters = false;
    assert!(s.verify(&entry("a"), &resolved(30, 4)).is_err());
    assert!(s.verify(&entry("zz"), &resolved(30, 4)).is_err());
}

#[test]
fn set_changes_a_grant_in_place_within_admission() {
    let d = tempfile::tempdir().unwrap();
    let k = with_alive(&["a", "bb"]);
    let mut s = open(d.path(), &k);
    let a = s.admit(entry("a"), &resolved(30, 4)).unwrap();
    s.admit(entry("bb"), &resolved(30, 4)).unwrap();
    let ch = Change {
        egress_guarantee: Some(60 * M),
        priority: Some(1),
        ..Change::default()
    };
    let a2 = s.set("a", "eth0", None, &ch).unwrap();
    assert_eq!(
        (
            a2.minor,
            a2.egress.guarantee,
            a2.ingress.guarantee,
            a2.priority
        ),
        (a.minor, 60 * M, 30 * M, 1)
    );
    assert!(a2.pinned);
    let held = k.0.borrow().held[&a.minor];
    assert_eq!(
        (held.egress.unwrap().rate, held.egress.unwrap().prio),
        (60 * M / 8, 1)
    );
    // CHECK no longer holds the admin's change against the configuration.
    s.verify(&entry("a"), &resolved(30, 4)).unwrap();
    // Admission still holds: 66 + 30 + 5 > 100.
    let over = Change {
        egress_guarantee: Some(66 * M),
        ..Change::default()
    };
    assert_eq!(
        s.set("a", "eth0", None, &over).unwrap_err().code(),
        Code::Plugin(110)
    );
    for (bad, needle) in [
        (
            Change {
                egress_ceiling: Some(200 * M),
                ..Change::default()
            },
            "egress ceiling",
        ),
        (
            Change {
                ingress_ceiling: Some(10 * M),
                ..Change::default()
            },
            "ingress guarantee 30000000 bit/s is over the ceiling",
        ),
        (
            Change {
                priority: Some(8),
                ..Change::default()
            },
            "priority 8",
        ),
    ] {
        let e = s.set("a", "eth0", None, &bad).unwrap_err();
        assert_eq!(e.code(), Code::InvalidConfig);
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    assert_eq!(
        s.set("zz", "eth0", None, &ch).unwrap_err().code(),
        Code::UnknownContainer
    );
    assert_eq!(
        s.set("a", "eth0", Some("other"), &ch).unwrap_err().code(),
        Code::UnknownContainer
    );
}
