//! `berth-cni-gc`: the command line. See `--help` and the README.

use anyhow::Result;
use berth_cni::logging::{GcEngine, HostSettings};
use berth_cni_gc::{cache, cri, gc, podman};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Run CNI 1.1 GC with the attachments the engine still uses.
///
/// Lists the live pod sandboxes from the engine's CRI API (a sandbox whose
/// network namespace is gone is not live), maps them to their attachments
/// through libcni's result cache, and calls GC on every plugin that speaks
/// CNI 1.1 of every conflist in the configuration directory, with those
/// attachments as `cni.dev/valid-attachments`. An engine that cannot be reached means no GC
/// at all. Settings: `[gc]` of /etc/berth/cni.toml (BERTH_CNI_CONFIG for
/// another file), overridden by these flags. Exit status: 0 done, 1 a
/// plugin's GC failed, 2 no GC was run.
#[derive(Debug, Parser)]
#[command(name = "berth-cni-gc", version)]
struct Cli {
    /// Where the live containers come from: `cri` (containerd, CRI-O) or
    /// `podman` (its CLI; podman with the CNI backend) [default: cri].
    #[arg(long, value_parser = parse_engine)]
    engine: Option<GcEngine>,
    /// The podman program, for `--engine podman` [default: podman].
    #[arg(long)]
    podman: Option<PathBuf>,
    /// The engine's CRI socket [default: /run/containerd/containerd.sock].
    #[arg(long, env = "BERTH_CNI_GC_CRI_SOCKET")]
    cri_socket: Option<PathBuf>,
    /// The CNI configuration directory [default: /etc/cni/net.d].
    #[arg(long)]
    conf_dir: Option<PathBuf>,
    /// A CNI plugin directory (repeat for more) [default: /opt/cni/bin].
    #[arg(long = "bin-dir")]
    bin_dirs: Vec<PathBuf>,
    /// libcni's cache directory, the engine's [default: /var/lib/cni].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep attachments cached less than this many seconds ago (a sandbox
    /// being created is not listed yet) [default: 120].
    #[arg(long)]
    grace_seconds: Option<u64>,
    /// How long to wait for the engine.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
    /// Say what would be kept; call no GC.
    #[arg(long)]
    dry_run: bool,
}

fn parse_engine(s: &str) -> Result<GcEngine, String> {
    match s {
        "cri" => Ok(GcEngine::Cri),
        "podman" => Ok(GcEngine::Podman),
        _ => Err(format!("{s:?} is not cri or podman")),
    }
}

fn main() {
    berth_cni_gc::init_logging();
    match run(Cli::parse()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("berth-cni-gc: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Ok(true) when every GC succeeded.
fn run(cli: Cli) -> Result<bool> {
    let host = HostSettings::from_env().gc;
    let engine = cli.engine.or(host.engine).unwrap_or(GcEngine::Cri);
    let socket = cli
        .cri_socket
        .or(host.cri_socket)
        .unwrap_or_else(|| "/run/containerd/containerd.sock".into());
    let conf_dir = cli
        .conf_dir
        .or(host.conf_dir)
        .unwrap_or_else(|| "/etc/cni/net.d".into());
    let bin_dirs = if cli.bin_dirs.is_empty() {
        host.bin_dirs.unwrap_or_else(|| vec!["/opt/cni/bin".into()])
    } else {
        cli.bin_dirs
    };
    let cache_dir = cli
        .cache_dir
        .or(host.cache_dir)
        .unwrap_or_else(|| "/var/lib/cni".into());
    let grace = Duration::from_secs(cli.grace_seconds.or(host.grace_seconds).unwrap_or(120));
    // Everything is read before anything is collected.
    let networks = gc::networks(&conf_dir)?;
    let sandboxes = match engine {
        GcEngine::Cri => cri::sandboxes(&socket, Duration::from_secs(cli.timeout_seconds))?,
        GcEngine::Podman => podman::containers(
            &cli.podman
                .or(host.podman)
                .unwrap_or_else(|| "podman".into()),
        )?,
    };
    let cached = cache::read(&cache_dir)?;
    gc::check_mapped(&sandboxes, &cached, &cache_dir)?;
    tracing::info!(
        sandboxes = sandboxes.len(),
        live = sandboxes.iter().filter(|s| s.network_alive()).count(),
        cached = cached.len(),
        networks = networks.len(),
        "collecting"
    );
    let mut plugins = gc::Plugins::new(bin_dirs);
    let mut all_ok = true;
    for net in &networks {
        let valid = gc::valid_for(&net.name, &sandboxes, &cached, grace);
        for o in gc::collect(net, &valid, &mut plugins, cli.dry_run) {
            match &o.result {
                Ok(what) => println!("{}\t{}\t{what}", o.network, o.plugin),
                Err(why) => {
                    all_ok = false;
                    println!("{}\t{}\tfailed: {why}", o.network, o.plugin);
                }
            }
        }
    }
    Ok(all_ok)
}
