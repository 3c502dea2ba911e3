//! A terminal for a foreground process (`run` without `-d`, `exec` without
//! `--detach`) whose spec asks for one and whose caller gave no
//! `--console-socket`, as runc gives it: Berth listens on a console socket of
//! its own, receives the pty master from the container, puts its own
//! terminal in raw mode, copies stdin and stdout through the pty, and follows
//! window-size changes (SIGWINCH).

use super::{Error, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the container may take to send its pty master once built.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A console socket Berth listens on itself; removed when dropped.
pub struct ConsoleSocket {
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens on a fresh socket in a private directory under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        let dir = root.join(format!(".berth-tty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("console directory {}", dir.display()), e))?;
        let sock = dir.join("console.sock");
        let listener = UnixListener::bind(&sock)
            .map_err(|e| Error::io(format!("console socket {}", sock.display()), e))?;
        Ok(Self { dir, listener })
    }

    /// The socket's path, for libcontainer's `with_console_socket`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Accepts the container's connection and returns the pty master it sends.
    pub fn receive(&self) -> Result<OwnedFd> {
        let io = |e: std::io::Error| Error::io("console socket", e);
        self.listener.set_nonblocking(true).map_err(io)?;
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(Error::Usage(
                            "the container sent no terminal on the console socket".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(io(e)),
            }
        };
        stream.set_nonblocking(false).map_err(io)?;
        let mut name = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| io(e.into()))?;
        for c in msg.cmsgs().map_err(|e| io(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS just gave this process the descriptor.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(Error::Usage(
            "the console socket message carried no terminal".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Berth's stdio joined to the container's pty until [`Attached::finish`];
/// the caller's terminal settings come back then, or on drop.
pub struct Attached {
    master: Arc<std::fs::File>,
    saved: Option<Termios>,
    exited: Arc<AtomicBool>,
    output: Option<std::thread::JoinHandle<()>>,
}

/// Starts copying between Berth's stdio and `master`. Call it with signals
/// blocked: the copying threads inherit the mask and take none.
pub fn attach(master: OwnedFd) -> Result<Attached> {
    let master = Arc::new(std::fs::File::from(master));
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| Error::io("terminal raw mode", e.into()))?;
    }
    resize_to_caller(&master);
    let input = master.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || (&*input).write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let exited = Arc::new(AtomicBool::new(false));
    let output = {
        let (master, exited) = (master.clone(), exited.clone());
        std::thread::spawn(move || copy_out(&master, &exited))
    };
    Ok(Attached {
        master,
        saved,
        exited,
        output: Some(output),
    })
}

/// Gives `master` the window size of the caller's terminal, if it has one.
fn resize_to_caller(master: &std::fs::File) {
    // SAFETY: winsize is plain data; TIOCGWINSZ/TIOCSWINSZ read and write
    // the one we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies the pty's output to stdout until the pty closes, or until the
/// process has exited and nothing more comes (a background child may hold
/// the pty open).
fn copy_out(master: &std::fs::File, exited: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 8192];
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) if exited.load(Ordering::Acquire) => return,
            Ok(0) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        match (&*master).read(&mut buf) {
            // EIO: every slave descriptor is closed.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                    return;
                }
            }
        }
    }
}

impl Attached {
    /// Gives the pty the caller's window size again (on SIGWINCH).
    pub fn resize(&self) {
        resize_to_caller(&self.master);
    }

    /// Once the process has exited: copies what output is left, then gives
    /// the caller's terminal back its settings.
    pub fn finish(mut self) {
        self.exited.store(true, Ordering::Release);
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.exited.store(true, Ordering::Release);
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::IoSlice;
    use std::os::unix::net::UnixStream;

    #[test]
    fn receives_the_descriptor_sent_as_libcontainer_sends_it() {
        let root = std::env::temp_dir().join(format!("berth-tty-test-{}", std::process::id()));
        let sock = ConsoleSocket::new(&root).unwrap();
        let (mine, _) = nix::unistd::pipe().unwrap();
        let peer = UnixStream::connect(sock.path()).unwrap();
        let fds = [mine.as_raw_fd()];
        sendmsg::<UnixAddr>(
            peer.as_raw_fd(),
            &[IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = sock.receive().unwrap();
        let a = nix::sys::stat::fstat(mine.as_raw_fd()).unwrap();
        let b = nix::sys::stat::fstat(got.as_raw_fd()).unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        let dir = sock.dir.clone();
        drop(sock);
        assert!(!dir.exists(), "the socket directory is removed");
        let _ = std::fs::remove_dir_all(&root);
    }
}
