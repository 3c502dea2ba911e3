//! Stage 1: the sysctl policy.
//!
//! Layers, lowest precedence first: built-in defaults (currently none) < the
//! machine-class file < the app policy named by [`POLICY_ANNOTATION`] < the
//! container's own `linux.sysctl`. Rules:
//!
//! * Only namespaced keys are ever set: `net.*`, `kernel.shm*`, `kernel.msg*`,
//!   `kernel.sem`, `fs.mqueue.*`. `net.*` needs the container's own network
//!   namespace and the IPC keys its own IPC namespace.
//! * A key the container sets itself is taken as runc takes it (the engines
//!   filter first: Docker allows only namespaced keys, kubelet its safe and
//!   unsafe lists). With `[sysctl] container_keys = "safe-list"` it must be
//!   in kubelet's safe list or the admin's `[sysctl] allow`, unless it
//!   equals what the policy layers give.
//! * Admin layers are trusted: a non-namespaced key there is a config error.
//!   The machine-class file is host-wide, so its keys that a container's
//!   namespaces cannot take (host network, host IPC) are skipped for that
//!   container with a log line; an explicitly requested app policy that
//!   cannot apply is refused.

use super::Context;
use crate::config::ContainerKeys;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The annotation that selects an app policy (`<policy_dir>/<name>.toml`).
pub const POLICY_ANNOTATION: &str = "io.berth.sysctl-policy";

/// Kubelet's safe sysctls: settable by any pod without an allowlist.
pub const KUBELET_SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Built-in defaults, the lowest layer. Empty: Berth changes no sysctl unless told to.
const BUILT_IN: &[(&str, &str)] = &[];

/// Which namespace a namespaced key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The network namespace (`net.*`).
    Network,
    /// The IPC namespace (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`).
    Ipc,
}

impl Namespace {
    fn spec_name(self) -> &'static str {
        match self {
            Namespace::Network => "network",
            Namespace::Ipc => "ipc",
        }
    }
}

/// Normalises `net/ipv4/x` to `net.ipv4.x`.
pub fn normalize(key: &str) -> String {
    key.trim().replace('/', ".")
}

/// The namespace a key lives in, or None when it is not namespaced.
pub fn namespace_of(key: &str) -> Option<Namespace> {
    let k = normalize(key);
    if k.starts_with("net.") {
        Some(Namespace::Network)
    } else if k.starts_with("kernel.shm")
        || k.starts_with("kernel.msg")
        || k == "kernel.sem"
        || k.starts_with("fs.mqueue.")
    {
        Some(Namespace::Ipc)
    } else {
        None
    }
}

/// True when `key` is in kubelet's safe list or matches an admin pattern
/// (exact, or with a trailing `*` matching any rest).
pub fn allowed(key: &str, admin: &[String]) -> bool {
    let k = normalize(key);
    KUBELET_SAFE.contains(&k.as_str())
        || admin.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(&normalize(prefix)),
            None => normalize(p) == k,
        })
}

/// Reads a policy file's `[sysctl]` table. `Ok(None)` when the file is absent.
fn read_layer(path: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        sysctl: BTreeMap<String, toml::Value>,
    }
    let f: File = toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in f.sysctl {
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!("sysctl {k}: value must be a string or integer, not {other}"),
                })
            }
        };
        if namespace_of(&k).is_none() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: format!("sysctl {k} is not namespaced"),
            });
        }
        out.insert(k, s);
    }
    Ok(Some(out))
}

fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn shares_host(spec: &Value, key: &str) -> Option<Namespace> {
    let ns = namespace_of(key)?;
    (!crate::spec::has_namespace(spec, ns.spec_name())).then_some(ns)
}

fn host_reason(ns: Namespace) -> String {
    format!(
        "needs a private {} namespace, and the container shares the host's",
        ns.spec_name()
    )
}

/// Applies the policy to `linux.sysctl`. Returns the keys the policy layers
/// set (the applied record) or None when they set nothing.
pub fn apply(spec: &mut Value, ctx: &Context<'_>) -> Result<Option<Value>> {
    let cfg = &ctx.config.sysctl;
    // Policy layers, merged low to high.
    let mut policy: BTreeMap<String, String> = BUILT_IN
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(layer) = read_layer(&cfg.machine_class_file)? {
        for (k, v) in layer {
            if let Some(ns) = shares_host(spec, &k) {
                tracing::info!(key = %k, "machine-class sysctl skipped: {}", host_reason(ns));
                continue;
            }
            policy.insert(k, v);
        }
    }
    if let Some(name) = crate::spec::annotation(spec, POLICY_ANNOTATION) {
        if !valid_policy_name(name) {
            return Err(Error::Annotation {
                key: POLICY_ANNOTATION.into(),
                value: name.into(),
                reason: "a policy name is letters, digits, '-', '_' and '.'".into(),
            });
        }
        let file = cfg.policy_dir.join(format!("{name}.toml"));
        let layer = read_layer(&file)?.ok_or_else(|| Error::Annotation {
            key: POLICY_ANNOTATION.into(),
            value: name.into(),
            reason: format!("no such sysctl policy ({} does not exist)", file.display()),
        })?;
        for (k, v) in layer {
            if let Some(ns) = shares_host(spec, &k) {
                return Err(Error::Sysctl {
                    key: k,
                    reason: format!("(from policy {name}) {}", host_reason(ns)),
                });
            }
            policy.insert(k, v);
        }
    }

    // The container's own keys.
    let own: Map<String, Value> = match spec.pointer("/linux/sysctl") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(Error::Spec {
                path: crate::rewrite::config_path(ctx.bundle),
                message: "linux.sysctl must be an object of strings".into(),
            })
        }
    };
    for (k, v) in &own {
        let Some(v) = v.as_str() else {
            return Err(Error::Sysctl {
                key: k.clone(),
                reason: "has a value that is not a string".into(),
            });
        };
        if namespace_of(k).is_none() {
            return Err(Error::Sysctl {
                key: k.clone(),
                reason: "is not namespaced".into(),
            });
        }
        if let Some(ns) = shares_host(spec, k) {
            return Err(Error::Sysctl {
                key: k.clone(),
                reason: host_reason(ns),
            });
        }
        let from_policy = policy.get(k).map(|p| p == v).unwrap_or(false);
        if cfg.container_keys == ContainerKeys::SafeList && !from_policy && !allowed(k, &cfg.allow)
        {
            return Err(Error::Sysctl {
                key: k.clone(),
                reason: "is not allowed: not in kubelet's safe list nor in [sysctl] allow \
                         ([sysctl] container_keys = \"safe-list\" in the Berth runtime config)"
                    .into(),
            });
        }
    }

    if policy.is_empty() {
        return Ok(None);
    }
    let mut merged = own.clone();
    let mut record = Map::new();
    for (k, v) in &policy {
        match own.get(k) {
            Some(mine) if mine.as_str() != Some(v.as_str()) => {} // the container overrides
            _ => {
                merged.insert(k.clone(), Value::String(v.clone()));
                record.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let Some(obj) = spec.as_object_mut() else {
        return Ok(None);
    };
    let linux = obj
        .entry("linux")
        .or_insert_with(|| Value::Object(Map::new()));
    if !linux.is_object() {
        return Err(Error::Spec {
            path: crate::rewrite::config_path(ctx.bundle),
            message: "linux must be an object".into(),
        });
    }
    if let Some(l) = linux.as_object_mut() {
        l.insert("sysctl".into(), Value::Object(merged));
    }
    Ok((!record.is_empty()).then_some(Value::Object(record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_keys() {
        assert_eq!(namespace_of("net.core.somaxconn"), Some(Namespace::Network));
        assert_eq!(
            namespace_of("net/ipv4/tcp_syncookies"),
            Some(Namespace::Network)
        );
        assert_eq!(namespace_of("kernel.shmmax"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("kernel.sem"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("fs.mqueue.msg_max"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("vm.swappiness"), None);
        assert_eq!(namespace_of("kernel.pid_max"), None);
        assert_eq!(namespace_of("kernel.semx"), None);
    }

    #[test]
    fn allowlist_matches_safe_list_exact_and_prefix() {
        assert!(allowed("net.ipv4.tcp_syncookies", &[]));
        assert!(!allowed("net.core.somaxconn", &[]));
        assert!(allowed(
            "net.core.somaxconn",
            &["net.core.somaxconn".into()]
        ));
        assert!(allowed(
            "net.ipv4.tcp_max_syn_backlog",
            &["net.ipv4.tcp_*".into()]
        ));
        assert!(!allowed(
            "net.ipv6.conf.all.forwarding",
            &["net.ipv4.*".into()]
        ));
    }
}
