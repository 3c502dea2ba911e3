//! Crash-safe file replacement: temp file in the same directory, (fsync),
//! rename over the target, (fsync the directory).

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// How much a replacement must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the writer or of the host: fsync the file before the rename
    /// and the directory after it (e.g. a bundle's `config.json`).
    Durable,
    /// A crash of the writer only: rename without fsync. For state that dies
    /// with the host anyway (records of running containers under `/run`).
    Atomic,
}

/// Atomically replaces (or creates) `path` with `bytes`, keeping the old
/// file's permissions (or `default_mode` for a new file). Readers see the
/// old or the new content, never a mix.
pub fn write_file(
    path: &Path,
    bytes: &[u8],
    default_mode: u32,
    durability: Durability,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("no file name")))?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(default_mode);
    let tmp = dir.join(format!(
        ".{}.berth-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A temp file of ours left by a killed run is removed; whatever else
    // appears at that name (a planted symlink) makes the open fail rather
    // than be written through: O_EXCL and O_NOFOLLOW.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        if durability == Durability::Durable {
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if durability == Durability::Durable {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_file(&p, b"new", 0o644, Durability::Durable).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_temp_name_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let p = d.path().join("config.json");
        let tmp = d
            .path()
            .join(format!(".config.json.berth-{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_file(&p, b"new", 0o644, Durability::Atomic).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn failure_leaves_target_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing-dir").join("x");
        assert!(write_file(&p, b"x", 0o644, Durability::Atomic).is_err());
    }
}
