//! Private container engines: one dockerd, one containerd and a podman
//! configuration per test process, each with its own data root, exec root and
//! socket under the scratch directory, started on first use and stopped by pid
//! at exit.

pub mod containerd;
pub mod crun;
pub mod docker;
pub mod podman;

use std::path::PathBuf;

/// An extra OCI runtime to register with the engines: a name and a binary,
/// plus arguments put before runc's own (Docker's `runtimeArgs`).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The name containers select it by (`docker run --runtime NAME`).
    pub name: String,
    /// The runtime binary.
    pub path: PathBuf,
    /// Extra leading arguments.
    pub args: Vec<String>,
}

/// The runtimes every private engine knows besides runc: `crun` and, when
/// built, `berth` (this workspace's `berth-runtime`, with `BERTH_RUNTIME_ARGS`
/// split on spaces as its leading arguments).
pub fn extra_runtimes() -> Vec<Runtime> {
    let mut v = vec![Runtime {
        name: "crun".into(),
        path: PathBuf::from("/usr/bin/crun"),
        args: vec![],
    }];
    let berth = crate::artifacts::bin_dir().join("berth-runtime");
    if berth.is_file() {
        v.push(Runtime {
            name: "berth".into(),
            path: berth,
            args: std::env::var("BERTH_RUNTIME_ARGS")
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    v
}

/// Removes the cgroup directory `rel` (relative to each hierarchy root) from
/// every mounted v1 hierarchy and the unified one. Only empty directories go:
/// a leaked child cgroup keeps its parent, so the leak check still sees it.
pub fn remove_cgroup_dirs(rel: &str) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path().join(rel));
        }
    }
}
