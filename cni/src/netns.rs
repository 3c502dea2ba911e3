//! Running code inside a network namespace.
//!
//! `setns` changes the namespace of the calling thread only, so the work runs
//! on a dedicated thread that enters the namespace and then ends: no other
//! thread, and no later code on this one, ever runs in the wrong namespace.

use crate::error::{Code, Failure};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A network namespace that could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Opening its file failed (code 5).
    #[error("cannot open netns {}", .path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS's words.
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed (code 5).
    #[error("cannot enter netns {}", .path.display())]
    Enter {
        /// The path.
        path: PathBuf,
        /// The OS's words.
        #[source]
        source: std::io::Error,
    },
    /// The work inside panicked (code 100).
    #[error("a task inside the netns panicked")]
    Panicked,
}

impl Failure for NetnsError {
    fn code(&self) -> Code {
        match self {
            NetnsError::Panicked => Code::Plugin(100),
            _ => Code::Io,
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            NetnsError::Open { source, .. } | NetnsError::Enter { source, .. } => {
                Some(source.to_string())
            }
            NetnsError::Panicked => None,
        }
    }
}

/// Runs `f` inside the network namespace at `netns` (e.g. `/run/netns/x` or
/// `/proc/PID/ns/net`) and returns its value. A missing namespace is an
/// `Io` error naming the path.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = std::fs::File::open(netns).map_err(|source| NetnsError::Open {
        path: netns.into(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold open, for this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Enter {
                    path: netns.into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(f())
        })
        .join()
        .unwrap_or(Err(NetnsError::Panicked))
    })
}

/// True when `netns` exists and is a network namespace file.
pub fn exists(netns: &Path) -> bool {
    std::fs::File::open(netns).is_ok()
}
