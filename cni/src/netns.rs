//! Running code inside a network namespace.
//!
//! `setns` changes the namespace of the calling thread only, so the work runs
//! on a dedicated thread that enters the namespace and then ends: no other
//! thread, and no later code on this one, ever runs in the wrong namespace.

use crate::error::{CniError, Code};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` inside the network namespace at `netns` (e.g. `/run/netns/x` or
/// `/proc/PID/ns/net`) and returns its value. A missing namespace is an
/// `Io` error naming the path.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, CniError> {
    let file = std::fs::File::open(netns).map_err(|e| {
        CniError::new(Code::Io, format!("cannot open netns {}", netns.display()))
            .with_details(e.to_string())
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold open, for this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(CniError::new(
                    Code::Io,
                    format!("cannot enter netns {}", netns.display()),
                )
                .with_details(e.to_string()));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(CniError::new(
                Code::Plugin(100),
                "a task inside the netns panicked",
            ))
        })
    })
}

/// True when `netns` exists and is a network namespace file.
pub fn exists(netns: &Path) -> bool {
    std::fs::File::open(netns).is_ok()
}
