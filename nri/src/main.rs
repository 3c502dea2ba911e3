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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_NRI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (cfg, _) = match berth_runtime::config::RuntimeConfig::load(args.berth_config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-nri: {e}");
            std::process::exit(2);
        }
    };
    tracing::warn!("sysctl policy is not applied through NRI 0.8 (containerd 1.7): use berth-runtime as the runtime for it");
    let mut handler = Berth::new(cfg, args.runc_root);
    loop {
        let why = plugin::serve(&args.socket, &args.name, &args.index, &mut handler);
        tracing::warn!("disconnected from the runtime ({why}); reconnecting in 1 s");
        std::thread::sleep(Duration::from_secs(1));
    }
}
