//! The `CNI_*` environment a runtime passes, checked per command.

use crate::error::{Code, Failure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A `CNI_*` variable that is missing or wrong (code 4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A variable this command needs is unset or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// `CNI_COMMAND` names no verb.
    #[error("CNI_COMMAND {0:?} is not a CNI command")]
    UnknownCommand(String),
    /// `CNI_IFNAME` is no interface name.
    #[error("CNI_IFNAME {0:?} is not a valid interface name")]
    BadIfname(String),
    /// A `CNI_ARGS` pair without `=`.
    #[error("CNI_ARGS: {0:?} is not KEY=VALUE")]
    ArgNotPair(String),
    /// A `CNI_ARGS` pair with an empty key.
    #[error("CNI_ARGS: {0:?} has an empty key")]
    ArgEmptyKey(String),
    /// `CNI_IFNAME` is taken in the container's netns.
    #[error("CNI_IFNAME {0} already exists in the container's netns")]
    IfnameTaken(String),
}

impl Failure for EnvError {
    fn code(&self) -> Code {
        Code::InvalidEnv
    }
}

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container.
    Add,
    /// Detach it; must succeed when things are already gone.
    Del,
    /// Verify the attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Report whether the plugin can serve ADDs (1.1).
    Status,
    /// Remove resources not in the valid list (1.1).
    Gc,
}

impl Command {
    /// Its `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The parsed environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (absent on some DELs).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, as `K=V` pairs.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
}

/// Parses `CNI_ARGS` (`K1=V1;K2=V2`); a pair without `=` is an error.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| EnvError::ArgNotPair(pair.to_string()))?;
        if k.is_empty() {
            return Err(EnvError::ArgEmptyKey(pair.to_string()));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// True when `name` is a valid interface name (1-15 bytes, no `/`, `:` or space).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

impl Env {
    /// Reads and checks the environment through `get` (`std::env::var` in plugins).
    pub fn from_fn(get: impl Fn(&str) -> Option<String>) -> Result<Env, EnvError> {
        let command_s = get("CNI_COMMAND")
            .filter(|s| !s.is_empty())
            .ok_or(EnvError::Missing("CNI_COMMAND"))?;
        let command = Command::parse(&command_s)
            .ok_or_else(|| EnvError::UnknownCommand(command_s.clone()))?;
        let need = |v: &'static str| -> Result<String, EnvError> {
            get(v).filter(|s| !s.is_empty()).ok_or(EnvError::Missing(v))
        };
        let opt = |v: &str| get(v).filter(|s| !s.is_empty());
        let (container_id, netns, ifname) = match command {
            Command::Add | Command::Check => (
                need("CNI_CONTAINERID")?,
                Some(PathBuf::from(need("CNI_NETNS")?)),
                need("CNI_IFNAME")?,
            ),
            Command::Del => (
                need("CNI_CONTAINERID")?,
                opt("CNI_NETNS").map(PathBuf::from),
                need("CNI_IFNAME")?,
            ),
            Command::Version | Command::Status | Command::Gc => (
                opt("CNI_CONTAINERID").unwrap_or_default(),
                opt("CNI_NETNS").map(PathBuf::from),
                opt("CNI_IFNAME").unwrap_or_default(),
            ),
        };
        if matches!(command, Command::Add | Command::Del | Command::Check) && !valid_ifname(&ifname)
        {
            return Err(EnvError::BadIfname(ifname));
        }
        let path_s = match command {
            Command::Version => opt("CNI_PATH").unwrap_or_default(),
            _ => need("CNI_PATH")?,
        };
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args: parse_args(&opt("CNI_ARGS").unwrap_or_default())?,
            path: std::env::split_paths(&path_s)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        })
    }

    /// Reads the process environment.
    pub fn from_process() -> Result<Env, EnvError> {
        Env::from_fn(|k| std::env::var(k).ok())
    }

    /// `CNI_NETNS`, for the verbs that need it.
    pub fn netns(&self) -> Result<&Path, EnvError> {
        self.netns.as_deref().ok_or(EnvError::Missing("CNI_NETNS"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, EnvError> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_fn(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_everything_del_tolerates_no_netns() {
        let base = [
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let mut add = base.to_vec();
        add.push(("CNI_COMMAND", "ADD"));
        let e = env(&add).unwrap();
        assert_eq!(e.path.len(), 2);
        let no_netns: Vec<_> = add
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        let err = env(&no_netns).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string().as_str()),
            (Code::InvalidEnv, "CNI_NETNS is required")
        );
        let del: Vec<_> = no_netns
            .iter()
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, "DEL")
                } else {
                    (*k, *v)
                }
            })
            .collect();
        assert_eq!(env(&del).unwrap().netns, None);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code(),
            Code::InvalidEnv
        );
    }

    #[test]
    fn cni_args_and_ifnames() {
        let a = parse_args("IgnoreUnknown=1;IP=10.1.2.3;MAC=aa:bb:cc:dd:ee:ff").unwrap();
        assert_eq!(a["IP"], "10.1.2.3");
        assert_eq!(a["MAC"], "aa:bb:cc:dd:ee:ff");
        assert!(parse_args("novalue").is_err());
        assert!(parse_args("=x").is_err());
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("a-name-much-too-long"));
        assert!(!valid_ifname("a/b"));
    }
}
