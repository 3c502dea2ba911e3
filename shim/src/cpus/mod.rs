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
use std::cell::RefCell;
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
    /// Where the moves of shared containers go: None writes their cgroups;
    /// Some collects an engine's ([`HostAllocator::collecting`]).
    pub moves: Option<RefCell<EngineMoves>>,
    /// How many ledger entries each allocation checks for GC
    /// ([`GC_PER_CREATE`]).
    pub gc_budget: usize,
}

impl HostAllocator {
    /// An allocator for container `id`, reading the topology from `/sys`.
    pub fn new(config: &RuntimeConfig, root: Option<&Path>, id: &str) -> Result<HostAllocator> {
        Ok(HostAllocator {
            config: config.clone(),
            topology: Topology::cached(&config.state_dir)?,
            root: root.map(Path::to_path_buf),
            id: id.to_string(),
            moves: None,
            gc_budget: GC_PER_CREATE,
        })
    }

    /// This allocator, collecting the moves of the shared containers under
    /// its root instead of writing their cgroups (take them with
    /// [`HostAllocator::take_moves`]).
    pub fn collecting(mut self) -> HostAllocator {
        self.moves = Some(RefCell::new(EngineMoves::for_root(self.root.as_deref())));
        self
    }

    /// The moves collected so far.
    pub fn take_moves(&self) -> Vec<PoolMove> {
        self.moves
            .as_ref()
            .map(|m| std::mem::take(&mut m.borrow_mut().moves))
            .unwrap_or_default()
    }
}

/// A running shared container to be moved onto a changed shared pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMove {
    /// Its ledger key (`<root hash>/<id>`).
    pub key: String,
    /// Its cgroup path.
    pub cgroup: String,
    /// The shared pool, as a cpuset list.
    pub cpus: String,
}

impl PoolMove {
    /// The container id.
    pub fn id(&self) -> &str {
        ledger::id_of(&self.key)
    }
}

/// How shared containers get onto a changed pool. `berth-runtime` has no
/// daemon and writes their cgroups itself ([`WriteCgroups`]); an engine
/// with its own update path (containerd through NRI) takes the moves as
/// updates (a `Vec<PoolMove>` collects them).
pub trait PoolMover {
    /// Moves one container, or says why it cannot.
    fn move_container(&mut self, m: &PoolMove) -> std::result::Result<(), String>;
}

/// Moves shared containers by writing their cgroups.
pub struct WriteCgroups;

impl PoolMover for WriteCgroups {
    fn move_container(&mut self, m: &PoolMove) -> std::result::Result<(), String> {
        cgroup::set_cpuset(&m.cgroup, &m.cpus)
    }
}

/// Moves for one engine: the containers under one runtime root (an
/// engine's) are collected for the engine to apply through its own update
/// path; the others (created by `berth-runtime` for another engine on the
/// same host) have their cgroups written.
#[derive(Debug, Clone, Default)]
pub struct EngineMoves {
    prefix: String,
    /// The moves collected.
    pub moves: Vec<PoolMove>,
}

impl EngineMoves {
    /// Collects the moves of the containers under `root`.
    pub fn for_root(root: Option<&Path>) -> EngineMoves {
        EngineMoves {
            prefix: crate::records::container_key(root, ""),
            moves: Vec::new(),
        }
    }
}

impl PoolMover for EngineMoves {
    fn move_container(&mut self, m: &PoolMove) -> std::result::Result<(), String> {
        if m.key.starts_with(&self.prefix) {
            self.moves.push(m.clone());
            Ok(())
        } else {
            WriteCgroups.move_container(m)
        }
    }
}

/// Moves every running shared container (except `skip`) whose cgroup is not
/// on the shared pool onto it through `mover`, so shared containers stay
/// off exclusive CPUs, and updates their CPU views. Berth has no daemon:
/// this runs whenever an allocation changes the exclusive set.
pub fn apply_pool(ledger: &ledger::Ledger, skip: &str, mover: &mut dyn PoolMover) {
    let pool = ledger.host.shared_pool_list();
    for (key, cg) in ledger.shared_cgroups() {
        if key == skip {
            continue;
        }
        if cgroup::cpuset(&cg).as_deref() == Some(pool.as_str()) {
            continue;
        }
        let m = PoolMove {
            key,
            cgroup: cg,
            cpus: pool.clone(),
        };
        match mover.move_container(&m) {
            Ok(()) => {
                tracing::info!(container = %m.key, cpus = %pool, "moved a shared container to the new shared pool");
                // Its count may follow the pool's size (a cpuset-only limit).
                if let Err(e) =
                    ledger
                        .view(&m.key)
                        .refresh_for_cpuset(&m.cgroup, Some(&pool), m.id())
                {
                    tracing::warn!(container = %m.key, "cannot update the CPU view: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(container = %m.key, "cannot move a shared container to the shared pool: {e}")
            }
        }
    }
}

/// Moves the running shared containers (but `skip`) onto the shared pool
/// when it is no longer `before`: whatever changed the exclusive set (an
/// allocation, a release, GC), shared containers follow.
pub fn settle_pool(l: &ledger::Ledger, before: &str, skip: &str, mover: &mut dyn PoolMover) {
    if l.host.shared_pool_list() != before {
        apply_pool(l, skip, mover);
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
    mover: &mut dyn PoolMover,
) -> Result<(Allocation, String)> {
    let a = match l.allocate(root, id, mode, pieces) {
        Ok(a) => Ok(a),
        Err(_) if !l.gc().is_empty() => l.allocate(root, id, mode, pieces),
        Err(e) => Err(e),
    }?;
    settle_pool(l, before, &crate::records::container_key(root, id), mover);
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
                l.gc_some(self.gc_budget);
                let mut collected = self.moves.as_ref().map(RefCell::borrow_mut);
                let mover: &mut dyn PoolMover = match collected.as_deref_mut() {
                    Some(v) => v,
                    None => &mut WriteCgroups,
                };
                let (a, pool) = allocate_and_apply_pool(
                    l,
                    &before,
                    self.root.as_deref(),
                    &self.id,
                    mode,
                    pieces,
                    mover,
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
