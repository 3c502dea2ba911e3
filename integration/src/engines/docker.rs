//! A private dockerd on the private containerd: own data root, exec root,
//! socket and cgroup parent; no bridge, no iptables, nothing on `eth0`.

use super::{containerd::containerd, extra_runtimes};
use crate::artifacts::fresh_dir;
use crate::cleanup::at_exit;
use crate::cmd::{command, run, try_run, Ran};
use crate::images::{busybox_tar, BUSYBOX_IMAGE};
use crate::names::process_prefix;
use crate::process::{wait_until, Daemon};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Debian's docker CLI, matching the 20.10 daemon.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// The private dockerd of this test process.
#[derive(Debug)]
pub struct Docker {
    /// Its API socket.
    pub socket: PathBuf,
    /// The cgroup parent of its containers (relative to each hierarchy root).
    pub cgroup_parent: String,
    /// Its `daemon.json`.
    pub config: PathBuf,
    /// Its log (managed plugins' output is in it too).
    pub log: PathBuf,
    daemon: Mutex<Daemon>,
    image: OnceLock<()>,
}

/// The shared dockerd, started on first use.
pub fn docker() -> &'static Docker {
    static D: OnceLock<Docker> = OnceLock::new();
    D.get_or_init(|| {
        let ctrd = containerd();
        let dir = fresh_dir("docker");
        let socket = dir.join("d.sock");
        let cgroup_parent = format!("{}d", process_prefix());
        let mut runtimes = serde_json::Map::new();
        for rt in extra_runtimes() {
            runtimes.insert(
                rt.name.clone(),
                json!({"path": rt.path, "runtimeArgs": rt.args}),
            );
        }
        let config = dir.join("daemon.json");
        let cfg = json!({
            "runtimes": runtimes,
            "bridge": "none",
            "iptables": false,
            "ip6tables": false,
            "ip-masq": false,
            "ip-forward": false,
            "cgroup-parent": format!("/{cgroup_parent}"),
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "storage-driver": "overlay2",
            "log-driver": "json-file",
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("daemon.json");
        let log = dir.join("dockerd.log");
        let mut d = Daemon::spawn(
            "dockerd",
            command("dockerd")
                .envs(super::engine_env())
                .arg("--config-file")
                .arg(&config)
                .arg("--data-root")
                .arg(dir.join("root"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("--pidfile")
                .arg(dir.join("dockerd.pid"))
                .arg("--host")
                .arg(format!("unix://{}", socket.display()))
                .arg("--containerd")
                .arg(&ctrd.socket)
                .arg("--containerd-namespace")
                .arg(format!("{}d", process_prefix()))
                .arg("--containerd-plugins-namespace")
                .arg(format!("{}p", process_prefix())),
            &log,
        );
        let ok = wait_until(Duration::from_secs(60), || {
            d.assert_alive(&log);
            command(DOCKER_CLI)
                .arg("--host")
                .arg(format!("unix://{}", socket.display()))
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        assert!(
            ok,
            "dockerd did not answer on {} within 60 s",
            socket.display()
        );
        let dk = Docker {
            socket,
            cgroup_parent: cgroup_parent.clone(),
            config,
            log,
            daemon: Mutex::new(d),
            image: OnceLock::new(),
        };
        at_exit("dockerd", move || {
            let dk = docker();
            // Containers a failed test left running go first, so dockerd can unmount them.
            let ids = try_run(dk.cli().args(["ps", "-aq"])).stdout;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = try_run(dk.cli().args(["rm", "-f"]).args(&ids));
            }
            dk.daemon
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stop(Duration::from_secs(20));
            super::remove_cgroup_dirs(&cgroup_parent);
        });
        dk
    })
}

impl Docker {
    /// dockerd's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.lock().unwrap_or_else(|e| e.into_inner()).pid()
    }

    /// A `docker` CLI command bound to this daemon.
    pub fn cli(&self) -> Command {
        let mut c = command(DOCKER_CLI);
        c.arg("--host")
            .arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// Runs `docker args...` and returns what happened.
    pub fn run(&self, args: &[&str]) -> Ran {
        try_run(self.cli().args(args))
    }

    /// Imports the busybox image (once) and returns its reference.
    pub fn busybox_image(&self) -> &'static str {
        self.image.get_or_init(|| {
            run(self
                .cli()
                .arg("import")
                .arg(busybox_tar())
                .arg(BUSYBOX_IMAGE));
        });
        BUSYBOX_IMAGE
    }
}

/// A container a test started; `docker rm -f` on drop.
#[derive(Debug)]
pub struct DockerContainer {
    /// The container's full id.
    pub id: String,
}

impl DockerContainer {
    /// `docker run -d args...`; panics with the CLI's error if it fails.
    pub fn start(args: &[&str]) -> DockerContainer {
        let mut v = vec!["run", "-d"];
        v.extend_from_slice(args);
        let r = docker().run(&v);
        assert!(r.ok(), "docker run -d {args:?} failed: {}", r.stderr);
        DockerContainer {
            id: r.stdout.trim().to_string(),
        }
    }

    /// The container's cgroup directory in the v1 hierarchy `controller`.
    pub fn cgroup(&self, controller: &str) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(&docker().cgroup_parent)
            .join(&self.id)
    }
}

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = docker().run(&["rm", "-f", &self.id]);
    }
}

impl Docker {
    /// `docker run --rm --runtime berth FLAGS... --network none IMAGE CMD...`.
    pub fn run_berth(&self, flags: &[&str], image: &str, cmd: &[&str]) -> Ran {
        self.run_berth_on(crate::berth::Backend::Runc, flags, image, cmd)
    }

    /// [`Docker::run_berth`] on `backend`.
    pub fn run_berth_on(
        &self,
        backend: crate::berth::Backend,
        flags: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Ran {
        let mut args = vec!["run", "--rm", "--runtime", backend.docker_runtime()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--network", "none", image]);
        args.extend_from_slice(cmd);
        self.run(&args)
    }
}
