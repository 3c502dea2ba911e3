//! Stage 2: the CPU split. It decides `linux.resources.cpu` before the
//! CPU-count injection reads it.
//!
//! The request, first match wins: the annotation [`CPUS_ANNOTATION`]
//! (`"3.2"`, with [`MODE_ANNOTATION`] `split|exclusive|shared`); else Docker's
//! `--cpus`, i.e. `linux.resources.cpu.quota / period`; else no request, which
//! runs the container in the shared pool unpinned. An explicit user cpuset
//! (`--cpuset-cpus`) is respected and not split unless `[cpus] user_cpuset =
//! "split"`. The mapping:
//!
//! * `cpuset.cpus` = the exclusive CPUs plus the fragment CPU (shared mode:
//!   the shared pool);
//! * `cpuset.mems` = the NUMA nodes of those CPUs;
//! * `cpu.cfs_quota_us` = `c × period`, the user's hard cap;
//! * `cpu.shares` = `c × 1024`, so fragments share their CPU by weight.

use super::Context;
use crate::config::AnnotationPolicy;
use crate::cpus::plan::{parse_cpus, pieces_from_quota, shares, Mode};
use crate::cpus::topology::format_list;
use crate::error::{Error, Result};
use crate::spec;
use serde_json::{json, Map, Value};

/// The annotation with the CPU request, e.g. `"3.2"`.
pub const CPUS_ANNOTATION: &str = "io.berth.cpus";
/// The annotation with the mode: `split`, `exclusive` or `shared`.
pub const MODE_ANNOTATION: &str = "io.berth.cpu-mode";
const DEFAULT_PERIOD: u64 = 100_000;
/// The kernel's largest CFS period (1 s): with it, `pieces × period` fits in a u64.
const MAX_PERIOD: u64 = 1_000_000;

fn previous(s: &Value, ctx: &Context<'_>) -> Option<Value> {
    ctx.previous_record(s)?.get("cpu").cloned()
}

/// With `[cpus] annotations = "within-limit"`: an annotation asking for
/// `pieces` may not exceed the engine's `limit` (pieces of its CPU quota),
/// nor, without one, `[cpus] max_request`.
fn within_limit(value: &str, pieces: u32, limit: Option<u32>, ctx: &Context<'_>) -> Result<()> {
    let base = f64::from(ctx.config.cpus.base);
    let (cap, what) = match limit {
        Some(l) => (
            l,
            format!("the engine's CPU limit of {} CPUs", f64::from(l) / base),
        ),
        None => {
            let max = ctx.config.cpus.max_request;
            (
                (max * base).floor() as u32,
                format!("[cpus] max_request = {max} (the container has no CPU limit)"),
            )
        }
    };
    if pieces <= cap {
        return Ok(());
    }
    Err(Error::Annotation {
        key: CPUS_ANNOTATION.into(),
        value: value.into(),
        reason: format!(
            "asks for more than {what}; with [cpus] annotations = \"within-limit\" an \
             annotation may only ask for less than the engine granted"
        ),
    })
}

/// Applies the CPU split; returns `{"mode","pieces","cpus","mems"}`.
pub fn apply(s: &mut Value, ctx: &Context<'_>) -> Result<Option<Value>> {
    let Some(alloc) = ctx.cpus else {
        return Ok(None);
    };
    if !ctx.config.cpus.enabled {
        return Ok(None);
    }
    let base = alloc.base();
    let prev = previous(s, ctx);
    let cpu = s
        .pointer("/linux/resources/cpu")
        .cloned()
        .unwrap_or(Value::Null);
    let period = cpu
        .get("period")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PERIOD);
    if period > MAX_PERIOD {
        return Err(Error::Spec {
            path: super::config_path(ctx.bundle),
            message: format!(
                "linux.resources.cpu.period {period} is above the kernel's limit of {MAX_PERIOD} µs"
            ),
        });
    }
    let quota = cpu.get("quota").and_then(Value::as_i64).filter(|q| *q > 0);
    let user_cpus = cpu
        .get("cpus")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty());
    let ours = prev
        .as_ref()
        .and_then(|p| p.get("cpus"))
        .and_then(Value::as_str);
    let prev_quota = prev
        .as_ref()
        .and_then(|p| p.get("quota"))
        .and_then(Value::as_i64);

    let policy = ctx.config.cpus.annotations;
    let annotation = |key: &str| match policy {
        AnnotationPolicy::Ignore => {
            if let Some(v) = spec::annotation(s, key) {
                tracing::debug!(
                    annotation = key,
                    value = v,
                    "ignored ([cpus] annotations = \"ignore\")"
                );
            }
            None
        }
        _ => spec::annotation(s, key),
    };
    let mode_ann = annotation(MODE_ANNOTATION);
    let mode = match mode_ann {
        None => None,
        Some(m) => Some(Mode::parse(m).ok_or_else(|| Error::Annotation {
            key: MODE_ANNOTATION.into(),
            value: m.into(),
            reason: "must be split, exclusive or shared".into(),
        })?),
    };
    let (mode, pieces) = if let Some(c) = annotation(CPUS_ANNOTATION) {
        let pieces = parse_cpus(c, base).map_err(|reason| Error::Annotation {
            key: CPUS_ANNOTATION.into(),
            value: c.into(),
            reason,
        })?;
        if policy == AnnotationPolicy::WithinLimit {
            within_limit(
                c,
                pieces,
                quota.map(|q| pieces_from_quota(q, period, base)),
                ctx,
            )?;
        }
        (mode.unwrap_or(Mode::Split), pieces)
    } else if let (Some(p), Some(q)) = (prev.as_ref(), quota.filter(|q| Some(*q) == prev_quota)) {
        // A second pass over our own output: the request we recorded.
        let _ = q;
        let m = p
            .get("mode")
            .and_then(Value::as_str)
            .and_then(Mode::parse)
            .unwrap_or(Mode::Split);
        (
            m,
            p.get("pieces").and_then(Value::as_u64).unwrap_or(0) as u32,
        )
    } else if let Some(q) = quota {
        (
            mode.unwrap_or(Mode::Split),
            pieces_from_quota(q, period, base),
        )
    } else {
        (mode.unwrap_or(Mode::Shared), 0)
    };
    if let Some(u) = user_cpus {
        if Some(u) != ours && alloc.respect_user_cpuset() {
            tracing::info!(cpus = u, "CPU split skipped: the container has an explicit cpuset ([cpus] user_cpuset = \"respect\")");
            return Ok(None);
        }
    }
    if mode != Mode::Shared && pieces == 0 {
        return Err(Error::Annotation {
            key: MODE_ANNOTATION.into(),
            value: mode_ann.unwrap_or("split").into(),
            reason: "needs a CPU request (io.berth.cpus or --cpus)".into(),
        });
    }
    let (a, pool) = alloc.allocate(mode, pieces)?;
    if mode == Mode::Shared && pieces == 0 && pool.is_none() {
        // Unrequested, on an idle host: recorded in the ledger, nothing to set.
        return Ok(Some(json!({"mode": mode, "pieces": 0})));
    }

    let Some(obj) = s.as_object_mut() else {
        return Ok(None);
    };
    let linux = obj
        .entry("linux")
        .or_insert_with(|| Value::Object(Map::new()));
    let bad = || Error::Spec {
        path: super::config_path(ctx.bundle),
        message: "linux.resources.cpu must be an object".into(),
    };
    let res = linux
        .as_object_mut()
        .ok_or_else(bad)?
        .entry("resources")
        .or_insert_with(|| Value::Object(Map::new()));
    let cpu = res
        .as_object_mut()
        .ok_or_else(bad)?
        .entry("cpu")
        .or_insert_with(|| Value::Object(Map::new()));
    let cpu = cpu.as_object_mut().ok_or_else(bad)?;
    // A shared container on an idle host (the pool is every CPU) gets no
    // cpuset: nothing to restrict, and runc skips the cpuset work. Should
    // exclusive allocations appear later, they move it onto the pool.
    let cpus = match (mode, pool) {
        (Mode::Shared, None) => String::new(),
        (Mode::Shared, Some(pool)) => pool,
        _ => format_list(a.cpus()),
    };
    if cpus.is_empty() {
        cpu.remove("cpus");
    } else {
        cpu.insert("cpus".into(), json!(cpus));
    }
    let mut record = json!({"mode": mode, "pieces": pieces, "cpus": cpus});
    if mode != Mode::Shared {
        let mems = format_list(a.nodes.iter().copied());
        cpu.insert("mems".into(), json!(mems));
        record["mems"] = json!(mems);
    }
    if pieces > 0 {
        let q = (u64::from(pieces) * period).div_ceil(u64::from(base)) as i64;
        cpu.insert("quota".into(), json!(q));
        cpu.insert("period".into(), json!(period));
        cpu.insert("shares".into(), json!(shares(pieces, base)));
        record["quota"] = json!(q);
    }
    tracing::info!(mode = ?mode, pieces, cpus = record["cpus"].as_str().unwrap_or(""), "CPU split planned");
    Ok(Some(record))
}
