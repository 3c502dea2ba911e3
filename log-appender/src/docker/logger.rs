//! One container's logger in the plugin: the FIFO dockerd writes, read
//! without ever waiting on Kafka or the disk; each entry goes to the
//! container's appender pipeline (its own configuration, spill and
//! metrics, exactly as a binary logger's) and to its `docker logs` ring.

use super::entry::{Frames, LogEntry};
use super::opts::{self, OptError};
use super::ring::Ring;
use crate::app::{self, AppError, Started};
use crate::config::{Config, ConfigError};
use crate::input::{hostname, lower_priority, Feed};
use crate::queue::MemQueue;
use crate::record::Origin;
use crate::router::Shared;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What dockerd tells about a container (moby's `logger.Info`; fields it
/// adds later are ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    /// The `--log-opt`s.
    #[serde(default)]
    pub config: Option<BTreeMap<String, String>>,
    /// The full container ID.
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
    /// The name, with Docker's leading `/`.
    #[serde(default)]
    pub container_name: String,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub container_env: Option<Vec<String>>,
    /// The labels.
    #[serde(default)]
    pub container_labels: Option<BTreeMap<String, String>>,
    /// The image.
    #[serde(default)]
    pub container_image_name: String,
}

impl Info {
    /// The name without Docker's leading `/`.
    pub fn name(&self) -> &str {
        self.container_name.trim_start_matches('/')
    }

    /// True for an ID that can name a directory: 1 to 64 hex digits.
    pub fn valid_id(&self) -> bool {
        (1..=64).contains(&self.container_id.len())
            && self.container_id.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Why a container's logger cannot start (returned to dockerd, which fails
/// the container's start with it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad `--log-opt`.
    #[error(transparent)]
    Opt(#[from] OptError),
    /// The configuration file the options name, or the options applied to it.
    #[error("log-opt config: {0}")]
    Config(#[from] ConfigError),
    /// No usable container ID.
    #[error("dockerd sent the container ID {0:?}")]
    Id(String),
    /// The spill, metrics or the producer.
    #[error(transparent)]
    App(#[from] AppError),
    /// The ring or the FIFO.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was opened.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The plugin-wide settings a logger needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The plugin's configuration file (a container's default).
    pub config_path: PathBuf,
    /// `docker.state_dir`.
    pub state_dir: PathBuf,
}

impl Ctx {
    /// The ring of container `id`.
    pub fn ring_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("ring").join(id)
    }

    /// Where dockerd's `file` is: it names it in the plugin's root.
    pub fn fifo(&self, file: &str) -> PathBuf {
        PathBuf::from(file)
    }
}

/// A running logger.
pub struct Logger {
    /// The container.
    pub info: Info,
    /// Its configuration file (the plugin reloads it on change).
    pub config: PathBuf,
    /// What its options change in that file.
    pub overrides: crate::config::Overrides,
    /// Its pipeline's state (counters, stop).
    pub shared: Arc<Shared>,
    /// Set by StopLogging: read what is left, then end at EOF.
    stopping: Arc<AtomicBool>,
    /// Set when the plugin stops: end now; the FIFO keeps the rest for the
    /// next plugin.
    halt: Arc<AtomicBool>,
    /// Reads of the FIFO the ring could not keep up with (their entries
    /// are missing from `docker logs`, not from Kafka).
    pub ring_dropped: Arc<AtomicU64>,
    /// Taken up from the state a previous plugin left (not started by
    /// dockerd in this plugin's life).
    pub taken_up: bool,
    reader: Option<JoinHandle<()>>,
    pipeline: Option<JoinHandle<()>>,
}

/// Counter for side spill names: several loggers of one container may run
/// in this one process (a stopped container's `docker logs`).
static SIDE: AtomicU64 = AtomicU64::new(0);

/// The container's configuration: its `config` file (or the plugin's), with
/// its options applied.
pub fn container_config(ctx: &Ctx, o: &opts::LogOpts) -> Result<(Config, PathBuf), StartError> {
    let path = o.config.clone().unwrap_or_else(|| ctx.config_path.clone());
    let base = Config::load_or_default(&path, o.config.is_some())?;
    Ok((o.overrides.apply(base)?, path))
}

impl Logger {
    /// Starts logging `file` (a FIFO dockerd writes) for `info`.
    pub fn start(ctx: &Ctx, file: &str, info: Info) -> Result<Logger, StartError> {
        if !info.valid_id() {
            return Err(StartError::Id(info.container_id.clone()));
        }
        let o = opts::parse(&info.config.clone().unwrap_or_default())?;
        let (cfg, path) = container_config(ctx, &o)?;
        let ring_bytes = o.ring_bytes.unwrap_or(cfg.docker.ring_bytes);
        let ring_dir = ctx.ring_dir(&info.container_id);
        let mut ring = Ring::open(&ring_dir, ring_bytes).map_err(|source| StartError::Io {
            what: "the docker logs ring",
            path: ring_dir.clone(),
            source,
        })?;
        let fifo_path = ctx.fifo(file);
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .map_err(|source| StartError::Io {
                what: "the log FIFO",
                path: fifo_path.clone(),
                source,
            })?;
        let window = widen(&fifo);
        let origin = Arc::new(Origin {
            container_id: info.container_id.clone(),
            container_name: info.name().to_string(),
            namespace: String::new(),
            host: hostname(),
            env: info
                .container_env
                .iter()
                .flatten()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: info.container_labels.clone().unwrap_or_default(),
        });
        let shared = Shared::new(cfg.clone());
        let source = format!("docker-{}", info.container_id);
        let pipeline = app::prepare(Started {
            cfg: &cfg,
            shared: &shared,
            source: &source,
            path: &path,
            // One watcher for the whole plugin (`plugin`): inotify instances
            // are few (128 per user by default).
            watch: false,
            overrides: o.overrides.clone(),
            one_per_container: true,
            ready_fd: None,
            drain_seconds: None,
            side: SIDE.fetch_add(1, Relaxed),
        })?;
        let io = |what, e| StartError::Io {
            what,
            path: fifo_path.clone(),
            source: e,
        };
        let nice = cfg.docker.worker_nice;
        let out = Feed::start(shared.clone(), origin.clone(), "stdout", nice)
            .map_err(|e| io("a reader thread for", e))?;
        let err = Feed::start(shared.clone(), origin, "stderr", nice)
            .map_err(|e| io("a reader thread for", e))?;
        let ring_dropped = Arc::new(AtomicU64::new(0));
        // The ring is written on its own thread: a slow disk never holds the
        // FIFO; what it cannot keep up with is dropped from the ring only.
        let ring_q: Arc<MemQueue<Vec<u8>>> = Arc::new(MemQueue::new(RING_QUEUE_BYTES));
        let ring_open = Arc::new(AtomicBool::new(true));
        let ring_thread = {
            let (q, open) = (ring_q.clone(), ring_open.clone());
            std::thread::Builder::new()
                .name("ring".into())
                .spawn(move || {
                    lower_priority(nice);
                    write_ring(&mut ring, &q, &open)
                })
                .map_err(|e| io("a ring thread for", e))?
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let halt = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stopping, halt, dropped) = (stopping.clone(), halt.clone(), ring_dropped.clone());
            let id = info.container_id.clone();
            std::thread::Builder::new()
                .name("fifo".into())
                .spawn(move || {
                    let to = Outputs {
                        feeds: [out, err],
                        ring: &ring_q,
                        ring_dropped: &dropped,
                    };
                    read_fifo(fifo, to, window, &stopping, &halt);
                    ring_open.store(false, Relaxed);
                    ring_q.wake();
                    let _ = ring_thread.join();
                    tracing::debug!(container = %id, "log FIFO closed");
                })
                .map_err(|e| io("a FIFO thread for", e))?
        };
        let name = info.name().to_string();
        let pipeline = std::thread::Builder::new()
            .name("router".into())
            .spawn(move || {
                // librdkafka's threads, started from here, inherit it.
                lower_priority(nice);
                if let Err(e) = pipeline.run() {
                    tracing::error!(container = %name, error = %e, "the container's pipeline failed; its lines are read and dropped (counted) from now on");
                }
            })
            .map_err(|e| io("a router thread for", e))?;
        tracing::info!(container = %info.name(), id = %info.container_id, file, "logging");
        Ok(Logger {
            info,
            config: path,
            overrides: o.overrides,
            shared,
            stopping,
            halt,
            ring_dropped,
            taken_up: false,
            reader: Some(reader),
            pipeline: Some(pipeline),
        })
    }

    /// dockerd is done with the container (it closes the FIFO next): read
    /// to the end, deliver, and let the pipeline end on its own.
    pub fn stop(mut self) {
        self.stopping.store(true, Relaxed);
        std::thread::spawn(move || self.join());
    }

    /// The plugin stops: stop reading now (what is in the FIFO stays there
    /// for the next plugin), deliver for up to `grace`, keep the rest in
    /// the spill.
    pub fn halt(&self, grace: Duration) {
        if let Ok(mut f) = self.shared.finish_by.lock() {
            *f = Some(Instant::now() + grace);
        }
        self.halt.store(true, Relaxed);
        self.shared.queue.wake();
    }

    /// Waits for the reader and the pipeline to end.
    pub fn join(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(p) = self.pipeline.take() {
            let _ = p.join();
        }
    }
}

/// The FIFO's buffer the plugin asks for: 10 ms at 100 MB/s, so that the
/// reader can take what dockerd wrote in batches (a read every few
/// milliseconds, not one per line) while dockerd never finds it full.
const FIFO_BYTES: libc::c_int = 1 << 20;

/// Grows the FIFO's buffer (to at most `/proc/sys/fs/pipe-max-size`, and
/// less once the user's pipes hold `pipe-user-pages-soft`) and returns how
/// long the reader may let it fill after a read: 40 % of the time it lasts
/// at 100 MB/s (4 ms for 1 MiB; a quarter of a millisecond for the default
/// 64 KiB).
fn widen(fifo: &std::fs::File) -> Duration {
    // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ on a FIFO we hold open.
    let size = unsafe {
        if libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, FIFO_BYTES) < 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot grow the log FIFO's buffer");
        }
        libc::fcntl(fifo.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    let size = u64::try_from(size).unwrap_or(0);
    Duration::from_micros(size * 4 / 1000)
}

/// Entries read but not yet in the ring, at most.
const RING_QUEUE_BYTES: u64 = 8 << 20;

/// Writes what the reader queued into the ring, many entries per write,
/// until the reader is done and the queue empty.
fn write_ring(ring: &mut Ring, q: &MemQueue<Vec<u8>>, open: &AtomicBool) {
    let mut warned = false;
    loop {
        let batch = q.pop_batch(4096, Duration::from_millis(100));
        if batch.is_empty() {
            if !open.load(Relaxed) && q.depth().0 == 0 {
                return;
            }
            continue;
        }
        if let Err(e) = ring.append(&batch.concat()) {
            if !warned {
                tracing::warn!(error = %e, "cannot write the docker logs ring; docker logs will miss lines");
                warned = true;
            }
        }
    }
}

/// Where the FIFO reader puts what it reads.
struct Outputs<'a> {
    /// stdout's and stderr's way into the pipeline.
    feeds: [Feed; 2],
    /// The ring writer's queue.
    ring: &'a MemQueue<Vec<u8>>,
    /// Reads the ring could not keep up with.
    ring_dropped: &'a AtomicU64,
}

/// How long a stopped logger waits for dockerd to close the FIFO.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Reads frames from the FIFO until EOF (after StopLogging, or dockerd
/// closing it), or a halt.
fn read_fifo(
    fifo: std::fs::File,
    to: Outputs<'_>,
    window: Duration,
    stopping: &AtomicBool,
    halt: &AtomicBool,
) {
    let Outputs {
        mut feeds,
        ring,
        ring_dropped,
    } = to;
    use std::io::Read;
    let mut fifo = fifo;
    let mut frames = Frames::default();
    let mut buf = vec![0u8; FIFO_BYTES as usize];
    let mut stop_seen: Option<Instant> = None;
    let mut bad = false;
    loop {
        if halt.load(Relaxed) {
            return;
        }
        if stopping.load(Relaxed) && stop_seen.is_none() {
            stop_seen = Some(Instant::now());
        }
        let mut pfd = libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
        // Before dockerd opens its end, poll reports nothing and read()
        // says 0: only a hang-up, or StopLogging, makes 0 the end.
        let may_end = pfd.revents & libc::POLLHUP != 0 || stop_seen.is_some();
        if ready == 0 && !may_end {
            continue;
        }
        match fifo.read(&mut buf) {
            Ok(0) if may_end => return,
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => {
                frames.push(&buf[..n]);
                let mut whole = Vec::with_capacity(n);
                // One push per stream per read, not one per entry.
                let mut bytes: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
                loop {
                    match frames.next_entry() {
                        Ok(Some((e, raw))) => {
                            whole.extend_from_slice(raw);
                            add(&mut bytes, e);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            if !bad {
                                tracing::error!(error = %e, "the log FIFO is not a Docker log stream; discarding it");
                                bad = true;
                            }
                            frames = Frames::default();
                            break;
                        }
                    }
                }
                for (f, b) in feeds.iter_mut().zip(bytes) {
                    if !b.is_empty() {
                        f.push(b);
                    }
                }
                if !whole.is_empty() && ring.try_push(whole).is_err() {
                    ring_dropped.fetch_add(1, Relaxed);
                }
                if n < buf.len() && !window.is_zero() {
                    // Drained: let more gather before the next read.
                    std::thread::sleep(window);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop_seen.is_some_and(|t| t.elapsed() > STOP_WAIT) {
                    tracing::warn!("dockerd did not close the log FIFO after StopLogging; ending");
                    return;
                }
                if ready == 0 {
                    continue;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(error = %e, "reading the log FIFO failed; ending");
                return;
            }
        }
    }
}

/// Adds an entry's bytes to its stream's: the line and, unless dockerd cut
/// it (partial), its newline.
fn add(bytes: &mut [Vec<u8>; 2], e: LogEntry) {
    let b = &mut bytes[usize::from(e.source == "stderr")];
    b.extend_from_slice(&e.line);
    if !e.partial {
        b.push(b'\n');
    }
}

/// The state file of a FIFO dockerd asked to log: kept until StopLogging,
/// so a restarted plugin takes the container up again.
pub fn active_path(ctx: &Ctx, file: &str) -> PathBuf {
    let base = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ctx.state_dir.join("active").join(format!("{base}.json"))
}

use std::os::unix::fs::OpenOptionsExt;
