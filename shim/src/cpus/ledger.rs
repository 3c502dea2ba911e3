//! The host ledger of CPU allocations: `<state_dir>/cpus/ledger.json`.
//!
//! Every runtime process that plans CPUs takes an exclusive `flock` on
//! `<state_dir>/cpus/lock`, loads the ledger, changes it and writes it back
//! with temp file, fsync and rename; the file carries a CRC32 of its entries.
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

/// One container's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// Its state root (`--root`), if given.
    pub root: Option<PathBuf>,
    /// Its delegate runtime.
    pub delegate: PathBuf,
    /// Its `cgroupsPath`, if any.
    pub cgroup: Option<String>,
    /// Where its CPUs are.
    pub allocation: Allocation,
    /// The runtime process creating it, until the delegate has its state.
    pub creator: Option<Creator>,
}

impl Entry {
    fn record(&self) -> Record {
        Record {
            delegate: self.delegate.clone(),
            root: self.root.clone(),
            id: self.id.clone(),
            cgroup: self.cgroup.clone(),
        }
    }

    /// False only when the container is surely gone and nobody is creating it.
    pub fn alive(&self) -> bool {
        match self.record().alive() {
            Some(true) | None => true,
            Some(false) => self.creator.as_ref().map(Creator::alive).unwrap_or(false),
        }
    }
}

/// The file: the entries kept as raw JSON text, so the CRC32 covers exactly
/// the bytes on disk and each load parses them once.
#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    base: u32,
    checksum: String,
    entries: Box<serde_json::value::RawValue>,
}

fn checksum(raw: &str) -> String {
    format!("{:08x}", crc32fast::hash(raw.as_bytes()))
}

/// The loaded ledger: entries plus the planner state derived from them.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The planner's view of the host.
    pub host: Host,
    /// Entries by container key.
    pub entries: BTreeMap<String, Entry>,
}

impl Ledger {
    fn new(cfg: &RuntimeConfig, topology: Topology) -> Ledger {
        let reserved: BTreeSet<u32> = parse_list(&cfg.cpus.reserved)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ledger {
            host: Host::new(topology, cfg.cpus.base, reserved, cfg.cpus.overcommit),
            entries: BTreeMap::new(),
        }
    }

    fn insert(&mut self, key: String, e: Entry) {
        self.host
            .allocations
            .insert(key.clone(), e.allocation.clone());
        self.entries.insert(key, e);
    }

    /// Removes `key`; returns its entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.host.release(key);
        self.entries.remove(key)
    }

    /// Frees every allocation whose container is gone; returns their keys.
    pub fn gc(&mut self) -> Vec<String> {
        let dead: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.alive())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            tracing::info!(container = %k, "CPU ledger GC: freed the allocation of a container that no longer exists");
            self.remove(k);
        }
        dead
    }

    /// Plans and records an allocation for `id` under `root`.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate(
        &mut self,
        root: Option<&Path>,
        id: &str,
        delegate: &Path,
        cgroup: Option<&str>,
        mode: Mode,
        pieces: u32,
    ) -> std::result::Result<Allocation, super::plan::PlanError> {
        let key = container_key(root, id);
        let a = self.host.allocate(&key, mode, pieces)?;
        let e = Entry {
            id: id.to_string(),
            root: root.map(Path::to_path_buf),
            delegate: delegate.to_path_buf(),
            cgroup: cgroup.map(str::to_string),
            allocation: a.clone(),
            creator: Some(Creator::me()),
        };
        self.insert(key, e);
        Ok(a)
    }

    /// Shared-mode entries with a cgroup, as (container key, cgroup path).
    pub fn shared_cgroups(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.allocation.mode == Mode::Shared)
            .filter_map(|(k, e)| e.cgroup.clone().map(|c| (k.clone(), c)))
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
        self.dir.join("ledger.json")
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
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) if f.checksum == checksum(f.entries.get()) && f.base == cfg.cpus.base => {
                    match serde_json::from_str::<BTreeMap<String, Entry>>(f.entries.get()) {
                        Ok(entries) => {
                            for (k, e) in entries {
                                ledger.insert(k, e);
                            }
                            return Ok(ledger);
                        }
                        Err(e) => format!("its entries do not parse: {e}"),
                    }
                }
                Ok(f) if f.base != cfg.cpus.base => format!(
                    "its base {} differs from [cpus] base {}",
                    f.base, cfg.cpus.base
                ),
                Ok(_) => "its checksum does not match".to_string(),
                Err(e) => format!("it does not parse: {e}"),
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
        let raw = serde_json::value::to_raw_value(&ledger.entries).map_err(|e| Error::Config {
            path: self.path(),
            message: e.to_string(),
        })?;
        let f = File {
            version: 1,
            base: ledger.host.base,
            checksum: checksum(raw.get()),
            entries: raw,
        };
        let bytes = serde_json::to_vec(&f).map_err(|e| Error::Config {
            path: self.path(),
            message: e.to_string(),
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
        if rec.alive() != Some(true) {
            continue;
        }
        let Some(cg) = rec.cgroup.clone() else {
            continue;
        };
        let Some(cpus) = super::cgroup::cpuset(&cg).and_then(|s| parse_list(&s)) else {
            continue;
        };
        let pieces = match super::cgroup::quota(&cg) {
            Some((q, p)) if q > 0 && p > 0 => ((q as u64 * u64::from(base)).div_ceil(p)) as u32,
            _ => 0,
        };
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
        let e = Entry {
            id: rec.id.clone(),
            root: rec.root.clone(),
            delegate: rec.delegate.clone(),
            cgroup: rec.cgroup.clone(),
            allocation,
            creator: None,
        };
        ledger.insert(key, e);
    }
    n
}
