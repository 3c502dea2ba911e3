//! IPAM delegation: the plugin named by `ipam.type` is found on `CNI_PATH`
//! and run with the same environment (its own `CNI_COMMAND`) and the same
//! configuration on stdin, as the spec prescribes. Its error JSON, if any, is
//! passed on with its code.

use crate::env::{Command as Verb, Env};
use crate::error::{Code, Failure};
use crate::types::{CniResult, ResultError};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Delegating to the IPAM plugin failed, or the plugin itself did.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// `ipam.type` is not a file name (code 7).
    #[error("ipam.type {0:?} is not a plugin name")]
    BadName(String),
    /// No such plugin on `CNI_PATH` (code 7).
    #[error("ipam.type {name:?}: no such plugin in CNI_PATH")]
    NotFound {
        /// `ipam.type`.
        name: String,
        /// The directories searched, joined by `:`.
        searched: String,
    },
    /// The plugin could not be started or waited for (code 5).
    #[error("cannot run IPAM plugin {}", plugin.display())]
    Run {
        /// Its path.
        plugin: PathBuf,
        /// The OS's words.
        #[source]
        source: std::io::Error,
    },
    /// The plugin answered with an error: passed on with its code.
    #[error("IPAM plugin {name}: {msg}")]
    Failed {
        /// Its file name.
        name: String,
        /// Its code.
        code: Code,
        /// Its `msg`.
        msg: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// It printed something that is not JSON (code 6).
    #[error("IPAM plugin {} printed something that is not JSON", .0.display())]
    NotJson(PathBuf),
    /// ADD printed nothing (code 6).
    #[error("IPAM plugin {0} returned no result")]
    NoResult(String),
    /// ADD's result has no addresses (code 100).
    #[error("IPAM plugin {0} returned no IP configuration")]
    NoAddresses(String),
    /// ADD's result does not decode (code 6).
    #[error(transparent)]
    Result(#[from] ResultError),
}

impl Failure for IpamError {
    fn code(&self) -> Code {
        match self {
            IpamError::BadName(_) | IpamError::NotFound { .. } => Code::InvalidConfig,
            IpamError::Run { .. } => Code::Io,
            IpamError::Failed { code, .. } => *code,
            IpamError::NotJson(_) | IpamError::NoResult(_) => Code::Decode,
            IpamError::NoAddresses(_) => Code::Plugin(100),
            IpamError::Result(e) => e.code(),
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            IpamError::NotFound { searched, .. } => Some(format!("searched {searched}")),
            IpamError::Run { source, .. } => Some(source.to_string()),
            IpamError::Failed { stderr, .. } => Some(stderr.clone()),
            IpamError::Result(e) => e.details(),
            _ => None,
        }
    }
}

/// Finds plugin `name` in the `CNI_PATH` directories.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf, IpamError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(IpamError::BadName(name.into()));
    }
    path.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| IpamError::NotFound {
            name: name.into(),
            searched: path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Runs `plugin` for `verb` with `env` and `config` on stdin; returns its
/// stdout JSON (None when it printed nothing, as DEL may).
pub fn exec(
    plugin: &Path,
    verb: Verb,
    env: &Env,
    config: &[u8],
) -> Result<Option<Value>, IpamError> {
    let path = std::env::join_paths(&env.path).unwrap_or_default();
    let args: Vec<String> = env.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut cmd = Command::new(plugin);
    cmd.env("CNI_COMMAND", verb.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", path)
        .env("CNI_ARGS", args.join(";"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &env.netns {
        Some(n) => cmd.env("CNI_NETNS", n),
        None => cmd.env_remove("CNI_NETNS"),
    };
    let mut child = cmd.spawn().map_err(|source| IpamError::Run {
        plugin: plugin.into(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config);
    }
    let out = child.wait_with_output().map_err(|source| IpamError::Run {
        plugin: plugin.into(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Option<Value> = if stdout.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&stdout).ok()
    };
    if !out.status.success() {
        // Pass the delegate's own error on, code and all.
        let code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let msg = json
            .as_ref()
            .and_then(|j| j.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or("failed")
            .to_string();
        return Err(IpamError::Failed {
            name: plugin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            code: Code::from_number(code),
            msg,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if json.is_none() && !stdout.trim().is_empty() {
        return Err(IpamError::NotJson(plugin.into()));
    }
    Ok(json)
}

/// The spec versions `plugin` reports through VERSION.
pub fn supported_versions(plugin: &Path, env: &Env) -> Result<Vec<String>, IpamError> {
    let v = exec(plugin, Verb::Version, env, br#"{"cniVersion":"0.4.0"}"#)?.unwrap_or_default();
    Ok(v.get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The newest version both `ours` (the config's) and the plugin support,
/// at or below `ours`.
fn negotiate(ours: &str, theirs: &[String]) -> Option<&'static str> {
    let pos = crate::SUPPORTED_VERSIONS.iter().position(|v| *v == ours)?;
    crate::SUPPORTED_VERSIONS[..=pos]
        .iter()
        .rev()
        .find(|v| theirs.iter().any(|t| t == *v))
        .copied()
}

/// Runs the IPAM plugin like [`exec`]. When it refuses the config's
/// `cniVersion` (code 1, as Debian 12's host-local does for 1.1.0), asks it
/// for its versions and retries once with the newest common one.
pub fn exec_negotiated(
    plugin: &Path,
    verb: Verb,
    env: &Env,
    config: &[u8],
) -> Result<Option<Value>, IpamError> {
    match exec(plugin, verb, env, config) {
        Err(e) if e.code() == Code::IncompatibleVersion => {
            let Ok(Value::Object(mut conf)) = serde_json::from_slice::<Value>(config) else {
                return Err(e);
            };
            let ours = conf
                .get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let theirs = supported_versions(plugin, env)?;
            let Some(v) = negotiate(&ours, &theirs).filter(|v| *v != ours) else {
                return Err(e);
            };
            tracing::info!(
                plugin = %plugin.display(),
                from = %ours,
                to = v,
                "IPAM plugin refused the config version; retrying with the newest it supports"
            );
            conf.insert("cniVersion".into(), Value::String(v.into()));
            let bytes = serde_json::to_vec(&conf).unwrap_or_default();
            exec(plugin, verb, env, &bytes)
        }
        r => r,
    }
}

/// ADD through the configured IPAM plugin; its result, read in any
/// version. A result without addresses is an error. Arm the caller's
/// rollback DEL before calling: a lease may exist on failure.
pub fn add(ipam_type: &str, env: &Env, config: &[u8]) -> Result<CniResult, IpamError> {
    let plugin = find_plugin(ipam_type, &env.path)?;
    let v = exec_negotiated(&plugin, Verb::Add, env, config)?
        .ok_or_else(|| IpamError::NoResult(ipam_type.into()))?;
    let r = CniResult::from_json(&v)?;
    if r.ips.is_empty() {
        return Err(IpamError::NoAddresses(ipam_type.into()));
    }
    Ok(r)
}

/// DEL through the configured IPAM plugin (always releases the lease).
pub fn del(ipam_type: &str, env: &Env, config: &[u8]) -> Result<(), IpamError> {
    let plugin = find_plugin(ipam_type, &env.path)?;
    exec_negotiated(&plugin, Verb::Del, env, config).map(|_| ())
}

/// STATUS or GC (1.1 verbs) through the IPAM plugin, when it supports
/// 1.1.0; `Ok(false)` when it does not, so there is nothing to ask.
pub fn passthrough_11(
    ipam_type: &str,
    verb: Verb,
    env: &Env,
    config: &[u8],
) -> Result<bool, IpamError> {
    let plugin = find_plugin(ipam_type, &env.path)?;
    if !supported_versions(&plugin, env)?
        .iter()
        .any(|v| v == "1.1.0")
    {
        return Ok(false);
    }
    exec(&plugin, verb, env, config).map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::negotiate;

    #[test]
    fn negotiation_picks_the_newest_common_version_not_above_ours() {
        let deb: Vec<String> = ["0.1.0", "0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(negotiate("1.1.0", &deb), Some("1.0.0"));
        assert_eq!(negotiate("0.4.0", &deb), Some("0.4.0"));
        assert_eq!(negotiate("0.3.0", &deb), None);
        assert_eq!(negotiate("9.9.9", &deb), None);
    }
}
