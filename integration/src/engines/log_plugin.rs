//! berth-log-appender as a Docker logging plugin on the private dockerd:
//! the plugin directory built by `log-appender/docker-plugin/build` from
//! the workspace binary, `docker plugin create`d (nothing pulled), its
//! config and state mounts pointed at directories of this test process.

use super::docker::{docker, Docker};
use crate::artifacts::{binary, fresh_dir};
use crate::cleanup::at_exit;
use crate::cmd::{command, run, try_run};
use crate::process::rss_kib;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// An installed plugin.
#[derive(Debug)]
pub struct LogPlugin {
    /// Its name (`--log-driver NAME`).
    pub name: String,
    /// The host directory mounted at `/etc/berth` in the plugin.
    pub config_dir: PathBuf,
    /// The host directory mounted at `/var/lib/berth/log-appender`.
    pub state_dir: PathBuf,
}

/// The script that builds the plugin directory.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../log-appender/docker-plugin/build")
}

/// The plugin `berth` shared by this process's tests (their own config
/// files, via `--log-opt config=`).
pub fn log_plugin() -> &'static LogPlugin {
    static P: OnceLock<LogPlugin> = OnceLock::new();
    P.get_or_init(|| LogPlugin::install("berth"))
}

impl LogPlugin {
    /// Builds, creates, configures and enables plugin `name`.
    pub fn install(name: &str) -> LogPlugin {
        let dk = docker();
        let dir = fresh_dir("log-plugin");
        run(command(build_script())
            .arg(binary("berth-log-appender"))
            .arg(dir.join("plugin")));
        let p = LogPlugin {
            name: name.to_string(),
            config_dir: dir.join("etc"),
            state_dir: dir.join("state"),
        };
        std::fs::create_dir_all(&p.config_dir).expect("config dir");
        std::fs::create_dir_all(&p.state_dir).expect("state dir");
        {
            // dockerd's content store refuses two creates of the same
            // layer at once ("already exists").
            static CREATE: Mutex<()> = Mutex::new(());
            let _one = CREATE.lock().unwrap_or_else(|e| e.into_inner());
            run(dk
                .cli()
                .args(["plugin", "create", name])
                .arg(dir.join("plugin")));
        }
        let n = name.to_string();
        at_exit(format!("log plugin {name}"), move || {
            let dk = docker();
            let _ = try_run(dk.cli().args(["plugin", "disable", "-f", &n]));
            let _ = try_run(dk.cli().args(["plugin", "rm", "-f", &n]));
        });
        run(dk.cli().args(["plugin", "set", name]).args([
            format!("config.source={}", p.config_dir.display()),
            format!("state.source={}", p.state_dir.display()),
            "BERTH_LOG=debug".to_string(),
        ]));
        p.enable();
        p
    }

    /// The dockerd it runs on.
    pub fn docker(&self) -> &'static Docker {
        docker()
    }

    /// Writes `/etc/berth/FILE` as the plugin sees it; returns that path.
    pub fn write_config(&self, file: &str, yaml: &str) -> String {
        let tmp = self.config_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write plugin config");
        std::fs::rename(&tmp, self.config_dir.join(file)).expect("rename plugin config");
        format!("/etc/berth/{file}")
    }

    /// `docker plugin enable --timeout 0`, as docs/install.md says: with
    /// dockerd's default 30 s client timeout, `docker logs -f` through any
    /// logging plugin is cut after 30 s.
    pub fn enable(&self) {
        run(docker()
            .cli()
            .args(["plugin", "enable", "--timeout", "0", &self.name]));
    }

    /// `docker plugin disable -f` (containers using it keep running).
    pub fn disable(&self) {
        run(docker().cli().args(["plugin", "disable", "-f", &self.name]));
    }

    /// The plugin's own log lines (dockerd's log carries them, tagged
    /// `plugin=ID`).
    pub fn log(&self) -> String {
        let id = run(docker()
            .cli()
            .args(["plugin", "inspect", "-f", "{{.Id}}", &self.name]));
        let tag = format!("plugin={}", id.trim());
        let all = std::fs::read_to_string(&docker().log).unwrap_or_default();
        all.lines()
            .filter(|l| l.contains(&tag))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What one overload run measured.
#[derive(Debug, Clone, Copy)]
pub struct Overload {
    /// The writer's throughput, MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// dockerd's RSS before the run, KiB.
    pub rss_before_kib: u64,
    /// dockerd's largest RSS during the run, KiB.
    pub rss_peak_kib: u64,
}

/// A container writing `mb` MB of 1000-byte lines, paced at 100 MB/s (1 MB,
/// then 9 ms of sleep), under `log_args` (`--log-driver ...`): the
/// throughput it got (timed inside the container) and dockerd's RSS.
pub fn overload(log_args: &[&str], mb: u32) -> Overload {
    let dk = docker();
    let out = fresh_dir("overload");
    let script = format!(
        "yes $(head -c 999 /dev/zero | tr '\\0' x) | head -n 1000 > /out/chunk; \
         s=$(cut -d' ' -f1 /proc/uptime); i=0; \
         while [ $i -lt {mb} ]; do cat /out/chunk; usleep 9000; i=$((i+1)); done; \
         e=$(cut -d' ' -f1 /proc/uptime); echo $s $e > /out/t"
    );
    let pid = dk.pid();
    let before = rss_kib(pid);
    let volume = format!("{}:/out", out.display());
    let mut args = vec!["run", "--rm", "--network", "none", "-v", &volume];
    args.extend_from_slice(log_args);
    args.extend_from_slice(&[dk.busybox_image(), "sh", "-c", &script]);
    let mut child = dk
        .cli()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker run");
    let mut peak = before;
    while child.try_wait().expect("wait docker run").is_none() {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let t = std::fs::read_to_string(out.join("t")).unwrap_or_default();
    let v: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        v.len() == 2 && v[1] > v[0],
        "the writer under {log_args:?} did not time itself: {t:?}"
    );
    Overload {
        mb_per_s: f64::from(mb) / (v[1] - v[0]),
        rss_before_kib: before,
        rss_peak_kib: peak,
    }
}

/// A configuration whose broker never answers (a port nobody listens on),
/// a bounded spill: the plugin's worst day.
pub fn broker_down_yaml() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!(
        "kafka:\n  brokers: [\"127.0.0.1:{port}\"]\n  topic: overload\n  message_timeout_ms: 5000\nspill:\n  max_bytes: 268435456\n  when_full: drop_newest\n"
    )
}
