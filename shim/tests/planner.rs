//! Property tests of the CPU planner on synthetic topologies: 1 to 256 CPUs,
//! SMT 1 or 2, 1 to 4 NUMA nodes, random create/delete sequences.

use berth_runtime::cpus::plan::{Host, Mode};
use berth_runtime::cpus::topology::Topology;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Create { pieces: u32, mode: u8 },
    Delete { nth: usize },
    Update { nth: usize, pieces: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..450, 0u8..10).prop_map(|(pieces, mode)| Op::Create { pieces, mode }),
        2 => any::<usize>().prop_map(|nth| Op::Delete { nth }),
        1 => (any::<usize>(), 1u32..450).prop_map(|(nth, pieces)| Op::Update { nth, pieces }),
    ]
}

fn topo() -> impl Strategy<Value = (u32, u32, u32)> {
    (1u32..=4, 1u32..=2).prop_flat_map(|(nodes, smt)| {
        let max_cores = (256 / (nodes * smt)).max(1);
        (Just(nodes), 1u32..=max_cores.min(32), Just(smt))
    })
}

fn mode_of(m: u8) -> Mode {
    match m {
        0 => Mode::Shared,
        1 => Mode::Exclusive,
        _ => Mode::Split,
    }
}

/// The invariants every reachable state keeps.
fn check(h: &Host) -> Result<(), TestCaseError> {
    let mut exclusive: BTreeMap<u32, &str> = BTreeMap::new();
    let mut frag: BTreeMap<u32, u32> = BTreeMap::new();
    for (k, a) in &h.allocations {
        for c in &a.exclusive {
            prop_assert!(h.topology.cpus.contains_key(c), "unknown cpu {c}");
            prop_assert!(!h.reserved.contains(c), "reserved cpu {c} allocated");
            prop_assert!(
                exclusive.insert(*c, k).is_none(),
                "cpu {c} exclusive to two containers"
            );
        }
        if let Some(f) = a.fragment {
            prop_assert!(!a.exclusive.contains(&f.cpu));
            *frag.entry(f.cpu).or_default() += f.pieces;
        }
        match a.mode {
            Mode::Split => prop_assert_eq!(
                a.exclusive.len() as u32 * h.base + a.fragment.map(|f| f.pieces).unwrap_or(0),
                a.pieces
            ),
            Mode::Exclusive => prop_assert_eq!(a.exclusive.len() as u32 * h.base, a.pieces),
            Mode::Shared => prop_assert!(a.exclusive.is_empty() && a.fragment.is_none()),
        }
    }
    for (cpu, used) in &frag {
        prop_assert!(
            *used <= h.base,
            "cpu {cpu} carries {used} > base {}",
            h.base
        );
        prop_assert!(
            !exclusive.contains_key(cpu),
            "exclusive cpu {cpu} also carries fragments"
        );
        prop_assert!(!h.reserved.contains(cpu));
    }
    Ok(())
}

/// Fragmentation: within a NUMA node, no two fragment CPUs are both at most
/// half used (an any-fit placement never opens a CPU while another has room).
fn fragmentation_bounded(h: &Host) -> Result<(), TestCaseError> {
    let mut used: BTreeMap<u32, u32> = BTreeMap::new();
    for a in h.allocations.values() {
        if let Some(f) = a.fragment {
            *used.entry(f.cpu).or_default() += f.pieces;
        }
    }
    let mut half_empty: BTreeMap<u32, u32> = BTreeMap::new();
    for (cpu, u) in used {
        if u * 2 <= h.base {
            let node = h.topology.cpus[&cpu].node;
            let n = half_empty.entry(node).or_default();
            *n += 1;
            prop_assert!(
                *n <= 1,
                "NUMA {node} has two fragment CPUs at most half used"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_release_restores((nodes, cores, smt) in topo(), reserve in 0u32..3, ops in prop::collection::vec(op(), 1..80)) {
        let t = Topology::synthetic(nodes, cores, smt);
        let reserved: BTreeSet<u32> = t.cpus.keys().copied().take(reserve as usize).collect();
        let mut h = Host::new(t, 100, reserved, 1.0);
        let mut live: Vec<String> = Vec::new();
        for (i, o) in ops.into_iter().enumerate() {
            match o {
                Op::Create { pieces, mode } => {
                    let key = format!("c{i}");
                    let before = h.allocations.clone();
                    let probe = h.plan("probe", Mode::Split, 130);
                    if h.allocate(&key, mode_of(mode), pieces).is_ok() {
                        live.push(key.clone());
                        // A release restores the exact prior state.
                        let mut again = h.clone();
                        again.release(&key);
                        prop_assert_eq!(&again.allocations, &before);
                        prop_assert_eq!(again.plan("probe", Mode::Split, 130), probe);
                    } else {
                        prop_assert_eq!(&h.allocations, &before, "a refused request changed the state");
                    }
                }
                Op::Delete { nth } if !live.is_empty() => {
                    let k = live.remove(nth % live.len());
                    prop_assert!(h.release(&k).is_some());
                }
                Op::Update { nth, pieces } if !live.is_empty() => {
                    let k = live[nth % live.len()].clone();
                    let before = h.allocations.clone();
                    let mode = h.allocations[&k].mode;
                    if h.allocate(&k, mode, pieces).is_err() {
                        prop_assert_eq!(&h.allocations, &before);
                    }
                }
                _ => {}
            }
            check(&h)?;
        }
    }

    #[test]
    fn insert_only_fragmentation_is_bounded((nodes, cores, smt) in topo(), reqs in prop::collection::vec(1u32..300, 1..120)) {
        let mut h = Host::new(Topology::synthetic(nodes, cores, smt), 100, BTreeSet::new(), 1.0);
        for (i, p) in reqs.into_iter().enumerate() {
            let _ = h.allocate(&format!("c{i}"), Mode::Split, p);
            check(&h)?;
            fragmentation_bounded(&h)?;
        }
    }

    #[test]
    fn finer_granularities_work(base in prop_oneof![Just(10u32), Just(100), Just(1000)], reqs in prop::collection::vec(1u32..3000, 1..40)) {
        let mut h = Host::new(Topology::synthetic(1, 4, 1), base, BTreeSet::new(), 1.0);
        for (i, p) in reqs.into_iter().enumerate() {
            let _ = h.allocate(&format!("c{i}"), Mode::Split, p);
            check(&h)?;
        }
    }
}
