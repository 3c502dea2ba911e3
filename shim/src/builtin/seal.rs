//! The CVE-2019-5736 guard for the built-in backend.
//!
//! libcontainer starts container processes by cloning the calling process,
//! not by executing a helper, so until the workload's `execve` every
//! container process (`create`'s init, each `exec`) runs Berth's own
//! binary. A process in the container could open `/proc/<pid>/exe` in that
//! window and, once Berth exits, write through the descriptor into
//! `/usr/bin/berth-runtime` on the host.
//!
//! As runc 1.2 does, Berth therefore re-executes itself from a copy of the
//! binary that cannot be written before it creates any container process:
//!
//! 1. **A detached read-only bind mount** of the binary (`open_tree` with
//!    `OPEN_TREE_CLONE`, then `mount_setattr(MOUNT_ATTR_RDONLY)`), executed
//!    with `execveat`. The mount is attached to no namespace, so no one can
//!    remount it; every write through `/proc/<pid>/exe`, or a descriptor
//!    reopened from it, fails with `EROFS`. It copies nothing.
//! 2. Where the kernel lacks those calls (before 5.12): **a sealed memfd
//!    copy** (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`),
//!    as runc 1.1 does; writes fail with `EPERM`.
//!
//! Whether the running image is protected is read from the kernel (the
//! seals, or the read-only flag of the mount `/proc/self/exe` is on), never
//! from the environment, so a caller cannot switch the guard off.

use super::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The seals a safe copy must carry.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when this process runs from a copy of its binary that cannot be
/// written: a sealed memfd, or a file on a read-only mount.
pub fn is_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS takes no argument; the fd is valid for the call.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    // SAFETY: fstatvfs fills a zeroed buffer we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::fstatvfs(exe.as_raw_fd(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

/// A detached, read-only bind mount of file `exe`, as an fd
/// `execveat(fd, "", AT_EMPTY_PATH)` can run.
pub fn readonly_mount(exe: &std::path::Path) -> Result<OwnedFd> {
    let path = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| Error::Usage("binary path has a NUL byte".into()))?;
    // SAFETY: open_tree with a valid path and flags; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached tree with a valid attr struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(Error::io("mount_setattr", std::io::Error::last_os_error()));
    }
    Ok(tree)
}

/// A sealed memfd holding a copy of the running binary.
pub fn sealed_copy() -> Result<OwnedFd> {
    let mut exe = std::fs::File::open("/proc/self/exe")
        .map_err(|e| Error::io("cannot open /proc/self/exe to seal a copy", e))?;
    // SAFETY: a static NUL-terminated name; the flags are valid.
    let fd = unsafe {
        libc::memfd_create(
            c"berth-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = std::fs::File::from(owned);
    let len = exe.metadata().map(|m| m.len()).unwrap_or(0);
    if len > 0 {
        let _ = out.set_len(len);
    }
    std::io::copy(&mut exe, &mut out).map_err(|e| Error::io("cannot copy the binary", e))?;
    // SAFETY: F_ADD_SEALS with a valid seal mask on our own memfd.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(Error::io(
            "cannot seal the copy of the binary",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(out.into())
}

/// Replaces this process with the same command line run from a sealed copy
/// of the binary. Returns only on failure.
pub fn reexec() -> Error {
    let mounted = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::io("cannot read /proc/self/exe", e))
        .and_then(|exe| readonly_mount(&exe));
    let fd = match mounted {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("no read-only mount of the binary ({e}); sealing a memfd copy");
            match sealed_copy() {
                Ok(fd) => fd,
                Err(e) => return e,
            }
        }
    };
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated and point into CStrings that
    // live until the call; an ELF image may be executed from a close-on-exec fd.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Error::io(
        "cannot re-execute from the sealed copy",
        std::io::Error::last_os_error(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_identical_and_refuses_writes() {
        use std::io::{Read, Seek, Write};
        let fd = sealed_copy().unwrap();
        let mut copy = std::fs::File::from(fd);
        let mut a = Vec::new();
        copy.seek(std::io::SeekFrom::Start(0)).unwrap();
        copy.read_to_end(&mut a).unwrap();
        let b = std::fs::read("/proc/self/exe").unwrap();
        assert!(a == b, "copy differs from the binary");
        copy.seek(std::io::SeekFrom::Start(0)).unwrap();
        let err = copy.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert!(copy.set_len(1).is_err(), "a sealed copy cannot shrink");
        assert!(!is_sealed(), "the test binary itself runs from a file");
    }

    #[test]
    fn the_readonly_mount_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("binary");
        std::fs::write(&file, b"\x7fELF not really").unwrap();
        let tree = readonly_mount(&file).unwrap();
        let path = format!("/proc/self/fd/{}", tree.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"\x7fELF not really");
        // The file itself stays writable by the host: only the mount is read-only.
        std::fs::write(&file, b"changed").unwrap();
    }
}
