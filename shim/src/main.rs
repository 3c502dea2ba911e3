//! `berth-runtime`: the thin CLI over the `berth_runtime` library.

mod cli;

use berth_runtime::config::RuntimeConfig;
use berth_runtime::delegate::{self, Records};
use berth_runtime::logging::{self, Format};
use berth_runtime::rewrite;
use clap::Parser;
use cli::{Cli, LogFormat, Verb};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Spec version Berth reads and writes (as runc 1.1 reports it).
const SPEC_VERSION: &str = "1.0.2-dev";

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = Cli::parse();
    if cli.version {
        print_version(cli.berth_config.as_deref());
        return;
    }
    let Some(verb) = cli.verb.as_ref() else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        std::process::exit(1);
    };
    let format = match cli.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let to_file = logging::init(cli.log.as_deref(), format, cli.debug);
    let err = match run(&cli, verb, &args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = format!("berth: {err:#}");
    tracing::error!("{msg}");
    if to_file {
        eprintln!("{msg}");
    }
    std::process::exit(1);
}

enum Never {}

/// Does Berth's part of `verb`, then becomes the delegate. Returns only on error.
fn run(cli: &Cli, verb: &Verb, args: &[OsString]) -> anyhow::Result<Never> {
    let (cfg, cfg_path) = RuntimeConfig::load(cli.berth_config.as_deref())?;
    tracing::debug!(config = ?cfg_path, "berth-runtime {}", env!("CARGO_PKG_VERSION"));
    let records = Records::new(&cfg, cli.root.as_deref());
    let delegate = match verb {
        Verb::Create(c) => prepare(&cfg, &records, c.bundle.as_deref(), &c.id)?,
        Verb::Run(r) => prepare(&cfg, &records, r.create.bundle.as_deref(), &r.create.id)?,
        Verb::Other(words) => {
            tracing::debug!(verb = ?words.first(), "not a verb Berth knows; passing it on");
            delegate::default_delegate(&cfg)?
        }
        other => match other.container_id().and_then(|id| records.get(id)) {
            Some(d) => d,
            None => delegate::default_delegate(&cfg)?,
        },
    };
    tracing::debug!(delegate = %delegate.display(), "handing over");
    Err(delegate::exec(&delegate, &cli::delegate_args(args)).into())
}

/// The create/run half: rewrite the bundle, pick and record the delegate.
fn prepare(
    cfg: &RuntimeConfig,
    records: &Records,
    bundle: Option<&Path>,
    id: &str,
) -> anyhow::Result<PathBuf> {
    if !delegate::valid_id(id) {
        return Err(berth_runtime::Error::ContainerId(id.into()).into());
    }
    let bundle = match bundle {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir()?,
    };
    let applied = rewrite::rewrite_bundle(&bundle, cfg)?;
    tracing::info!(container = id, applied = %applied, "config.json rewritten");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rewrite::config_path(&bundle))?)?;
    let delegate = delegate::for_new_container(
        cfg,
        berth_runtime::spec::annotation(&spec, delegate::ANNOTATION),
    )?;
    records.gc(id);
    records.put(id, &delegate)?;
    Ok(delegate)
}

fn print_version(config: Option<&Path>) {
    println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
    println!(
        "commit: {}",
        option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown")
    );
    println!("spec: {SPEC_VERSION}");
    let delegate = RuntimeConfig::load(config)
        .ok()
        .and_then(|(c, _)| delegate::default_delegate(&c).ok());
    match delegate {
        Some(d) => {
            let v = std::process::Command::new(&d)
                .arg("--version")
                .output()
                .ok();
            let first = v
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string));
            println!(
                "delegate: {} ({})",
                d.display(),
                first.unwrap_or_else(|| "version unknown".into())
            );
        }
        None => println!("delegate: none found"),
    }
}
