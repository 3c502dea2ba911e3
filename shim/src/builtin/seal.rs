//! The CVE-2019-5736 guard for the built-in backend.
//!
//! libcontainer starts container processes by cloning the calling process,
//! not by executing a helper, so until the workload's `execve` every
//! container process (`create`'s init, each `exec`) runs Berth's own
//! binary. A process in the container could open `/proc/<pid>/exe` in that
//! window and, once Berth exits, write through the descriptor into
//! `/usr/bin/berth-runtime` on the host.
//!
//! As runc does, Berth therefore re-executes itself from an in-memory copy
//! before it creates any container process: a `memfd` sealed against
//! writing, growing and shrinking (`F_SEAL_WRITE | F_SEAL_GROW |
//! F_SEAL_SHRINK | F_SEAL_SEAL`). `/proc/<pid>/exe` then names that copy,
//! which no one can change, and it disappears with the last process using
//! it. Whether the running image is such a copy is read from the kernel
//! (`F_GET_SEALS` on `/proc/self/exe`), never from the environment, so the
//! guard cannot be switched off by a caller.

use super::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The seals a safe copy must carry.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when this process runs from a sealed, unwritable copy of its binary.
pub fn is_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS takes no argument; the fd is valid for the call.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
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
    let fd = match sealed_copy() {
        Ok(fd) => fd,
        Err(e) => return e,
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
    unsafe { libc::fexecve(fd.as_raw_fd(), argv_p.as_ptr(), envp_p.as_ptr()) };
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
}
