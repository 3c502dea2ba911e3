//! Stage 3: CPU-count injection, the runtime half of `libberth_cpus.so`.
//!
//! When the container has a CPU limit (a CFS quota or a cpuset), the library
//! is bind-mounted read-only at `[preload] container_path`, prepended to
//! `LD_PRELOAD` (keeping what the image or user set), `BERTH_NPROC` is set to
//! the count the container should see (the smaller of ceil(quota/period) and
//! the cpuset's size) and `GOMAXPROCS` likewise unless the user set it.
//!
//! Skipped, with a log line saying why: injection disabled in the config, the
//! annotation [`OPT_OUT_ANNOTATION`]`=false`, no CPU limit, no dynamic loader
//! in the rootfs (static images), a glibc rootfs without `libdl.so.2` (the
//! library links it for glibc before 2.34; every glibc package ships it), or
//! the library missing on the host.

use super::Context;
use crate::error::{Error, Result};
use crate::spec;
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};

/// The annotation with which a container opts out (`false`).
pub const OPT_OUT_ANNOTATION: &str = "io.berth.cpu-preload";

/// The CPU count a container should see, from its quota and cpuset.
pub fn visible_cpus(s: &Value) -> Option<u32> {
    visible_cpus_on(s, host_online_cpus())
}

/// The host's online CPU count, from `/sys/devices/system/cpu/online`.
pub fn host_online_cpus() -> Option<u32> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    spec::cpuset_count(list.trim())
}

/// [`visible_cpus`] on a host with `host` online CPUs: a cpuset that spans
/// them all (the shared pool of an idle host, say) is no limit.
pub fn visible_cpus_on(s: &Value, host: Option<u32>) -> Option<u32> {
    let from_quota = spec::cpu_quota(s).map(|(q, p)| {
        let n = (q as u64).div_ceil(p);
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    });
    let from_set = spec::cpuset(s)
        .and_then(spec::cpuset_count)
        .filter(|n| *n > 0 && host.is_none_or(|h| *n < h));
    match (from_quota, from_set) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves `path` inside `root` as the container would see it: symlinks
/// (absolute ones included) are followed relative to `root` and never escape it.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut comps: Vec<Component> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => parts.clear(),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(name) => {
                    let mut candidate = root.to_path_buf();
                    candidate.extend(&parts);
                    candidate.push(name);
                    match std::fs::read_link(&candidate) {
                        Ok(target) => {
                            hops += 1;
                            if hops > 40 {
                                return None;
                            }
                            // Continue with the link target, then the rest.
                            let rest: PathBuf = comps.iter().rev().map(|c| c.as_os_str()).collect();
                            pending.push(rest);
                            pending.push(target);
                            comps.clear();
                        }
                        Err(_) => parts.push(name.to_os_string()),
                    }
                }
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    Some(out)
}

/// The dynamic loader a rootfs has, as far as preloading is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// No dynamic loader: static programs only.
    None,
    /// musl's loader (it maps `libdl.so.2` to itself).
    Musl,
    /// glibc's loader; `libdl` says whether `libdl.so.2`, which the library
    /// needs on glibc before 2.34, is there (every glibc package ships it).
    Glibc {
        /// `libdl.so.2` is present.
        libdl: bool,
    },
}

const LIB_DIRS: &[&str] = &[
    "/lib64",
    "/lib",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

fn lib_dir_names(rootfs: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for d in LIB_DIRS {
        let Some(dir) = resolve_in_root(rootfs, Path::new(d)) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        names.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    names
}

/// Finds the rootfs's dynamic loader (glibc's `ld-linux*` or `ld-musl-*`).
pub fn dynamic_loader(rootfs: &Path) -> Loader {
    let names = lib_dir_names(rootfs);
    if names.iter().any(|n| n.starts_with("ld-linux")) {
        Loader::Glibc {
            libdl: names.iter().any(|n| n == "libdl.so.2"),
        }
    } else if names.iter().any(|n| n.starts_with("ld-musl-")) {
        Loader::Musl
    } else {
        Loader::None
    }
}

/// True when the rootfs has a glibc or musl dynamic loader.
pub fn has_dynamic_loader(rootfs: &Path) -> bool {
    dynamic_loader(rootfs) != Loader::None
}

fn skip(reason: &str) -> Result<Option<Value>> {
    tracing::info!("CPU-count injection skipped: {reason}");
    Ok(None)
}

/// Applies the injection; returns `{"library", "nproc"}` when injected.
pub fn apply(s: &mut Value, ctx: &Context<'_>) -> Result<Option<Value>> {
    let cfg = &ctx.config.preload;
    if !cfg.enabled {
        return skip("disabled by [preload] enabled = false");
    }
    match spec::annotation(s, OPT_OUT_ANNOTATION) {
        None | Some("true") => {}
        Some("false") => {
            return skip(&format!(
                "opted out by annotation {OPT_OUT_ANNOTATION}=false"
            ))
        }
        Some(other) => {
            return Err(Error::Annotation {
                key: OPT_OUT_ANNOTATION.into(),
                value: other.into(),
                reason: "must be \"true\" or \"false\"".into(),
            })
        }
    }
    let Some(nproc) = visible_cpus(s) else {
        return skip("the container has no CPU limit");
    };
    let Some(rootfs) = spec::rootfs(s, ctx.bundle) else {
        return skip("config.json has no root.path");
    };
    match dynamic_loader(&rootfs) {
        Loader::None => {
            return skip("no dynamic loader in the rootfs (static programs cannot preload)")
        }
        Loader::Glibc { libdl: false } => {
            return skip("the rootfs has glibc but no libdl.so.2, which the library needs")
        }
        Loader::Glibc { libdl: true } | Loader::Musl => {}
    }
    if !cfg.library.is_file() {
        tracing::warn!(library = %cfg.library.display(), "CPU-count injection skipped: the preload library is not installed");
        return Ok(None);
    }
    if s.get("process").map(|p| !p.is_object()).unwrap_or(true) {
        return skip("config.json has no process");
    }

    // The bind mount, unless an earlier pass (or the user) put it there.
    let Some(obj) = s.as_object_mut() else {
        return skip("config.json is not an object");
    };
    let mounts = obj
        .entry("mounts")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(mounts) = mounts.as_array_mut() else {
        return Err(Error::Spec {
            path: super::config_path(ctx.bundle),
            message: "mounts must be an array".into(),
        });
    };
    let present = mounts
        .iter()
        .any(|m| m.get("destination").and_then(Value::as_str) == Some(cfg.container_path.as_str()));
    if !present {
        mounts.push(json!({
            "destination": cfg.container_path,
            "type": "bind",
            "source": cfg.library,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
    }

    let Some(env) = spec::env_mut(s) else {
        return skip("config.json has no process");
    };
    let preload = spec::env_get(env, "LD_PRELOAD").unwrap_or("").to_string();
    let already = preload.split([':', ' ']).any(|p| p == cfg.container_path);
    if !already {
        let v = if preload.trim().is_empty() {
            cfg.container_path.clone()
        } else {
            format!("{}:{preload}", cfg.container_path)
        };
        spec::env_set(env, "LD_PRELOAD", &v);
    }
    spec::env_set(env, "BERTH_NPROC", &nproc.to_string());
    if spec::env_get(env, "GOMAXPROCS").is_none() {
        spec::env_set(env, "GOMAXPROCS", &nproc.to_string());
    }
    tracing::info!(nproc, library = %cfg.library.display(), "CPU-count injection: container sees {nproc} CPUs");
    Ok(Some(json!({"library": cfg.container_path, "nproc": nproc})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_cpus_takes_the_smaller_limit_and_rounds_up() {
        let on64 = |v: Value| visible_cpus_on(&v, Some(64));
        assert_eq!(on64(json!({})), None);
        assert_eq!(
            visible_cpus_on(
                &json!({"linux": {"resources": {"cpu": {"cpus": "0-3"}}}}),
                Some(4)
            ),
            None,
            "all CPUs is no limit"
        );
        assert_eq!(
            visible_cpus_on(
                &json!({"linux": {"resources": {"cpu": {"cpus": "0-2"}}}}),
                Some(4)
            ),
            Some(3)
        );
        assert_eq!(
            on64(json!({"linux": {"resources": {"cpu": {"quota": 150000, "period": 100000}}}})),
            Some(2)
        );
        assert_eq!(
            on64(json!({"linux": {"resources": {"cpu": {"quota": 10000, "period": 100000}}}})),
            Some(1)
        );
        assert_eq!(
            on64(
                json!({"linux": {"resources": {"cpu": {"quota": 400000, "period": 100000, "cpus": "0-1"}}}})
            ),
            Some(2)
        );
        assert_eq!(
            on64(json!({"linux": {"resources": {"cpu": {"quota": -1, "cpus": "0-2"}}}})),
            Some(3)
        );
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
        std::fs::write(root.join("usr/lib64/ld-linux-x86-64.so.2"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/lib64", root.join("lib64")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/lib64")).unwrap(),
            root.join("usr/lib64")
        );
        assert!(has_dynamic_loader(root));
        // A link pointing "above" the root stays inside it.
        std::os::unix::fs::symlink("../../../../etc", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/escape")).unwrap(),
            root.join("etc")
        );
    }

    #[test]
    fn static_rootfs_has_no_loader() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        assert!(!has_dynamic_loader(d.path()));
    }
}
