//! Stage 3: CPU-count injection, the runtime half of `libberth_cpus.so`.
//!
//! When the container has a CPU limit (a CFS quota or a cpuset), it gets one
//! declared count `N`, the smaller of ceil(quota/period) and the cpuset's
//! size ([`crate::cpuview::declared_count`]), and every way a program asks
//! is made to answer `N`:
//!
//! * the [`crate::cpuview`] files (with a container id and `[preload]
//!   cpu_files`): `/proc/cpuinfo` and `/sys/devices/system/cpu/online`
//!   bind-mounted read-only, and the count file the library maps for live
//!   updates, rewritten by `update`. These reach static programs too;
//! * the per-runtime variables of `[preload] overrides` and the
//!   [`OVERRIDES_ANNOTATION`] (`GOMAXPROCS`, `DOTNET_PROCESSOR_COUNT`,
//!   `PYTHON_CPU_COUNT`, `JAVA_TOOL_OPTIONS=-XX:ActiveProcessorCount=N`,
//!   `OMP_NUM_THREADS`), each only where the image or user has not set it;
//! * the library: bind-mounted read-only at `[preload] container_path`,
//!   prepended to `LD_PRELOAD` (keeping what the image or user set), with
//!   `BERTH_NPROC=N` and `BERTH_NPROC_FILE`.
//!
//! Skipped entirely, with a log line saying why: injection disabled in the
//! config, the annotation [`OPT_OUT_ANNOTATION`]`=false`, or no CPU limit.
//! The library alone is skipped for a rootfs without a dynamic loader
//! (static images), a glibc rootfs without `libdl.so.2` (the library links
//! it for glibc before 2.34; every glibc package ships it), or when it is
//! missing on the host.

use super::Context;
use crate::config::CountOverride;
use crate::error::{Error, Result};
use crate::spec;
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};

/// The annotation with which a container opts out (`false`).
pub const OPT_OUT_ANNOTATION: &str = "io.berth.cpu-preload";
/// The annotation with which a container adds per-runtime overrides to the
/// configured ones (a comma-separated list of `go`, `dotnet`, `python`,
/// `java`, `openmp`). It can only add variables for the container's own
/// programs, so it needs no trust.
pub const OVERRIDES_ANNOTATION: &str = "io.berth.cpu-overrides";

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
    crate::cpuview::declared_count(spec::cpu_quota(s), spec::cpuset(s), host)
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

/// The overrides for this container: the configured ones plus the annotation's.
fn overrides(s: &Value, cfg: &crate::config::PreloadConfig) -> Result<Vec<CountOverride>> {
    let mut out = cfg.overrides.clone();
    if let Some(list) = spec::annotation(s, OVERRIDES_ANNOTATION) {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let o = CountOverride::from_name(name).ok_or_else(|| Error::Annotation {
                key: OVERRIDES_ANNOTATION.into(),
                value: list.into(),
                reason: format!("{name:?} is not one of go, dotnet, python, java, openmp"),
            })?;
            if !out.contains(&o) {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// Sets `o`'s variable for `n` CPUs unless the image or user set it.
/// Returns the variable's name when it was set.
fn set_override(env: &mut Vec<Value>, o: CountOverride, n: u32) -> Option<&'static str> {
    let var = o.variable();
    let current = spec::env_get(env, var).map(str::to_string);
    match (o, current) {
        (CountOverride::Java, Some(opts)) if !opts.contains("ActiveProcessorCount") => {
            let v = format!("{} -XX:ActiveProcessorCount={n}", opts.trim_end());
            spec::env_set(env, var, v.trim_start());
        }
        (_, Some(_)) => return None,
        (CountOverride::Java, None) => {
            spec::env_set(env, var, &format!("-XX:ActiveProcessorCount={n}"))
        }
        (_, None) => spec::env_set(env, var, &n.to_string()),
    }
    Some(var)
}

/// The environment a container's processes get: at create, and again for
/// each exec'd process (engines build those from their own copy of the
/// spec, which lacks it), with the count of that moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// The library's path in the container, when it is mounted.
    pub library: Option<String>,
    /// The count file's path in the container, when it is mounted.
    pub count_file: Option<String>,
    /// The per-runtime variables to set.
    pub overrides: Vec<CountOverride>,
}

/// Sets the injection's variables in `env` for `n` CPUs: `LD_PRELOAD`
/// (prepended to what is there), `BERTH_NPROC`, `BERTH_NPROC_FILE`, and each
/// override unless already set. Returns the overrides' variables it set.
pub fn inject_env(env: &mut Vec<Value>, n: u32, inj: &Injection) -> Vec<&'static str> {
    if let Some(lib) = &inj.library {
        let preload = spec::env_get(env, "LD_PRELOAD").unwrap_or("").to_string();
        if !preload.split([':', ' ']).any(|p| p == lib) {
            let v = if preload.trim().is_empty() {
                lib.clone()
            } else {
                format!("{lib}:{preload}")
            };
            spec::env_set(env, "LD_PRELOAD", &v);
        }
    }
    if let Some(f) = &inj.count_file {
        spec::env_set(env, "BERTH_NPROC_FILE", f);
    }
    spec::env_set(env, "BERTH_NPROC", &n.to_string());
    inj.overrides
        .iter()
        .filter_map(|o| set_override(env, *o, n))
        .collect()
}

/// What a bind mount of Berth's may do in the container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bind {
    /// A file that is only read.
    Data,
    /// The library: the loader maps it executable, which a `noexec` mount
    /// refuses ("failed to map segment from shared object").
    Library,
}

/// Adds a read-only bind mount of `source` at `dest` unless one is there.
fn add_bind(s: &mut Value, ctx: &Context<'_>, dest: &str, source: &Path, kind: Bind) -> Result<()> {
    let Some(obj) = s.as_object_mut() else {
        return Ok(());
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
        .any(|m| m.get("destination").and_then(Value::as_str) == Some(dest));
    if !present {
        let mut options = vec!["bind", "ro", "nosuid", "nodev"];
        if kind == Bind::Data {
            options.push("noexec");
        }
        mounts.push(json!({
            "destination": dest,
            "type": "bind",
            "source": source,
            "options": options,
        }));
    }
    Ok(())
}

/// Where the count file is mounted: beside the library.
pub fn count_file_dest(cfg: &crate::config::PreloadConfig) -> String {
    match cfg.container_path.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => format!("{dir}/{}", crate::cpuview::COUNT_FILE),
        _ => format!("/{}", crate::cpuview::COUNT_FILE),
    }
}

/// Applies the injection; returns `{"nproc", "library", "files", "overrides"}`
/// when the container has a CPU limit.
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
    if s.get("process").map(|p| !p.is_object()).unwrap_or(true) {
        return skip("config.json has no process");
    }
    let overrides = overrides(s, cfg)?;

    // The view files, for every image (static programs read them too).
    let view = match (cfg.cpu_files, ctx.container) {
        (true, Some((root, id))) => {
            let v = crate::cpuview::CpuView::of(ctx.config, root, id);
            v.write(nproc, crate::cpuview::spread_offset(id))?;
            add_bind(
                s,
                ctx,
                crate::cpuview::ONLINE_DEST,
                &v.file(crate::cpuview::ONLINE_FILE),
                Bind::Data,
            )?;
            add_bind(
                s,
                ctx,
                crate::cpuview::CPUINFO_DEST,
                &v.file(crate::cpuview::CPUINFO_FILE),
                Bind::Data,
            )?;
            Some(v)
        }
        _ => None,
    };

    // The library, where the rootfs can load it.
    let library = if !cfg.library.is_file() {
        tracing::warn!(library = %cfg.library.display(), "the preload library is not installed");
        Err("the preload library is not installed")
    } else {
        match spec::rootfs(s, ctx.bundle).map(|r| dynamic_loader(&r)) {
            // No rootfs to look at (an NRI request names none): inject; a
            // static program ignores LD_PRELOAD, a dynamic one loads it.
            None => Ok(()),
            Some(Loader::None) => {
                Err("no dynamic loader in the rootfs (static programs cannot preload)")
            }
            Some(Loader::Glibc { libdl: false }) => {
                Err("the rootfs has glibc but no libdl.so.2, which the library needs")
            }
            Some(Loader::Glibc { libdl: true } | Loader::Musl) => Ok(()),
        }
    };
    if let Err(why) = library {
        tracing::info!("preload library not injected: {why}");
    }
    if library.is_ok() {
        add_bind(s, ctx, &cfg.container_path, &cfg.library, Bind::Library)?;
        if let Some(v) = &view {
            add_bind(
                s,
                ctx,
                &count_file_dest(cfg),
                &v.file(crate::cpuview::COUNT_FILE),
                Bind::Data,
            )?;
        }
    }

    let inj = Injection {
        library: library.is_ok().then(|| cfg.container_path.clone()),
        count_file: (library.is_ok() && view.is_some()).then(|| count_file_dest(cfg)),
        overrides,
    };
    let Some(env) = spec::env_mut(s) else {
        return skip("config.json has no process");
    };
    let set = inject_env(env, nproc, &inj);
    let overrides: Vec<&str> = inj.overrides.iter().map(|o| o.variable()).collect();
    if let Some(v) = &view {
        v.save_injection(&inj)?;
    }
    tracing::info!(
        nproc,
        library = library.is_ok(),
        files = view.is_some(),
        env = ?set,
        "CPU-count injection: container sees {nproc} CPUs"
    );
    Ok(Some(json!({
        "nproc": nproc,
        "library": library.is_ok().then_some(&cfg.container_path),
        "files": view.is_some(),
        "overrides": overrides,
    })))
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
