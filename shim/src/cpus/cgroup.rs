//! Reading and writing the CPU files of running containers' cgroups (v1
//! `cpuset`/`cpu` hierarchies, or the unified v2 tree). A single-file read or
//! write per value, so Berth does this directly rather than through a cgroup
//! library.

use std::path::{Path, PathBuf};

/// The directory of a recorded cgroup under a hierarchy root: a resolved
/// path ([`crate::cgroup_path::resolve`], what records hold) is cleaned of
/// `.` and `..`; a record from before Berth resolved paths holds the raw
/// `cgroupsPath`, taken as the systemd driver's when it has that shape.
pub fn relative_path(cgroup: &str) -> PathBuf {
    let dir = if cgroup.starts_with('/') {
        crate::cgroup_path::clean(cgroup)
    } else {
        crate::cgroup_path::systemd(cgroup)
            .unwrap_or_else(|_| crate::cgroup_path::cgroupfs(Some(cgroup), ""))
    };
    PathBuf::from(dir.trim_start_matches('/'))
}

fn file(controller: &str, rel: &Path, name: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    if v1.is_dir() {
        v1.join(rel).join(name)
    } else {
        Path::new("/sys/fs/cgroup").join(rel).join(name)
    }
}

/// Writes `cpus` to the container's `cpuset.cpus`. Errors are returned as text.
///
/// A container in a systemd unit (the systemd cgroup driver: a `.scope`
/// under `.slice`s) on the unified hierarchy of a systemd host also gets
/// the unit's `AllowedCPUs` set (`systemctl set-property --runtime`):
/// otherwise systemd's view of the unit disagrees with its cpuset, and
/// systemd writes its own view back whenever it realizes the unit's cgroup
/// again (a `set-property` on it or its slice, as kubelet does on pods).
pub fn set_cpuset(cgroups_path: &str, cpus: &str) -> Result<(), String> {
    let rel = relative_path(cgroups_path);
    let p = file("cpuset", &rel, "cpuset.cpus");
    std::fs::write(&p, cpus).map_err(|e| format!("{}: {e}", p.display()))?;
    if let Some(unit) = systemd_unit(&rel) {
        set_allowed_cpus(&unit, cpus)?;
    }
    Ok(())
}

/// The systemd unit owning cgroup `rel`, when systemd manages the unified
/// hierarchy this host runs.
fn systemd_unit(rel: &Path) -> Option<String> {
    let name = rel.file_name()?.to_str()?;
    let is_unit = name.ends_with(".scope") || name.ends_with(".slice");
    let systemd = crate::cgroup_path::systemd_booted();
    let unified = !Path::new("/sys/fs/cgroup/cpuset").is_dir();
    (is_unit && systemd && unified).then(|| name.to_string())
}

/// `systemctl set-property --runtime UNIT AllowedCPUs=CPUS`.
fn set_allowed_cpus(unit: &str, cpus: &str) -> Result<(), String> {
    let out = std::process::Command::new("systemctl")
        .args(["set-property", "--runtime", unit])
        .arg(format!("AllowedCPUs={cpus}"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("systemctl set-property {unit}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl set-property {unit} AllowedCPUs={cpus}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The container's current `cpuset.cpus`.
pub fn cpuset(cgroups_path: &str) -> Option<String> {
    let p = file("cpuset", &relative_path(cgroups_path), "cpuset.cpus");
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The container's CFS quota and period (v1 files, or v2 `cpu.max`).
pub fn quota(cgroups_path: &str) -> Option<(i64, u64)> {
    let rel = relative_path(cgroups_path);
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.is_dir() {
        let q = std::fs::read_to_string(v1.join(&rel).join("cpu.cfs_quota_us"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let p = std::fs::read_to_string(v1.join(&rel).join("cpu.cfs_period_us"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        return Some((q, p));
    }
    let max =
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(rel).join("cpu.max")).ok()?;
    let mut it = max.split_whitespace();
    let q = it.next()?;
    let p = it.next()?.parse().ok()?;
    Some((if q == "max" { -1 } else { q.parse().ok()? }, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_paths_stay_under_the_root() {
        assert_eq!(relative_path("/docker/abc"), PathBuf::from("docker/abc"));
        assert_eq!(relative_path("/a/../../etc/x"), PathBuf::from("etc/x"));
        // Records from before paths were resolved: systemd's shape.
        assert_eq!(
            relative_path("kubepods-besteffort.slice:cri-containerd:abc"),
            PathBuf::from("kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            relative_path(":cri-containerd:abc"),
            PathBuf::from("system.slice/cri-containerd-abc.scope")
        );
    }
}
