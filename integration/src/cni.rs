//! Calling CNI plugins the way a runtime does: environment, config on stdin,
//! result or error JSON on stdout.

use crate::artifacts::{binary, fresh_dir, scratch};
use crate::cmd::{command, try_run, Ran};
use crate::engines::containerd::containerd;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The reference macvlan plugin from Debian's containernetworking-plugins.
pub const REFERENCE_MACVLAN: &str = "/usr/lib/cni/macvlan";

/// Where plugins look for IPAM plugins: Berth's build, then Debian's.
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", crate::artifacts::bin_dir().display())
}

/// The `berth-macvlan` binary.
pub fn berth_macvlan() -> PathBuf {
    binary("berth-macvlan")
}

/// The `berth-ovs-vlan` binary.
pub fn berth_ovs_vlan() -> PathBuf {
    binary("berth-ovs-vlan")
}

/// The plugins' host settings for this run (`BERTH_CNI_CONFIG`): attachment
/// records under the scratch directory, never the host's `/var/lib`.
pub fn host_config() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let f = scratch().join("cni.toml");
        let state = scratch().join("cni-state");
        std::fs::write(&f, format!("state_dir = \"{}\"\n", state.display()))
            .expect("write cni.toml");
        f
    })
}

/// Runs `ctr` (bound to the harness's containerd) with `conflist` as the
/// only file in `/etc/cni/net.d` and `plugins` (Berth's build first, then
/// Debian's; none: the host's own `/opt/cni/bin` and `/usr/lib/cni`) as `/opt/cni/bin`, both in a private mount namespace: ctr's
/// `--cni` reads those fixed paths, and the host's stay untouched.
pub fn ctr_with_cni(conflist: &Value, plugins: &[&str], args: &[&str]) -> Ran {
    let dir = fresh_dir("ctr-cni");
    let (netd, bin) = (dir.join("net.d"), dir.join("bin"));
    std::fs::create_dir_all(&netd).expect("mkdir net.d");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::write(netd.join("10-berth.conflist"), conflist.to_string()).expect("conflist");
    for name in plugins {
        let ours = crate::artifacts::bin_dir().join(name);
        let from = if ours.is_file() {
            ours
        } else {
            PathBuf::from("/usr/lib/cni").join(name)
        };
        std::os::unix::fs::symlink(&from, bin.join(name)).expect("symlink plugin");
    }
    let ctr = containerd().ctr();
    let mut line: Vec<String> = vec![ctr.get_program().to_string_lossy().into_owned()];
    line.extend(ctr.get_args().map(|a| a.to_string_lossy().into_owned()));
    line.extend(args.iter().map(|s| s.to_string()));
    let quoted: Vec<String> = line
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    // No plugins named: the host's own plugin dirs (installed packages).
    let bin_mount = if plugins.is_empty() {
        String::new()
    } else {
        format!(
            "mount -t tmpfs berth /opt; mkdir -p /opt/cni/bin; mount --bind '{}' /opt/cni/bin; ",
            bin.display()
        )
    };
    let script = format!(
        "set -e; mkdir -p /etc/cni/net.d; mount --bind '{}' /etc/cni/net.d; {bin_mount}exec {}",
        netd.display(),
        quoted.join(" ")
    );
    try_run(
        command("unshare")
            .env("BERTH_CNI_CONFIG", host_config())
            .args(["-m", "--propagation", "private", "sh", "-c", &script]),
    )
}

/// One plugin invocation.
#[derive(Debug, Clone)]
pub struct Call {
    /// The plugin binary.
    pub plugin: PathBuf,
    /// `CNI_COMMAND`.
    pub verb: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`, if any.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// Variables to leave out (to test missing ones).
    pub unset: Vec<&'static str>,
}

/// What the plugin answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// True on exit status 0.
    pub ok: bool,
    /// stdout, as printed.
    pub stdout: String,
    /// stdout parsed, when it is JSON.
    pub json: Option<Value>,
    /// stderr.
    pub stderr: String,
}

impl Answer {
    /// The CNI error code, when the plugin failed with an error JSON.
    pub fn code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    /// The result, panicking with the plugin's words when it failed.
    pub fn result(&self) -> &Value {
        assert!(
            self.ok,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json.as_ref().expect("result JSON")
    }
}

impl Call {
    /// A call of `verb` on `plugin` for container `id` in `netns`, interface `eth0`.
    pub fn new(plugin: &Path, verb: &str, id: &str, netns: Option<&str>) -> Call {
        Call {
            plugin: plugin.to_path_buf(),
            verb: verb.into(),
            container_id: id.into(),
            netns: netns.map(str::to_string),
            ifname: "eth0".into(),
            args: String::new(),
            unset: Vec::new(),
        }
    }

    /// The same call with another interface name.
    pub fn ifname(mut self, n: &str) -> Call {
        self.ifname = n.into();
        self
    }

    /// The same call with `CNI_ARGS`.
    pub fn args(mut self, a: &str) -> Call {
        self.args = a.into();
        self
    }

    /// Runs it with `conf` on stdin.
    pub fn run(&self, conf: &Value) -> Answer {
        self.run_raw(conf.to_string().as_bytes())
    }

    /// Runs it with raw stdin bytes.
    pub fn run_raw(&self, stdin: &[u8]) -> Answer {
        let mut c = Command::new(&self.plugin);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.verb)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", cni_path())
            .env("CNI_ARGS", &self.args)
            .env("BERTH_CNI_LOG_FILE", scratch().join("cni.log"))
            .env("BERTH_CNI_LOG_LEVEL", "debug")
            .env("BERTH_CNI_CONFIG", host_config())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = &self.netns {
            c.env("CNI_NETNS", n);
        }
        for u in &self.unset {
            c.env_remove(u);
        }
        let mut child = c.spawn().expect("spawn plugin");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        let out = child.wait_with_output().expect("wait plugin");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Answer {
            ok: out.status.success(),
            json: serde_json::from_str(stdout.trim()).ok(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A host-local IPAM section for `subnet` with leases under `data_dir`.
pub fn host_local(subnet: &str, gateway: &str, data_dir: &Path) -> Value {
    serde_json::json!({
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{"subnet": subnet, "gateway": gateway}]],
    })
}
