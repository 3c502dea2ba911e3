//! Cgroup placement as runc does it, around libcontainer's own.
//!
//! libcontainer 0.7 names a container without `linux.cgroupsPath`
//! `:youki:<id>` and joins only the v1 controller hierarchies. runc
//! (cgroupfs driver) instead puts it at `<own cgroup>/<id>`, resolves a
//! relative path against its own cgroup, and on a hybrid host also joins the
//! `name=systemd` and unified hierarchies. [`place`] fixes the path in the
//! bundle before libcontainer reads it; [`join_extra`] adds the container's
//! processes to the two hierarchies libcontainer skips; [`remove`] deletes
//! the container's directories from every hierarchy on delete.

use super::{Error, Result};
use crate::marks::Marks;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The hierarchies libcontainer does not join, by mount directory.
const EXTRA: &[&str] = &["systemd", "unified"];

/// The absolute cgroup path runc's cgroupfs driver would give a container
/// `id` whose spec says `cgroups_path` (None: not set).
pub use crate::cgroup_path::cgroupfs as runc_path;
use crate::cgroup_path::self_cgroups;

/// The annotation recording that Berth filled `linux.cgroupsPath` in, so a
/// bundle used again for another container gets that container's path.
pub const FILLED: &str = "io.berth.cgroup-filled";
/// Berth's mark on [`FILLED`] ([`crate::marks`]): an unmarked one is input,
/// and Berth leaves the path it names alone.
pub const FILLED_MARK: &str = "io.berth.cgroup-filled-mark";

/// Sets `linux.cgroupsPath` in `spec` to the absolute path runc would use,
/// when it is missing or relative; returns the path. Without
/// `--systemd-cgroup`, a `slice:prefix:name` path is, as for runc's cgroupfs
/// driver, just a relative path whose last part has colons. With it, the
/// path is systemd's `slice:prefix:name` (`:berth:<id>` when missing: the
/// `system.slice`), which libcontainer's systemd manager takes.
pub fn place(
    spec: &mut Value,
    placement: crate::rewrite::Placement<'_>,
    marks: &Marks,
    bundle: &Path,
) -> Result<String> {
    let id = placement.id;
    let filled = crate::spec::annotation(spec, FILLED)
        .zip(crate::spec::annotation(spec, FILLED_MARK))
        .filter(|(path, mark)| marks.verify(bundle, FILLED, path, mark))
        .map(|(path, _)| path.to_string());
    let given = spec
        .pointer("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|g| filled.as_deref() != Some(g.as_str()));
    let path = match (placement.systemd, given.as_deref()) {
        (true, Some(g)) => g.to_string(),
        (true, None) => format!(":berth:{id}"),
        (false, g) => runc_path(g, id),
    };
    if given.as_deref() != Some(path.as_str()) {
        let linux = spec
            .as_object_mut()
            .ok_or_else(|| Error::Usage("config.json is not a JSON object".into()))?
            .entry("linux")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(l) = linux.as_object_mut() {
            l.insert("cgroupsPath".into(), Value::String(path.clone()));
        }
        if let Some(a) = crate::spec::annotations_mut(spec) {
            a.insert(FILLED.into(), Value::String(path.clone()));
            a.insert(
                FILLED_MARK.into(),
                Value::String(marks.sign(bundle, FILLED, &path)),
            );
        }
    }
    Ok(path)
}

/// Mount points of the extra hierarchies that exist on this host.
fn extra_hierarchies() -> impl Iterator<Item = PathBuf> {
    EXTRA
        .iter()
        .map(|h| Path::new(ROOT).join(h))
        .filter(|p| p.join("cgroup.procs").is_file())
}

/// Puts `pid` into cgroup `path` of the `name=systemd` and unified
/// hierarchies (where mounted), as runc does on a hybrid host.
pub fn join_extra(pid: i32, path: &str) -> Result<()> {
    let rel = path.trim_start_matches('/');
    for h in extra_hierarchies() {
        let dir = h.join(rel);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Cgroup(format!("cannot create {}: {e}", dir.display())))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| Error::Cgroup(format!("cannot join {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Where this process was in the extra hierarchies before [`enter_extra`].
pub struct Entered(Vec<(PathBuf, String)>);

/// This process's path in the hierarchy mounted at `mount` (`name=systemd`
/// or the unified one), from `/proc/self/cgroup`.
fn own_path_in(mount: &Path) -> Option<String> {
    let want = if mount.ends_with("unified") {
        ""
    } else {
        "name=systemd"
    };
    self_cgroups()
        .into_iter()
        .find_map(|(ctrl, path)| (ctrl == want).then_some(path))
}

/// Moves this process into cgroup `path` of the extra hierarchies, so the
/// container processes it is about to clone start there. Joining them
/// right before libcontainer joins the controller hierarchies lets the
/// kernel's cgroup migrations share one RCU grace period, instead of
/// paying a second one (~7 ms here) to join the extras afterwards.
pub fn enter_extra(path: &str) -> Result<Entered> {
    let mut was = Vec::new();
    for h in extra_hierarchies() {
        if let Some(p) = own_path_in(&h) {
            was.push((h, p));
        }
    }
    let entered = Entered(was);
    match join_extra(std::process::id() as i32, path) {
        Ok(()) => Ok(entered),
        Err(e) => {
            entered.leave();
            Err(e)
        }
    }
}

impl Entered {
    /// Moves this process back to where it was, once the container's
    /// processes exist (so its cgroups hold only them).
    pub fn leave(self) {
        for (h, p) in self.0 {
            let procs = h.join(p.trim_start_matches('/')).join("cgroup.procs");
            let _ = std::fs::write(procs, std::process::id().to_string());
        }
    }
}

/// Removes cgroup `path` from every hierarchy (the ones libcontainer
/// created and the extra ones), waiting up to a second for processes that
/// are still being reaped. What cannot be removed is logged, not fatal:
/// runc too leaves a busy cgroup behind with a warning.
pub fn remove(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    let dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|d| d.is_dir())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    for d in dirs {
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(dir = %d.display(), "cgroup busy ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!(dir = %d.display(), "cannot remove cgroup: {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup_path::{clean, own_cgroup};
    use serde_json::json;

    #[test]
    fn paths_resolve_as_runc_resolves_them() {
        let own = own_cgroup();
        assert!(own.starts_with('/'));
        assert_eq!(runc_path(Some("/docker/abc"), "abc"), "/docker/abc");
        assert_eq!(runc_path(Some("//a/./b/../c"), "x"), "/a/c");
        assert_eq!(runc_path(None, "abc"), clean(&format!("{own}/abc")));
        assert_eq!(
            runc_path(Some("rel/x"), "abc"),
            clean(&format!("{own}/rel/x"))
        );
        assert_eq!(clean("/../.."), "/");
    }

    fn fs(id: &str) -> crate::rewrite::Placement<'_> {
        crate::rewrite::Placement { id, systemd: false }
    }

    fn sd(id: &str) -> crate::rewrite::Placement<'_> {
        crate::rewrite::Placement { id, systemd: true }
    }

    #[test]
    fn place_fills_a_missing_path_and_takes_systemd_form_literally() {
        let (m, b) = (Marks::with_key([1; 32]), Path::new("/b"));
        let mut s = json!({"linux": {}});
        let p = place(&mut s, fs("c1"), &m, b).unwrap();
        assert!(p.ends_with("/c1"), "{p}");
        assert_eq!(s["linux"]["cgroupsPath"], p.as_str());
        // Filled in once, it follows the container, not the bundle.
        let p2 = place(&mut s, fs("c2"), &m, b).unwrap();
        assert!(p2.ends_with("/c2"), "{p2}");
        assert_eq!(s["annotations"][FILLED], p2.as_str());
        let mut s = json!({"linux": {"cgroupsPath": "/kubepods/x"}});
        assert_eq!(place(&mut s, fs("c1"), &m, b).unwrap(), "/kubepods/x");
        // runc's cgroupfs driver: a relative path with colons in it.
        let mut s = json!({"linux": {"cgroupsPath": "system.slice:docker:abc"}});
        let p = place(&mut s, fs("abc"), &m, b).unwrap();
        assert_eq!(p, runc_path(Some("system.slice:docker:abc"), "abc"));
        assert!(p.ends_with("/system.slice:docker:abc"), "{p}");
        // The systemd driver's: kept as given, or systemd's default slice.
        let mut s = json!({"linux": {"cgroupsPath": "system.slice:docker:abc"}});
        assert_eq!(
            place(&mut s, sd("abc"), &m, b).unwrap(),
            "system.slice:docker:abc"
        );
        let mut s = json!({"linux": {}});
        assert_eq!(place(&mut s, sd("abc"), &m, b).unwrap(), ":berth:abc");
        assert_eq!(s["linux"]["cgroupsPath"], ":berth:abc");
    }

    #[test]
    fn an_unmarked_filled_annotation_is_input() {
        let (m, b) = (Marks::with_key([1; 32]), Path::new("/b"));
        // A spec claiming Berth filled its path in keeps that path.
        let mut s = json!({"linux": {"cgroupsPath": "/tenant/x"},
                           "annotations": {FILLED: "/tenant/x", FILLED_MARK: "00"}});
        assert_eq!(place(&mut s, fs("c1"), &m, b).unwrap(), "/tenant/x");
        // Berth's own, marked for another bundle, is input there too.
        let mut s = json!({"linux": {}});
        place(&mut s, fs("c1"), &m, Path::new("/other")).unwrap();
        let first = s["linux"]["cgroupsPath"].clone();
        assert_eq!(
            place(&mut s, fs("c2"), &m, b).unwrap(),
            first.as_str().unwrap()
        );
    }
}
