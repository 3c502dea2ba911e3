//! Where a container's cgroup is, from its `linux.cgroupsPath`, as runc
//! finds it: one directory path under every hierarchy's root.
//!
//! * **cgroupfs driver:** an absolute path is taken as it is; a relative one
//!   (or none: the container id) under the runtime's own cgroup. Either way
//!   `.` and `..` are resolved, never above the root, so no write of Berth's
//!   leaves `/sys/fs/cgroup`.
//! * **systemd driver** (`--systemd-cgroup`): `slice:prefix:name` is the
//!   unit `prefix-name.scope` in `slice`, and slices nest by their dashes as
//!   systemd nests them (`systemd.slice(5)`): `kubepods-burstable-pod1.slice`
//!   is `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`.
//!   `-.slice` is the root; an escaped dash (`\x2d`) is part of a name.

/// Collapses `//`, `.` and `..` (never above `/`), as Go's `CleanPath`.
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The lines of `/proc/self/cgroup` as (controllers, path): controllers
/// is empty for the unified hierarchy and `name=systemd` for systemd's.
pub fn self_cgroups() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// This process's cgroup in the hierarchy runc takes its parent from:
/// the first v1 controller line of `/proc/self/cgroup`, else the v2 line.
pub fn own_cgroup() -> String {
    let lines = self_cgroups();
    lines
        .iter()
        .find(|(ctrl, _)| !ctrl.is_empty() && !ctrl.starts_with("name="))
        .or_else(|| lines.iter().find(|(ctrl, _)| ctrl.is_empty()))
        .map_or_else(|| "/".into(), |(_, path)| path.clone())
}

/// The absolute cgroup path runc's cgroupfs driver gives a container `id`
/// whose spec says `cgroups_path` (None: not set).
pub fn cgroupfs(cgroups_path: Option<&str>, id: &str) -> String {
    match cgroups_path {
        Some(p) if p.starts_with('/') => clean(p),
        Some(p) if !p.is_empty() => clean(&format!("{}/{p}", own_cgroup())),
        _ => clean(&format!("{}/{id}", own_cgroup())),
    }
}

/// A slice's path, nested by its dashes as systemd nests it, e.g.
/// `a-b.slice` is `/a.slice/a-b.slice`; `-.slice` is `/`.
pub fn expand_slice(slice: &str) -> Result<String, String> {
    let bad = |why: &str| format!("systemd slice {slice:?}: {why}");
    let name = slice
        .strip_suffix(".slice")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("must end in .slice"))?;
    if slice.contains('/') {
        return Err(bad("has a '/'"));
    }
    if name == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in name.split('-') {
        if component.is_empty() {
            return Err(bad(
                "has an empty part (a leading, trailing or double dash)",
            ));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(".slice");
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// The path of a systemd-driver `cgroupsPath`, `slice:prefix:name` (an
/// empty slice is `system.slice`; a name ending in `.slice` is that slice).
pub fn systemd(cgroups_path: &str) -> Result<String, String> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(format!(
            "cgroupsPath {cgroups_path:?}: the systemd driver takes slice:prefix:name"
        ));
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let parent = expand_slice(slice)?;
    if name.ends_with(".slice") {
        return expand_slice(name);
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(clean(&format!("{parent}/{unit}")))
}

/// The container's cgroup directory under each hierarchy root, for the
/// driver the runtime was called with.
pub fn resolve(
    cgroups_path: Option<&str>,
    id: &str,
    systemd_driver: bool,
) -> Result<String, String> {
    match (systemd_driver, cgroups_path) {
        (true, Some(p)) => systemd(p),
        (true, None) => systemd(&format!(":berth:{id}")),
        (false, p) => Ok(cgroupfs(p, id)),
    }
}

/// True when systemd is PID 1 on this host (`sd_booted`).
pub fn systemd_booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_by_their_dashes() {
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(
            expand_slice("kubepods-burstable-pod1.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        );
        // An escaped dash belongs to the name.
        assert_eq!(
            expand_slice("a\\x2db-c.slice").unwrap(),
            "/a\\x2db.slice/a\\x2db-c.slice"
        );
        for bad in [
            ".slice",
            "a",
            "-a.slice",
            "a-.slice",
            "a--b.slice",
            "a/b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_paths_as_runc_expands_them() {
        assert_eq!(
            systemd("kubepods-burstable-pod1.slice:cri-containerd:abc").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            systemd(":docker:abc").unwrap(),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(systemd("-.slice:x:y").unwrap(), "/x-y.scope");
        assert_eq!(
            systemd("system.slice:x:machine-a.slice").unwrap(),
            "/machine.slice/machine-a.slice"
        );
        assert!(systemd("/abs/path").is_err());
        assert!(systemd("bad:x:y").is_err());
    }

    #[test]
    fn cgroupfs_paths_never_leave_the_root() {
        assert_eq!(clean("/../.."), "/");
        assert_eq!(cgroupfs(Some("/a/../../../etc"), "x"), "/etc");
        assert_eq!(cgroupfs(Some("/kubepods/x"), "x"), "/kubepods/x");
        assert!(cgroupfs(None, "abc").ends_with("/abc"));
        assert!(cgroupfs(Some("a:b:c"), "abc").ends_with("/a:b:c"));
        assert_eq!(resolve(Some("/a/./b"), "x", false).unwrap(), "/a/b");
        assert_eq!(
            resolve(Some("s.slice:p:n"), "x", true).unwrap(),
            "/s.slice/p-n.scope"
        );
    }
}
