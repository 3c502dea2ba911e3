//! Plugin diagnostics go to a log file, never to stdout (which carries only
//! the result or the error JSON).
//!
//! Where, most specific first:
//! 1. the network config's `logFile` and `logLevel` keys;
//! 2. the environment: `BERTH_CNI_LOG_FILE`, `BERTH_CNI_LOG_LEVEL`;
//! 3. `/etc/berth/cni.toml` (`log_file`, `log_level`; another file with
//!    `BERTH_CNI_CONFIG`);
//! 4. the defaults: [`DEFAULT_LOG_FILE`] at `info`.
//!
//! `logFile: ""` (or `-`) sends the lines to stderr instead; when the file
//! cannot be opened they go to stderr as well.
//!
//! A network config may be written by a tenant (Multus lets namespace users
//! write them), and the plugin runs as root: its `logFile` is opened only
//! inside `allowed_log_dirs` of `/etc/berth/cni.toml` (default
//! `/var/log/berth`). Another path is never opened; the plugin logs where
//! 2–4 say and states there why.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tracing::level_filters::LevelFilter;

/// Where plugin logs go when nothing says otherwise.
pub const DEFAULT_LOG_FILE: &str = "/var/log/berth/cni.log";
/// The host-wide settings file.
pub const DEFAULT_CONFIG: &str = "/etc/berth/cni.toml";

/// `/etc/berth/cni.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The log file.
    pub log_file: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Option<String>,
    /// The directories a network config's `logFile` may name (default: the
    /// default log file's directory).
    pub allowed_log_dirs: Option<Vec<PathBuf>>,
    /// Where plugins keep their attachment records for GC (default
    /// `/var/lib/berth/cni`).
    pub state_dir: Option<PathBuf>,
    /// `[gc]`: the GC trigger `berth-cni-gc`.
    #[serde(default)]
    pub gc: GcSettings,
}

/// `[gc] engine`: where `berth-cni-gc` finds the live containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GcEngine {
    /// The CRI API (containerd, CRI-O): the default.
    Cri,
    /// podman's CLI (podman with the CNI backend).
    Podman,
}

/// `[gc]` of `/etc/berth/cni.toml`: where `berth-cni-gc` looks (its flags
/// override each).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSettings {
    /// Where the live containers come from.
    pub engine: Option<GcEngine>,
    /// The engine's CRI socket.
    pub cri_socket: Option<PathBuf>,
    /// The podman program (`engine = "podman"`).
    pub podman: Option<PathBuf>,
    /// The CNI configuration directory.
    pub conf_dir: Option<PathBuf>,
    /// The CNI plugin directories.
    pub bin_dirs: Option<Vec<PathBuf>>,
    /// libcni's cache directory (the engine's).
    pub cache_dir: Option<PathBuf>,
    /// Attachments cached less than this long ago are kept.
    pub grace_seconds: Option<u64>,
}

impl HostSettings {
    /// The settings from `BERTH_CNI_CONFIG`, else `/etc/berth/cni.toml`.
    pub fn from_env() -> HostSettings {
        let path = std::env::var_os("BERTH_CNI_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        HostSettings::load(&path)
    }

    /// Where attachment records live.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::attachments::DEFAULT_STATE_DIR))
    }

    /// Reads `path`; a missing file gives the defaults, a broken one is
    /// reported on stderr and ignored (a plugin must still answer).
    pub fn load(path: &Path) -> HostSettings {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).unwrap_or_else(|e| {
                eprintln!("berth-cni: ignoring {}: {e}", path.display());
                HostSettings::default()
            }),
            Err(_) => HostSettings::default(),
        }
    }
}

fn level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// Where logs go and how much, resolved from the config, env and host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The file; `None` for stderr.
    pub file: Option<PathBuf>,
    /// The most verbose level written.
    pub level: LevelFilter,
    /// A network config's `logFile` that was not opened, and why.
    pub refused: Option<String>,
}

/// True when `file` is an absolute path with no `.` or `..` parts inside
/// one of `dirs`.
fn allowed(file: &Path, dirs: &[PathBuf]) -> bool {
    use std::path::Component;
    file.is_absolute()
        && file
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && dirs
            .iter()
            .any(|d| d.is_absolute() && file.starts_with(d) && file != d)
}

/// Resolves the log target (see the module docs) from the raw network config.
pub fn resolve(conf: Option<&Value>, get: impl Fn(&str) -> Option<String>) -> LogTarget {
    let from_conf = |k: &str| {
        conf.and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let host = HostSettings::load(Path::new(
        &get("BERTH_CNI_CONFIG").unwrap_or_else(|| DEFAULT_CONFIG.into()),
    ));
    let dirs = host.allowed_log_dirs.clone().unwrap_or_else(|| {
        Path::new(DEFAULT_LOG_FILE)
            .parent()
            .map(|d| vec![d.to_path_buf()])
            .unwrap_or_default()
    });
    let mut refused = None;
    let from_network = from_conf("logFile").filter(|f| {
        let f = Path::new(f);
        if f.as_os_str().is_empty() || f == Path::new("-") || allowed(f, &dirs) {
            return true;
        }
        refused = Some(format!(
            "logFile {} is not inside [cni] allowed_log_dirs {dirs:?}; it was not opened",
            f.display()
        ));
        false
    });
    let file = from_network
        .or_else(|| get("BERTH_CNI_LOG_FILE"))
        .map(PathBuf::from)
        .or(host.log_file)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_FILE));
    let file = (!file.as_os_str().is_empty() && file != Path::new("-")).then_some(file);
    let level = from_conf("logLevel")
        .or_else(|| get("BERTH_CNI_LOG_LEVEL"))
        .or(host.log_level)
        .and_then(|s| level(&s))
        .unwrap_or(LevelFilter::INFO);
    LogTarget {
        file,
        level,
        refused,
    }
}

/// Installs the subscriber for `target`. The process name is part of every line.
pub fn init(target: &LogTarget) {
    let opened = target.file.as_ref().and_then(|f| {
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_max_level(target.level);
    let _ = match opened {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Some(why) = &target.refused {
        tracing::warn!("{why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_beats_env_beats_host_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("cni.toml");
        std::fs::write(&host, "log_file = \"/h.log\"\nlog_level = \"warn\"\n").unwrap();
        let hp = host.to_string_lossy().into_owned();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let t = resolve(None, env(vec![("BERTH_CNI_CONFIG", hp.clone())]));
        assert_eq!(t.file.as_deref(), Some(Path::new("/h.log")));
        assert_eq!(t.level, LevelFilter::WARN);
        let t = resolve(
            None,
            env(vec![
                ("BERTH_CNI_CONFIG", hp.clone()),
                ("BERTH_CNI_LOG_FILE", "/e.log".into()),
            ]),
        );
        assert_eq!(t.file.as_deref(), Some(Path::new("/e.log")));
        let c = json!({"logFile": "-", "logLevel": "debug"});
        let t = resolve(Some(&c), env(vec![("BERTH_CNI_CONFIG", hp)]));
        assert_eq!((t.file, t.level), (None, LevelFilter::DEBUG));
        let t = resolve(None, env(vec![("BERTH_CNI_CONFIG", "/nonexistent".into())]));
        assert_eq!(t.file.as_deref(), Some(Path::new(DEFAULT_LOG_FILE)));
        assert_eq!(t.level, LevelFilter::INFO);
    }

    /// A network config's logFile is opened only inside allowed_log_dirs.
    #[test]
    fn a_log_file_outside_the_allowed_dirs_is_never_opened() {
        let none = |_: &str| None;
        for bad in [
            "/etc/cron.d/x",
            "/var/log/berth/../../etc/x",
            "relative.log",
            "/var/log/berth",
        ] {
            let t = resolve(Some(&json!({ "logFile": bad })), none);
            assert_eq!(
                t.file.as_deref(),
                Some(Path::new(DEFAULT_LOG_FILE)),
                "{bad}"
            );
            assert!(
                t.refused
                    .as_deref()
                    .is_some_and(|r| r.contains("allowed_log_dirs")),
                "{bad}"
            );
        }
        let t = resolve(Some(&json!({"logFile": "/var/log/berth/net1.log"})), none);
        assert_eq!(
            t.file.as_deref(),
            Some(Path::new("/var/log/berth/net1.log"))
        );
        assert!(t.refused.is_none());
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("cni.toml");
        std::fs::write(&host, "allowed_log_dirs = [\"/srv/logs\"]\n").unwrap();
        let hp = host.to_string_lossy().into_owned();
        let get = |k: &str| (k == "BERTH_CNI_CONFIG").then(|| hp.clone());
        let t = resolve(Some(&json!({"logFile": "/srv/logs/a.log"})), get);
        assert_eq!(t.file.as_deref(), Some(Path::new("/srv/logs/a.log")));
        let t = resolve(Some(&json!({"logFile": "/var/log/berth/a.log"})), get);
        assert!(t.refused.is_some());
    }
}
