//! `/etc/berth/runtime.toml`: the runtime's configuration.
//!
//! Where it is read from, first match wins: the `--berth-config PATH` global
//! flag, the `BERTH_RUNTIME_CONFIG` environment variable, then
//! [`DEFAULT_PATH`]. A missing file at the default path means all defaults; a
//! missing file that was named explicitly, an unknown key or a bad value is an
//! error, so a typo never silently changes behaviour.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/berth/runtime.toml";
/// The environment variable that names another configuration file.
pub const ENV_VAR: &str = "BERTH_RUNTIME_CONFIG";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// The backend that runs containers: `auto`, `runc`, `crun`, `libcontainer`
    /// (built in), or an absolute path. `delegate` is accepted as its old name.
    #[serde(alias = "delegate")]
    pub backend: BackendChoice,
    /// What `auto` tries, in order (names looked up on PATH, or absolute paths).
    pub auto_order: Vec<String>,
    /// Whether a container may pick its delegate with `io.berth.delegate`.
    pub allow_delegate_annotation: bool,
    /// Delegates the annotation may name (when allowed).
    pub annotation_delegates: Vec<String>,
    /// Where Berth keeps its per-container records.
    pub state_dir: PathBuf,
    /// The sysctl policy stage.
    pub sysctl: SysctlConfig,
    /// The CPU-count injection stage.
    pub preload: PreloadConfig,
    /// The CPU split stage.
    pub cpus: CpusConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            backend: BackendChoice::Auto,
            auto_order: vec!["runc".into(), "crun".into(), "libcontainer".into()],
            allow_delegate_annotation: false,
            annotation_delegates: vec!["runc".into(), "crun".into()],
            state_dir: PathBuf::from("/run/berth"),
            sysctl: SysctlConfig::default(),
            preload: PreloadConfig::default(),
            cpus: CpusConfig::default(),
        }
    }
}

/// `backend`: `auto`, or one backend by name or absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum BackendChoice {
    /// The first of `auto_order` installed.
    Auto,
    /// `runc`, `crun`, `libcontainer` (built in), or an absolute path.
    Named(String),
}

impl TryFrom<String> for BackendChoice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<BackendChoice, String> {
        match s.as_str() {
            "" => Err(
                "must name a runtime: auto, runc, crun, libcontainer or an absolute path".into(),
            ),
            "auto" => Ok(BackendChoice::Auto),
            _ if s.starts_with('/') || !s.contains('/') => Ok(BackendChoice::Named(s)),
            _ => Err(format!(
                "{s:?} is a relative path; give a name on PATH or an absolute path"
            )),
        }
    }
}

/// `[cpus] user_cpuset`: what an explicit user cpuset means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserCpuset {
    /// Run there, unsplit, outside the ledger.
    Respect,
    /// Plan as usual.
    Split,
}

/// `[sysctl]`: the layers of the sysctl policy and the allowlist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysctlConfig {
    /// The machine-class file (a `[sysctl]` table); missing means empty.
    pub machine_class_file: PathBuf,
    /// Directory of app policies, `<name>.toml`, chosen by `io.berth.sysctl-policy`.
    pub policy_dir: PathBuf,
    /// Which of its own namespaced keys a container may set: `all`, as runc
    /// (the engines filter first), or `safe-list`: kubelet's safe list and
    /// [`SysctlConfig::allow`] only. Host-only keys are always refused.
    pub container_keys: ContainerKeys,
    /// Keys a container may set besides kubelet's safe list with
    /// `container_keys = "safe-list"`; `prefix.*` globs allowed.
    pub allow: Vec<String>,
}

/// `[sysctl] container_keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerKeys {
    /// Every namespaced key, as runc takes them.
    All,
    /// kubelet's safe list plus `allow`.
    SafeList,
}

impl Default for SysctlConfig {
    fn default() -> Self {
        SysctlConfig {
            machine_class_file: PathBuf::from("/etc/berth/sysctl/machine.toml"),
            policy_dir: PathBuf::from("/etc/berth/sysctl/policies"),
            container_keys: ContainerKeys::All,
            allow: Vec::new(),
        }
    }
}

/// `[preload]`: injection of `libberth_cpus.so`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreloadConfig {
    /// Whether to inject the library into containers that have a CPU limit.
    pub enabled: bool,
    /// The library on the host.
    pub library: PathBuf,
    /// Where it is bind-mounted (read-only) inside the container; the count
    /// file it maps for live updates is mounted beside it (`nproc`).
    pub container_path: String,
    /// Whether containers with a CPU limit get the synthetic `/proc/cpuinfo`
    /// and `/sys/devices/system/cpu/online` (and the live count file).
    pub cpu_files: bool,
    /// Per-runtime variables set to the count unless the image sets them:
    /// `go` (GOMAXPROCS), `dotnet` (DOTNET_PROCESSOR_COUNT), `python`
    /// (PYTHON_CPU_COUNT), `java` (JAVA_TOOL_OPTIONS=-XX:ActiveProcessorCount),
    /// `openmp` (OMP_NUM_THREADS).
    pub overrides: Vec<CountOverride>,
}

/// The multiarch directory packages install libraries under.
#[cfg(target_arch = "x86_64")]
pub const MULTIARCH: &str = "x86_64-linux-gnu";
/// The multiarch directory packages install libraries under.
#[cfg(target_arch = "aarch64")]
pub const MULTIARCH: &str = "aarch64-linux-gnu";
/// The multiarch directory packages install libraries under.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const MULTIARCH: &str = std::env::consts::ARCH;

impl Default for PreloadConfig {
    fn default() -> Self {
        PreloadConfig {
            enabled: true,
            library: PathBuf::from(format!("/usr/lib/{MULTIARCH}/berth/libberth_cpus.so")),
            container_path: "/usr/lib/berth/libberth_cpus.so".into(),
            cpu_files: true,
            overrides: vec![CountOverride::Go, CountOverride::Dotnet],
        }
    }
}

/// `[preload] overrides`: a language runtime's own CPU-count setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CountOverride {
    /// `GOMAXPROCS` (Go reads the affinity mask with raw system calls).
    Go,
    /// `DOTNET_PROCESSOR_COUNT`.
    Dotnet,
    /// `PYTHON_CPU_COUNT` (3.13+; it fixes the count at start).
    Python,
    /// `JAVA_TOOL_OPTIONS=-XX:ActiveProcessorCount=N` (the JVM prints
    /// "Picked up JAVA_TOOL_OPTIONS" on stderr).
    Java,
    /// `OMP_NUM_THREADS` (a thread count, not only a CPU count).
    Openmp,
}

impl CountOverride {
    /// The override named `name` (as in the config file).
    pub fn from_name(name: &str) -> Option<CountOverride> {
        Some(match name {
            "go" => CountOverride::Go,
            "dotnet" => CountOverride::Dotnet,
            "python" => CountOverride::Python,
            "java" => CountOverride::Java,
            "openmp" => CountOverride::Openmp,
            _ => return None,
        })
    }

    /// The environment variable it sets.
    pub fn variable(self) -> &'static str {
        match self {
            CountOverride::Go => "GOMAXPROCS",
            CountOverride::Dotnet => "DOTNET_PROCESSOR_COUNT",
            CountOverride::Python => "PYTHON_CPU_COUNT",
            CountOverride::Java => "JAVA_TOOL_OPTIONS",
            CountOverride::Openmp => "OMP_NUM_THREADS",
        }
    }
}

/// `[cpus]`: the CPU planner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpusConfig {
    /// Whether Berth plans CPUs at all.
    pub enabled: bool,
    /// Pieces per CPU: 100 gives 0.01-CPU granularity, 1000 gives 0.001.
    pub base: u32,
    /// CPUs kept for system daemons (a cpuset list such as `0` or `0-1`).
    pub reserved: String,
    /// Shared-pool overcommit: shared containers may request pool × this.
    pub overcommit: f64,
    /// What an explicit user cpuset (`--cpuset-cpus`) means: `respect` (run
    /// there, unsplit, outside the ledger) or `split` (plan as usual).
    pub user_cpuset: UserCpuset,
    /// How far the `io.berth.cpus` / `io.berth.cpu-mode` annotations are
    /// trusted (they come from the pod, i.e. from the tenant).
    pub annotations: AnnotationPolicy,
    /// With [`AnnotationPolicy::WithinLimit`] and no CPU limit from the
    /// engine, the most CPUs an annotation may ask for (0: none).
    pub max_request: f64,
}

/// `[cpus] annotations`: what a container's CPU annotations may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnnotationPolicy {
    /// They may choose the mode and ask for less than the engine's limit,
    /// never more; with no engine limit, at most `max_request` CPUs.
    WithinLimit,
    /// They decide (single-tenant hosts).
    Trusted,
    /// They are ignored.
    Ignore,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            enabled: true,
            base: 100,
            reserved: String::new(),
            overcommit: 1.0,
            user_cpuset: UserCpuset::Respect,
            annotations: AnnotationPolicy::WithinLimit,
            max_request: 0.0,
        }
    }
}

impl RuntimeConfig {
    /// Loads the configuration: `explicit` (the flag), else `$BERTH_RUNTIME_CONFIG`,
    /// else [`DEFAULT_PATH`] (optional). Returns it and the path it came from.
    pub fn load(explicit: Option<&Path>) -> Result<(RuntimeConfig, Option<PathBuf>)> {
        let from_env = std::env::var_os(ENV_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (path, required) = match (explicit, from_env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse(&text, &path)?, Some(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok((RuntimeConfig::default(), None))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses and validates configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<RuntimeConfig> {
        let c: RuntimeConfig = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        c.validate().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(c)
    }

    /// Checks what TOML types cannot: paths must be absolute (a relative one
    /// would resolve against whatever directory an engine runs us in).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let paths = [
            ("state_dir", self.state_dir.as_path()),
            (
                "sysctl.machine_class_file",
                self.sysctl.machine_class_file.as_path(),
            ),
            ("sysctl.policy_dir", self.sysctl.policy_dir.as_path()),
            ("preload.library", self.preload.library.as_path()),
            (
                "preload.container_path",
                Path::new(&self.preload.container_path),
            ),
        ];
        for (key, p) in paths {
            if !p.is_absolute() {
                return Err(format!(
                    "{key} = {:?} must be an absolute path",
                    p.display().to_string()
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.cpus.base) {
            return Err(format!(
                "cpus.base = {} must be between 1 and 1000000",
                self.cpus.base
            ));
        }
        if !(self.cpus.overcommit.is_finite()
            && self.cpus.overcommit > 0.0
            && self.cpus.overcommit <= 100.0)
        {
            return Err(format!(
                "cpus.overcommit = {} must be a number in (0, 100]",
                self.cpus.overcommit
            ));
        }
        if crate::cpus::topology::parse_list(&self.cpus.reserved).is_none() {
            return Err(format!(
                "cpus.reserved = {:?} is not a CPU list such as \"0-1\"",
                self.cpus.reserved
            ));
        }
        if !(self.cpus.max_request.is_finite() && self.cpus.max_request >= 0.0) {
            return Err(format!(
                "cpus.max_request = {} must be a number of CPUs, 0 or more",
                self.cpus.max_request
            ));
        }
        if self.backend == BackendChoice::Auto && self.auto_order.is_empty() {
            return Err("backend = \"auto\" needs a non-empty auto_order".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let c = RuntimeConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c.backend, BackendChoice::Auto);
        assert!(c.preload.enabled);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        let e = RuntimeConfig::parse("delegat = \"runc\"", Path::new("/etc/berth/runtime.toml"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/berth/runtime.toml") && msg.contains("delegat"),
            "{msg}"
        );
    }

    #[test]
    fn choices_are_checked_when_the_file_is_read() {
        for (text, needle) in [
            ("backend = \"\"", "must name a runtime"),
            ("backend = \"bin/runc\"", "relative path"),
            ("[cpus]\nuser_cpuset = \"maybe\"", "respect"),
        ] {
            let e = RuntimeConfig::parse(text, Path::new("f")).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let c = RuntimeConfig::parse(
            "delegate = \"crun\"\n[cpus]\nuser_cpuset = \"split\"",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c.backend, BackendChoice::Named("crun".into()));
        assert_eq!(c.cpus.user_cpuset, UserCpuset::Split);
    }

    #[test]
    fn relative_paths_are_refused() {
        let e = RuntimeConfig::parse("[preload]\nlibrary = \"target/x.so\"", Path::new("f"))
            .unwrap_err();
        assert!(e.to_string().contains("preload.library"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../etc/runtime.toml");
        let c = RuntimeConfig::parse(text, Path::new("etc/runtime.toml")).unwrap();
        assert_eq!(c.backend, BackendChoice::Auto);
    }
}
