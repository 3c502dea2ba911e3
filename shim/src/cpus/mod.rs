//! CPU splitting: exclusive cores plus a shared fragment core (Eru), with a
//! crash-safe host ledger. [`topology`] reads the host, [`plan`] is the pure
//! planner, [`ledger`] keeps every container's allocation across runtime
//! processes, and [`cgroup`] applies shared-pool changes to running containers.

pub mod cgroup;
pub mod ledger;
pub mod plan;
pub mod topology;

use crate::config::RuntimeConfig;
use crate::error::Result;
use plan::{Allocation, Mode};
use std::path::{Path, PathBuf};
use topology::Topology;

/// What the rewrite's CPU stage asks of the host: an allocation for this
/// container, and the shared pool after it.
pub trait Allocator {
    /// Allocates (or re-plans) `pieces` in `mode` for the container being
    /// created. Returns the allocation and the shared pool as a cpuset list,
    /// None when the pool is every CPU (nothing to restrict).
    fn allocate(&self, mode: Mode, pieces: u32) -> Result<(Allocation, Option<String>)>;
    /// Pieces per CPU.
    fn base(&self) -> u32;
    /// What an explicit user cpuset means: true to respect it unsplit.
    fn respect_user_cpuset(&self) -> bool;
}

/// How many ledger entries each create checks for GC.
pub const GC_PER_CREATE: usize = 16;

/// The ledger-backed allocator `berth-runtime` uses on create.
#[derive(Debug, Clone)]
pub struct HostAllocator {
    /// The runtime configuration.
    pub config: RuntimeConfig,
    /// The host topology.
    pub topology: Topology,
    /// The container's state root.
    pub root: Option<PathBuf>,
    /// The container id.
    pub id: String,
}

impl HostAllocator {
    /// An allocator for container `id`, reading the topology from `/sys`.
    pub fn new(config: &RuntimeConfig, root: Option<&Path>, id: &str) -> Result<HostAllocator> {
        Ok(HostAllocator {
            config: config.clone(),
            topology: Topology::cached(&config.state_dir)?,
            root: root.map(Path::to_path_buf),
            id: id.to_string(),
        })
    }
}

/// Writes the shared pool into every running shared container's cgroup
/// (except `skip`), so shared containers stay off exclusive CPUs. Berth has
/// no daemon: this runs whenever an allocation changes the exclusive set.
pub fn apply_pool(ledger: &ledger::Ledger, skip: &str) {
    let pool = ledger.host.shared_pool_list();
    for (key, cg) in ledger.shared_cgroups() {
        if key == skip {
            continue;
        }
        if cgroup::cpuset(&cg).as_deref() == Some(pool.as_str()) {
            continue;
        }
        match cgroup::set_cpuset(&cg, &pool) {
            Ok(()) => {
                tracing::info!(container = %key, cpus = %pool, "moved a shared container to the new shared pool");
                // Its count may follow the pool's size (a cpuset-only limit).
                if let Err(e) = ledger
                    .view(&key)
                    .refresh_from_cgroup(&cg, ledger::id_of(&key))
                {
                    tracing::warn!(container = %key, "cannot update the CPU view: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(container = %key, "cannot move a shared container to the shared pool: {e}")
            }
        }
    }
}

/// Moves the running shared containers (but `skip`) onto the shared pool
/// when it is no longer `before`: whatever changed the exclusive set (an
/// allocation, a release, GC), shared containers follow.
pub fn settle_pool(l: &ledger::Ledger, before: &str, skip: &str) {
    if l.host.shared_pool_list() != before {
        apply_pool(l, skip);
    }
}

/// Allocates (or re-plans) `id` under `root` in the ledger; when the request
/// does not fit, first frees every allocation of a gone container and tries
/// again. If the shared pool is no longer `before` (the pool when the
/// transaction began), moves the running shared containers onto it. Returns
/// the allocation and the pool.
pub fn allocate_and_apply_pool(
    l: &mut ledger::Ledger,
    before: &str,
    root: Option<&Path>,
    id: &str,
    mode: Mode,
    pieces: u32,
) -> Result<(Allocation, String)> {
    let a = match l.allocate(root, id, mode, pieces) {
        Ok(a) => Ok(a),
        Err(_) if !l.gc().is_empty() => l.allocate(root, id, mode, pieces),
        Err(e) => Err(e),
    }?;
    settle_pool(l, before, &crate::records::container_key(root, id));
    Ok((a, l.host.shared_pool_list()))
}

impl Allocator for HostAllocator {
    fn allocate(&self, mode: Mode, pieces: u32) -> Result<(Allocation, Option<String>)> {
        let store = ledger::Store::new(&self.config);
        store
            .transaction(&self.config, &self.topology, |l| {
                // GC costs a stat per container: every create checks a few
                // (GC_PER_CREATE, round-robin). What it frees goes back to the
                // shared containers too: the pool is compared from before it.
                let before = l.host.shared_pool_list();
                l.gc_some(GC_PER_CREATE);
                let (a, pool) = allocate_and_apply_pool(
                    l,
                    &before,
                    self.root.as_deref(),
                    &self.id,
                    mode,
                    pieces,
                )?;
                let everything = l.host.shared_pool().len() == l.host.topology.cpus.len();
                Ok((a, (!everything).then_some(pool)))
            })
            .inspect(|_| crate::debug_stop::at("create:planned"))
    }

    fn base(&self) -> u32 {
        self.config.cpus.base
    }

    fn respect_user_cpuset(&self) -> bool {
        self.config.cpus.user_cpuset == crate::config::UserCpuset::Respect
    }
}
pub mod ops;
