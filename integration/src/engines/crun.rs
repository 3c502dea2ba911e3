//! crun 1.8 refuses a cgroups v1 hybrid host unless the hugetlb v1 hierarchy
//! is mounted; this mounts it when missing (a host prerequisite, left mounted).

use crate::cmd::sh;
use std::path::Path;

/// Mounts the hugetlb v1 controller at `/sys/fs/cgroup/hugetlb` when absent.
pub fn ensure_hugetlb_hierarchy() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup/hugetlb "))
    {
        return;
    }
    let dir = Path::new("/sys/fs/cgroup/hugetlb");
    std::fs::create_dir_all(dir).expect("mkdir /sys/fs/cgroup/hugetlb");
    sh(
        "mount",
        [
            "-t",
            "cgroup",
            "-o",
            "hugetlb",
            "cgroup",
            "/sys/fs/cgroup/hugetlb",
        ],
    );
}
