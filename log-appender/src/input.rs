//! The three ways in: containerd's binary logger protocol (stdout on fd 3,
//! stderr on fd 4, fd 5 closed when ready), stdin, and a unix socket with
//! many line-framed clients. Each input reads on its own thread and only
//! ever offers records to the memory queue, which never blocks.

use crate::lines;
use crate::queue::{MemQueue, Weighed};
use crate::record::{self, Origin};
use crate::router::Shared;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A chunk as the reader hands it to the formatter: bytes, or a gap where
/// chunks were dropped (the formatter ends the line in progress there).
enum Chunk {
    Bytes(Vec<u8>),
    Gap,
    End,
}

impl Weighed for Chunk {
    fn size(&self) -> u64 {
        match self {
            Chunk::Bytes(b) => b.size(),
            _ => 32,
        }
    }
}

/// The formatter's view of the chunk queue, as a byte stream.
struct Chunks {
    q: Arc<MemQueue<Chunk>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.cur.len() {
            match self.q.pop_batch(1, Duration::from_millis(100)).pop() {
                Some(Chunk::Bytes(b)) => {
                    self.cur = b;
                    self.at = 0;
                }
                Some(Chunk::Gap) => {
                    self.cur = b"\n".to_vec();
                    self.at = 0;
                }
                Some(Chunk::End) => return Ok(0),
                None => {}
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One stream's way into the pipeline: a bounded chunk queue (a quarter of
/// `memory_max_bytes`) that [`Feed::push`] only ever copies into, so the
/// one feeding it waits for nothing but a memcpy, and a formatter thread
/// that cuts lines and builds records. A chunk that does not fit is dropped
/// and its lines counted; the formatter ends the line in progress there.
pub struct Feed {
    q: Arc<MemQueue<Chunk>>,
    shared: Arc<Shared>,
    gap: bool,
    closed: bool,
}

impl Feed {
    /// Opens `stream` of `origin` (counted in `inputs_open` until closed);
    /// its formatter runs at niceness `nice` (0: as the caller).
    pub fn start(
        shared: Arc<Shared>,
        origin: Arc<Origin>,
        stream: &'static str,
        nice: i32,
    ) -> std::io::Result<Feed> {
        let q: Arc<MemQueue<Chunk>> = Arc::new(MemQueue::new(
            (shared.cfg().memory_max_bytes / 4).max(1 << 20),
        ));
        let qf = q.clone();
        let sf = shared.clone();
        // Counted before the formatter can end (and the router look).
        shared.inputs_open.fetch_add(1, Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("fmt-{stream}"))
            .spawn(move || {
                lower_priority(nice);
                read_into(
                    &sf,
                    &origin,
                    stream,
                    Chunks {
                        q: qf,
                        cur: Vec::new(),
                        at: 0,
                    },
                );
                sf.inputs_open.fetch_sub(1, Relaxed);
                sf.queue.wake();
            });
        if let Err(e) = spawned {
            shared.inputs_open.fetch_sub(1, Relaxed);
            return Err(e);
        }
        Ok(Feed {
            q,
            shared,
            gap: false,
            closed: false,
        })
    }

    /// Offers `bytes`; never waits.
    pub fn push(&mut self, bytes: Vec<u8>) {
        if self.gap && self.q.try_push(Chunk::Gap).is_ok() {
            self.gap = false;
        }
        if let Err(Chunk::Bytes(b)) = self.q.try_push(Chunk::Bytes(bytes)) {
            let lines = b.iter().filter(|&&c| c == b'\n').count() as u64;
            let m = &self.shared.metrics;
            m.dropped_memory_full.fetch_add(lines, Relaxed);
            m.received.fetch_add(lines, Relaxed);
            self.gap = true;
        }
    }

    /// Ends the stream: the formatter finishes the last line and stops.
    pub fn close(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // The end marker must get through: wait for room (the input is done anyway).
        while self.q.try_push(Chunk::End).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.end();
    }
}

/// Lowers the calling thread's priority to niceness `nice` (threads it
/// starts inherit it); 0 leaves it.
pub fn lower_priority(nice: i32) {
    if nice > 0 {
        // SAFETY: gettid and setpriority on this very thread.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc != 0 {
            tracing::debug!(nice, error = %std::io::Error::last_os_error(), "cannot lower this thread's priority");
        }
    }
}

/// Reads `r` as `stream` of `origin` until EOF, on its own thread, into a
/// [`Feed`].
pub fn spawn_reader(
    shared: Arc<Shared>,
    origin: Arc<Origin>,
    stream: &'static str,
    mut r: impl Read + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut feed = Feed::start(shared, origin, stream, 0)?;
    std::thread::Builder::new()
        .name(format!("read-{stream}"))
        .spawn(move || {
            let mut big = vec![0u8; 256 * 1024];
            loop {
                match r.read(&mut big) {
                    Ok(0) => break,
                    // An exact-size copy: the queue's accounting is real memory.
                    Ok(n) => feed.push(big[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "input read failed; input closed");
                        break;
                    }
                }
            }
            feed.close();
        })
}

/// Reads lines from `r` into the queue (on the caller's thread).
pub fn read_into(shared: &Shared, origin: &Origin, stream: &str, r: impl Read) {
    let cfg = shared.cfg();
    let m = &shared.metrics;
    let res = lines::split(r, cfg.lines.max_bytes, cfg.lines.overflow, |line, cut| {
        m.received.fetch_add(1, Relaxed);
        m.received_bytes.fetch_add(line.len() as u64, Relaxed);
        // The configuration in force when the line is read decides its
        // topic, key and fields (a reload applies from the next line).
        let cfg = shared.cfg();
        let rec = record::make(&cfg, origin, stream, line, cut);
        if shared.queue.try_push(rec).is_err() {
            m.dropped_memory_full.fetch_add(1, Relaxed);
        }
    });
    if let Err(e) = res {
        tracing::warn!(stream, error = %e, "input read failed; input closed");
    }
}

/// The host name (`/proc/sys/kernel/hostname`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The environment of the container whose bundle is the current directory
/// (containerd starts a binary logger in the bundle): `process.env` of
/// `./config.json`.
pub fn bundle_env() -> BTreeMap<String, String> {
    let Ok(b) = std::fs::read("config.json") else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    v["process"]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Takes ownership of an inherited file descriptor, if it is open.
pub fn inherited(fd: RawFd) -> Option<std::fs::File> {
    // SAFETY: F_GETFD only inspects the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // Nothing we start may inherit it (a child keeping fd 5 hangs the shim).
    // SAFETY: setting FD_CLOEXEC on a descriptor we now own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open and from now on owned only here.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The daemon mode: accepts clients on `path` forever; each client's lines
/// go in as `stdout` of the origin its optional first line names:
/// `BERTH-HELLO {"container_id": "...", "container_name": "...", "env": {...}}`.
///
/// The hello line is read up to [`MAX_HELLO`] bytes: a client that sends
/// more without a newline is closed. At most `max_connections` clients are
/// served at once; more are closed at once. Both are counted.
pub fn serve_socket(shared: Arc<Shared>, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    // A socket file left by a previous process (nothing listens any more).
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    shared.inputs_open.fetch_add(1, Relaxed);
    let host = hostname();
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("listen".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let cap = shared.cfg().max_connections;
                if active.load(Relaxed) >= cap {
                    let before = shared.metrics.refused_clients.fetch_add(1, Relaxed);
                    if before.is_multiple_of(1000) {
                        tracing::warn!(
                            max_connections = cap,
                            "too many daemon clients; closing a new one"
                        );
                    }
                    drop(conn);
                    continue;
                }
                active.fetch_add(1, Relaxed);
                let shared = shared.clone();
                let host = host.clone();
                let mine = active.clone();
                let spawned = std::thread::Builder::new()
                    .name("client".into())
                    .spawn(move || {
                        serve_client(&shared, conn, host);
                        mine.fetch_sub(1, Relaxed);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Relaxed);
                }
            }
        })?;
    Ok(())
}

/// The longest `BERTH-HELLO` line taken, newline included.
pub const MAX_HELLO: usize = 64 * 1024;

/// Who a daemon client is, by the kernel's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Its process is in this container (the 64-hex-digit ID).
    Container(String),
    /// Its process is in no container: a host process.
    Host,
    /// Its process could not be looked at: it exited before the daemon
    /// read its cgroup, or the lookup failed. Never a host process.
    Unknown,
}

/// The container a connected process belongs to, from the kernel: its pid
/// (SO_PEERCRED), then a 64-hex-digit container ID in its cgroup path
/// (`/docker/<id>`, `cri-containerd-<id>.scope`, `libpod-<id>.scope`, ...).
/// Where the kernel has SO_PEERPIDFD (6.5+), the pidfd pins that very
/// process: if it is gone after the read, its pid may have named another
/// process, and the answer is [`Peer::Unknown`].
pub fn peer_of(conn: &std::os::unix::net::UnixStream) -> Peer {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fd = conn.as_raw_fd();
    let pinned = match peer_option(fd, libc::SO_PEERPIDFD, -1 as libc::c_int) {
        // SAFETY: the kernel gave us this descriptor; we own it now.
        Ok(pidfd) if pidfd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(pidfd) }),
        // An older kernel: the pid alone.
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => None,
        // ESRCH: the process is already gone.
        _ => return Peer::Unknown,
    };
    let cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let cred = match peer_option(fd, libc::SO_PEERCRED, cred) {
        Ok(c) if c.pid > 0 => c,
        _ => return Peer::Unknown,
    };
    let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{}/cgroup", cred.pid)) else {
        return Peer::Unknown;
    };
    if let Some(p) = &pinned {
        // SAFETY: signal 0 only checks that the pidfd's process still exists.
        let alive = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                p.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
        if !alive {
            return Peer::Unknown;
        }
    }
    match container_in_cgroup(&cgroups) {
        Some(id) => Peer::Container(id),
        None => Peer::Host,
    }
}

/// The SOL_SOCKET option `opt` of `fd`, a `T` the kernel fills.
fn peer_option<T: Copy>(fd: libc::c_int, opt: libc::c_int, mut v: T) -> std::io::Result<T> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes, the size of `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The first 64-hex-digit word in a `/proc/<pid>/cgroup` text's paths.
pub fn container_in_cgroup(cgroups: &str) -> Option<String> {
    cgroups.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        path.split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() == 64)
            .map(str::to_string)
    })
}

/// The container ID and name of a client whose process could not be looked
/// at ([`Peer::Unknown`]).
pub const UNKNOWN: &str = "unknown";

/// One daemon client: its hello line, then its lines.
fn serve_client(shared: &Shared, conn: std::os::unix::net::UnixStream, host: String) {
    let peer = match shared.cfg().identity {
        crate::config::Identity::Peer => peer_of(&conn),
        crate::config::Identity::Hello => Peer::Host,
    };
    let mut r = BufReader::new(conn);
    let mut origin = Origin {
        container_id: "socket".into(),
        container_name: "socket".into(),
        host,
        ..Default::default()
    };
    if r.fill_buf().is_ok_and(|b| b.starts_with(b"BERTH-HELLO ")) {
        let mut first = String::new();
        let _ = r.by_ref().take(MAX_HELLO as u64).read_line(&mut first);
        if !first.ends_with('\n') {
            shared.metrics.refused_clients.fetch_add(1, Relaxed);
            tracing::warn!(
                limit = MAX_HELLO,
                "a daemon client's hello line is too long; closing it"
            );
            return;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(
            first.trim_start_matches("BERTH-HELLO ").trim(),
        ) {
            if let Some(s) = v["container_id"].as_str() {
                origin.container_id = s.to_string();
            }
            origin.container_name = v["container_name"]
                .as_str()
                .unwrap_or(&origin.container_id)
                .to_string();
            if let Some(e) = v["env"].as_object() {
                origin.env = e
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
            }
        }
    }
    // The kernel's word over the client's: a hello naming another container
    // gets neither that name nor its env; an unknown client gets neither.
    match peer {
        Peer::Host => {}
        Peer::Container(id) if id == origin.container_id => {}
        Peer::Container(id) => {
            if origin.container_id != "socket" {
                tracing::warn!(claimed = %origin.container_id, peer = %id, "a daemon client claimed another container; using its own");
            }
            origin.container_name = id.clone();
            origin.env.clear();
            origin.container_id = id;
        }
        Peer::Unknown => {
            tracing::warn!(claimed = %origin.container_id, "a daemon client's process was gone before it could be looked at; its lines go as {UNKNOWN:?}");
            origin.container_name = UNKNOWN.to_string();
            origin.env.clear();
            origin.container_id = UNKNOWN.to_string();
        }
    }
    read_into(shared, &origin, "stdout", r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_is_found_in_every_engine_s_cgroup_shape() {
        let id = "0123456789abcdef".repeat(4);
        for path in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/kubepods/burstable/pod1234/{id}"),
        ] {
            let text = format!("12:pids:{path}\n0::/init.scope\n");
            assert_eq!(container_in_cgroup(&text), Some(id.clone()), "{path}");
        }
        assert_eq!(
            container_in_cgroup("12:pids:/user.slice\n0::/user.slice/session-1.scope\n"),
            None
        );
        // A colon in a path does not hide it; a 63- or 65-digit word is not an ID.
        assert_eq!(
            container_in_cgroup(&format!("1:name=systemd:/a:b/{id}\n")),
            Some(id.clone())
        );
        assert_eq!(
            container_in_cgroup(&format!("1:pids:/x/{}\n", &id[1..])),
            None
        );
        assert_eq!(container_in_cgroup(&format!("1:pids:/x/{id}0\n")), None);
    }
}
