//! The appender as a program, without its command line: the inputs, the
//! configuration (and a binary logger's fallback), the spill, metrics,
//! reload, signals, and the router until the end. `main.rs` turns the
//! command line into [`Options`] and runs [`run`], or the binary logger's
//! supervisor ([`crate::supervise`]).

use crate::config::{self, Config, ConfigError};
use crate::input::{self, bundle_env, hostname, inherited};
use crate::record::Origin;
use crate::router::{self, Shared};
use crate::spill::{Recovered, Spill, SpillError};
use crate::{metrics, reload};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--stdin`.
    pub stdin: bool,
    /// `--name`.
    pub name: Option<String>,
    /// `--listen` (empty: the configuration's socket).
    pub listen: Option<PathBuf>,
    /// `--spill-dir`.
    pub spill_dir: Option<PathBuf>,
    /// `--drain-seconds`.
    pub drain_seconds: Option<u64>,
    /// containerd's binary logger URI query, as `KEY VALUE` arguments.
    pub pairs: Vec<String>,
}

impl Options {
    /// True when a containerd shim started it as a binary logger: the
    /// container's output is on fds 3 and 4, and it must be read to the
    /// end whatever happens.
    pub fn binary_logger(&self) -> bool {
        !self.stdin && self.listen.is_none() && std::env::var_os("CONTAINER_ID").is_some()
    }
}

/// Why the appender could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A binary logger argument without its value.
    #[error("argument {0:?} has no value (binary logger arguments come as KEY VALUE)")]
    OddPair(String),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Signal handling could not be set up.
    #[error("cannot catch SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    /// An input could not be started.
    #[error("cannot read {what}: {source}")]
    Input {
        /// Which input.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon socket.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No mode asked for, and not started by containerd.
    #[error("not started by containerd (no CONTAINER_ID): use --stdin or --listen, see --help")]
    NotContainerd,
    /// Started as a binary logger without the container's output.
    #[error("binary logger mode needs the container's stdout on fd 3 and stderr on fd 4")]
    NoOutputFds,
    /// A source name that cannot name a directory.
    #[error("the source name {name:?} cannot name a spill directory under {dir}: give --name another name")]
    SourceName {
        /// The name.
        name: String,
        /// The spill root.
        dir: PathBuf,
    },
    /// The spill.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// The metrics listener.
    #[error("metrics.listen {listen}: {source}")]
    Metrics {
        /// The address.
        listen: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Kafka producer.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A source name as a directory name.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The counters for node_exporter's textfile collector.
#[derive(Clone)]
struct Textfile {
    dir: PathBuf,
    stem: String,
    source: String,
}

impl Textfile {
    fn write(&self, m: &metrics::Metrics) {
        if let Err(e) = metrics::write_textfile(m, &self.dir, &self.stem, &self.source) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the metrics textfile");
        }
    }

    /// Writes the file now and every 10 s until `shared.stop`.
    fn spawn(&self, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
        self.write(&shared.metrics);
        let me = self.clone();
        std::thread::spawn(move || loop {
            for _ in 0..100 {
                if shared.stop.load(Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            me.write(&shared.metrics);
        })
    }

    /// Removes the file: the counters end with the process.
    fn remove(&self) {
        let _ = std::fs::remove_file(metrics::textfile_path(&self.dir, &self.stem));
    }
}

/// What opening a spill gives.
type Opened = Result<(Spill, Recovered), SpillError>;

/// Moves the records of every unlocked `<safe>.<pid>` spill directory under
/// `root` into `spill`, counting what cannot be kept as dropped.
fn adopt_leftovers(
    spill: &mut Spill,
    root: &Path,
    safe: &str,
    open: &dyn Fn(&Path) -> Opened,
    shared: &router::Shared,
) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("{safe}.");
    let mut found: Vec<std::path::PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    for d in found {
        match open(&d) {
            Ok((side, rec)) => {
                let (moved, lost) = spill.adopt(side);
                shared
                    .metrics
                    .dropped_corrupt
                    .fetch_add(lost + rec.torn, Relaxed);
                tracing::info!(dir = %d.display(), moved, lost, "adopted a spill left beside this one");
            }
            Err(SpillError::Locked(_)) => {
                tracing::debug!(dir = %d.display(), "a spill beside this one is still in use");
            }
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot open a spill left beside this one")
            }
        }
    }
}

/// After a failure with the container's pipes open: reads them to the end,
/// discarding and counting, so the container never blocks or gets SIGPIPE.
fn discard_until_eof(shared: &Shared, e: &AppError) {
    tracing::error!("{e}: reading and discarding this container's output until it ends, so the container never blocks or gets SIGPIPE");
    loop {
        let b = shared.queue.pop_batch(4096, Duration::from_millis(100));
        shared
            .metrics
            .dropped_failed
            .fetch_add(b.len() as u64, Relaxed);
        let done = shared.inputs_open.load(Relaxed) == 0 && shared.queue.depth().0 == 0;
        if done || shared.stop.load(Relaxed) {
            break;
        }
    }
    tracing::error!(
        discarded = shared.metrics.dropped_failed.load(Relaxed),
        "the container's output ended"
    );
}

/// How long a binary logger keeps delivering after SIGTERM (containerd
/// sends SIGKILL after 12 s).
const BINARY_LOGGER_GRACE: Duration = Duration::from_secs(8);

/// Runs the appender until its inputs end (or a signal).
pub fn run(cli: Options) -> Result<(), AppError> {
    let mut pairs = std::collections::BTreeMap::new();
    for kv in cli.pairs.chunks(2) {
        match kv {
            [k, v] => {
                pairs.insert(k.clone(), v.clone());
            }
            [k] => return Err(AppError::OddPair(k.clone())),
            _ => {}
        }
    }
    let path = cli
        .config
        .clone()
        .or_else(|| pairs.get("config").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    // Started by a containerd shim: the container's output is on fds 3
    // and 4, and this process must read it to the end whatever happens.
    let binary_logger = cli.binary_logger();
    let mut degraded = false;
    let cfg = if path.exists() || cli.config.is_some() || pairs.contains_key("config") {
        match Config::load(&path) {
            Ok(c) => c,
            // Exiting now would leave the container writing into a pipe
            // nobody reads: SIGPIPE or EPIPE on its first line.
            Err(e) if binary_logger => {
                tracing::error!(error = %e, "the configuration cannot be loaded: keeping this container's output in the spill under the built-in defaults, sending nothing, until a valid file is in place");
                degraded = true;
                Config::fallback()
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        tracing::info!(path = %path.display(), "no configuration file; using the defaults");
        Config::default()
    };
    let mut cfg = cfg;
    if let Some(d) = cli
        .spill_dir
        .clone()
        .or_else(|| pairs.get("spill_dir").map(PathBuf::from))
    {
        cfg.spill.dir = d;
    }
    // SIGTERM and SIGINT stop the appender (caught from here on; a thread
    // below waits for them); a closed pipe is an error, not a death.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .map_err(AppError::Signals)?;
    // SAFETY: setting SIGPIPE's disposition to ignore.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let shared = Shared::new(cfg.clone());
    let s2 = shared.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if binary_logger && s2.finish_by.lock().is_ok_and(|f| f.is_none()) {
                // containerd sends SIGTERM when the task is deleted and
                // SIGKILL 12 s later: the container's last lines are still
                // in the pipe. Read them, deliver what can be, spill the
                // rest.
                tracing::info!(
                    signal = sig,
                    grace_secs = BINARY_LOGGER_GRACE.as_secs(),
                    "finishing"
                );
                if let Ok(mut f) = s2.finish_by.lock() {
                    *f = Some(std::time::Instant::now() + BINARY_LOGGER_GRACE);
                }
            } else {
                tracing::info!(signal = sig, "stopping");
                s2.stop.store(true, Relaxed);
                s2.queue.wake();
            }
        }
    });
    let host = hostname();
    let mut ready_fd = None;
    let source = if cli.stdin {
        let name = cli.name.clone().unwrap_or_else(|| "stdin".into());
        let origin = Arc::new(Origin {
            container_id: name.clone(),
            container_name: name.clone(),
            host,
            env: std::env::vars().collect(),
            ..Default::default()
        });
        input::spawn_reader(shared.clone(), origin, "stdout", std::io::stdin()).map_err(
            |source| AppError::Input {
                what: "stdin",
                source,
            },
        )?;
        name
    } else if let Some(sock) = &cli.listen {
        let sock = if sock.as_os_str().is_empty() {
            cfg.listen_socket.clone()
        } else {
            sock.clone()
        };
        input::serve_socket(shared.clone(), &sock).map_err(|source| AppError::Listen {
            path: sock.clone(),
            source,
        })?;
        tracing::info!(socket = %sock.display(), "listening");
        "daemon".into()
    } else {
        let id = std::env::var("CONTAINER_ID").map_err(|_| AppError::NotContainerd)?;
        let namespace = std::env::var("CONTAINER_NAMESPACE").unwrap_or_default();
        let origin = Arc::new(Origin {
            container_name: pairs.get("name").cloned().unwrap_or_else(|| id.clone()),
            container_id: id.clone(),
            namespace: namespace.clone(),
            host,
            env: bundle_env(),
            labels: Default::default(),
        });
        let out = inherited(3);
        let err = inherited(4);
        if out.is_none() && err.is_none() {
            return Err(AppError::NoOutputFds);
        }
        if let Some(f) = out {
            input::spawn_reader(shared.clone(), origin.clone(), "stdout", f).map_err(|source| {
                AppError::Input {
                    what: "stdout",
                    source,
                }
            })?;
        }
        if let Some(f) = err {
            input::spawn_reader(shared.clone(), origin, "stderr", f).map_err(|source| {
                AppError::Input {
                    what: "stderr",
                    source,
                }
            })?;
        }
        ready_fd = inherited(5);
        if namespace.is_empty() {
            id
        } else {
            format!("{namespace}-{id}")
        }
    };
    let served = serve(Started {
        cfg: &cfg,
        shared: &shared,
        source: &source,
        path: &path,
        watch: path.exists() || degraded,
        overrides: config::Overrides::default(),
        one_per_container: binary_logger,
        ready_fd,
        drain_seconds: cli.drain_seconds,
        side: 0,
    });
    match served {
        // The inputs are open: read them to the end, or the container
        // blocks or dies of SIGPIPE.
        Err(e) if binary_logger => {
            discard_until_eof(&shared, &e);
            Err(e)
        }
        r => r,
    }
}

/// What [`prepare`] starts from: the inputs are reading.
pub(crate) struct Started<'a> {
    pub cfg: &'a Config,
    pub shared: &'a Arc<Shared>,
    /// Names the spill directory and the metrics textfile.
    pub source: &'a str,
    pub path: &'a PathBuf,
    /// Watch `path` for changes (it exists, or a binary logger waits for a
    /// valid one).
    pub watch: bool,
    /// Applied to `path` on every reload.
    pub overrides: config::Overrides,
    /// One of many appenders on the host (a binary logger, a Docker
    /// plugin's container): no metrics listener.
    pub one_per_container: bool,
    pub ready_fd: Option<std::fs::File>,
    pub drain_seconds: Option<u64>,
    /// Makes a spill beside a locked one unique among the pipelines of this
    /// one process (the Docker plugin runs many).
    pub side: u64,
}

/// A source's spill, metrics and reload, ready to route.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    /// The source it serves (named in its last log line).
    source: String,
    spill: Spill,
    /// The metrics textfile and its writer.
    textfile: Option<(Textfile, std::thread::JoinHandle<()>)>,
    _watcher: Option<notify::RecommendedWatcher>,
    drain: Duration,
}

/// Opens the spill, starts metrics and reload, says ready, and runs the
/// router until the end.
fn serve(st: Started<'_>) -> Result<(), AppError> {
    prepare(st)?.run()
}

/// Opens the spill, starts metrics and reload, and says ready.
pub(crate) fn prepare(st: Started<'_>) -> Result<Pipeline, AppError> {
    let Started {
        cfg,
        shared,
        source,
        path,
        watch,
        overrides,
        one_per_container,
        ready_fd,
        drain_seconds,
        side,
    } = st;
    let safe = sanitize(source);
    if matches!(safe.as_str(), "" | "." | "..") {
        return Err(AppError::SourceName {
            name: source.to_string(),
            dir: cfg.spill.dir.clone(),
        });
    }
    let mut dir = cfg.spill.dir.join(&safe);
    let open = |d: &Path| {
        Spill::open(
            d,
            cfg.spill.max_bytes,
            cfg.spill.segment_bytes,
            cfg.spill.when_full,
        )
    };
    let (mut spill, found) = match open(&dir) {
        // The previous appender of this container is still draining (a
        // restarted container): never keep the container from starting;
        // spill beside it instead.
        Err(SpillError::Locked(_)) => {
            let busy = dir.clone();
            dir = cfg.spill.dir.join(format!(
                "{}.{}{side:03}",
                sanitize(source),
                std::process::id()
            ));
            tracing::warn!(busy = %busy.display(), using = %dir.display(), "spill directory in use by another appender");
            open(&dir)?
        }
        r => r?,
    };
    spill.set_host_cap(cfg.spill.host_max_bytes);
    if found.records > 0 || found.torn > 0 {
        tracing::info!(records = found.records, torn = found.torn, dir = %dir.display(), "replaying the spill left by a previous run");
    }
    // Spills left beside this one (`<name>.<pid>`, by an appender that found
    // it locked) are taken over once no appender holds them.
    if dir == cfg.spill.dir.join(&safe) {
        adopt_leftovers(&mut spill, &cfg.spill.dir, &safe, &open, shared);
    }
    shared
        .metrics
        .dropped_corrupt
        .fetch_add(found.torn, Relaxed);
    match &cfg.metrics.listen {
        // One appender per container: the second would find the port
        // taken and keep its container from starting.
        Some(l) if one_per_container => {
            tracing::info!(listen = %l, "metrics.listen is not used with one appender per container (binary logger, Docker plugin); set metrics.textfile_dir")
        }
        Some(l) => {
            metrics::serve(l, shared.metrics.clone()).map_err(|source| AppError::Metrics {
                listen: l.clone(),
                source,
            })?;
        }
        None => {}
    }
    let textfile = cfg.metrics.textfile_dir.clone().map(|d| {
        let t = Textfile {
            dir: d,
            stem: safe.clone(),
            source: source.to_string(),
        };
        let writer = t.spawn(shared.clone());
        (t, writer)
    });
    let watcher = if watch {
        reload::watch(shared.clone(), path.clone(), overrides)
            .map_err(
                |e| tracing::warn!(error = %e, "cannot watch the configuration; no hot reload"),
            )
            .ok()
    } else {
        None
    };
    // Ready: containerd's shim waits for fd 5 to close.
    drop(ready_fd);
    let drain = Duration::from_secs(
        drain_seconds.unwrap_or(u64::from(cfg.kafka.message_timeout_ms) / 1000 + 5),
    );
    Ok(Pipeline {
        shared: shared.clone(),
        source: source.to_string(),
        spill,
        textfile,
        _watcher: watcher,
        drain,
    })
}

impl Pipeline {
    /// Routes until the inputs are closed and all is delivered, the drain
    /// time passed, or a stop.
    pub(crate) fn run(self) -> Result<(), AppError> {
        let Pipeline {
            shared,
            source,
            spill,
            textfile,
            _watcher,
            drain,
        } = self;
        router::run(shared.clone(), spill, drain)?;
        // The textfile writer ends with the pipeline (the Docker plugin
        // outlives it), then its file goes.
        shared.stop.store(true, Relaxed);
        if let Some((t, writer)) = textfile {
            let _ = writer.join();
            t.remove();
        }
        log_done(&shared, &source);
        Ok(())
    }
}

/// The counters at the end.
fn log_done(shared: &Shared, source: &str) {
    let m = &shared.metrics;
    tracing::info!(
        source,
        received = m.received.load(Relaxed),
        sent = m.sent.load(Relaxed),
        replayed = m.replayed.load(Relaxed),
        spilled = m.spilled.load(Relaxed),
        dropped = m.dropped(),
        dead_lettered = m.dead_lettered_total(),
        "done"
    );
}
