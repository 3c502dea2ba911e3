//! The `config.json` rewrite run on `create` and `run`.
//!
//! The document is read as raw JSON (unknown fields survive), passed through
//! the stages in order, and written back atomically only when every stage
//! succeeded; on any error the file is untouched. Stages:
//!
//! 1. [`sysctl`]: layered sysctl policy and the namespaced-key allowlist;
//! 2. [`cpu`]: the CPU split (reserved; it must run before 3, which reads the
//!    cpuset and quota it decides);
//! 3. [`preload`]: CPU-count injection of `libberth_cpus.so`;
//! 4. cgroup placement ([`crate::builtin::cgroup::place`]), only in the
//!    built-in backend's pipeline: `linux.cgroupsPath` as runc would choose it.
//!
//! The rewrite is idempotent: a second pass over its own output changes
//! nothing. What Berth changed is recorded in one annotation,
//! [`APPLIED_ANNOTATION`], a JSON object with one entry per stage that acted.

pub mod cpu;
pub mod preload;
pub mod sysctl;

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The annotation that records what Berth changed.
pub const APPLIED_ANNOTATION: &str = "io.berth.applied";
/// Berth's mark on [`APPLIED_ANNOTATION`] (see [`crate::marks`]): without a
/// valid one, a record in the input is not taken as Berth's earlier work.
pub const APPLIED_MARK_ANNOTATION: &str = "io.berth.applied-mark";

/// What a stage sees besides the document.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The bundle directory (relative `root.path` resolves against it).
    pub bundle: &'a Path,
    /// The runtime configuration.
    pub config: &'a RuntimeConfig,
    /// The host's CPU allocator; None skips the CPU split.
    pub cpus: Option<&'a dyn crate::cpus::Allocator>,
    /// The host's mark key; None trusts no earlier record and marks nothing.
    pub marks: Option<&'a crate::marks::Marks>,
    /// Where this pipeline places the container's cgroup as runc would
    /// (the built-in backend's; a binary backend places its own).
    pub place_cgroup: Option<Placement<'a>>,
    /// The container being created (its `--root` and id): where its CPU view
    /// files go. None writes no view files.
    pub container: Option<(Option<&'a Path>, &'a str)>,
}

/// The cgroup placement stage's input.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// The container id.
    pub id: &'a str,
    /// `--systemd-cgroup`: the path is systemd's `slice:prefix:name`.
    pub systemd: bool,
}

impl Context<'_> {
    /// The applied record of an earlier pass over this bundle, if Berth
    /// wrote it (its mark verifies); a record without one is only input.
    pub fn previous_record(&self, spec: &Value) -> Option<Value> {
        let text = crate::spec::annotation(spec, APPLIED_ANNOTATION)?;
        let mark = crate::spec::annotation(spec, APPLIED_MARK_ANNOTATION)?;
        if !self
            .marks?
            .verify(self.bundle, APPLIED_ANNOTATION, text, mark)
        {
            tracing::debug!("an io.berth.applied record without Berth's mark is ignored");
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// Applies every stage to `spec` in place; returns the applied record.
/// On error `spec` may be half-changed; callers discard it.
pub fn rewrite_spec(spec: &mut Value, ctx: &Context<'_>) -> Result<Value> {
    let path = ctx.bundle.join("config.json");
    if !spec.is_object() {
        return Err(Error::Spec {
            path,
            message: "the document is not a JSON object".into(),
        });
    }
    let mut applied = Map::new();
    if let Some(r) = sysctl::apply(spec, ctx)? {
        applied.insert("sysctl".into(), r);
    }
    if let Some(r) = cpu::apply(spec, ctx)? {
        applied.insert("cpu".into(), r);
    }
    if let Some(r) = preload::apply(spec, ctx)? {
        applied.insert("preload".into(), r);
    }
    if let (Some(p), Some(marks)) = (ctx.place_cgroup, ctx.marks) {
        crate::builtin::cgroup::place(spec, p, marks, ctx.bundle).map_err(|e| Error::Spec {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    let record = Value::Object(applied);
    let text = serde_json::to_string(&record).map_err(|e| Error::Spec {
        path,
        message: e.to_string(),
    })?;
    let mark = ctx
        .marks
        .map(|m| m.sign(ctx.bundle, APPLIED_ANNOTATION, &text));
    if let Some(a) = crate::spec::annotations_mut(spec) {
        a.insert(APPLIED_ANNOTATION.into(), Value::String(text));
        match mark {
            Some(m) => a.insert(APPLIED_MARK_ANNOTATION.into(), Value::String(m)),
            None => a.remove(APPLIED_MARK_ANNOTATION),
        };
    }
    Ok(record)
}

/// The `config.json` of `bundle`.
pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// Reads `<bundle>/config.json`, rewrites it and writes it back atomically
/// (no CPU split, no cgroup placement). Returns the applied record. On error
/// the file is left untouched.
pub fn rewrite_bundle(bundle: &Path, config: &RuntimeConfig) -> Result<Value> {
    crate::bundle::Bundle::load(Some(bundle))?.rewrite(config, None, None, None)
}

/// `<bundle>/config.json` as JSON; `Null` when it is missing or not JSON
/// (verbs other than create, which only look at it).
pub fn read_config(bundle: &Path) -> Value {
    std::fs::read(config_path(bundle))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}
