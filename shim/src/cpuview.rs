//! A container's CPU view: the files that make every program in it see one
//! declared CPU count, and keep seeing it after `update`.
//!
//! For a container with a CPU limit, `<state_dir>/cpuview/<root hash>/<id>/`
//! holds:
//!
//! * [`COUNT_FILE`]: 16 bytes that `libberth_cpus.so` maps (`BERTH_NPROC_FILE`):
//!   the magic `BERTHCPU`, the count and the spread offset, native 32-bit
//!   integers. Updates store each word atomically through a shared mapping,
//!   so the library reads the new count with one load on its next call;
//! * [`ONLINE_FILE`], bind-mounted read-only over
//!   `/sys/devices/system/cpu/online`: `0-(N-1)` (what glibc's `get_nprocs`
//!   reads, so static glibc programs see `N` too);
//! * [`CPUINFO_FILE`], bind-mounted read-only over `/proc/cpuinfo`: `N`
//!   processor entries, renumbered `0..N`, copied from the host's.
//!
//! The CPU numbers these files show are virtual (`0..N`), as lxcfs shows
//! them with its CFS view; `possible`, `present` and `_SC_NPROCESSORS_CONF`
//! stay real. On `update` the files are rewritten in place (a bind mount
//! pins the inode: a rename would not reach the container), from what the
//! container's cgroup holds after the update.

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::records::container_key;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The count file `libberth_cpus.so` maps.
pub const COUNT_FILE: &str = "nproc";
/// The synthetic `/sys/devices/system/cpu/online`.
pub const ONLINE_FILE: &str = "online";
/// The synthetic `/proc/cpuinfo`.
pub const CPUINFO_FILE: &str = "cpuinfo";
/// What exec'd processes get ([`crate::rewrite::preload::Injection`]).
pub const INJECTION_FILE: &str = "injection.json";
/// The count file's magic.
pub const MAGIC: &[u8; 8] = b"BERTHCPU";
/// Where the synthetic online list is mounted in the container.
pub const ONLINE_DEST: &str = "/sys/devices/system/cpu/online";
/// Where the synthetic cpuinfo is mounted in the container.
pub const CPUINFO_DEST: &str = "/proc/cpuinfo";

/// The count a container with CPU quota `quota` (quota, period) and cpuset
/// `cpuset` should see on a host with `host` online CPUs: the smaller of
/// ceil(quota/period) and the cpuset's size. A cpuset that spans every
/// online CPU is no limit; None: no limit at all.
pub fn declared_count(
    quota: Option<(i64, u64)>,
    cpuset: Option<&str>,
    host: Option<u32>,
) -> Option<u32> {
    let from_quota = quota.filter(|(q, p)| *q > 0 && *p > 0).map(|(q, p)| {
        let n = (q as u64).div_ceil(p);
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    });
    let from_set = cpuset
        .and_then(crate::spec::cpuset_count)
        .filter(|n| *n > 0 && host.is_none_or(|h| *n < h));
    match (from_quota, from_set) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The per-container spread offset: where in its allowed CPUs the library
/// starts when it trims the affinity mask (a hash of the id, so containers
/// sharing a pool start at different CPUs).
pub fn spread_offset(id: &str) -> u32 {
    let h = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h >> 1
}

/// `/sys/devices/system/cpu/online` for `n` CPUs.
pub fn online_list(n: u32) -> String {
    if n <= 1 {
        "0\n".to_string()
    } else {
        format!("0-{}\n", n - 1)
    }
}

/// `/proc/cpuinfo` for `n` CPUs, from the host's `host`: processor entries
/// 0..n, each a copy of the host entry with that index (or the last one),
/// renumbered; per-package counts (`siblings`, `cpu cores`) say `n` and
/// core/APIC ids follow the new numbers. Sections that are not processor
/// entries (some architectures end with one) are kept after them.
pub fn cpuinfo(host: &str, n: u32) -> String {
    let blocks: Vec<&str> = host
        .split("\n\n")
        .map(|b| b.trim_matches('\n'))
        .filter(|b| !b.is_empty())
        .collect();
    let is_proc = |b: &&str| b.starts_with("processor");
    let procs: Vec<&str> = blocks.iter().copied().filter(is_proc).collect();
    let others: Vec<&str> = blocks.iter().copied().filter(|b| !is_proc(b)).collect();
    let mut out = String::new();
    for i in 0..n {
        let Some(src) = procs.get(i as usize).or(procs.last()) else {
            break;
        };
        for line in src.lines() {
            let key = line.split(':').next().unwrap_or("").trim();
            let value = match key {
                "processor" | "core id" | "apicid" | "initial apicid" => Some(i),
                "siblings" | "cpu cores" => Some(n),
                _ => None,
            };
            match (value, line.find(':')) {
                (Some(v), Some(colon)) => {
                    out.push_str(&line[..=colon]);
                    out.push_str(&format!(" {v}\n"));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
    }
    for b in others {
        out.push_str(b);
        out.push_str("\n\n");
    }
    out
}

/// One container's CPU view directory.
#[derive(Debug, Clone)]
pub struct CpuView {
    dir: PathBuf,
}

impl CpuView {
    /// The view of container `id` under state root `root`.
    pub fn of(cfg: &RuntimeConfig, root: Option<&Path>, id: &str) -> CpuView {
        CpuView::at(cfg.state_dir.join("cpuview").join(container_key(root, id)))
    }

    /// The view in directory `dir`.
    pub fn at(dir: PathBuf) -> CpuView {
        CpuView { dir }
    }

    /// The view's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the view.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// True when the view has been written.
    pub fn exists(&self) -> bool {
        self.file(COUNT_FILE).is_file()
    }

    /// The count the view declares (None: no view, or not one of Berth's files).
    pub fn count(&self) -> Option<u32> {
        let b = std::fs::read(self.file(COUNT_FILE)).ok()?;
        (b.len() >= 16 && &b[..8] == MAGIC).then(|| u32::from_ne_bytes([b[8], b[9], b[10], b[11]]))
    }

    /// Writes the view for `n` CPUs: new files on the first call, in place
    /// afterwards (containers hold them bind-mounted).
    pub fn write(&self, n: u32, spread: u32) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let host = host_cpuinfo();
        self.write_text(ONLINE_FILE, online_list(n).as_bytes())?;
        self.write_text(CPUINFO_FILE, cpuinfo(host, n).as_bytes())?;
        self.write_count(n, spread)
    }

    fn write_text(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.file(name);
        if !path.exists() {
            return crate::atomic::write_file(
                &path,
                bytes,
                0o644,
                crate::atomic::Durability::Atomic,
            );
        }
        // In place: write the new text, then cut what is left of the old.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all_at(bytes, 0).map_err(|e| Error::io(&path, e))?;
        f.set_len(bytes.len() as u64)
            .map_err(|e| Error::io(&path, e))
    }

    fn write_count(&self, n: u32, spread: u32) -> Result<()> {
        let path = self.file(COUNT_FILE);
        if !path.exists() {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&n.to_ne_bytes());
            bytes.extend_from_slice(&spread.to_ne_bytes());
            return crate::atomic::write_file(
                &path,
                &bytes,
                0o644,
                crate::atomic::Durability::Atomic,
            );
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 16 {
            return Err(Error::io(
                &path,
                std::io::Error::other("not a Berth count file (shorter than 16 bytes)"),
            ));
        }
        let words = SharedWords::map(&f).map_err(|e| Error::io(&path, e))?;
        words.store(3, spread);
        words.store(2, n);
        Ok(())
    }

    /// Saves what the container's processes were given at create.
    pub fn save_injection(&self, inj: &crate::rewrite::preload::Injection) -> Result<()> {
        let path = self.file(INJECTION_FILE);
        let bytes =
            serde_json::to_vec(inj).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        crate::atomic::write_file(&path, &bytes, 0o644, crate::atomic::Durability::Atomic)
    }

    /// What the container's processes were given at create (None: no view,
    /// or a file that is not Berth's).
    pub fn injection(&self) -> Option<crate::rewrite::preload::Injection> {
        serde_json::from_slice(&std::fs::read(self.file(INJECTION_FILE)).ok()?).ok()
    }

    /// Removes the view (after the container is deleted).
    pub fn remove(&self) {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => tracing::debug!(dir = %self.dir.display(), "CPU view removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.dir.display(), "cannot remove the CPU view: {e}"),
        }
    }

    /// Rewrites an existing view from what the container's cgroup holds now
    /// (after an `update`, or a shared-pool change); no limit left means the
    /// host's online count. Returns the new count; None when there is no view.
    pub fn refresh_from_cgroup(&self, cgroup: &str, id: &str) -> Result<Option<u32>> {
        let set = crate::cpus::cgroup::cpuset(cgroup);
        self.refresh_for_cpuset(cgroup, set.as_deref(), id)
    }

    /// [`CpuView::refresh_from_cgroup`] for a cpuset the container is
    /// about to get (its engine applies it after this returns): the quota
    /// still comes from its cgroup.
    pub fn refresh_for_cpuset(
        &self,
        cgroup: &str,
        set: Option<&str>,
        id: &str,
    ) -> Result<Option<u32>> {
        if !self.exists() {
            return Ok(None);
        }
        let host = crate::rewrite::preload::host_online_cpus();
        let quota = crate::cpus::cgroup::quota(cgroup);
        let n = declared_count(quota, set, host).or(host).unwrap_or(1);
        if self.count() != Some(n) {
            self.write(n, spread_offset(id))?;
            tracing::info!(
                container = id,
                nproc = n,
                "CPU view updated: the container now sees {n} CPUs"
            );
        }
        Ok(Some(n))
    }
}

/// The first 16 bytes of a file, mapped shared and writable.
struct SharedWords {
    ptr: *mut libc::c_void,
}

impl SharedWords {
    fn map(f: &std::fs::File) -> std::io::Result<SharedWords> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of 16 bytes of a file that has them;
        // unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                16,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedWords { ptr })
    }

    fn store(&self, word: usize, v: u32) {
        debug_assert!(word < 4);
        // SAFETY: the mapping is 16 bytes, page-aligned: word < 4 is in it
        // and aligned for an AtomicU32.
        let a = unsafe { &*(self.ptr.cast::<AtomicU32>().add(word)) };
        a.store(v, Ordering::Release);
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: ptr is our 16-byte mapping.
        unsafe { libc::munmap(self.ptr, 16) };
    }
}

/// The host's `/proc/cpuinfo`, read once per process (the entries a view
/// copies do not change while it runs).
fn host_cpuinfo() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nsiblings\t: 2\ncore id\t\t: 0\ncpu cores\t: 2\napicid\t\t: 0\nflags\t\t: fpu\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nsiblings\t: 2\ncore id\t\t: 1\ncpu cores\t: 2\napicid\t\t: 1\nflags\t\t: fpu\n\n";

    #[test]
    fn cpuinfo_has_exactly_n_renumbered_entries() {
        for n in [1, 2, 5] {
            let out = cpuinfo(HOST, n);
            let procs: Vec<&str> = out.lines().filter(|l| l.starts_with("processor")).collect();
            assert_eq!(procs.len(), n as usize, "{out}");
            for (i, l) in procs.iter().enumerate() {
                assert_eq!(*l, format!("processor\t: {i}"));
            }
            assert!(out.contains(&format!("siblings\t: {n}\n")), "{out}");
            assert!(out.contains("flags\t\t: fpu\n"));
        }
        // A trailing non-processor section survives, once.
        let arm = "processor\t: 0\nBogoMIPS\t: 50\n\nHardware\t: foo\n";
        let out = cpuinfo(arm, 2);
        assert_eq!(out.matches("Hardware").count(), 1, "{out}");
        assert_eq!(out.matches("processor").count(), 2, "{out}");
    }

    #[test]
    fn online_lists_n_cpus() {
        assert_eq!(online_list(1), "0\n");
        assert_eq!(online_list(3), "0-2\n");
        assert_eq!(crate::spec::cpuset_count(online_list(7).trim()), Some(7));
    }

    #[test]
    fn declared_count_is_the_smaller_limit_rounded_up() {
        assert_eq!(
            declared_count(Some((150_000, 100_000)), None, Some(8)),
            Some(2)
        );
        assert_eq!(
            declared_count(Some((50_000, 100_000)), Some("0-3"), Some(8)),
            Some(1)
        );
        assert_eq!(
            declared_count(Some((-1, 100_000)), Some("0-7"), Some(8)),
            None
        );
        assert_eq!(
            declared_count(Some((-1, 100_000)), Some("2"), Some(8)),
            Some(1)
        );
        assert_eq!(
            declared_count(Some((400_000, 100_000)), Some("0-1"), Some(8)),
            Some(2)
        );
        assert_eq!(declared_count(None, None, Some(8)), None);
    }

    #[test]
    fn updates_keep_the_inode_and_change_the_count() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let v = CpuView::at(d.path().join("v"));
        v.write(2, 7).unwrap();
        assert_eq!(v.count(), Some(2));
        let inodes = |v: &CpuView| {
            [COUNT_FILE, ONLINE_FILE, CPUINFO_FILE]
                .map(|f| std::fs::metadata(v.file(f)).unwrap().ino())
        };
        let before = inodes(&v);
        // A reader's mapping sees the store (as the preload library's does).
        let f = std::fs::File::open(v.file(COUNT_FILE)).unwrap();
        v.write(1, 7).unwrap();
        assert_eq!(inodes(&v), before, "rewritten in place");
        assert_eq!(v.count(), Some(1));
        let mut b = [0u8; 16];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b[..8], MAGIC);
        assert_eq!(u32::from_ne_bytes([b[8], b[9], b[10], b[11]]), 1);
        assert_eq!(u32::from_ne_bytes([b[12], b[13], b[14], b[15]]), 7);
        assert_eq!(std::fs::read_to_string(v.file(ONLINE_FILE)).unwrap(), "0\n");
        v.remove();
        assert!(!v.exists());
    }

    #[test]
    fn spread_offsets_differ_between_ids() {
        let a: std::collections::HashSet<u32> = (0..64)
            .map(|i| spread_offset(&format!("c{i}")) % 16)
            .collect();
        assert!(a.len() > 8, "offsets cluster: {a:?}");
    }
}
