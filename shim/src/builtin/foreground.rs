//! Waiting for a foreground process (`run` without `-d`, `exec` without
//! `--detach`) as runc does: signals sent to Berth are passed on to the
//! process, and its end becomes Berth's exit code (128 + signal if killed).

use super::terminal::Attached;
use super::{Error, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Reaps exited children; the exit code once `pid` is among them.
fn reap(pid: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => {
                return Err(Error::Usage(format!(
                    "process {pid} is not a child of berth-runtime"
                )))
            }
            Err(e) => return Err(Error::io("waitpid", e.into())),
        }
    }
}

/// Blocks every signal in this thread, so that none sent from now on is
/// lost (or kills Berth) before [`wait`] passes it on. Call it only once the
/// container's processes exist: a clone inherits the mask, and an
/// `execve` keeps it.
pub fn block_signals() -> Result<()> {
    SigSet::all()
        .thread_block()
        .map_err(|e| Error::io("sigprocmask", e.into()))
}

/// Waits for child `pid`, forwarding every signal but SIGCHLD, SIGURG and
/// SIGWINCH to it; returns its exit code. With a terminal attached, SIGWINCH
/// resizes it.
pub fn wait(pid: i32, tty: Option<&Attached>) -> Result<i32> {
    let pid = Pid::from_raw(pid);
    let all = SigSet::all();
    block_signals()?;
    if let Some(code) = reap(pid)? {
        return Ok(code);
    }
    loop {
        let sig = all.wait().map_err(|e| Error::io("sigwait", e.into()))?;
        match sig {
            Signal::SIGCHLD => {
                if let Some(code) = reap(pid)? {
                    return Ok(code);
                }
            }
            Signal::SIGWINCH => {
                if let Some(t) = tty {
                    t.resize();
                }
            }
            Signal::SIGURG => {}
            other => {
                if let Err(e) = kill(pid, other) {
                    tracing::warn!(%pid, signal = ?other, "cannot forward signal: {e}");
                }
            }
        }
    }
}
