//! `berth-log-appender`: the command line. See `--help` and the README.

use berth_log_appender::{app, config, docker, supervise};
use clap::Parser;
use std::path::PathBuf;

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
/// * `berth-log-appender --docker-plugin [SOCKET]`: Docker's logging plugin
///   (`docker run --log-driver berth`), run by dockerd from the plugin's
///   rootfs (see docs/install.md); one pipeline per container, `--log-opt`
///   config, topic, partition-key, delivery and ring-size, and `docker logs`.
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
    #[arg(long, conflicts_with_all = ["listen", "docker_plugin"])]
    stdin: bool,
    /// The container name for --stdin (also names its spill directory).
    #[arg(long)]
    name: Option<String>,
    /// Daemon mode: listen on a unix socket (default: `listen_socket` from the config).
    #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "docker_plugin")]
    listen: Option<PathBuf>,
    /// Docker logging plugin mode: serve Docker's plugin API on a unix
    /// socket (default: /run/docker/plugins/berth.sock, the plugin's own).
    #[arg(long, num_args = 0..=1, default_missing_value = docker::plugin::DEFAULT_SOCKET)]
    docker_plugin: Option<PathBuf>,
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

fn main() {
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let cli = Cli::parse();
    if let Some(socket) = &cli.docker_plugin {
        let o = docker::plugin::Options {
            socket: socket.clone(),
            config: cli
                .config
                .clone()
                .unwrap_or_else(|| config::DEFAULT_PATH.into()),
        };
        if let Err(e) = docker::plugin::run(o, cli.config.is_some()) {
            tracing::error!("{e}");
            std::process::exit(1);
        }
        return;
    }
    // A binary logger runs as a supervisor holding the container's pipes
    // and a worker doing the work (see `supervise`).
    if app::Options::from(&cli).binary_logger() && !supervise::is_worker() {
        std::process::exit(supervise::supervise());
    }
    if let Err(e) = app::run(cli.into()) {
        tracing::error!("{e}");
        eprintln!("berth-log-appender: {e}");
        std::process::exit(1);
    }
}

impl From<&Cli> for app::Options {
    fn from(c: &Cli) -> app::Options {
        app::Options {
            config: c.config.clone(),
            stdin: c.stdin,
            name: c.name.clone(),
            listen: c.listen.clone(),
            spill_dir: c.spill_dir.clone(),
            drain_seconds: c.drain_seconds,
            pairs: c.pairs.clone(),
        }
    }
}

impl From<Cli> for app::Options {
    fn from(c: Cli) -> app::Options {
        app::Options::from(&c)
    }
}
