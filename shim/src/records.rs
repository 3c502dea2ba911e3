//! Berth's per-container records: `<state_dir>/containers/<hash of --root>/<id>`.
//!
//! Every `create`/`run` records the container's backend, cgroup and root
//! filesystem, so later verbs go to the same backend even if the configured
//! default changes meanwhile, and the CPU ledger can find the container's
//! cgroup. Records of containers their backend no longer has are removed by
//! GC on every create.

use crate::backend::Backend;
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// True when `id` is a container id runc accepts (`[A-Za-z0-9_+.-]+`, not `.`/`..`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
}

fn fnv1a(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn root_hash(root: Option<&Path>) -> String {
    let r = root
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{:016x}", fnv1a(r.as_bytes()))
}

/// The ledger key of container `id` under state root `root`
/// (`<root hash>/<id>`, also its record's path under `containers/`).
pub fn container_key(root: Option<&Path>, id: &str) -> String {
    format!("{}/{id}", root_hash(root))
}

/// What Berth remembers of a container it created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The backend that holds it.
    pub delegate: Backend,
    /// The state root (`--root`), if one was given.
    pub root: Option<PathBuf>,
    /// The container id.
    pub id: String,
    /// Its cgroup directory, resolved for the driver in use, if set.
    pub cgroup: Option<String>,
    /// Its root filesystem, absolute (the built-in backend's `state` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// Whether its CPUs are in the ledger (false: unplanned, e.g. a user cpuset).
    #[serde(default)]
    pub cpus_planned: bool,
}

impl Record {
    /// Reads the record file at `path`; None when missing or unreadable.
    pub fn read(path: &Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// True while the backend still has state for the container; None when
    /// that cannot be told (no `--root` and a backend of unknown default root).
    pub fn alive(&self) -> Option<bool> {
        self.delegate
            .state_root(self.root.as_deref())
            .map(|r| r.join(&self.id).exists())
    }
}

/// How many records each create checks for GC.
pub const GC_PER_CREATE: usize = 16;

/// How old a record of a container the backend does not know must be
/// before GC removes it (a create in progress is younger).
pub const RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Per-container records for one `--root`.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
    /// The CPU views of this root's containers ([`crate::cpuview`]).
    views: PathBuf,
    root: Option<PathBuf>,
}

impl Records {
    /// The records for state root `root` (None: the backend's default root).
    pub fn new(cfg: &RuntimeConfig, root: Option<&Path>) -> Records {
        Records {
            dir: cfg.state_dir.join("containers").join(root_hash(root)),
            views: cfg.state_dir.join("cpuview").join(root_hash(root)),
            root: root.map(Path::to_path_buf),
        }
    }

    /// The recorded backend of container `id`, if any and still usable.
    pub fn get(&self, id: &str) -> Option<Backend> {
        self.record(id).map(|r| r.delegate).filter(Backend::usable)
    }

    /// The whole record of container `id`, if any.
    pub fn record(&self, id: &str) -> Option<Record> {
        if !valid_id(id) {
            return None;
        }
        Record::read(&self.dir.join(id))
    }

    /// Records that container `id` (root filesystem `rootfs`) runs on
    /// `backend` in cgroup `cgroup`: atomically, but not fsynced, since the
    /// record (like runc's own state under `/run`) only matters while the
    /// host is up; GC reconciles it.
    pub fn put(
        &self,
        id: &str,
        backend: &Backend,
        cgroup: Option<&str>,
        rootfs: Option<&Path>,
        cpus_planned: bool,
    ) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::ContainerId(id.into()));
        }
        let rec = Record {
            delegate: backend.clone(),
            root: self.root.clone(),
            id: id.to_string(),
            cgroup: cgroup.map(str::to_string),
            rootfs: rootfs.map(Path::to_path_buf),
            cpus_planned,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let bytes = serde_json::to_vec(&rec).map_err(|e| Error::Delegate(e.to_string()))?;
        crate::atomic::write_file(
            &self.dir.join(id),
            &bytes,
            0o600,
            crate::atomic::Durability::Atomic,
        )
    }

    /// Every record under `state_dir`, for all roots.
    pub fn all(cfg: &RuntimeConfig) -> Vec<Record> {
        let mut out = Vec::new();
        let Ok(roots) = std::fs::read_dir(cfg.state_dir.join("containers")) else {
            return out;
        };
        for r in roots.flatten() {
            let Ok(files) = std::fs::read_dir(r.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Some(rec) = Record::read(&f.path()) {
                    out.push(rec);
                }
            }
        }
        out
    }

    /// Removes records (but `keep`'s) whose container its backend no longer
    /// has state for, whatever the ledger knows of it. Without `--root` the
    /// backend's default root is looked at; a record whose backend's root
    /// cannot be told is kept. Each call checks at most [`GC_PER_CREATE`]
    /// records, from a point that moves with the clock, so a create's cost
    /// stays flat however many records there are, and every record is
    /// reached over successive creates.
    pub fn gc(&self, keep: &str) -> usize {
        self.gc_some(keep, RECORD_GRACE, GC_PER_CREATE)
    }

    /// Every record checked, with a given grace period.
    pub fn gc_older_than(&self, keep: &str, grace: std::time::Duration) -> usize {
        self.gc_some(keep, grace, usize::MAX)
    }

    fn gc_some(&self, keep: &str, grace: std::time::Duration, budget: usize) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let entries: Vec<std::fs::DirEntry> = entries.flatten().collect();
        let n = entries.len();
        let start = if n > budget {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize)
                % n
        } else {
            0
        };
        let mut removed = 0;
        for e in entries.iter().cycle().skip(start).take(budget.min(n)) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == keep || name.starts_with('.') {
                continue;
            }
            // Cheapest first: with --root, a stat tells the container is there.
            if self.root.as_ref().is_some_and(|r| r.join(&name).exists()) {
                continue;
            }
            // A record younger than a create can take may belong to a create
            // still in progress in another runtime process: keep it.
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < grace);
            if young {
                continue;
            }
            let gone = match &self.root {
                Some(_) => true,
                None => Record::read(&e.path()).is_some_and(|r| r.alive() == Some(false)),
            };
            if gone && std::fs::remove_file(e.path()).is_ok() {
                crate::cpuview::CpuView::at(self.views.join(&name)).remove();
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!(
                removed,
                "removed the records of containers that no longer exist"
            );
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(valid_id("abc-1.2_x+y"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
    }

    #[test]
    fn records_round_trip_and_gc() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("alive")).unwrap();
        let cfg = RuntimeConfig {
            state_dir: d.path().join("state"),
            ..RuntimeConfig::default()
        };
        let r = Records::new(&cfg, Some(&root));
        let sh = Backend::Exec(PathBuf::from("/bin/sh"));
        r.put("alive", &sh, None, None, false).unwrap();
        r.put("gone", &sh, Some("/x/gone"), None, true).unwrap();
        assert_eq!(Records::all(&cfg).len(), 2);
        assert_eq!(r.record("alive").unwrap().alive(), Some(true));
        assert_eq!(r.record("gone").unwrap().alive(), Some(false));
        assert_eq!(r.get("alive"), Some(sh.clone()));
        assert_eq!(r.gc("new"), 0, "a young record may be a create in progress");
        assert_eq!(r.gc_older_than("new", std::time::Duration::ZERO), 1);
        assert_eq!(r.get("gone"), None);
        assert_eq!(r.get("alive"), Some(sh));
    }

    /// Without --root, the backend's default root tells (the records the
    /// OCI validation suite left behind): gone containers' records go,
    /// a record whose backend's root is unknown stays.
    #[test]
    fn records_without_a_root_are_collected_from_the_backends_default_root() {
        let d = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            state_dir: d.path().join("state"),
            ..RuntimeConfig::default()
        };
        let r = Records::new(&cfg, None);
        let gone = format!("berth-unit-gone-{}", std::process::id());
        r.put(
            &gone,
            &Backend::Exec("/usr/sbin/runc".into()),
            None,
            None,
            false,
        )
        .unwrap();
        r.put(&format!("{gone}-b"), &Backend::Builtin, None, None, false)
            .unwrap();
        r.put(
            "unknown",
            &Backend::Exec("/bin/sh".into()),
            None,
            None,
            false,
        )
        .unwrap();
        assert_eq!(r.gc_older_than("", std::time::Duration::ZERO), 2);
        assert!(r.record("unknown").is_some());
        assert!(r.record(&gone).is_none());
    }
}
