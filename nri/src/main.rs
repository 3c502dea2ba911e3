//! `berth-nri`: connects to containerd's NRI socket and serves Berth's
//! handler, reconnecting whenever the runtime restarts.

use berth_nri::{berth::Berth, plugin};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Berth's CPU split and CPU-count injection as a containerd NRI plugin.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// containerd's NRI socket.
    #[arg(
        long,
        env = "BERTH_NRI_SOCKET",
        default_value = "/var/run/nri/nri.sock"
    )]
    socket: PathBuf,
    /// The plugin's name.
    #[arg(long, default_value = "berth")]
    name: String,
    /// The plugin's index (two digits; plugins run in ascending order).
    #[arg(long, default_value = "10")]
    index: String,
    /// Berth's runtime configuration (default /etc/berth/runtime.toml).
    #[arg(long, env = "BERTH_RUNTIME_CONFIG")]
    berth_config: Option<PathBuf>,
    /// The runc state root of the containers (containerd's shim default for
    /// the CRI namespace).
    #[arg(long, default_value = "/run/containerd/runc/k8s.io")]
    runc_root: PathBuf,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_NRI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (cfg, _) = match berth_runtime::config::RuntimeConfig::load(args.berth_config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-nri: {e}");
            std::process::exit(2);
        }
    };
    if let Some(why) = berth_nri::kubelet::static_cpu_manager(std::path::Path::new(
        berth_nri::kubelet::CPU_MANAGER_STATE,
    )) {
        tracing::warn!("{why}: set kubelet's --cpu-manager-policy=none where Berth manages CPUs, or both will pin containers");
    }
    let mut handler = Berth::new(cfg, args.runc_root);
    // Pre-registered (started by containerd from its plugin directory): the
    // connection is the descriptor NRI_PLUGIN_SOCKET names, and the plugin
    // ends with it (containerd starts it again).
    if let Ok(fd) = std::env::var("NRI_PLUGIN_SOCKET") {
        let Some(stream) = fd.parse::<i32>().ok().filter(|fd| *fd > 2).map(|fd| {
            // SAFETY: containerd passes this descriptor, a connected unix socket, to us alone.
            unsafe { <std::os::unix::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        }) else {
            eprintln!("berth-nri: NRI_PLUGIN_SOCKET={fd:?} is not a descriptor");
            std::process::exit(2);
        };
        let name = std::env::var("NRI_PLUGIN_NAME").unwrap_or(args.name);
        let index = std::env::var("NRI_PLUGIN_IDX").unwrap_or(args.index);
        let why = plugin::serve_stream(stream, &name, &index, &mut handler);
        tracing::info!("the runtime's connection ended ({why})");
        return;
    }
    let mut failing = false;
    loop {
        let why = plugin::serve(&args.socket, &args.name, &args.index, &mut handler);
        // The first failure is worth a warning; a runtime that stays down is
        // retried every second without repeating it.
        if failing {
            tracing::debug!("still cannot reach the runtime: {why}");
        } else {
            tracing::warn!("disconnected from the runtime ({why}); reconnecting every second");
        }
        failing = !matches!(why, berth_nri::wire::WireError::Protocol(ref m) if m.contains("closed the connection"));
        std::thread::sleep(Duration::from_secs(1));
    }
}
