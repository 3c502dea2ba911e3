//! The CPU planner: a pure function from the host's allocations and a request
//! to a placement. No I/O, no root.
//!
//! A request of `c` CPUs is `c × base` pieces. `split` places `floor(c)`
//! exclusive CPUs plus at most one fragment CPU carrying the remainder
//! (Eru's design); `exclusive` takes integer requests only; `shared` pins
//! nothing and runs on the shared pool (every online CPU no container holds
//! exclusively), its requests limited by `overcommit × pool`.
//!
//! Placement rules:
//! * a CPU is exclusive to one container, or carries fragments whose pieces
//!   sum to at most `base`; reserved CPUs carry neither;
//! * exclusive CPUs come as whole cores (SMT siblings together) where the
//!   request allows, then from already-broken cores (best fit), and from one
//!   last-level cache where they fit in one;
//! * a request stays within one NUMA node when it fits there, choosing the
//!   node with the least room that fits (best fit), else spans nodes;
//! * a fragment goes best-fit onto the already-fragmented CPU with the least
//!   room that takes it; a fresh CPU is opened only when none does, and then
//!   preferably on a core that is already broken, keeping whole cores free;
//! * a re-plan (`docker update --cpus`) keeps the container's current CPUs
//!   where possible.

use super::topology::{format_list, Topology};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a request is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Exclusive CPUs plus one shared fragment CPU.
    Split,
    /// Exclusive CPUs only (integer requests).
    Exclusive,
    /// No pinning: the shared pool, with quota and shares.
    Shared,
}

impl Mode {
    /// Parses `split`, `exclusive` or `shared`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "split" => Some(Mode::Split),
            "exclusive" => Some(Mode::Exclusive),
            "shared" => Some(Mode::Shared),
            _ => None,
        }
    }
}

/// A fragment: `pieces` of CPU `cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// The CPU.
    pub cpu: u32,
    /// How many of its `base` pieces.
    pub pieces: u32,
}

/// Where a container's CPUs are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Its mode.
    pub mode: Mode,
    /// The request in pieces.
    pub pieces: u32,
    /// CPUs it holds alone.
    pub exclusive: Vec<u32>,
    /// Its share of a fragment CPU.
    pub fragment: Option<Fragment>,
    /// NUMA nodes for `cpuset.mems` (empty for shared: all).
    pub nodes: Vec<u32>,
}

impl Allocation {
    /// The CPUs of its cpuset (exclusive plus fragment), ascending; empty for shared.
    pub fn cpus(&self) -> Vec<u32> {
        let mut v = self.exclusive.clone();
        v.extend(self.fragment.map(|f| f.cpu));
        v.sort_unstable();
        v
    }
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not enough free CPUs for the exclusive part.
    #[error("need {need} exclusive cores, {free} free ({per_node})")]
    Exclusive {
        /// CPUs needed.
        need: u32,
        /// CPUs free in total.
        free: u32,
        /// Free CPUs per NUMA node, e.g. `NUMA 0: 1, NUMA 1: 0`.
        per_node: String,
    },
    /// No CPU has room for the fragment.
    #[error("need a fragment of {need}/{base} of a core, the most room left is {room}/{base} ({per_node})")]
    Fragment {
        /// Pieces needed.
        need: u32,
        /// Pieces per CPU.
        base: u32,
        /// The largest room on any usable CPU.
        room: u32,
        /// Largest room per NUMA node.
        per_node: String,
    },
    /// `exclusive` mode with a fractional request.
    #[error("mode exclusive needs a whole number of CPUs, not {0}")]
    NotWhole(String),
    /// The shared pool's overcommitted capacity is used up.
    #[error(
        "the shared pool is full: {requested} of {capacity} CPU pieces requested, {free} left"
    )]
    SharedFull {
        /// The request.
        requested: u32,
        /// Pool size × overcommit, in pieces.
        capacity: u32,
        /// What is left.
        free: u32,
    },
}

/// How fragments and nodes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Berth's placement: least room that fits, broken cores first.
    #[default]
    Best,
    /// The lowest-numbered place that fits (the benchmark's reference).
    First,
}

/// The host's CPU state: topology, policy and every allocation.
#[derive(Debug, Clone)]
pub struct Host {
    /// Fragment and node choice.
    pub fit: Fit,
    /// The topology.
    pub topology: Topology,
    /// Pieces per CPU.
    pub base: u32,
    /// CPUs kept for system daemons.
    pub reserved: BTreeSet<u32>,
    /// Shared-pool overcommit factor (advertised = pool × factor).
    pub overcommit: f64,
    /// Allocations by container key.
    pub allocations: BTreeMap<String, Allocation>,
    /// Allocations an update is replacing, by container key, held until the
    /// backend has applied the new one (or failed to): until then their CPUs
    /// may still be in the container's cgroup, so nobody else gets them.
    pub held: BTreeMap<String, Allocation>,
}

#[derive(Debug, Clone, Default)]
struct Usage {
    exclusive_owner: BTreeMap<u32, String>,
    fragment_used: BTreeMap<u32, u32>,
    shared_pieces: u32,
}

impl Host {
    /// A host with no allocations.
    pub fn new(topology: Topology, base: u32, reserved: BTreeSet<u32>, overcommit: f64) -> Host {
        Host {
            fit: Fit::Best,
            topology,
            base: base.max(1),
            reserved,
            overcommit,
            allocations: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Who uses what, leaving out `skip` (the container being re-planned).
    fn usage(&self, skip: Option<&str>) -> Usage {
        let mut u = Usage::default();
        for (k, a) in self
            .allocations
            .iter()
            .chain(&self.held)
            .filter(|(k, _)| Some(k.as_str()) != skip)
        {
            for c in &a.exclusive {
                u.exclusive_owner.insert(*c, k.clone());
            }
            if let Some(f) = a.fragment {
                *u.fragment_used.entry(f.cpu).or_default() += f.pieces;
            }
            if a.mode == Mode::Shared {
                u.shared_pieces += a.pieces;
            }
        }
        u
    }

    fn is_free(&self, u: &Usage, cpu: u32) -> bool {
        !self.reserved.contains(&cpu)
            && !u.exclusive_owner.contains_key(&cpu)
            && u.fragment_used.get(&cpu).copied().unwrap_or(0) == 0
    }

    fn room(&self, u: &Usage, cpu: u32) -> Option<u32> {
        if self.reserved.contains(&cpu) || u.exclusive_owner.contains_key(&cpu) {
            return None;
        }
        Some(
            self.base
                .saturating_sub(u.fragment_used.get(&cpu).copied().unwrap_or(0)),
        )
    }

    /// The shared pool: online CPUs no container holds exclusively.
    pub fn shared_pool(&self) -> Vec<u32> {
        let u = self.usage(None);
        self.topology
            .cpus
            .keys()
            .copied()
            .filter(|c| !u.exclusive_owner.contains_key(c))
            .collect()
    }

    /// The shared pool as a cpuset list.
    pub fn shared_pool_list(&self) -> String {
        format_list(self.shared_pool())
    }

    fn per_node<F: Fn(u32) -> u32>(&self, f: F) -> String {
        self.topology
            .nodes()
            .into_iter()
            .map(|n| format!("NUMA {n}: {}", f(n)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Places a request of `pieces` in `mode` for container `key` without
    /// changing anything. An existing allocation of `key` is re-planned:
    /// its CPUs are preferred.
    pub fn plan(&self, key: &str, mode: Mode, pieces: u32) -> Result<Allocation, PlanError> {
        self.place(key, mode, pieces, self.allocations.get(key))
    }

    /// Places and records the request (see [`Host::plan`]).
    pub fn allocate(
        &mut self,
        key: &str,
        mode: Mode,
        pieces: u32,
    ) -> Result<Allocation, PlanError> {
        let a = self.plan(key, mode, pieces)?;
        self.allocations.insert(key.to_string(), a.clone());
        Ok(a)
    }

    /// Frees `key`'s allocation (and one an update of it was replacing); returns it.
    pub fn release(&mut self, key: &str) -> Option<Allocation> {
        self.held.remove(key);
        self.allocations.remove(key)
    }

    fn place(
        &self,
        key: &str,
        mode: Mode,
        pieces: u32,
        keep: Option<&Allocation>,
    ) -> Result<Allocation, PlanError> {
        let base = self.base;
        let u = self.usage(Some(key));
        if mode == Mode::Shared {
            let pool = self
                .topology
                .cpus
                .keys()
                .filter(|c| !u.exclusive_owner.contains_key(c) && !self.reserved.contains(c))
                .count() as f64;
            let capacity = (pool * f64::from(base) * self.overcommit).floor().max(0.0) as u32;
            let free = capacity.saturating_sub(u.shared_pieces);
            if pieces > free {
                return Err(PlanError::SharedFull {
                    requested: pieces,
                    capacity,
                    free,
                });
            }
            return Ok(Allocation {
                mode,
                pieces,
                exclusive: vec![],
                fragment: None,
                nodes: vec![],
            });
        }
        let whole = pieces / base;
        let rem = pieces % base;
        if mode == Mode::Exclusive && rem != 0 {
            return Err(PlanError::NotWhole(format!(
                "{}.{:0width$}",
                whole,
                rem,
                width = digits(base)
            )));
        }
        let nodes = self.topology.nodes();
        let free_in = |n: u32| -> Vec<u32> {
            self.topology
                .cpus
                .values()
                .filter(|c| c.node == n && self.is_free(&u, c.id))
                .map(|c| c.id)
                .collect()
        };
        let frag_room_in = |n: u32| -> u32 {
            self.topology
                .cpus
                .values()
                .filter(|c| c.node == n)
                .filter_map(|c| self.room(&u, c.id))
                .max()
                .unwrap_or(0)
        };
        let fits = |ns: &[u32]| -> bool {
            let free: usize = ns.iter().map(|n| free_in(*n).len()).sum();
            if free < whole as usize {
                return false;
            }
            if rem == 0 {
                return true;
            }
            // Room on an open fragment CPU, or one more free CPU.
            let open = ns.iter().any(|n| {
                self.topology
                    .cpus
                    .values()
                    .filter(|c| c.node == *n)
                    .any(|c| {
                        u.fragment_used.get(&c.id).copied().unwrap_or(0) > 0
                            && self.room(&u, c.id).unwrap_or(0) >= rem
                    })
            });
            open || free > whole as usize
        };
        // Best fit: the feasible node with the least free CPUs; a re-plan prefers its own node.
        let mut candidates: Vec<Vec<u32>> = nodes
            .iter()
            .map(|n| vec![*n])
            .filter(|ns| fits(ns))
            .collect();
        let first_fit = self.fit == Fit::First;
        candidates.sort_by_key(|ns| {
            let own = keep.map(|k| k.nodes == *ns).unwrap_or(false);
            (
                !own,
                if first_fit { 0 } else { free_in(ns[0]).len() },
                ns[0],
            )
        });
        let chosen = match candidates.into_iter().next() {
            Some(ns) => ns,
            None if fits(&nodes) => nodes.clone(),
            None => {
                let free: u32 = nodes.iter().map(|n| free_in(*n).len() as u32).sum();
                if free < whole {
                    return Err(PlanError::Exclusive {
                        need: whole,
                        free,
                        per_node: self.per_node(|n| free_in(n).len() as u32),
                    });
                }
                let room = nodes.iter().map(|n| frag_room_in(*n)).max().unwrap_or(0);
                return Err(PlanError::Fragment {
                    need: rem,
                    base,
                    room,
                    per_node: self.per_node(frag_room_in),
                });
            }
        };
        let in_chosen = |c: u32| {
            self.topology
                .cpus
                .get(&c)
                .map(|x| chosen.contains(&x.node))
                .unwrap_or(false)
        };

        // Exclusive CPUs.
        let mut exclusive: Vec<u32> = Vec::new();
        if let Some(k) = keep {
            for c in &k.exclusive {
                if exclusive.len() < whole as usize && in_chosen(*c) && self.is_free(&u, *c) {
                    exclusive.push(*c);
                }
            }
        }
        let need = whole as usize;
        let free_of = |core: &[u32], taken: &[u32]| -> Vec<u32> {
            core.iter()
                .copied()
                .filter(|c| in_chosen(*c) && self.is_free(&u, *c) && !taken.contains(c))
                .collect()
        };
        if exclusive.len() < need {
            // Cores in the order to take them: the last-level cache already used
            // (or with the most free CPUs) first, so a request shares one L3
            // where it can.
            let llc_of = |core: &[u32]| {
                core.first()
                    .and_then(|c| self.topology.cpus.get(c))
                    .map(|c| c.llc)
                    .unwrap_or(0)
            };
            let mut llc_free: BTreeMap<u32, usize> = BTreeMap::new();
            for core in &self.topology.cores {
                *llc_free.entry(llc_of(core)).or_default() += free_of(core, &[]).len();
            }
            let home = exclusive
                .first()
                .and_then(|c| self.topology.cpus.get(c))
                .map(|c| c.llc)
                .or_else(|| {
                    llc_free
                        .iter()
                        .filter(|(_, n)| **n >= need)
                        .min_by_key(|(l, n)| (**n, **l))
                        .map(|(l, _)| *l)
                })
                .or_else(|| {
                    llc_free
                        .iter()
                        .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
                        .map(|(l, _)| *l)
                });
            let mut ordered: Vec<&Vec<u32>> = self.topology.cores.iter().collect();
            ordered.sort_by_key(|core| {
                (
                    Some(llc_of(core)) != home,
                    llc_of(core),
                    core.first().copied(),
                )
            });
            // Whole cores (SMT siblings together) while the remainder fills them...
            for core in &ordered {
                let free = free_of(core, &exclusive);
                if free.len() == core.len() && need - exclusive.len() >= core.len() {
                    exclusive.extend(free);
                }
            }
            // ...then broken cores first (fewest free siblings), then breaking whole ones.
            if exclusive.len() < need {
                let mut cores: Vec<(bool, usize, Vec<u32>)> = self
                    .topology
                    .cores
                    .iter()
                    .map(|core| {
                        let free = free_of(core, &exclusive);
                        (free.len() == core.len(), free.len(), free)
                    })
                    .filter(|(_, n, _)| *n > 0)
                    .collect();
                cores.sort_by_key(|(whole_core, n, free)| {
                    let llc = self.topology.cpus.get(&free[0]).map(|c| c.llc);
                    (*whole_core, llc != home, *n, free[0])
                });
                'fill: for (_, _, free) in cores {
                    for c in free {
                        if exclusive.len() >= need {
                            break 'fill;
                        }
                        exclusive.push(c);
                    }
                }
            }
        }
        if exclusive.len() < need {
            let free: u32 = nodes.iter().map(|n| free_in(*n).len() as u32).sum();
            return Err(PlanError::Exclusive {
                need: whole,
                free,
                per_node: self.per_node(|n| free_in(n).len() as u32),
            });
        }
        exclusive.sort_unstable();

        // The fragment.
        let mut fragment = None;
        if rem > 0 {
            let usable = |c: u32| in_chosen(c) && !exclusive.contains(&c);
            let kept = keep
                .and_then(|k| k.fragment)
                .map(|f| f.cpu)
                .filter(|c| usable(*c) && self.room(&u, *c).unwrap_or(0) >= rem);
            let open = self
                .topology
                .cpus
                .keys()
                .copied()
                .filter(|c| usable(*c) && u.fragment_used.get(c).copied().unwrap_or(0) > 0)
                .filter_map(|c| {
                    self.room(&u, c)
                        .filter(|r| *r >= rem)
                        .map(|r| (if first_fit { 0 } else { r }, c))
                })
                .min();
            let fresh = || {
                let mut free: Vec<u32> = self
                    .topology
                    .cpus
                    .keys()
                    .copied()
                    .filter(|c| usable(*c) && self.is_free(&u, *c))
                    .collect();
                // Prefer a CPU on a core that is already broken.
                if !first_fit {
                    free.sort_by_key(|c| {
                        (
                            self.topology
                                .siblings(*c)
                                .iter()
                                .all(|s| self.is_free(&u, *s) && !exclusive.contains(s)),
                            *c,
                        )
                    });
                }
                free.first().copied()
            };
            let cpu = kept.or(open.map(|(_, c)| c)).or_else(fresh);
            let Some(cpu) = cpu else {
                return Err(PlanError::Fragment {
                    need: rem,
                    base,
                    room: nodes.iter().map(|n| frag_room_in(*n)).max().unwrap_or(0),
                    per_node: self.per_node(frag_room_in),
                });
            };
            fragment = Some(Fragment { cpu, pieces: rem });
        }
        let mut used_nodes: Vec<u32> = exclusive
            .iter()
            .chain(fragment.iter().map(|f| &f.cpu))
            .filter_map(|c| self.topology.cpus.get(c).map(|x| x.node))
            .collect();
        used_nodes.sort_unstable();
        used_nodes.dedup();
        Ok(Allocation {
            mode,
            pieces,
            exclusive,
            fragment,
            nodes: used_nodes,
        })
    }
}

fn digits(base: u32) -> usize {
    let mut d = 0;
    let mut b = base;
    while b > 1 {
        b /= 10;
        d += 1;
    }
    d
}

/// The request a CFS quota expresses, in pieces of `1/base`, rounded up
/// (0 for no quota; saturating for absurd ones).
pub fn pieces_from_quota(quota: i64, period: u64, base: u32) -> u32 {
    if quota <= 0 || period == 0 {
        return 0;
    }
    u32::try_from(
        (quota as u64)
            .saturating_mul(u64::from(base))
            .div_ceil(period),
    )
    .unwrap_or(u32::MAX)
}

/// `cpu.shares` for a request of `pieces`: 1024 per CPU, at least 2.
pub fn shares(pieces: u32, base: u32) -> u64 {
    (u64::from(pieces) * 1024 / u64::from(base.max(1))).max(2)
}

/// Parses a decimal CPU count (`"3.2"`) into pieces of `1/base`, exactly.
/// Errors (as text) for anything that is not a positive, finite, sane number
/// or is finer than `1/base`.
pub fn parse_cpus(s: &str, base: u32) -> Result<u32, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("is not a positive decimal number of CPUs".into());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "is absurdly large".to_string())?
    };
    if int > 100_000 {
        return Err("is absurdly large".into());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(format!("is finer than the granularity 1/{base}"));
    }
    let scale = 10u64.pow(frac.len() as u32);
    let f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| "is not a number".to_string())?
    };
    let num = f * u64::from(base);
    if !num.is_multiple_of(scale) {
        return Err(format!("is finer than the granularity 1/{base}"));
    }
    let pieces = int * u64::from(base) + num / scale;
    if pieces == 0 {
        return Err("must be more than zero".into());
    }
    u32::try_from(pieces).map_err(|_| "is absurdly large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(nodes: u32, cores: u32, smt: u32) -> Host {
        Host::new(
            Topology::synthetic(nodes, cores, smt),
            100,
            BTreeSet::new(),
            1.0,
        )
    }

    #[test]
    fn quota_and_shares_conversions() {
        assert_eq!(pieces_from_quota(30_000, 100_000, 100), 30);
        assert_eq!(pieces_from_quota(1, 100_000, 100), 1, "rounds up");
        assert_eq!(pieces_from_quota(-1, 100_000, 100), 0);
        assert_eq!(pieces_from_quota(i64::MAX, 1, 100), u32::MAX);
        assert_eq!(shares(150, 100), 1536);
        assert_eq!(shares(0, 100), 2);
    }

    #[test]
    fn parse_requests() {
        assert_eq!(parse_cpus("3.2", 100), Ok(320));
        assert_eq!(parse_cpus("0.01", 100), Ok(1));
        assert_eq!(parse_cpus("0.001", 1000), Ok(1));
        assert!(parse_cpus("0.001", 100).unwrap_err().contains("finer"));
        assert_eq!(parse_cpus("2", 100), Ok(200));
        assert_eq!(parse_cpus(".5", 100), Ok(50));
        for bad in [
            "0", "-1", "NaN", "inf", "", "1e3", "abc", "99999999", "1.2.3", ".",
        ] {
            assert!(parse_cpus(bad, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn eru_split_on_a_two_cpu_host() {
        let mut h = host(1, 2, 1);
        let a = h.allocate("a", Mode::Split, 150).unwrap();
        assert_eq!(a.exclusive.len(), 1);
        assert_eq!(a.cpus(), vec![0, 1]);
        let b = h.allocate("b", Mode::Split, 50).unwrap();
        assert_eq!(
            b.fragment,
            Some(Fragment {
                cpu: a.fragment.unwrap().cpu,
                pieces: 50
            }),
            "lands on the fragment core"
        );
        let e = h.allocate("c", Mode::Split, 10).unwrap_err();
        assert!(e.to_string().contains("fragment of 10/100"), "{e}");
    }

    #[test]
    fn thirty_percent_requests_fill_two_cpus_six_times() {
        let mut h = host(1, 2, 1);
        let ok = (0..20)
            .filter(|i| h.allocate(&i.to_string(), Mode::Split, 30).is_ok())
            .count();
        assert_eq!(ok, 6);
    }

    #[test]
    fn exclusive_error_names_the_shortfall_per_node() {
        let mut h = host(2, 1, 1);
        h.allocate("a", Mode::Exclusive, 100).unwrap();
        let e = h.plan("b", Mode::Exclusive, 300).unwrap_err().to_string();
        assert_eq!(e, "need 3 exclusive cores, 1 free (NUMA 0: 0, NUMA 1: 1)");
    }

    #[test]
    fn siblings_stay_together_and_numa_is_respected() {
        let mut h = host(2, 4, 2);
        let a = h.allocate("a", Mode::Exclusive, 200).unwrap();
        assert_eq!(a.exclusive.len(), 2);
        let core = h.topology.cpus[&a.exclusive[0]].core;
        assert!(
            a.exclusive.iter().all(|c| h.topology.cpus[c].core == core),
            "{a:?}"
        );
        assert_eq!(a.nodes.len(), 1);
    }

    #[test]
    fn exclusive_cpus_share_one_last_level_cache_when_they_fit() {
        // One node, two L3s of 4 cores each; the first L3 partly used.
        let mut h = Host::new(
            Topology::synthetic_llc(1, 8, 1, 4),
            100,
            BTreeSet::new(),
            1.0,
        );
        h.allocate("x", Mode::Exclusive, 200).unwrap();
        let a = h.allocate("a", Mode::Exclusive, 300).unwrap();
        let llcs: BTreeSet<u32> = a.exclusive.iter().map(|c| h.topology.cpus[c].llc).collect();
        assert_eq!(llcs.len(), 1, "{a:?} spans L3s {llcs:?}");
    }

    #[test]
    fn update_keeps_current_cpus() {
        let mut h = host(1, 4, 1);
        h.allocate("x", Mode::Split, 100).unwrap();
        let a = h.allocate("a", Mode::Split, 150).unwrap();
        let b = h.allocate("a", Mode::Split, 250).unwrap();
        assert!(
            a.exclusive.iter().all(|c| b.exclusive.contains(c)),
            "{a:?} -> {b:?}"
        );
    }

    #[test]
    fn shared_pool_excludes_exclusive_cpus_and_is_capped() {
        let mut h = Host::new(Topology::synthetic(1, 4, 1), 100, BTreeSet::new(), 1.5);
        h.allocate("a", Mode::Exclusive, 100).unwrap();
        assert_eq!(h.shared_pool().len(), 3);
        assert!(h.allocate("s", Mode::Shared, 450).is_ok());
        assert!(matches!(
            h.allocate("t", Mode::Shared, 1),
            Err(PlanError::SharedFull { .. })
        ));
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;

    #[test]
    fn never_more_pieces_than_cpus() {
        let mut h = Host::new(Topology::synthetic(4, 32, 2), 100, BTreeSet::new(), 1.0);
        let mut n = 0u64;
        let mut total = 0u64;
        let mut x: u64 = 1;
        loop {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pieces = 10 + ((x >> 33) % 290) as u32;
            match h.allocate(&format!("c{n}"), Mode::Split, pieces) {
                Ok(_) => {
                    total += u64::from(pieces);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        assert!(
            total <= 256 * 100,
            "placed {n} containers with {total} pieces on 256 CPUs"
        );
    }
}
