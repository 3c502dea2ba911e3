//! `berth-log-appender`: the command line. See `--help` and the README.

use anyhow::{bail, Context, Result};
use berth_log_appender::config::{self, Config};
use berth_log_appender::input::{self, bundle_env, hostname, inherited};
use berth_log_appender::record::Origin;
use berth_log_appender::router::{self, Shared};
use berth_log_appender::spill::Spill;
use berth_log_appender::{metrics, reload, supervise};
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Forward container logs to Kafka without ever blocking the container.
///
/// Three ways in:
///
/// * containerd's binary logger (the default when started by a shim):
///   `ctr run --log-uri 'binary:///usr/bin/berth-log-appender?config=/etc/berth/log-appender.yaml'`;
///   stdout arrives on fd 3, stderr on fd 4, fd 5 is closed once ready, the
///   URI's query pairs arrive as `KEY VALUE` arguments (`config`, `name`,
///   `spill_dir`). It runs as a supervisor holding the pipes and a worker
///   doing the work: a killed worker is replaced on the same pipes, and a
///   worker that cannot work reads the pipes to their end, so the container
///   never blocks or dies of SIGPIPE.
/// * `app | berth-log-appender --stdin --name app`
/// * `berth-log-appender --listen [SOCKET]`: a daemon reading line-framed
///   clients on a unix socket (optional first line
///   `BERTH-HELLO {"container_id": ..., "container_name": ..., "env": {...}}`).
///
/// Configuration: `/etc/berth/log-appender.yaml` (every key documented in
/// the shipped file), or `--config` / `BERTH_LOG_APPENDER_CONFIG`; a missing
/// default file means the built-in defaults. The file is watched and
/// reloaded; an invalid change is logged and ignored. Diagnostics go to
/// stderr (`BERTH_LOG` sets the level).
#[derive(Debug, Parser)]
#[command(name = "berth-log-appender", version)]
struct Cli {
    /// The YAML configuration.
    #[arg(long, env = "BERTH_LOG_APPENDER_CONFIG")]
    config: Option<PathBuf>,
    /// Read lines from stdin (until EOF).
    #[arg(long, conflicts_with = "listen")]
    stdin: bool,
    /// The container name for --stdin (also names its spill directory).
    #[arg(long)]
    name: Option<String>,
    /// Daemon mode: listen on a unix socket (default: `listen_socket` from the config).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    listen: Option<PathBuf>,
    /// The spill directory, over the configuration's `spill.dir` (a binary
    /// logger takes it as the URI pair `spill_dir`).
    #[arg(long, env = "BERTH_LOG_APPENDER_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Seconds to keep delivering after the inputs close; what is left stays
    /// in the spill for the next start. Default: kafka.message_timeout_ms + 5 s.
    #[arg(long)]
    drain_seconds: Option<u64>,
    /// containerd's binary logger passes its URI query as `KEY VALUE` pairs.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pairs: Vec<String>,
}

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

    /// Writes the file now and every 10 s until the process stops.
    fn spawn(&self, shared: Arc<Shared>) {
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
        });
    }

    /// Removes the file: the counters end with the process.
    fn remove(&self) {
        let _ = std::fs::remove_file(metrics::textfile_path(&self.dir, &self.stem));
    }
}

/// What opening a spill gives.
type Opened =
    Result<(Spill, berth_log_appender::spill::Recovered), berth_log_appender::spill::SpillError>;

/// Moves the records of every unlocked `<safe>.<pid>` spill directory under
/// `root` into `spill`, counting what cannot be kept as dropped.
fn adopt_leftovers(
    spill: &mut Spill,
    root: &std::path::Path,
    safe: &str,
    open: &dyn Fn(&std::path::Path) -> Opened,
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
            Err(berth_log_appender::spill::SpillError::Locked(_)) => {
                tracing::debug!(dir = %d.display(), "a spill beside this one is still in use");
            }
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot open a spill left beside this one")
            }
        }
    }
}

fn main() {
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let cli = Cli::parse();
    // A binary logger runs as a supervisor holding the container's pipes
    // and a worker doing the work (see `supervise`).
    if !cli.stdin
        && cli.listen.is_none()
        && std::env::var_os("CONTAINER_ID").is_some()
        && !supervise::is_worker()
    {
        std::process::exit(supervise::supervise());
    }
    if let Err(e) = run(cli) {
        tracing::error!("{e:#}");
        eprintln!("berth-log-appender: {e:#}");
        std::process::exit(1);
    }
}

/// After a failure with the container's pipes open: reads them to the end,
/// discarding and counting, so the container never blocks or gets SIGPIPE.
fn discard_until_eof(shared: &Shared, e: &anyhow::Error) {
    tracing::error!("{e:#}: reading and discarding this container's output until it ends, so the container never blocks or gets SIGPIPE");
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

fn run(cli: Cli) -> Result<()> {
    let mut pairs = std::collections::BTreeMap::new();
    for kv in cli.pairs.chunks(2) {
        match kv {
            [k, v] => {
                pairs.insert(k.clone(), v.clone());
            }
            [k] => bail!("argument {k:?} has no value (binary logger arguments come as KEY VALUE)"),
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
    let binary_logger =
        !cli.stdin && cli.listen.is_none() && std::env::var_os("CONTAINER_ID").is_some();
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
        .context("cannot catch SIGTERM and SIGINT")?;
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
        input::spawn_reader(shared.clone(), origin, "stdout", std::io::stdin())?;
        name
    } else if let Some(sock) = &cli.listen {
        let sock = if sock.as_os_str().is_empty() {
            cfg.listen_socket.clone()
        } else {
            sock.clone()
        };
        input::serve_socket(shared.clone(), &sock)
            .with_context(|| format!("cannot listen on {}", sock.display()))?;
        tracing::info!(socket = %sock.display(), "listening");
        "daemon".into()
    } else {
        let id = std::env::var("CONTAINER_ID").context(
            "not started by containerd (no CONTAINER_ID): use --stdin or --listen, see --help",
        )?;
        let namespace = std::env::var("CONTAINER_NAMESPACE").unwrap_or_default();
        let origin = Arc::new(Origin {
            container_name: pairs.get("name").cloned().unwrap_or_else(|| id.clone()),
            container_id: id.clone(),
            namespace: namespace.clone(),
            host,
            env: bundle_env(),
        });
        let out = inherited(3);
        let err = inherited(4);
        if out.is_none() && err.is_none() {
            bail!("binary logger mode needs the container's stdout on fd 3 and stderr on fd 4");
        }
        if let Some(f) = out {
            input::spawn_reader(shared.clone(), origin.clone(), "stdout", f)?;
        }
        if let Some(f) = err {
            input::spawn_reader(shared.clone(), origin, "stderr", f)?;
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
        binary_logger,
        ready_fd,
        drain_seconds: cli.drain_seconds,
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

/// What [`serve`] starts from: the inputs are reading.
struct Started<'a> {
    cfg: &'a Config,
    shared: &'a Arc<Shared>,
    source: &'a str,
    path: &'a PathBuf,
    /// Watch `path` for changes (it exists, or a binary logger waits for a
    /// valid one).
    watch: bool,
    binary_logger: bool,
    ready_fd: Option<std::fs::File>,
    drain_seconds: Option<u64>,
}

/// Opens the spill, starts metrics and reload, says ready, and runs the
/// router until the end.
fn serve(st: Started<'_>) -> Result<()> {
    let Started {
        cfg,
        shared,
        source,
        path,
        watch,
        binary_logger,
        ready_fd,
        drain_seconds,
    } = st;
    let safe = sanitize(source);
    if matches!(safe.as_str(), "" | "." | "..") {
        anyhow::bail!(
            "the source name {source:?} cannot name a spill directory under {}: give --name another name",
            cfg.spill.dir.display()
        );
    }
    let mut dir = cfg.spill.dir.join(&safe);
    let open = |d: &std::path::Path| {
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
        Err(berth_log_appender::spill::SpillError::Locked(_)) => {
            let busy = dir.clone();
            dir = cfg
                .spill
                .dir
                .join(format!("{}.{}", sanitize(source), std::process::id()));
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
        // One binary logger per container: the second would find the port
        // taken and keep its container from starting.
        Some(l) if binary_logger => {
            tracing::info!(listen = %l, "metrics.listen is not used by a binary logger (one per container); set metrics.textfile_dir")
        }
        Some(l) => {
            metrics::serve(l, shared.metrics.clone())
                .with_context(|| format!("metrics.listen {l}"))?;
        }
        None => {}
    }
    let textfile = cfg.metrics.textfile_dir.clone().map(|d| {
        let t = Textfile {
            dir: d,
            stem: safe.clone(),
            source: source.to_string(),
        };
        t.spawn(shared.clone());
        t
    });
    let _watcher = if watch {
        reload::watch(shared.clone(), path.clone())
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
    router::run(shared.clone(), spill, drain)?;
    if let Some(t) = &textfile {
        t.remove();
    }
    let m = &shared.metrics;
    tracing::info!(
        received = m.received.load(Relaxed),
        sent = m.sent.load(Relaxed),
        replayed = m.replayed.load(Relaxed),
        spilled = m.spilled.load(Relaxed),
        dropped = m.dropped(),
        dead_lettered = m.dead_lettered_total(),
        "done"
    );
    Ok(())
}
