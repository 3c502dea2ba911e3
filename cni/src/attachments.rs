//! The attachments a plugin made on this host, one record each, so GC can
//! find what a lost DEL left behind. A record is written (temp file, fsync,
//! rename) before ADD creates anything and removed when DEL or GC has
//! cleaned up; a record whose attachment is gone already costs GC nothing.
//!
//! Records live in `<state_dir>/<plugin>/<network>/` (`state_dir` from
//! `/etc/berth/cni.toml`, default `/var/lib/berth/cni`: the admin's, never
//! the network configuration's). ADD and DEL hold a shared `flock` on the
//! directory's `.lock` while they work, GC an exclusive one: GC never
//! collects an attachment whose ADD is in progress.

use crate::error::{Code, Failure};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where records live unless `/etc/berth/cni.toml` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth/cni";

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: PathBuf,
    /// The inode of that netns at ADD: a path now naming another netns
    /// (`/proc/<pid>/ns/net` after pid reuse) is not this attachment's.
    pub netns_inode: Option<u64>,
}

impl Attachment {
    /// The attachment of `container_id` and `ifname` in `netns`, as it is now.
    pub fn new(container_id: &str, ifname: &str, netns: &Path) -> Attachment {
        use std::os::unix::fs::MetadataExt;
        Attachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            netns_inode: std::fs::metadata(netns).ok().map(|m| m.ino()),
        }
    }

    /// True when its netns still exists and is the one it was made in.
    pub fn netns_is_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.netns), self.netns_inode) {
            (Ok(m), Some(ino)) => m.ino() == ino,
            _ => false,
        }
    }
}

/// Shared for ADD and DEL, exclusive for GC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// ADD or DEL: many at once.
    Shared,
    /// GC: alone.
    Exclusive,
}

/// The records of one plugin's network, locked.
pub struct Ledger {
    dir: PathBuf,
    _lock: File,
}

/// A file-name-safe form of `s`: itself when it is plain, else a hash.
pub(crate) fn safe(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        return s.to_string();
    }
    // FNV-1a, stable across releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("~{h:016x}")
}

/// Opens (creating) `path` and takes a `flock` on it for `access`,
/// waiting for it; the lock lasts as long as the file.
pub fn locked(path: &Path, access: Access) -> std::io::Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let op = match access {
        Access::Shared => libc::LOCK_SH,
        Access::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Replaces `path` with `body` so that a crash leaves the old or the new
/// content, never a mix: a temp file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The attachment records could not be opened, locked or written (code 5).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct LedgerError {
    /// What was being done, naming the file.
    pub what: String,
    /// The OS's words.
    #[source]
    pub source: std::io::Error,
}

impl Failure for LedgerError {
    fn code(&self) -> Code {
        Code::Io
    }
}

fn io(what: String) -> impl Fn(std::io::Error) -> LedgerError {
    move |source| LedgerError {
        what: what.clone(),
        source,
    }
}

impl Ledger {
    /// Opens (creating) the records of `network` for `plugin` under
    /// `state_dir`, locked for `access` (waiting for the lock).
    pub fn open(
        state_dir: &Path,
        plugin: &str,
        network: &str,
        access: Access,
    ) -> Result<Ledger, LedgerError> {
        let dir = state_dir.join(safe(plugin)).join(safe(network));
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let lock_path = dir.join(".lock");
        let lock =
            locked(&lock_path, access).map_err(io(format!("lock {}", lock_path.display())))?;
        Ok(Ledger { dir, _lock: lock })
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json", safe(container_id), safe(ifname)))
    }

    /// Records `a`, durably.
    pub fn record(&self, a: &Attachment) -> Result<(), LedgerError> {
        let path = self.path(&a.container_id, &a.ifname);
        let body = serde_json::to_vec(a)
            .map_err(|e| io(format!("encode {}", path.display()))(e.into()))?;
        write_durably(&path, &body).map_err(io(format!("record {}", path.display())))
    }

    /// Forgets the attachment of `container_id` and `ifname`.
    pub fn remove(&self, container_id: &str, ifname: &str) {
        let path = self.path(container_id, ifname);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(record = %path.display(), error = %e, "cannot remove an attachment record");
            }
        }
    }

    /// Every recorded attachment (unreadable records are logged, skipped).
    pub fn list(&self) -> Vec<Attachment> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Attachment> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let parsed = std::fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                parsed
                    .map_err(|e| tracing::warn!(record = %p.display(), error = %e, "skipping an unreadable attachment record"))
                    .ok()
            })
            .collect();
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: &str, ifname: &str) -> Attachment {
        Attachment::new(id, ifname, Path::new("/proc/self/ns/net"))
    }

    #[test]
    fn a_netns_path_naming_another_netns_is_not_ours() {
        let mine = a("c", "eth0");
        assert!(mine.netns_is_ours());
        let other = Attachment {
            netns_inode: mine.netns_inode.map(|i| i + 1),
            ..mine.clone()
        };
        assert!(!other.netns_is_ours());
        let gone = Attachment::new("c", "eth0", Path::new("/nonexistent"));
        assert!(!gone.netns_is_ours());
    }

    #[test]
    fn records_round_trip_and_odd_names_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::open(d.path(), "macvlan", "../../etc", Access::Shared).unwrap();
        l.record(&a("c1", "eth0")).unwrap();
        l.record(&a("../x", "eth1")).unwrap();
        l.record(&a("c1", "eth0")).unwrap();
        assert_eq!(l.list(), vec![a("../x", "eth1"), a("c1", "eth0")]);
        for e in walk(d.path()) {
            assert!(e.starts_with(d.path()), "{}", e.display());
        }
        l.remove("c1", "eth0");
        l.remove("c1", "eth0");
        assert_eq!(l.list(), vec![a("../x", "eth1")]);
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = vec![p.to_path_buf()];
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
}
