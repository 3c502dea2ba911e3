//! The CPU ledger's part in verbs other than create: release on delete,
//! re-plan on update, and the `berth-runtime cpus` report.

use super::ledger::{id_of, Store};
use super::plan::{Allocation, Mode};
use super::topology::{format_list, Topology};
use super::PoolMover;
use crate::config::RuntimeConfig;
use crate::error::Result;
use crate::records::container_key;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn topology(cfg: &RuntimeConfig) -> Result<Topology> {
    Topology::cached(&cfg.state_dir)
}

/// True when the ledger holds an allocation for `id` under `root` (a
/// lock-free read: the file is only ever replaced atomically).
pub fn has_entry(cfg: &RuntimeConfig, root: Option<&Path>, id: &str) -> bool {
    Store::new(cfg)
        .peek(cfg)
        .is_some_and(|e| e.contains_key(&container_key(root, id)))
}

/// True when `id` holds CPUs that must be freed as soon as it is deleted
/// (exclusive CPUs, fragment pieces or a shared request). An unrequested
/// shared container holds nothing; the GC on later creates drops its entry.
pub fn holds_capacity(cfg: &RuntimeConfig, root: Option<&Path>, id: &str) -> bool {
    Store::new(cfg)
        .peek(cfg)
        .and_then(|e| e.get(&container_key(root, id)).map(|a| a.pieces > 0))
        .unwrap_or(false)
}

/// Frees `id`'s allocation (after the delegate deleted it) and moves shared
/// containers onto the grown pool through `mover`.
pub fn release(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    id: &str,
    mover: &mut dyn PoolMover,
) -> Result<()> {
    let key = container_key(root, id);
    Store::new(cfg).transaction(cfg, &topology(cfg)?, |l| {
        let before = l.host.shared_pool_list();
        if l.remove(&key).is_some() {
            tracing::info!(container = id, "CPU allocation released");
            super::settle_pool(l, &before, &key, mover);
        }
        Ok(())
    })
}

/// The allocations of the containers under `root`, by container id, as
/// last saved (one lock-free read, for a pass over many containers).
pub fn allocations(cfg: &RuntimeConfig, root: Option<&Path>) -> BTreeMap<String, Allocation> {
    let prefix = container_key(root, "");
    Store::new(cfg)
        .peek(cfg)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, a)| k.strip_prefix(&prefix).map(|id| (id.to_string(), a)))
        .collect()
}

/// The cpuset and mems of `id`'s split or exclusive allocation `a` when its
/// cgroup does not show them: it was planned, and the plan never reached
/// the container (a plugin killed before it answered, whose engine went on
/// without it). None when it shows them, or there is nothing to show.
pub fn unapplied(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    id: &str,
    a: &Allocation,
) -> Option<(String, String)> {
    if a.mode == Mode::Shared {
        return None;
    }
    let cg = crate::records::Records::new(cfg, root).record(id)?.cgroup?;
    (!super::ledger::shows(&cg, a, cfg.cpus.base))
        .then(|| (format_list(a.cpus()), format_list(a.nodes.iter().copied())))
}

/// Moves every running shared container whose cgroup has drifted off the
/// shared pool (written by someone else, or an update that never reached
/// it) back onto it through `mover`. Returns how many it moved.
pub fn push_pool(cfg: &RuntimeConfig, mover: &mut dyn PoolMover) -> Result<usize> {
    struct Counting<'a>(&'a mut dyn PoolMover, usize);
    impl PoolMover for Counting<'_> {
        fn move_container(&mut self, m: &super::PoolMove) -> std::result::Result<(), String> {
            self.0.move_container(m)?;
            self.1 += 1;
            Ok(())
        }
    }
    let mut counting = Counting(mover, 0);
    Store::new(cfg).transaction(cfg, &topology(cfg)?, |l| {
        super::apply_pool(l, "", &mut counting);
        Ok(())
    })?;
    Ok(counting.1)
}

/// Re-plans `id` for new `resources` (runc's `update --resources` JSON),
/// keeping its current CPUs where possible, and writes the new cpuset, mems
/// and shares into `resources`. Returns false when `resources` does not
/// change the CPU request (nothing is held then).
///
/// The new allocation is the ledger's, but the one it replaces stays held
/// until [`finish_update`] says whether the backend applied it: run the
/// backend, then call it. If this process dies in between, the next ledger
/// transaction settles the update from the container's cgroup.
pub fn begin_update(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    id: &str,
    resources: &mut Value,
    mover: &mut dyn PoolMover,
) -> Result<bool> {
    let Some(cpu) = resources.get("cpu").filter(|c| c.get("quota").is_some()) else {
        return Ok(false);
    };
    let period = cpu
        .get("period")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .unwrap_or(100_000);
    let quota = cpu.get("quota").and_then(Value::as_i64).unwrap_or(0);
    let base = cfg.cpus.base;
    let key = container_key(root, id);
    let pieces = super::plan::pieces_from_quota(quota, period, base);
    let (a, pool) = Store::new(cfg).transaction(cfg, &topology(cfg)?, |l| {
        l.hold_for_update(&key)?;
        let current = l.host.allocations.get(&key).cloned();
        // Unlimited means the shared pool; otherwise the mode stays.
        let mode = match current {
            Some(c) if pieces > 0 => c.mode,
            _ => Mode::Shared,
        };
        let before = l.host.shared_pool_list();
        let (a, pool) = super::allocate_and_apply_pool(l, &before, root, id, mode, pieces, mover)?;
        l.creators.remove(&key);
        Ok((a, pool))
    })?;
    crate::debug_stop::at("update:planned");
    if let Some(c) = resources.get_mut("cpu").and_then(Value::as_object_mut) {
        if a.mode == Mode::Shared {
            c.insert("cpus".into(), json!(pool));
        } else {
            c.insert("cpus".into(), json!(format_list(a.cpus())));
            c.insert("mems".into(), json!(format_list(a.nodes.iter().copied())));
        }
        if pieces > 0 {
            c.insert("shares".into(), json!(super::plan::shares(pieces, base)));
        }
    }
    tracing::info!(container = id, pieces, cpus = ?a.cpus(), "CPU allocation re-planned; held until the backend applies it");
    Ok(true)
}

/// Settles an update [`begin_update`] started: keeps the new allocation
/// when the backend `applied` it, else restores the previous one. Either way
/// shared containers follow the pool.
pub fn finish_update(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    id: &str,
    applied: bool,
    mover: &mut dyn PoolMover,
) -> Result<()> {
    let key = container_key(root, id);
    Store::new(cfg).transaction(cfg, &topology(cfg)?, |l| {
        let before = l.host.shared_pool_list();
        l.settle_update(&key, applied);
        if !applied {
            tracing::warn!(
                container = id,
                "the backend did not apply the update: CPU allocation rolled back"
            );
        }
        super::settle_pool(l, &before, &key, mover);
        Ok(())
    })
}

/// The ledger as JSON: CPUs (free, exclusive, fragments), the shared pool and
/// each container's plan. With `gc`, frees allocations of gone containers
/// first (moving shared containers onto the grown pool through `mover`).
pub fn status(cfg: &RuntimeConfig, gc: bool, mover: &mut dyn PoolMover) -> Result<Value> {
    Store::new(cfg).transaction(cfg, &topology(cfg)?, |l| {
        let before = l.host.shared_pool_list();
        let freed = if gc { l.gc() } else { Vec::new() };
        super::settle_pool(l, &before, "", mover);
        let base = l.host.base;
        let owner = |cpu: u32| l.host.allocations.iter().find(|(_, a)| a.exclusive.contains(&cpu)).map(|(k, _)| id_of(k));
        let mut cpus = Vec::new();
        for c in l.host.topology.cpus.values() {
            let excl = owner(c.id);
            let frag: u32 = l.host.allocations.values().filter_map(|a| a.fragment.filter(|f| f.cpu == c.id)).map(|f| f.pieces).sum();
            let state = if l.host.reserved.contains(&c.id) {
                "reserved"
            } else if excl.is_some() {
                "exclusive"
            } else if frag > 0 {
                "fragment"
            } else {
                "free"
            };
            cpus.push(json!({"cpu": c.id, "node": c.node, "core": c.core, "state": state, "owner": excl, "fragment_pieces": frag}));
        }
        let containers: Vec<Value> = l
            .host
            .allocations
            .iter()
            .map(|(k, a)| {
                let rec = l.record(k);
                json!({"id": id_of(k), "root": rec.as_ref().and_then(|r| r.root.clone()), "mode": a.mode,
                       "cpus": a.pieces as f64 / f64::from(base), "exclusive": format_list(a.exclusive.iter().copied()),
                       "fragment": a.fragment, "nodes": a.nodes, "cgroup": rec.and_then(|r| r.cgroup),
                       "creating": l.creators.contains_key(k)})
            })
            .collect();
        Ok(json!({"base": base, "cpus": cpus, "shared_pool": l.host.shared_pool_list(), "containers": containers, "gc_freed": freed}))
    })
}

/// `status` as a table for people.
pub fn format_status(v: &Value) -> String {
    let base = v["base"].as_u64().unwrap_or(100);
    let mut out = "CPU   NODE  STATE       USE\n".to_string();
    for c in v["cpus"].as_array().into_iter().flatten() {
        let use_ = match c["state"].as_str() {
            Some("exclusive") => c["owner"].as_str().unwrap_or("?").to_string(),
            Some("fragment") => format!("{}/{base} pieces", c["fragment_pieces"]),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<5} {:<5} {:<11} {use_}\n",
            c["cpu"].to_string(),
            c["node"].to_string(),
            c["state"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!("\nshared pool: {}\n\nCONTAINER                                                        MODE       CPUS   CPUSET\n", v["shared_pool"].as_str().unwrap_or("")));
    for c in v["containers"].as_array().into_iter().flatten() {
        let mut set = c["exclusive"].as_str().unwrap_or("").to_string();
        if let Some(f) = c["fragment"].as_object() {
            set.push_str(&format!(
                "{}{}({}/{base})",
                if set.is_empty() { "" } else { "+" },
                f["cpu"],
                f["pieces"]
            ));
        }
        out.push_str(&format!(
            "{:<64} {:<10} {:<6} {set}\n",
            c["id"].as_str().unwrap_or(""),
            c["mode"].as_str().unwrap_or(""),
            c["cpus"].to_string()
        ));
    }
    out
}
