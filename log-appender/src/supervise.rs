//! The binary logger's supervisor.
//!
//! containerd's shim hands the container's stdout and stderr pipes to one
//! process, and keeps no copy of their read ends. If that process dies, the
//! container's next write fails: EPIPE, or death by SIGPIPE. So a binary
//! logger runs as two processes:
//!
//! * this supervisor, which holds the pipes open, reads nothing and waits;
//! * a worker, the same binary with [`WORKER_ENV`] set, doing the work.
//!
//! A worker killed by a signal (kill -9, the OOM killer, a crash) is
//! replaced at once on the same pipes, and the new one replays the spill;
//! meanwhile the container's writes wait in the pipe. A worker that exits
//! ends the supervisor with its status.

use std::ffi::OsString;
use std::process::Command;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set in a worker's environment.
pub const WORKER_ENV: &str = "BERTH_LOG_APPENDER_WORKER";

/// The fd containerd's shim waits on: closed once the logger is ready.
const READY_FD: i32 = 5;

/// A worker that lived this long resets the restart backoff.
const STABLE: Duration = Duration::from_secs(60);

/// True in a worker.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Runs workers with this process's arguments until one exits; returns its
/// exit code.
pub fn supervise() -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot find this program to start a worker");
            return 1;
        }
    };
    // Only an inherited ready fd is ours to close (checked before anything
    // here opens a descriptor that could take number 5).
    // SAFETY: F_GETFD only inspects the descriptor.
    let mut ready_open = unsafe { libc::fcntl(READY_FD, libc::F_GETFD) } >= 0;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let stopping = Arc::new(AtomicBool::new(false));
    let child = Arc::new(AtomicI32::new(0));
    match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT]) {
        Ok(mut signals) => {
            let (stopping, child) = (stopping.clone(), child.clone());
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    stopping.store(true, SeqCst);
                    let pid = child.load(SeqCst);
                    if pid > 0 {
                        // SAFETY: forwarding a signal to our own child.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGTERM and SIGINT"),
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let mut worker = match Command::new(&exe).args(&args).env(WORKER_ENV, "1").spawn() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker; trying again");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        child.store(worker.id() as i32, SeqCst);
        if ready_open {
            // Only the worker says when it is ready.
            // SAFETY: closing our copy of an inherited descriptor we never use.
            unsafe { libc::close(READY_FD) };
            ready_open = false;
        }
        let status = match worker.wait() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the worker");
                return 1;
            }
        };
        child.store(0, SeqCst);
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => return code,
            (None, _) if stopping.load(SeqCst) => return 0,
            (None, sig) => {
                tracing::warn!(
                    signal = sig.unwrap_or_default(),
                    lived_ms = started.elapsed().as_millis() as u64,
                    "the worker was killed; starting another on the same pipes (it replays the spill)"
                );
            }
        }
        if started.elapsed() >= STABLE {
            backoff = Duration::from_millis(100);
        } else {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
