//! The real runtime behind Berth: choosing it, remembering it per container,
//! and handing over to it with `exec(2)` (no extra process stays around).
//!
//! Every `create`/`run` records its delegate under
//! `<state_dir>/containers/<hash of --root>/<id>`, so later verbs go to the
//! same runtime even if the configured default changes meanwhile. Records of
//! containers the delegate no longer knows are removed on each create (GC).

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The annotation by which a container may pick its delegate, where allowed.
pub const ANNOTATION: &str = "io.berth.delegate";

/// The name of the built-in backend (youki's libcontainer, in-process). It is
/// never looked up on PATH; records and [`resolve_name`] carry it as a bare
/// relative path, which no binary delegate can be.
pub const BUILTIN: &str = "libcontainer";

/// The state root of the built-in backend when no `--root` is given.
pub const BUILTIN_DEFAULT_ROOT: &str = "/run/berth/libcontainer";

/// True when `delegate` (as [`resolve_name`] returned it) is the built-in backend.
pub fn is_builtin(delegate: &Path) -> bool {
    delegate == Path::new(BUILTIN)
}

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

/// Directories searched after PATH: engines often call runtimes with a
/// minimal PATH (conmon, for one, may lack the sbin directories runc is in).
pub const FALLBACK_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Finds `program` on PATH, then in [`FALLBACK_DIRS`].
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves a backend name (`runc`, `crun`, an absolute path, or
/// [`BUILTIN`]) to a binary, or to `BUILTIN` itself.
pub fn resolve_name(name: &str) -> Result<PathBuf> {
    if name == BUILTIN {
        return Ok(PathBuf::from(BUILTIN));
    }
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::Delegate(format!("{name} is not an executable file")))
        };
    }
    which(name).ok_or_else(|| {
        Error::Delegate(format!(
            "{name} not found on PATH nor in {:?}",
            FALLBACK_DIRS
        ))
    })
}

/// The configured default backend: `backend`, or for `auto` the first of `auto_order` found.
pub fn default_delegate(cfg: &RuntimeConfig) -> Result<PathBuf> {
    if cfg.backend != "auto" {
        return resolve_name(&cfg.backend);
    }
    cfg.auto_order
        .iter()
        .find_map(|n| resolve_name(n).ok())
        .ok_or_else(|| Error::Delegate(format!("auto: none of {:?} is installed", cfg.auto_order)))
}

/// The delegate a new container uses: its annotation if present and allowed, else the default.
pub fn for_new_container(cfg: &RuntimeConfig, annotation: Option<&str>) -> Result<PathBuf> {
    match annotation {
        None => default_delegate(cfg),
        Some(v) if !cfg.allow_delegate_annotation => Err(Error::Annotation {
            key: ANNOTATION.into(),
            value: v.into(),
            reason: "choosing the delegate is not allowed by the Berth runtime config (allow_delegate_annotation = false)".into(),
        }),
        Some(v) if !cfg.annotation_delegates.iter().any(|d| d == v) => Err(Error::Annotation {
            key: ANNOTATION.into(),
            value: v.into(),
            reason: format!("not one of annotation_delegates {:?}", cfg.annotation_delegates),
        }),
        Some(v) => resolve_name(v),
    }
}

fn fnv1a(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What Berth remembers of a container it created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The delegate runtime that holds it.
    pub delegate: PathBuf,
    /// The state root (`--root`), if one was given.
    pub root: Option<PathBuf>,
    /// The container id.
    pub id: String,
    /// Its cgroup path (`linux.cgroupsPath`), if set.
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

    /// True while the delegate still has state for the container; None when
    /// that cannot be told (no `--root` and a delegate of unknown default root).
    pub fn alive(&self) -> Option<bool> {
        state_root(self.root.as_deref(), &self.delegate).map(|r| r.join(&self.id).exists())
    }
}

/// The state root a delegate uses: `root` if given, else its default.
pub fn state_root(root: Option<&Path>, delegate: &Path) -> Option<PathBuf> {
    if let Some(r) = root {
        return Some(r.to_path_buf());
    }
    if is_builtin(delegate) {
        return Some(PathBuf::from(BUILTIN_DEFAULT_ROOT));
    }
    match delegate.file_name()?.to_str()? {
        "runc" => Some(PathBuf::from("/run/runc")),
        "crun" => Some(PathBuf::from("/run/crun")),
        _ => None,
    }
}

/// The ledger key of container `id` under state root `root`.
pub fn container_key(root: Option<&Path>, id: &str) -> String {
    let r = root
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{:016x}/{id}", fnv1a(r.as_bytes()))
}

/// How old a record of a container the delegate does not know must be
/// before GC removes it (a create in progress is younger).
pub const RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Per-container delegate records for one `--root`.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
    root: Option<PathBuf>,
}

impl Records {
    /// The records for state root `root` (None: the delegate's default root).
    pub fn new(cfg: &RuntimeConfig, root: Option<&Path>) -> Records {
        let key = root
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        Records {
            dir: cfg
                .state_dir
                .join("containers")
                .join(format!("{:016x}", fnv1a(key.as_bytes()))),
            root: root.map(Path::to_path_buf),
        }
    }

    /// The recorded delegate of container `id`, if any.
    pub fn get(&self, id: &str) -> Option<PathBuf> {
        self.record(id)
            .map(|r| r.delegate)
            .filter(|p| is_builtin(p) || is_executable(p))
    }

    /// The whole record of container `id`, if any.
    pub fn record(&self, id: &str) -> Option<Record> {
        if !valid_id(id) {
            return None;
        }
        Record::read(&self.dir.join(id))
    }

    /// Records that container `id` (root filesystem `rootfs`) runs on
    /// `delegate` in cgroup `cgroup`: atomically, but not fsynced, since the
    /// record (like runc's own state under `/run`) only matters while the
    /// host is up; GC reconciles it.
    pub fn put(
        &self,
        id: &str,
        delegate: &Path,
        cgroup: Option<&str>,
        rootfs: Option<&Path>,
        cpus_planned: bool,
    ) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::ContainerId(id.into()));
        }
        let rec = Record {
            delegate: delegate.to_path_buf(),
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

    /// Removes records whose container the delegate no longer has a state
    /// directory for. Only runs when the state root is known.
    pub fn gc(&self, keep: &str) -> usize {
        self.gc_older_than(keep, RECORD_GRACE)
    }

    /// [`Records::gc`] with a given grace period.
    pub fn gc_older_than(&self, keep: &str, grace: std::time::Duration) -> usize {
        let Some(root) = &self.root else { return 0 };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == keep || name.starts_with('.') || root.join(&name).exists() {
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
            if std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!(
                removed,
                "removed delegate records of containers that no longer exist"
            );
        }
        removed
    }
}

/// Replaces this process with `delegate args...`; returns only on failure.
pub fn exec(delegate: &Path, args: &[std::ffi::OsString]) -> Error {
    let e = Command::new(delegate).args(args).exec();
    Error::Delegate(format!("cannot execute {}: {e}", delegate.display()))
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
        let sh = PathBuf::from("/bin/sh");
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

    #[test]
    fn annotation_needs_permission() {
        let cfg = RuntimeConfig::default();
        let e = for_new_container(&cfg, Some("crun")).unwrap_err();
        assert!(e.to_string().contains("allow_delegate_annotation"), "{e}");
    }
}
