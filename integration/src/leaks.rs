//! Finding what a test run left on the host, by the run's name prefix.

use std::path::Path;

/// Pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Mount points (from `/proc/self/mountinfo`) whose path contains `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut ms: Vec<String> = mounts_containing(&prefix)
        .into_iter()
        .filter(|m| m.starts_with(&prefix))
        .collect();
    ms.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ms {
        if let Ok(c) = std::ffi::CString::new(m.clone()) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn walk_cgroups(dir: &Path, needle: &str, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            out.push(p.display().to_string());
        } else {
            walk_cgroups(&p, needle, depth - 1, out);
        }
    }
}

/// Everything on the host whose name carries `prefix`: network namespaces,
/// links, cgroups, mounts and processes. Empty means clean.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(prefix) {
                out.push(format!("network namespace {n}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            // Plugins name host links by hash (berth-ovs-vlan's `bov...`)
            // but record the network, which tests name, in the alias.
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            if n.contains(prefix) || alias.contains(prefix) {
                out.push(format!("interface {n}"));
            }
        }
    }
    let mut cgs = Vec::new();
    walk_cgroups(Path::new("/sys/fs/cgroup"), prefix, 5, &mut cgs);
    out.extend(cgs.into_iter().map(|c| format!("cgroup {c}")));
    out.extend(
        mounts_containing(prefix)
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    for pid in pids_with_cmdline(prefix) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // The checker's own parents (the test script, cargo) carry the prefix in env, not cmdline.
        out.push(format!("process {pid} ({})", comm.trim()));
    }
    out
}

fn kill_cgroup_members(dir: &Path) {
    // A frozen cgroup cannot die: thaw it first.
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2); these pids are in a cgroup this run created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    kill_cgroup_members(dir);
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes everything [`leftovers`] finds for `prefix`: processes (by pid),
/// cgroups with their members, mounts, namespaces, interfaces and scratch dirs.
pub fn clean(prefix: &str) {
    for pid in pids_with_cmdline(prefix) {
        // SAFETY: kill(2) on processes whose command line names this run.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut cgs = Vec::new();
    walk_cgroups(Path::new("/sys/fs/cgroup"), prefix, 5, &mut cgs);
    for c in &cgs {
        remove_cgroup_tree(Path::new(c));
    }
    let mut ms = mounts_containing(prefix);
    ms.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ms {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(prefix) {
                let _ = crate::cmd::try_sh("ip", ["netns", "del", &n]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            if n.contains(prefix) || alias.contains(prefix) {
                let _ = crate::cmd::try_sh("ip", ["link", "del", &n]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
