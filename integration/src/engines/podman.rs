//! podman with a private `containers.conf` and `storage.conf`: cgroupfs
//! manager, CNI network backend with our own plugin dirs, and the ulimits root
//! here can set (it lacks CAP_SYS_RESOURCE).

use super::extra_runtimes;
use crate::artifacts::fresh_dir;
use crate::cleanup::at_exit;
use crate::cmd::{command, run, try_run, Ran};
use crate::images::{busybox_tar, BUSYBOX_IMAGE};
use crate::names::process_prefix;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// podman's private configuration for this test process.
#[derive(Debug)]
pub struct Podman {
    /// `containers.conf`.
    pub containers_conf: PathBuf,
    /// `storage.conf`.
    pub storage_conf: PathBuf,
    /// The directory CNI network configs (conflists) go in.
    pub cni_config_dir: PathBuf,
    /// The cgroup parent of its containers.
    pub cgroup_parent: String,
    image: OnceLock<()>,
}

/// The shared podman configuration, written on first use.
pub fn podman() -> &'static Podman {
    static P: OnceLock<Podman> = OnceLock::new();
    P.get_or_init(|| {
        crate::require_root();
        let dir = fresh_dir("podman");
        let cni_config_dir = dir.join("cni");
        std::fs::create_dir_all(&cni_config_dir).expect("mkdir cni");
        let plugin_dirs = [
            crate::artifacts::bin_dir().to_path_buf(),
            PathBuf::from("/usr/lib/cni"),
        ];
        let mut runtimes = String::new();
        for rt in extra_runtimes() {
            runtimes.push_str(&format!("{} = [\"{}\"]\n", rt.name, rt.path.display()));
        }
        let cgroup_parent = format!("{}p", process_prefix());
        let containers_conf = dir.join("containers.conf");
        std::fs::write(
            &containers_conf,
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"

[network]
network_backend = "cni"
cni_plugin_dirs = [{plugins}]
network_config_dir = "{netconf}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
static_dir = "{static_dir}"
volume_path = "{volumes}"

[engine.runtimes]
{runtimes}"#,
                plugins = plugin_dirs
                    .iter()
                    .map(|p| format!("\"{}\"", p.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
                netconf = cni_config_dir.display(),
                events = dir.join("events.log").display(),
                tmp = dir.join("tmp").display(),
                static_dir = dir.join("static").display(),
                volumes = dir.join("volumes").display(),
            ),
        )
        .expect("containers.conf");
        let storage_conf = dir.join("storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("storage").display(),
                dir.join("run").display()
            ),
        )
        .expect("storage.conf");
        let p = Podman {
            containers_conf,
            storage_conf,
            cni_config_dir,
            cgroup_parent: cgroup_parent.clone(),
            image: OnceLock::new(),
        };
        at_exit("podman containers", move || {
            let p = podman();
            let _ = try_run(p.cmd().args(["rm", "-af", "-t", "0"]));
            let _ = try_run(p.cmd().args(["system", "prune", "-f"]));
            // conmon runs in `<parent>/conmon`, beside the containers.
            super::remove_cgroup_dirs(&format!("{cgroup_parent}/conmon"));
            super::remove_cgroup_dirs(&cgroup_parent);
        });
        p
    })
}

impl Podman {
    /// A `podman` command using only the private configuration.
    pub fn cmd(&self) -> Command {
        let mut c = command("podman");
        c.envs(super::engine_env())
            .env("CONTAINERS_CONF", &self.containers_conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
        c
    }

    /// Runs `podman args...` and returns what happened.
    pub fn run(&self, args: &[&str]) -> Ran {
        try_run(self.cmd().args(args))
    }

    /// `podman run` arguments every test container should carry (its cgroup parent).
    pub fn run_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            "--cgroup-parent".into(),
            format!("/{}", self.cgroup_parent),
        ]
    }

    /// `podman run` arguments for a container on `berth-runtime`: the runtime
    /// is chosen globally so that the test host's Berth config reaches it as a
    /// runtime flag (podman's runtimes table takes no arguments, and conmon
    /// does not pass our environment on).
    pub fn berth_run_args(&self) -> Vec<String> {
        self.berth_run_args_on(crate::berth::Backend::Runc)
    }

    /// [`Podman::berth_run_args`] with the configuration of `backend`.
    pub fn berth_run_args_on(&self, backend: crate::berth::Backend) -> Vec<String> {
        let mut v = vec![
            "--runtime".into(),
            "berth".into(),
            "--runtime-flag".into(),
            format!("berth-config={}", backend.config().display()),
        ];
        v.extend(self.run_args());
        v
    }

    /// Imports the busybox image (once) and returns its reference.
    pub fn busybox_image(&self) -> &'static str {
        self.image.get_or_init(|| {
            run(self
                .cmd()
                .arg("import")
                .arg(busybox_tar())
                .arg(BUSYBOX_IMAGE));
        });
        BUSYBOX_IMAGE
    }
}
