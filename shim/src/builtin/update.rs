//! `update`: new resource limits for a running container.
//!
//! libcgroups applies a whole `linux.resources` at once (a missing devices
//! list would reset the device rules), so, as runc keeps the current
//! resources in its state, Berth keeps them in `<root>/<id>/berth-resources.json`:
//! the bundle's resources at first, each update merged over them, all of it
//! applied, then saved.

use super::{Context, Error, Result};
use crate::operation::UpdateArgs;
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The file under the container's state directory holding its current resources.
const FILE: &str = "berth-resources.json";

/// A size as runc's flags take it: bytes, or with a k/m/g/t suffix (powers
/// of 1024, an optional trailing `b`); `-1` means unlimited.
pub fn parse_size(s: &str) -> Result<i64> {
    let bad = || Error::Usage(format!("invalid size {s:?}"));
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(bad());
    }
    let v = n * mult as f64;
    if v > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as i64)
}

fn int(flag: &str, v: &str) -> Result<Value> {
    v.trim()
        .parse::<i64>()
        .map(Value::from)
        .map_err(|_| Error::Usage(format!("--{flag} {v:?}: not an integer")))
}

fn set(obj: &mut Value, section: &str, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        let s = m
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(sm) = s.as_object_mut() {
            sm.insert(key.into(), v);
        }
    }
}

/// The resources the update asks for: `-r` JSON, then the flags over it.
pub fn requested(u: &UpdateArgs) -> Result<Value> {
    let mut r = match u.resources.as_deref() {
        None => json!({}),
        Some(src) => {
            let text = if src == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::io("reading resources from stdin", e))?
            } else {
                std::fs::read_to_string(src)
                    .map_err(|e| Error::io(format!("resources file {src}"), e))?
            };
            serde_json::from_str(&text).map_err(|e| Error::Usage(format!("resources JSON: {e}")))?
        }
    };
    if u.l3_cache_schema.is_some() || u.mem_bw_schema.is_some() {
        return Err(Error::Usage(
            "Intel RDT updates are not supported by the built-in backend".into(),
        ));
    }
    let ints = [
        ("blkio-weight", &u.blkio_weight, "blockIO", "weight"),
        ("cpu-period", &u.cpu_period, "cpu", "period"),
        ("cpu-quota", &u.cpu_quota, "cpu", "quota"),
        ("cpu-rt-period", &u.cpu_rt_period, "cpu", "realtimePeriod"),
        (
            "cpu-rt-runtime",
            &u.cpu_rt_runtime,
            "cpu",
            "realtimeRuntime",
        ),
        ("cpu-share", &u.cpu_share, "cpu", "shares"),
        ("pids-limit", &u.pids_limit, "pids", "limit"),
    ];
    for (flag, v, section, key) in ints {
        if let Some(v) = v {
            set(&mut r, section, key, int(flag, v)?);
        }
    }
    let sizes = [
        (&u.memory, "limit"),
        (&u.memory_reservation, "reservation"),
        (&u.memory_swap, "swap"),
        (&u.kernel_memory, "kernel"),
        (&u.kernel_memory_tcp, "kernelTCP"),
    ];
    for (v, key) in sizes {
        if let Some(v) = v {
            set(&mut r, "memory", key, parse_size(v)?.into());
        }
    }
    for (v, key) in [(&u.cpuset_cpus, "cpus"), (&u.cpuset_mems, "mems")] {
        if let Some(v) = v {
            set(&mut r, "cpu", key, Value::String(v.clone()));
        }
    }
    Ok(r)
}

/// Merges `over` into `base`, objects key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// The container's current resources: saved by an earlier update, else the bundle's.
fn current(dir: &Path, bundle: &Path) -> Value {
    if let Some(v) = std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return v;
    }
    crate::rewrite::read_config(bundle)
        .pointer("/linux/resources")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// `update`: merges, applies and saves the container's resources.
pub fn update(ctx: &Context, u: &UpdateArgs) -> Result<()> {
    let c = ctx.load(&u.id)?;
    let dir = ctx.dir(&u.id)?;
    let mut res = current(&dir, c.bundle());
    merge(&mut res, requested(u)?);
    let parsed: LinuxResources =
        serde_json::from_value(res.clone()).map_err(|e| Error::Usage(format!("resources: {e}")))?;
    let (_, m) = super::cgroup_manager(&c)?;
    m.apply(&ControllerOpt {
        resources: &parsed,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| Error::Cgroup(format!("cannot update container \"{}\": {e}", u.id)))?;
    let bytes = serde_json::to_vec(&res).map_err(|e| Error::Usage(e.to_string()))?;
    crate::atomic::write_file(
        &dir.join(FILE),
        &bytes,
        0o600,
        crate::atomic::Durability::Atomic,
    )?;
    tracing::info!(container = %u.id, "resources updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5m").is_err());
    }

    #[test]
    fn updates_merge_over_what_is_there() {
        let mut base = json!({"cpu": {"shares": 1024, "cpus": "0"}, "devices": [{"allow": false}]});
        merge(
            &mut base,
            json!({"cpu": {"shares": 512}, "memory": {"limit": 10}}),
        );
        assert_eq!(
            base,
            json!({"cpu": {"shares": 512, "cpus": "0"}, "devices": [{"allow": false}], "memory": {"limit": 10}})
        );
    }
}
