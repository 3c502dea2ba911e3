//! The backend that runs a container: a runc-compatible binary Berth hands
//! over to with `exec(2)` (no extra process stays around), or the built-in
//! backend, youki's libcontainer in this process ([`crate::builtin`]).

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The annotation by which a container may pick its backend, where allowed.
pub const ANNOTATION: &str = "io.berth.delegate";

/// The name of the built-in backend in the configuration and in records.
pub const BUILTIN: &str = "libcontainer";

/// The state root of the built-in backend when no `--root` is given.
pub const BUILTIN_DEFAULT_ROOT: &str = "/run/berth/libcontainer";

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

/// Where a container runs. Records store it as a path: the binary, or the
/// bare name [`BUILTIN`], which no binary backend can be (those are absolute).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "PathBuf", into = "PathBuf")]
pub enum Backend {
    /// A runc-compatible binary, by absolute path.
    Exec(PathBuf),
    /// youki's libcontainer, in this process.
    Builtin,
}

impl From<PathBuf> for Backend {
    fn from(p: PathBuf) -> Backend {
        if p == Path::new(BUILTIN) {
            Backend::Builtin
        } else {
            Backend::Exec(p)
        }
    }
}

impl From<Backend> for PathBuf {
    fn from(b: Backend) -> PathBuf {
        match b {
            Backend::Exec(p) => p,
            Backend::Builtin => PathBuf::from(BUILTIN),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Exec(p) => write!(f, "{}", p.display()),
            Backend::Builtin => f.write_str(BUILTIN),
        }
    }
}

impl Backend {
    /// Resolves a backend name (`runc`, `crun`, an absolute path, or [`BUILTIN`]).
    pub fn resolve(name: &str) -> Result<Backend> {
        if name == BUILTIN {
            return Ok(Backend::Builtin);
        }
        if name.starts_with('/') {
            let p = PathBuf::from(name);
            return if is_executable(&p) {
                Ok(Backend::Exec(p))
            } else {
                Err(Error::Delegate(format!("{name} is not an executable file")))
            };
        }
        which(name).map(Backend::Exec).ok_or_else(|| {
            Error::Delegate(format!(
                "{name} not found on PATH nor in {:?}",
                FALLBACK_DIRS
            ))
        })
    }

    /// The configured default: `backend`, or for `auto` the first of `auto_order` found.
    pub fn default_for(cfg: &RuntimeConfig) -> Result<Backend> {
        match &cfg.backend {
            crate::config::BackendChoice::Named(name) => Backend::resolve(name),
            crate::config::BackendChoice::Auto => cfg
                .auto_order
                .iter()
                .find_map(|n| Backend::resolve(n).ok())
                .ok_or_else(|| {
                    Error::Delegate(format!("auto: none of {:?} is installed", cfg.auto_order))
                }),
        }
    }

    /// The backend a new container gets: its annotation if present and
    /// allowed, else the default.
    pub fn for_new_container(cfg: &RuntimeConfig, annotation: Option<&str>) -> Result<Backend> {
        match annotation {
            None => Backend::default_for(cfg),
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
            Some(v) => Backend::resolve(v),
        }
    }

    /// True for the built-in backend.
    pub fn is_builtin(&self) -> bool {
        matches!(self, Backend::Builtin)
    }

    /// True while the backend can still run (a binary may have been removed).
    pub fn usable(&self) -> bool {
        match self {
            Backend::Exec(p) => is_executable(p),
            Backend::Builtin => true,
        }
    }

    /// The state root it uses: `root` if given, else its default (None for
    /// a binary whose default Berth does not know).
    pub fn state_root(&self, root: Option<&Path>) -> Option<PathBuf> {
        if let Some(r) = root {
            return Some(r.to_path_buf());
        }
        match self {
            Backend::Builtin => Some(PathBuf::from(BUILTIN_DEFAULT_ROOT)),
            Backend::Exec(p) => match p.file_name()?.to_str()? {
                "runc" => Some(PathBuf::from("/run/runc")),
                "crun" => Some(PathBuf::from("/run/crun")),
                _ => None,
            },
        }
    }

    /// Replaces this process with the binary backend and `args`; returns
    /// only on failure (the built-in backend cannot be exec'd).
    pub fn exec(&self, args: &[OsString]) -> Error {
        match self {
            Backend::Exec(p) => {
                let e = Command::new(p).args(args).exec();
                Error::Delegate(format!("cannot execute {}: {e}", p.display()))
            }
            Backend::Builtin => Error::Delegate("the built-in backend runs in-process".into()),
        }
    }

    /// Runs the binary backend with `args` as a child; returns its exit code.
    pub fn status(&self, args: &[OsString]) -> Result<i32> {
        match self {
            Backend::Exec(p) => Command::new(p)
                .args(args)
                .status()
                .map(|s| s.code().unwrap_or(1))
                .map_err(|e| Error::Delegate(format!("cannot run {}: {e}", p.display()))),
            Backend::Builtin => Err(Error::Delegate(
                "the built-in backend runs in-process".into(),
            )),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_needs_permission() {
        let cfg = RuntimeConfig::default();
        let e = Backend::for_new_container(&cfg, Some("crun")).unwrap_err();
        assert!(e.to_string().contains("allow_delegate_annotation"), "{e}");
    }

    #[test]
    fn records_store_the_backend_as_a_path() {
        let b: Backend = serde_json::from_str("\"libcontainer\"").unwrap();
        assert_eq!(b, Backend::Builtin);
        let b: Backend = serde_json::from_str("\"/usr/sbin/runc\"").unwrap();
        assert_eq!(b, Backend::Exec("/usr/sbin/runc".into()));
        assert_eq!(
            serde_json::to_string(&Backend::Builtin).unwrap(),
            "\"libcontainer\""
        );
    }
}
