//! A private containerd: own root, state and socket; `ctr` bound to it.

use super::extra_runtimes;
use crate::artifacts::{fresh_dir, scratch};
use crate::cleanup::at_exit;
use crate::cmd::{command, run, Ran};
use crate::images::{busybox_tar, oci_archive, BUSYBOX_IMAGE};
use crate::names::process_prefix;
use crate::process::{wait_until, Daemon};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The image CRI uses for pod sandboxes (busybox sleeping, like `pause`).
pub const PAUSE_IMAGE: &str = "docker.io/berth/pause:test";

/// The private containerd of this test process.
#[derive(Debug)]
pub struct Containerd {
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace tests use; also the cgroup parent of `ctr run`.
    pub namespace: String,
    /// Its configuration file (with a CRI runtime handler per extra runtime).
    pub config: PathBuf,
    daemon: Mutex<Daemon>,
    image: OnceLock<()>,
    /// CRI's images imported (see `cri::import_images`).
    pub cri_images: OnceLock<()>,
    /// How to start it again ([`Containerd::restart`]).
    launch: Launch,
}

/// A daemon's command line, kept to start it again.
#[derive(Debug)]
struct Launch {
    label: &'static str,
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Daemon {
        let mut cmd = command(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        Daemon::spawn(self.label, &mut cmd, &self.log)
    }
}

/// Waits until containerd answers on `socket`, panicking if `d` dies.
fn wait_ready(label: &str, d: &mut Daemon, log: &Path, socket: &Path) {
    let ok = wait_until(Duration::from_secs(20), || {
        d.assert_alive(log);
        command("ctr")
            .arg("--address")
            .arg(socket)
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(
        ok,
        "{label} did not answer on {} within 20 s",
        socket.display()
    );
}

/// A containerd configuration with everything under `dir` (root, state,
/// opt, CNI directories), its gRPC socket at `socket`, the CRI plugin with
/// `sandbox_image` [`PAUSE_IMAGE`] and the runc shim as the default runtime,
/// whose `options` table gets the lines `runc_options` (e.g.
/// `SystemdCgroup = true`).
pub fn base_config_toml(dir: &Path, socket: &Path, runc_options: &[&str]) -> String {
    let mut s = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = socket.display(),
        opt = dir.join("opt").display(),
        pause = PAUSE_IMAGE,
        cni_bin = dir.join("cni-bin").display(),
        cni_conf = dir.join("cni-conf").display(),
    );
    if !runc_options.is_empty() {
        s.push_str("  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n");
        for line in runc_options {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let mut s = base_config_toml(dir, socket, &[]);
    // A runtime handler per extra runtime, as a Kubernetes RuntimeClass names
    // it: the runc shim with BinaryName.
    for rt in extra_runtimes() {
        s.push_str(&format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}]\n    runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}.options]\n    BinaryName = \"{path}\"\n",
            name = rt.name,
            path = rt.path.display()
        ));
    }
    s
}

/// The shared containerd, started on first use.
pub fn containerd() -> &'static Containerd {
    static C: OnceLock<Containerd> = OnceLock::new();
    C.get_or_init(|| {
        let dir = fresh_dir("containerd");
        let socket = dir.join("c.sock");
        let toml = config_toml(&dir, &socket);
        start(
            "containerd",
            containerd,
            &dir,
            socket,
            toml,
            command("containerd"),
        )
    })
}

/// Debian 13's containerd 1.7 (unpacked into the test cache), whose NRI is
/// enabled with its socket at [`Containerd::nri_socket`]: the engine the NRI
/// plugin is tested against. Its own shim comes first on its PATH.
pub fn containerd_nri() -> &'static Containerd {
    static C: OnceLock<Containerd> = OnceLock::new();
    C.get_or_init(|| {
        let dir = fresh_dir("containerd-nri");
        let socket = dir.join("c.sock");
        // The runtime handlers too, for a host that runs both berth-nri and
        // berth-runtime.
        let mut toml = config_toml(&dir, &socket);
        toml.push_str(&format!(
            "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n  disable_connections = false\n  socket_path = \"{sock}\"\n  plugin_path = \"{plugins}\"\n  plugin_config_path = \"{conf}\"\n  plugin_registration_timeout = \"5s\"\n  plugin_request_timeout = \"5s\"\n",
            sock = dir.join("nri.sock").display(),
            plugins = dir.join("nri-plugins").display(),
            conf = dir.join("nri-conf").display(),
        ));
        let bin = crate::programs::trixie_dir("containerd17").join("usr/bin");
        let mut cmd = command(bin.join("containerd"));
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path);
        start("containerd-nri", containerd_nri, &dir, socket, toml, cmd)
    })
}

/// Starts a containerd with configuration `toml` in `dir` and waits until it
/// answers; `me` finds it again for the teardown.
fn start(
    label: &'static str,
    me: fn() -> &'static Containerd,
    dir: &Path,
    socket: PathBuf,
    toml: String,
    mut cmd: Command,
) -> Containerd {
    crate::require_root();
    let _ = scratch();
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).expect("write containerd config");
    let log = dir.join("containerd.log");
    cmd.envs(super::engine_env()).arg("--config").arg(&config);
    let launch = Launch {
        label,
        program: cmd.get_program().to_os_string(),
        args: cmd.get_args().map(|a| a.to_os_string()).collect(),
        envs: cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
            .collect(),
        log: log.clone(),
    };
    let mut d = launch.spawn();
    wait_ready(label, &mut d, &log, &socket);
    let namespace = format!("{}c", process_prefix());
    let netns_before = cri_netns();
    let c = Containerd {
        socket,
        namespace: namespace.clone(),
        config,
        daemon: Mutex::new(d),
        image: OnceLock::new(),
        cri_images: OnceLock::new(),
        launch,
    };
    at_exit(label, move || {
        let c = me();
        let mut d = c.daemon.lock().unwrap_or_else(|e| e.into_inner());
        kill_leftover_shims(&c.socket);
        d.stop(Duration::from_secs(15));
        super::remove_cgroup_dirs(&namespace);
        remove_left_netns(&netns_before);
    });
    c
}

/// The `cni-*` network namespaces CRI pods get, by name.
fn cri_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the `cni-*` namespaces that appeared during the run and hold no
/// process: containerd 1.6 leaves a sandbox's behind when its network setup
/// fails. One with a process in it (a pod of another containerd) stays.
fn remove_left_netns(before: &[String]) {
    for n in cri_netns() {
        if before.contains(&n) {
            continue;
        }
        let pids = crate::cmd::try_sh("ip", ["netns", "pids", n.as_str()]);
        if pids.ok() && pids.stdout.trim().is_empty() {
            let _ = crate::cmd::try_sh("ip", ["netns", "delete", n.as_str()]);
        }
    }
}

/// Kills shims our containerd started that outlived it (found by the socket in
/// their command line, so only this run's).
fn kill_leftover_shims(socket: &Path) {
    let needle = socket.to_string_lossy().into_owned();
    for pid in crate::leaks::pids_with_cmdline(&needle) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with("containerd-shim") {
            // SAFETY: signalling a shim process started on this run's behalf.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Containerd {
    /// Stops containerd (its containers' shims keep running, as on a real
    /// host) and starts it again with the same command line.
    pub fn restart(&self) {
        let mut d = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        d.stop(Duration::from_secs(15));
        let mut new = self.launch.spawn();
        wait_ready(self.launch.label, &mut new, &self.launch.log, &self.socket);
        *d = new;
    }

    /// Its NRI socket (where NRI is enabled: [`containerd_nri`]).
    pub fn nri_socket(&self) -> PathBuf {
        self.config.with_file_name("nri.sock")
    }

    /// A `ctr` command bound to this containerd and the test namespace.
    pub fn ctr(&self) -> Command {
        let mut c = command("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace);
        c
    }

    /// Runs `ctr args...` and returns what happened.
    pub fn ctr_run(&self, args: &[&str]) -> Ran {
        crate::cmd::try_run(self.ctr().args(args))
    }

    /// Imports the busybox image (once) and returns its reference.
    pub fn busybox_image(&self) -> &'static str {
        self.image.get_or_init(|| {
            let archive = oci_archive(busybox_tar(), BUSYBOX_IMAGE, &["sh"]);
            run(self.ctr().args(["image", "import"]).arg(&archive));
        });
        BUSYBOX_IMAGE
    }
}
