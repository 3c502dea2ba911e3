//! Typed access to the parts of a raw `config.json` value Berth reads and
//! changes. The document stays a `serde_json::Value` so that fields Berth does
//! not know survive a rewrite untouched.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The annotation map, created if missing.
pub fn annotations_mut(spec: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = spec.as_object_mut()?;
    let a = obj
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !a.is_object() {
        *a = Value::Object(Map::new());
    }
    a.as_object_mut()
}

/// The value of annotation `key`, if it is a string.
pub fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

/// True when the spec gives the container a namespace of `kind` of its own:
/// a new one (an entry without a path), or one joined by path that is not the
/// host's (a pod sandbox's, say). False means it shares the host's: no entry,
/// or a path to the same namespace this process (which runs in the host's,
/// as runc does) is in.
pub fn has_namespace(spec: &Value, kind: &str) -> bool {
    let Some(entry) = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some(kind))
        })
    else {
        return false;
    };
    match entry
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        None => true,
        Some(path) => !same_namespace_as_ours(kind, Path::new(path)),
    }
}

/// True when `path` is the namespace of `kind` this process is in.
fn same_namespace_as_ours(kind: &str, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let proc_name = match kind {
        "network" => "net",
        "mount" => "mnt",
        "cgroup" => "cgroup",
        other => other,
    };
    let ours = std::fs::metadata(format!("/proc/self/ns/{proc_name}"));
    let theirs = std::fs::metadata(path);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        // An unreadable path: the delegate will fail on it anyway.
        _ => false,
    }
}

/// The rootfs directory: `root.path`, relative to the bundle unless absolute.
pub fn rootfs(spec: &Value, bundle: &Path) -> Option<PathBuf> {
    let p = spec.pointer("/root/path")?.as_str()?;
    let p = Path::new(p);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        bundle.join(p)
    })
}

/// `process.env` as a mutable array, created if missing (None without `process`).
pub fn env_mut(spec: &mut Value) -> Option<&mut Vec<Value>> {
    let process = spec.get_mut("process")?.as_object_mut()?;
    let env = process
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !env.is_array() {
        *env = Value::Array(Vec::new());
    }
    env.as_array_mut()
}

/// The value of `name` in an `env` array of `K=V` strings.
pub fn env_get<'a>(env: &'a [Value], name: &str) -> Option<&'a str> {
    env.iter().filter_map(Value::as_str).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Sets `name=value` in an `env` array, replacing every earlier entry of `name`.
pub fn env_set(env: &mut Vec<Value>, name: &str, value: &str) {
    let entry = Value::String(format!("{name}={value}"));
    let mut placed = false;
    env.retain_mut(|v| {
        let is_name = v
            .as_str()
            .and_then(|kv| kv.split_once('='))
            .map(|(k, _)| k == name)
            .unwrap_or(false);
        if !is_name {
            return true;
        }
        if placed {
            return false;
        }
        *v = entry.clone();
        placed = true;
        true
    });
    if !placed {
        env.push(entry);
    }
}

/// The CPU limit the spec sets: `(quota, period)` when a positive quota is set.
pub fn cpu_quota(spec: &Value) -> Option<(i64, u64)> {
    let cpu = spec.pointer("/linux/resources/cpu")?;
    let quota = cpu.get("quota")?.as_i64().filter(|q| *q > 0)?;
    let period = cpu
        .get("period")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .unwrap_or(100_000);
    Some((quota, period))
}

/// The `linux.resources.cpu.cpus` cpuset string, if non-empty.
pub fn cpuset(spec: &Value) -> Option<&str> {
    spec.pointer("/linux/resources/cpu/cpus")?
        .as_str()
        .filter(|s| !s.trim().is_empty())
}

/// Counts the CPUs in a cpuset list like `0-3,8,10-11`; None if malformed or empty.
pub fn cpuset_count(list: &str) -> Option<u32> {
    let cpus = crate::cpus::topology::parse_list(list)?;
    u32::try_from(cpus.len()).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpuset_lists() {
        assert_eq!(cpuset_count("0"), Some(1));
        assert_eq!(cpuset_count("0-3,8,10-11"), Some(7));
        assert_eq!(cpuset_count("3-1"), None);
        assert_eq!(cpuset_count("a"), None);
        assert_eq!(cpuset_count(""), None);
    }

    #[test]
    fn env_set_replaces_duplicates_and_appends() {
        let mut env = vec![json!("A=1"), json!("B=2"), json!("A=3")];
        env_set(&mut env, "A", "9");
        assert_eq!(env, vec![json!("A=9"), json!("B=2")]);
        env_set(&mut env, "C", "x=y");
        assert_eq!(env_get(&env, "C"), Some("x=y"));
    }

    #[test]
    fn joining_our_own_namespace_by_path_is_sharing_the_host_s() {
        let s = json!({"linux": {"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}, {"type": "ipc", "path": "/proc/1/ns/ipc-missing"}]}});
        assert!(!has_namespace(&s, "network"));
        assert!(has_namespace(&s, "ipc"));
    }

    #[test]
    fn host_namespaces_are_detected() {
        let s = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}]}});
        assert!(has_namespace(&s, "network"));
        assert!(!has_namespace(&s, "ipc"));
    }
}
