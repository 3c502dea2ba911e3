//! Berth's own runtime as the engines see it: a test host configuration for
//! `berth-runtime` (a machine-class sysctl file, an app policy, an allowlist,
//! the freshly built preload library) written once per test process.

use crate::artifacts::scratch;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The machine-class sysctl every Berth test container with its own network
/// namespace gets (key, value).
pub const MACHINE_SYSCTL: (&str, &str) = ("net.ipv4.tcp_keepalive_time", "600");
/// The machine-class sysctl every Berth test container with its own IPC
/// namespace gets (key, value): also those on the host network.
pub const MACHINE_IPC_SYSCTL: (&str, &str) = ("kernel.shm_rmid_forced", "1");
/// The app policy name tests select with `io.berth.sysctl-policy`.
pub const APP_POLICY: &str = "web";
/// The sysctl that policy sets (key, value).
pub const APP_SYSCTL: (&str, &str) = ("net.core.somaxconn", "4096");
/// A key the admin allowlists (not on kubelet's safe list).
pub const ALLOWED_SYSCTL: &str = "net.ipv4.tcp_max_syn_backlog";

/// The preload library the tests inject (the workspace's build of `berth-cpus`).
pub fn preload_library() -> PathBuf {
    crate::artifacts::bin_dir().join("libberth_cpus.so")
}

/// The test host's `runtime.toml`, written on first use.
pub fn config() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch().join("berth-etc");
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir berth-etc");
        std::fs::write(
            dir.join("machine.toml"),
            format!(
                "[sysctl]\n\"{}\" = \"{}\"\n\"{}\" = \"{}\"\n",
                MACHINE_SYSCTL.0, MACHINE_SYSCTL.1, MACHINE_IPC_SYSCTL.0, MACHINE_IPC_SYSCTL.1
            ),
        )
        .expect("machine.toml");
        std::fs::write(
            dir.join("policies").join(format!("{APP_POLICY}.toml")),
            format!("[sysctl]\n\"{}\" = \"{}\"\n", APP_SYSCTL.0, APP_SYSCTL.1),
        )
        .expect("policy");
        // Berth's state on a tmpfs, as /run/berth is on production hosts
        // (this machine's /run is on disk); unmounted with the scratch dir.
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("mkdir state");
        crate::cmd::sh(
            "mount",
            [
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "tmpfs".as_ref(),
                state.as_os_str(),
            ],
        );
        let path = dir.join("runtime.toml");
        std::fs::write(
            &path,
            format!(
                r#"delegate = "runc"
state_dir = "{state}"

[sysctl]
machine_class_file = "{machine}"
policy_dir = "{policies}"
# The strict mode, so the tests see the allow list at work (the default
# takes a container's namespaced keys as runc does; runtime.rs tests it).
container_keys = "safe-list"
allow = ["{allowed}"]

[preload]
enabled = true
library = "{lib}"
"#,
                state = dir.join("state").display(),
                machine = dir.join("machine.toml").display(),
                policies = dir.join("policies").display(),
                allowed = ALLOWED_SYSCTL,
                lib = preload_library().display(),
            ),
        )
        .expect("runtime.toml");
        path
    })
}

/// The test host's configuration with the built-in backend
/// (`backend = "libcontainer"`): the same state, policies and CPU ledger as
/// [`config`], written on first use.
pub fn config_builtin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let text = std::fs::read_to_string(config()).expect("runtime.toml");
        let text = text.replacen("delegate = \"runc\"", "backend = \"libcontainer\"", 1);
        assert!(
            text.contains("libcontainer"),
            "runtime.toml has no delegate line"
        );
        let path = config().with_file_name("runtime-builtin.toml");
        std::fs::write(&path, text).expect("runtime-builtin.toml");
        path
    })
}

/// An executable script that runs this workspace's `berth-runtime` with
/// [`config_builtin`]: what engines that take a runtime path but no
/// arguments (containerd's `BinaryName`, `ctr --runc-binary`) are given.
pub fn builtin_wrapper() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let path = config().with_file_name("berth-runtime-builtin");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec {} --berth-config {} \"$@\"\n",
                crate::artifacts::binary("berth-runtime").display(),
                config_builtin().display()
            ),
        )
        .expect("wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    })
}

/// One of berth-runtime's backends, as the engine tests select it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// runc as the delegate.
    Runc,
    /// The built-in libcontainer backend.
    Builtin,
}

impl Backend {
    /// Docker's `--runtime` name (configuration through the environment or a wrapper).
    pub fn docker_runtime(self) -> &'static str {
        match self {
            Backend::Runc => "berth",
            Backend::Builtin => "berth-builtin",
        }
    }

    /// Docker's `--runtime` name with the configuration given as `runtimeArgs`.
    pub fn docker_runtime_flag(self) -> &'static str {
        match self {
            Backend::Runc => "berth-flag",
            Backend::Builtin => "berth-builtin-flag",
        }
    }

    /// The containerd CRI runtime handler.
    pub fn cri_handler(self) -> &'static str {
        self.docker_runtime()
    }

    /// The configuration file.
    pub fn config(self) -> &'static Path {
        match self {
            Backend::Runc => config(),
            Backend::Builtin => config_builtin(),
        }
    }

    /// A runtime binary to hand engines that take no arguments
    /// (`ctr --runc-binary`): berth-runtime itself (configured through the
    /// engines' environment) or the builtin wrapper script.
    pub fn binary(self) -> PathBuf {
        match self {
            Backend::Runc => crate::artifacts::binary("berth-runtime"),
            Backend::Builtin => builtin_wrapper().to_path_buf(),
        }
    }
}

/// Serialises tests that request CPUs: they share this host's two CPUs and
/// the test host's ledger, so their expectations hold only one at a time.
pub fn cpu_lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CPUs of a cpuset list (`0-2,5`).
pub fn cpu_list(list: &str) -> Vec<u64> {
    let mut v = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// The test host's CPU ledger as `berth-runtime cpus --json --gc` reports it.
pub fn cpu_status() -> serde_json::Value {
    let out = crate::cmd::run(
        std::process::Command::new(crate::artifacts::binary("berth-runtime"))
            .arg("--berth-config")
            .arg(config())
            .args(["cpus", "--json", "--gc"]),
    );
    serde_json::from_str(&out).expect("cpus --json output")
}

/// `berth-runtime --berth-config <test host config> --root ROOT`, ready for a verb.
pub fn runtime_cmd(root: &std::path::Path) -> std::process::Command {
    runtime_cmd_on(Backend::Runc, root)
}

/// [`runtime_cmd`] with the configuration of `backend`.
pub fn runtime_cmd_on(backend: Backend, root: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(crate::artifacts::binary("berth-runtime"));
    c.arg("--berth-config")
        .arg(backend.config())
        .arg("--root")
        .arg(root);
    c
}
