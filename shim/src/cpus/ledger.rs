//! The host ledger of CPU allocations: `<state_dir>/cpus/ledger`.
//!
//! Every runtime process that plans CPUs takes an exclusive `flock` on
//! `<state_dir>/cpus/lock`, loads the ledger, changes it and writes it back
//! with temp file, fsync and rename; the file carries a CRC32 of its entries
//! (see [`MAGIC`] for the format).
//! A missing or corrupt ledger is never silently reset: it is rebuilt from
//! Berth's per-container records and the live containers' cgroup cpusets and
//! quotas, and the rebuild is logged. Garbage collection frees allocations
//! whose container the delegate no longer has, unless the runtime process
//! that made it is still at work on the create.

use super::plan::{Allocation, Fragment, Host, Mode};
use super::topology::{parse_list, Topology};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::records::{container_key, Record, Records};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A runtime process at work on a create (pid and start time, against reuse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    /// Its pid.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`).
    pub start: u64,
}

impl Creator {
    /// This process.
    pub fn me() -> Creator {
        // Read once per process (a long-running plugin makes many
        // transactions); a forked child has another pid and reads its own.
        static ME: std::sync::Mutex<Option<Creator>> = std::sync::Mutex::new(None);
        let pid = std::process::id() as i32;
        let mut me = ME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match me.as_ref() {
            Some(c) if c.pid == pid => c.clone(),
            _ => {
                let c = Creator {
                    pid,
                    start: start_time(pid).unwrap_or(0),
                };
                *me = Some(c.clone());
                c
            }
        }
    }

    /// True while that process still runs (the same one, not a reused pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The file format: a magic line, then `base` and the CRC32 of the payload
/// (little-endian u32s), then the entries in postcard, a compact serde
/// encoding: a thousand entries load and save in well under a millisecond,
/// where JSON took two. `berth-runtime cpus --json` is the readable view.
/// Version 2 added the updates in progress; a version 1 file still loads.
const MAGIC: &[u8; 8] = b"BERTHLG2";
const MAGIC_V1: &[u8; 8] = b"BERTHLG1";

/// An update whose backend has not answered yet: the allocation it replaces,
/// and the runtime process waiting for the backend (pid and start time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The allocation before the update, held until the update is settled.
    pub previous: Allocation,
    /// The runtime process running the update.
    pub updater: Creator,
}

/// What the file holds: each container's allocation, the runtime processes
/// still at work on a create, and the updates in progress.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    allocations: BTreeMap<String, Allocation>,
    creators: BTreeMap<String, Creator>,
    gc_cursor: Option<String>,
    pending: BTreeMap<String, Pending>,
}

/// Version 1 of [`Payload`], before updates were two-phase.
#[derive(Debug, Default, Deserialize)]
struct PayloadV1 {
    allocations: BTreeMap<String, Allocation>,
    creators: BTreeMap<String, Creator>,
    gc_cursor: Option<String>,
}

/// [`Payload`] borrowed, for saving without copies (same encoding).
#[derive(Serialize)]
struct PayloadRef<'a> {
    allocations: &'a BTreeMap<String, Allocation>,
    creators: &'a BTreeMap<String, Creator>,
    gc_cursor: &'a Option<String>,
    pending: &'a BTreeMap<String, Pending>,
}

fn encode(base: u32, payload: &PayloadRef<'_>) -> std::result::Result<Vec<u8>, String> {
    let payload = postcard::to_allocvec(payload).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a ledger file; Err says why it is unusable.
fn decode(bytes: &[u8], base: u32) -> std::result::Result<Payload, String> {
    if bytes.len() < 16 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1) {
        return Err("it is not a Berth ledger".into());
    }
    let file_base = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| "short header")?);
    let crc = u32::from_le_bytes(bytes[12..16].try_into().map_err(|_| "short header")?);
    let payload = &bytes[16..];
    if crc32fast::hash(payload) != crc {
        return Err("its checksum does not match".into());
    }
    if file_base != base {
        return Err(format!(
            "its base {file_base} differs from [cpus] base {base}"
        ));
    }
    let bad = |e: postcard::Error| format!("its entries do not decode: {e}");
    if &bytes[..8] == MAGIC_V1 {
        let v1: PayloadV1 = postcard::from_bytes(payload).map_err(bad)?;
        return Ok(Payload {
            allocations: v1.allocations,
            creators: v1.creators,
            gc_cursor: v1.gc_cursor,
            pending: BTreeMap::new(),
        });
    }
    postcard::from_bytes(payload).map_err(bad)
}

/// The loaded ledger: the planner's state (every allocation, by container
/// key `<root hash>/<id>`) and the creates in progress. What else Berth knows
/// of a container (delegate, root, cgroup) is its record under
/// `<state_dir>/containers/<key>` ([`Record`]), read only when needed.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The planner's view of the host.
    pub host: Host,
    /// Runtime processes at work on a create, by container key.
    pub creators: BTreeMap<String, Creator>,
    /// Where incremental GC goes on.
    pub gc_cursor: Option<String>,
    /// Runtime processes waiting for a backend's update, by container key
    /// (the allocation each replaces is in `host.held`).
    pub updaters: BTreeMap<String, Creator>,
    records: PathBuf,
}

impl Ledger {
    fn new(cfg: &RuntimeConfig, topology: Topology) -> Ledger {
        let reserved: BTreeSet<u32> = parse_list(&cfg.cpus.reserved)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ledger {
            host: Host::new(topology, cfg.cpus.base, reserved, cfg.cpus.overcommit),
            creators: BTreeMap::new(),
            gc_cursor: None,
            updaters: BTreeMap::new(),
            records: cfg.state_dir.join("containers"),
        }
    }

    /// Starts an update of `key`: its current allocation is held (its CPUs
    /// stay its own) until [`Ledger::settle_update`] says whether the backend
    /// applied the new one. Refused while another live process updates it.
    pub fn hold_for_update(&mut self, key: &str) -> Result<()> {
        if let Some(u) = self.updaters.get(key).filter(|u| u.alive()) {
            return Err(Error::Cpu(format!(
                "container {} is being updated by berth-runtime process {}; try again when it is done",
                id_of(key),
                u.pid
            )));
        }
        let Some(current) = self.host.allocations.get(key).cloned() else {
            return Err(Error::Cpu(format!("no allocation for {}", id_of(key))));
        };
        self.host.held.entry(key.to_string()).or_insert(current);
        self.updaters.insert(key.to_string(), Creator::me());
        Ok(())
    }

    /// Ends an update of `key`: with `applied`, the new allocation stays and
    /// the held one is freed; otherwise the held one is restored, and so is
    /// the container's cpuset where a failed backend left it changed (runc
    /// writes the cpuset before the memory limit that may fail).
    pub fn settle_update(&mut self, key: &str, applied: bool) {
        self.updaters.remove(key);
        let Some(previous) = self.host.held.remove(key) else {
            return;
        };
        if applied || !self.host.allocations.contains_key(key) {
            return;
        }
        self.host
            .allocations
            .insert(key.to_string(), previous.clone());
        if let Some(cg) = self.record(key).and_then(|r| r.cgroup) {
            restore(&cg, &previous, &self.host);
        }
    }

    /// Settles every update whose runtime process died (kill -9) before it
    /// could, from what the container's cgroup shows: the new allocation if
    /// the backend applied it, else the previous one, which Berth writes
    /// back to a cgroup left half-updated. Returns the keys settled.
    pub fn reconcile_updates(&mut self) -> Vec<String> {
        let orphans: Vec<String> = self
            .updaters
            .iter()
            .filter(|(_, u)| !u.alive())
            .map(|(k, _)| k.clone())
            .collect();
        for key in &orphans {
            let cgroup = self.record(key).and_then(|r| r.cgroup);
            let (Some(new), true) = (
                self.host.allocations.get(key).cloned(),
                self.host.held.contains_key(key),
            ) else {
                self.settle_update(key, true);
                continue;
            };
            let applied = cgroup
                .as_deref()
                .is_some_and(|cg| shows(cg, &new, self.host.base));
            tracing::warn!(
                container = %key,
                applied,
                "a berth-runtime update was killed before it settled the CPU ledger; settled from the cgroup"
            );
            self.settle_update(key, applied);
        }
        orphans
    }

    /// Berth's record of the container with ledger key `key`.
    pub fn record(&self, key: &str) -> Option<Record> {
        Record::read(&self.records.join(key))
    }

    /// False only when the container is surely gone and nobody is creating it.
    pub fn alive(&self, key: &str) -> bool {
        let recorded = self.record(key).map(|r| r.alive());
        match recorded {
            Some(Some(true)) | Some(None) => true,
            Some(Some(false)) | None => self.creators.get(key).map(Creator::alive).unwrap_or(false),
        }
    }

    /// Removes `key`; returns its allocation.
    pub fn remove(&mut self, key: &str) -> Option<Allocation> {
        self.creators.remove(key);
        self.updaters.remove(key);
        self.host.release(key)
    }

    /// Frees every allocation whose container is gone; returns their keys.
    pub fn gc(&mut self) -> Vec<String> {
        self.gc_some(usize::MAX)
    }

    /// GC of at most `budget` entries, starting after the last one checked
    /// (kept in the ledger), so every create can afford a little of it.
    pub fn gc_some(&mut self, budget: usize) -> Vec<String> {
        if budget == 0 {
            return Vec::new();
        }
        let keys: Vec<String> = {
            let after = self.gc_cursor.clone();
            let tail = self
                .host
                .allocations
                .keys()
                .filter(|k| after.as_ref().is_none_or(|a| *k > a));
            let head = self.host.allocations.keys();
            tail.chain(head)
                .take(budget.min(self.host.allocations.len()))
                .cloned()
                .collect()
        };
        self.gc_cursor = keys.last().cloned();
        let dead: Vec<String> = keys.into_iter().filter(|k| !self.alive(k)).collect();
        for k in &dead {
            tracing::info!(container = %k, "CPU ledger GC: freed the allocation of a container that no longer exists");
            self.remove(k);
            let _ = std::fs::remove_file(self.records.join(k));
        }
        dead
    }

    /// Plans and records an allocation for `id` under `root`, made by this process.
    pub fn allocate(
        &mut self,
        root: Option<&Path>,
        id: &str,
        mode: Mode,
        pieces: u32,
    ) -> std::result::Result<Allocation, super::plan::PlanError> {
        let key = container_key(root, id);
        let a = self.host.allocate(&key, mode, pieces)?;
        self.creators.insert(key, Creator::me());
        Ok(a)
    }

    /// The CPU view of the container with ledger key `key`.
    pub fn view(&self, key: &str) -> crate::cpuview::CpuView {
        let state = self.records.parent().unwrap_or(&self.records);
        crate::cpuview::CpuView::at(state.join("cpuview").join(key))
    }

    /// Shared-mode containers with a cgroup, as (container key, cgroup path).
    pub fn shared_cgroups(&self) -> Vec<(String, String)> {
        self.host
            .allocations
            .iter()
            .filter(|(_, a)| a.mode == Mode::Shared)
            .filter_map(|(k, _)| {
                self.record(k)
                    .and_then(|r| r.cgroup)
                    .map(|c| (k.clone(), c))
            })
            .collect()
    }
}

/// The container part of a ledger key (`<root hash>/<id>`).
pub fn id_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, id)| id)
}

/// True when cgroup `cg` shows allocation `a`: its quota in pieces and,
/// for a split or exclusive allocation, exactly its CPUs (a shared one's
/// cpuset is the pool, which says nothing of the update).
pub(super) fn shows(cg: &str, a: &Allocation, base: u32) -> bool {
    let pieces = super::cgroup::quota(cg)
        .map(|(q, p)| super::plan::pieces_from_quota(q, p, base))
        .unwrap_or(0);
    let cpus = super::cgroup::cpuset(cg).and_then(|s| parse_list(&s));
    pieces == a.pieces
        && cpus.is_some_and(|mut c| {
            c.sort_unstable();
            a.mode == Mode::Shared || c == a.cpus()
        })
}

/// Writes allocation `a`'s cpuset back into cgroup `cg` (after an update
/// killed half-way); the quota the engine set is left to the engine.
fn restore(cg: &str, a: &Allocation, host: &Host) {
    let cpus = if a.mode == Mode::Shared {
        host.shared_pool_list()
    } else {
        super::topology::format_list(a.cpus())
    };
    if super::cgroup::cpuset(cg).as_deref() != Some(cpus.as_str()) {
        if let Err(e) = super::cgroup::set_cpuset(cg, &cpus) {
            tracing::warn!(
                cgroup = cg,
                "cannot restore the cpuset of a half-updated container: {e}"
            );
        }
    }
}

/// Where the ledger lives, and the lock that serialises it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The ledger under `cfg.state_dir`.
    pub fn new(cfg: &RuntimeConfig) -> Store {
        Store {
            dir: cfg.state_dir.join("cpus"),
        }
    }

    /// The ledger file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// The entries as last saved, read without the lock (the file is only
    /// ever replaced atomically); None when missing or unusable.
    pub fn peek(&self, cfg: &RuntimeConfig) -> Option<BTreeMap<String, Allocation>> {
        decode(&std::fs::read(self.path()).ok()?, cfg.cpus.base)
            .ok()
            .map(|p| p.allocations)
    }

    /// Runs `f` on the ledger under the exclusive lock, then saves it.
    pub fn transaction<T>(
        &self,
        cfg: &RuntimeConfig,
        topology: &Topology,
        f: impl FnOnce(&mut Ledger) -> Result<T>,
    ) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let lock_path = self.dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        // SAFETY: flock on an fd we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&lock_path, std::io::Error::last_os_error()));
        }
        let mut ledger = match Cached::take(&self.path(), cfg, topology) {
            Some(mut l) => {
                l.reconcile_updates();
                l
            }
            None => self.load(cfg, topology)?,
        };
        // On an error the ledger is neither saved nor kept: the next
        // transaction loads the file.
        let out = f(&mut ledger)?;
        let stamp = self.save(&ledger)?;
        Cached::put(self.path(), stamp, ledger);
        drop(lock);
        Ok(out)
    }

    fn load(&self, cfg: &RuntimeConfig, topology: &Topology) -> Result<Ledger> {
        let path = self.path();
        let mut ledger = Ledger::new(cfg, topology.clone());
        let why = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, cfg.cpus.base) {
                Ok(p) => {
                    ledger.host.allocations = p.allocations;
                    ledger.creators = p.creators;
                    ledger.gc_cursor = p.gc_cursor;
                    for (k, pending) in p.pending {
                        ledger.host.held.insert(k.clone(), pending.previous);
                        ledger.updaters.insert(k, pending.updater);
                    }
                    ledger.reconcile_updates();
                    return Ok(ledger);
                }
                Err(why) => why,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "it is missing".to_string(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let n = rebuild(&mut ledger, cfg);
        if n > 0 || why != "it is missing" {
            tracing::warn!(ledger = %path.display(), "CPU ledger rebuilt from {n} live containers because {why}");
        }
        Ok(ledger)
    }

    fn save(&self, ledger: &Ledger) -> Result<Option<Stamp>> {
        let pending: BTreeMap<String, Pending> = ledger
            .updaters
            .iter()
            .filter_map(|(k, u)| {
                let previous = ledger.host.held.get(k)?.clone();
                Some((
                    k.clone(),
                    Pending {
                        previous,
                        updater: u.clone(),
                    },
                ))
            })
            .collect();
        let payload = PayloadRef {
            allocations: &ledger.host.allocations,
            creators: &ledger.creators,
            gc_cursor: &ledger.gc_cursor,
            pending: &pending,
        };
        let bytes = encode(ledger.host.base, &payload).map_err(|message| Error::Config {
            path: self.path(),
            message,
        })?;
        crate::atomic::write_file(
            &self.path(),
            &bytes,
            0o600,
            crate::atomic::Durability::Durable,
        )?;
        Ok(Stamp::of(&self.path(), &bytes[..16]))
    }
}

/// What identifies one saved ledger file: its inode, size and header (the
/// header holds the payload's CRC). Every save replaces the file by rename,
/// so another process's save changes the inode, and the CRC and size would
/// both have to match as well for a stale copy to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    header: [u8; 16],
}

impl Stamp {
    /// The stamp of the file at `path` whose first 16 bytes are `header`.
    fn of(path: &Path, header: &[u8]) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            header: header.try_into().ok()?,
        })
    }

    /// The stamp of the file at `path` now (its header read).
    fn read(path: &Path) -> Option<Stamp> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let mut f = std::fs::File::open(path).ok()?;
        let m = f.metadata().ok()?;
        let mut header = [0u8; 16];
        f.read_exact(&mut header).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            header,
        })
    }
}

/// The ledger this process saved last, kept in memory: a long-running
/// process (berth-nri) makes many transactions, and while no other process
/// has saved in between, the file holds exactly this ledger, so it need
/// not be read and decoded again (a thousand entries cost most of a
/// transaction). Checked under the ledger's lock, against the file.
struct Cached {
    path: PathBuf,
    stamp: Stamp,
    ledger: Ledger,
}

static CACHED: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);

impl Cached {
    /// The kept ledger, if the file at `path` is still the one it was saved
    /// as, for the same configuration and topology.
    fn take(path: &Path, cfg: &RuntimeConfig, topology: &Topology) -> Option<Ledger> {
        let mut slot = CACHED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = slot.take()?;
        let reserved: BTreeSet<u32> = parse_list(&cfg.cpus.reserved)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let h = &c.ledger.host;
        let same = c.path == path
            && h.topology == *topology
            && h.base == cfg.cpus.base.max(1)
            && h.reserved == reserved
            && h.overcommit == cfg.cpus.overcommit
            && c.ledger.records == cfg.state_dir.join("containers")
            && Stamp::read(path).as_ref() == Some(&c.stamp);
        same.then_some(c.ledger)
    }

    /// Keeps `ledger`, just saved at `path` with `stamp`.
    fn put(path: PathBuf, stamp: Option<Stamp>, ledger: Ledger) {
        let mut slot = CACHED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = stamp.map(|stamp| Cached {
            path,
            stamp,
            ledger,
        });
    }
}

/// Rebuilds entries from Berth's records of live containers and their cgroup
/// cpusets and quotas. Returns how many containers were recovered.
fn rebuild(ledger: &mut Ledger, cfg: &RuntimeConfig) -> usize {
    let base = ledger.host.base;
    let mut recovered: Vec<(String, Record, Vec<u32>, u32)> = Vec::new();
    for rec in Records::all(cfg) {
        if !rec.cpus_planned || rec.alive() != Some(true) {
            continue;
        }
        let Some(cg) = rec.cgroup.clone() else {
            continue;
        };
        let Some(cpus) = super::cgroup::cpuset(&cg).and_then(|s| parse_list(&s)) else {
            continue;
        };
        let pieces = super::cgroup::quota(&cg)
            .map(|(q, p)| super::plan::pieces_from_quota(q, p, base))
            .unwrap_or(0);
        recovered.push((
            container_key(rec.root.as_deref(), &rec.id),
            rec,
            cpus,
            pieces,
        ));
    }
    // A CPU in several recovered cpusets is a shared (fragment or pool) CPU.
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, _, cpus, _) in &recovered {
        for c in cpus {
            *seen.entry(*c).or_default() += 1;
        }
    }
    let n = recovered.len();
    for (key, rec, cpus, pieces) in recovered {
        let whole = (pieces / base) as usize;
        let rem = pieces % base;
        let allocation = if pieces > 0 && cpus.len() == whole && rem == 0 {
            Allocation {
                mode: Mode::Split,
                pieces,
                exclusive: cpus.clone(),
                fragment: None,
                nodes: vec![],
            }
        } else if pieces > 0 && cpus.len() == whole + 1 && rem > 0 {
            let frag = cpus
                .iter()
                .copied()
                .find(|c| seen.get(c).copied().unwrap_or(0) > 1)
                .unwrap_or(cpus[cpus.len() - 1]);
            Allocation {
                mode: Mode::Split,
                pieces,
                exclusive: cpus.iter().copied().filter(|c| *c != frag).collect(),
                fragment: Some(Fragment {
                    cpu: frag,
                    pieces: rem,
                }),
                nodes: vec![],
            }
        } else {
            Allocation {
                mode: Mode::Shared,
                pieces,
                exclusive: vec![],
                fragment: None,
                nodes: vec![],
            }
        };
        let _ = rec;
        let mut allocation = allocation;
        let mut nodes: Vec<u32> = allocation
            .cpus()
            .iter()
            .filter_map(|c| ledger.host.topology.cpus.get(c).map(|x| x.node))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        allocation.nodes = nodes;
        ledger.host.allocations.insert(key, allocation);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with_gone(n: usize) -> (tempfile::TempDir, RuntimeConfig, Ledger) {
        let d = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            state_dir: d.path().to_path_buf(),
            ..RuntimeConfig::default()
        };
        let mut l = Ledger::new(&cfg, Topology::synthetic(1, 8, 1));
        for i in 0..n {
            l.allocate(
                Some(Path::new("/nonexistent-root")),
                &format!("c{i}"),
                Mode::Split,
                10,
            )
            .unwrap();
        }
        // Their creator (this process) is alive: nothing is collectable yet.
        assert!(l.gc().is_empty());
        l.creators.clear();
        (d, cfg, l)
    }

    /// The ledger kept in memory is used only while the file is the one
    /// this process saved: another process's save (a rename over it) is
    /// read, whatever this process kept.
    #[test]
    fn a_kept_ledger_gives_way_to_another_processs_save() {
        let d = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            state_dir: d.path().to_path_buf(),
            ..RuntimeConfig::default()
        };
        let topo = Topology::synthetic(1, 4, 1);
        let store = Store::new(&cfg);
        let root = Some(Path::new("/nonexistent-root"));
        let keys = |store: &Store| {
            store
                .transaction(&cfg, &topo, |l| {
                    Ok(l.host.allocations.keys().cloned().collect::<Vec<_>>())
                })
                .unwrap()
        };
        store
            .transaction(&cfg, &topo, |l| {
                Ok(l.allocate(root, "a", Mode::Split, 100).unwrap())
            })
            .unwrap();
        let older = d.path().join("older");
        std::fs::copy(store.path(), &older).unwrap();
        store
            .transaction(&cfg, &topo, |l| {
                Ok(l.allocate(root, "b", Mode::Split, 100).unwrap())
            })
            .unwrap();
        assert_eq!(
            keys(&store).len(),
            2,
            "the kept ledger is this process's last save"
        );
        // Another process saves (here: the older contents, renamed in).
        std::fs::rename(&older, store.path()).unwrap();
        assert_eq!(
            keys(&store),
            vec![container_key(root, "a")],
            "the file another process saved wins"
        );
        // A failed transaction keeps nothing: the file is read again.
        let _ = store.transaction(&cfg, &topo, |l| -> Result<()> {
            l.host.allocations.clear();
            Err(Error::Cpu("failed".into()))
        });
        assert_eq!(keys(&store).len(), 1);
    }

    #[test]
    fn incremental_gc_walks_round_robin_and_gets_everything() {
        let (_d, _cfg, mut l) = ledger_with_gone(5);
        assert_eq!(l.gc_some(2).len(), 2);
        assert_eq!(l.gc_some(2).len(), 2);
        assert_eq!(l.gc_some(2).len(), 1);
        assert!(l.host.allocations.is_empty());
    }

    /// An update holds the allocation it replaces: nobody else gets its
    /// CPUs until the backend's answer settles it, either way.
    #[test]
    fn an_update_holds_the_old_cpus_until_it_is_settled() {
        let d = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            state_dir: d.path().to_path_buf(),
            ..RuntimeConfig::default()
        };
        let mut l = Ledger::new(&cfg, Topology::synthetic(1, 4, 1));
        let root = Some(Path::new("/r"));
        let old = l.allocate(root, "a", Mode::Split, 200).unwrap();
        let key = container_key(root, "a");
        for applied in [false, true] {
            l.hold_for_update(&key).unwrap();
            assert!(l.hold_for_update(&key).is_err(), "a second update at once");
            let new = l.allocate(root, "a", Mode::Split, 100).unwrap();
            // The two CPUs it had stay its own: a 3-CPU request does not fit.
            assert!(l.host.plan("other", Mode::Split, 300).is_err());
            l.settle_update(&key, applied);
            let now = l.host.allocations[&key].clone();
            assert_eq!(now, if applied { new } else { old.clone() });
            assert!(l.host.held.is_empty() && l.updaters.is_empty());
        }
        assert!(l.host.plan("other", Mode::Split, 300).is_ok());
    }

    #[test]
    fn a_version_1_ledger_still_loads() {
        let (_d, cfg, l) = ledger_with_gone(2);
        #[derive(Serialize)]
        struct V1<'a> {
            allocations: &'a BTreeMap<String, Allocation>,
            creators: &'a BTreeMap<String, Creator>,
            gc_cursor: &'a Option<String>,
        }
        let payload = postcard::to_allocvec(&V1 {
            allocations: &l.host.allocations,
            creators: &l.creators,
            gc_cursor: &l.gc_cursor,
        })
        .unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&cfg.cpus.base.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode(&bytes, cfg.cpus.base).unwrap().allocations,
            l.host.allocations
        );
    }

    #[test]
    fn save_and_load_round_trip_and_corruption_is_detected() {
        let (_d, cfg, l) = ledger_with_gone(3);
        let store = Store::new(&cfg);
        std::fs::create_dir_all(store.dir.clone()).unwrap();
        store.save(&l).unwrap();
        assert_eq!(store.peek(&cfg).unwrap(), l.host.allocations);
        let mut bytes = std::fs::read(store.path()).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert!(decode(&bytes, cfg.cpus.base)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode(b"junk", 100).is_err());
    }
}
