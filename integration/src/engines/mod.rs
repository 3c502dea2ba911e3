//! Private container engines: one dockerd, one containerd and a podman
//! configuration per test process, each with its own data root, exec root and
//! socket under the scratch directory, started on first use and stopped by pid
//! at exit.

pub mod containerd;
#[cfg(feature = "cri")]
pub mod cri;
pub mod crun;
pub mod docker;
pub mod log_plugin;
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

/// The runtimes every private engine knows besides runc: `crun`,
/// `berth-pkg` (the Debian package's `/usr/bin/berth-runtime` with
/// `/etc/berth/runtime.toml`) and, when built, this workspace's
/// `berth-runtime` twice: `berth`, which finds the
/// test host's configuration through `BERTH_RUNTIME_CONFIG` in the engines'
/// environment ([`engine_env`]), and `berth-flag`, which is given it with its
/// `--berth-config` flag (Docker's `runtimeArgs`; Docker then calls it through
/// a generated wrapper script, which costs an extra exec per call); and the
/// same pair on the built-in backend, `berth-builtin` (a wrapper script
/// giving [`crate::berth::config_builtin`]) and `berth-builtin-flag`.
pub fn extra_runtimes() -> Vec<Runtime> {
    let mut v = vec![Runtime {
        name: "crun".into(),
        path: PathBuf::from("/usr/bin/crun"),
        args: vec![],
    }];
    // The packaged runtime (present while the package test has it installed),
    // with the packaged configuration.
    v.push(Runtime {
        name: "berth-pkg".into(),
        path: PathBuf::from("/usr/bin/berth-runtime"),
        args: vec!["--berth-config".into(), "/etc/berth/runtime.toml".into()],
    });
    let berth = crate::artifacts::bin_dir().join("berth-runtime");
    if berth.is_file() {
        v.push(Runtime {
            name: "berth".into(),
            path: berth.clone(),
            args: vec![],
        });
        v.push(Runtime {
            name: "berth-flag".into(),
            path: berth.clone(),
            args: vec![
                "--berth-config".into(),
                crate::berth::config().display().to_string(),
            ],
        });
        // The same two on the built-in backend: a wrapper script (for
        // callers that take no arguments), and the configuration as a flag.
        v.push(Runtime {
            name: "berth-builtin".into(),
            path: crate::berth::builtin_wrapper().to_path_buf(),
            args: vec![],
        });
        v.push(Runtime {
            name: "berth-builtin-flag".into(),
            path: berth,
            args: vec![
                "--berth-config".into(),
                crate::berth::config_builtin().display().to_string(),
            ],
        });
    }
    v
}

/// Removes the cgroup directory `rel` (relative to each hierarchy root) from
/// every mounted v1 hierarchy and the unified one. Only empty directories go:
/// a leaked child cgroup keeps its parent, so the leak check still sees it.
/// A child that a shim or runc removes just after the engine stopped is
/// waited for, up to 2 s.
pub fn remove_cgroup_dirs(rel: &str) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut left = false;
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let d = e.path().join(rel);
                if std::fs::remove_dir(&d).is_err() && d.exists() {
                    left = true;
                }
            }
        }
        if !left || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Environment every engine (and so every shim and conmon) runs with:
/// `BERTH_RUNTIME_CONFIG`, for callers that cannot pass runtime arguments
/// (`ctr --runc-binary`, podman's `--runtime PATH`).
pub fn engine_env() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("BERTH_RUNTIME_CONFIG", crate::berth::config().to_path_buf()),
        // CNI plugins run by an engine keep their records in scratch too.
        ("BERTH_CNI_CONFIG", crate::cni::host_config().to_path_buf()),
    ]
}
