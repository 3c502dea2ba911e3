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
use crate::delegate::{container_key, Record, Records};
use crate::error::{Error, Result};
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
        let pid = std::process::id() as i32;
        Creator {
            pid,
            start: start_time(pid).unwrap_or(0),
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
const MAGIC: &[u8; 8] = b"BERTHLG1";

/// What the file holds: each container's allocation, and the runtime
/// processes still at work on a create.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
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
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
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
    postcard::from_bytes(payload).map_err(|e| format!("its entries do not decode: {e}"))
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
            records: cfg.state_dir.join("containers"),
        }
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
        self.host.release(key)
    }

    /// Frees every allocation whose container is gone; returns their keys.
    pub fn gc(&mut self) -> Vec<String> {
        self.gc_some(usize::MAX)
    }

    /// GC of at most `budget` entries, starting after the last one checked
    /// (kept in the ledger), so every create can afford a little of it.
    pub fn gc_some(&mut self, budget: usize) -> Vec<String> {
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
        let mut ledger = self.load(cfg, topology)?;
        let out = f(&mut ledger)?;
        self.save(&ledger)?;
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

    fn save(&self, ledger: &Ledger) -> Result<()> {
        let payload = PayloadRef {
            allocations: &ledger.host.allocations,
            creators: &ledger.creators,
            gc_cursor: &ledger.gc_cursor,
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
        )
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

    #[test]
    fn incremental_gc_walks_round_robin_and_gets_everything() {
        let (_d, _cfg, mut l) = ledger_with_gone(5);
        assert_eq!(l.gc_some(2).len(), 2);
        assert_eq!(l.gc_some(2).len(), 2);
        assert_eq!(l.gc_some(2).len(), 1);
        assert!(l.host.allocations.is_empty());
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
