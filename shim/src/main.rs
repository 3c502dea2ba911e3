//! `berth-runtime`: the thin CLI over the `berth_runtime` library.

mod cli;

use berth_runtime::config::RuntimeConfig;
use berth_runtime::cpus;
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
    let root = cli.root.as_deref();
    let records = Records::new(&cfg, root);
    let mut args = cli::delegate_args(args);
    let delegate = match verb {
        Verb::Create(c) => prepare(&cfg, &records, root, c.bundle.as_deref(), &c.id)?,
        Verb::Run(r) => prepare(
            &cfg,
            &records,
            root,
            r.create.bundle.as_deref(),
            &r.create.id,
        )?,
        Verb::Cpus { json, gc } => {
            let v = cpus::ops::status(&cfg, *gc)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", cpus::ops::format_status(&v));
            }
            std::process::exit(0);
        }
        Verb::Other(words) => {
            tracing::debug!(verb = ?words.first(), "not a verb Berth knows; passing it on");
            delegate::default_delegate(&cfg)?
        }
        other => match other.container_id().and_then(|id| records.get(id)) {
            Some(d) => d,
            None => delegate::default_delegate(&cfg)?,
        },
    };
    let planned = |id: &str| cfg.cpus.enabled && cpus::ops::has_entry(&cfg, root, id);
    let holds = |id: &str| cfg.cpus.enabled && cpus::ops::holds_capacity(&cfg, root, id);
    match verb {
        // The allocation outlives the container unless released here: run the
        // delegate as a child, then release on success (exit code passed on).
        // (A foreground `run` still execs, so signals reach the delegate as
        // they would reach runc; its allocation goes at the next GC.)
        Verb::Delete { id, .. } if holds(id) => {
            finish_then_release(&cfg, root, id, &delegate, &args)
        }
        Verb::Update(u) if planned(&u.id) => {
            if let Some(src) = u.resources.as_deref() {
                let text = if src == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(src)?
                };
                let mut res: serde_json::Value = serde_json::from_str(&text)?;
                cpus::ops::replan(&cfg, root, &u.id, &mut res)?;
                let path = memfd_with(&serde_json::to_vec(&res)?)?;
                replace_value(&mut args, "--resources", "-r", &path);
            }
        }
        _ => {}
    }
    tracing::debug!(delegate = %delegate.display(), "handing over");
    Err(delegate::exec(&delegate, &args).into())
}

fn finish_then_release(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    id: &str,
    delegate: &Path,
    args: &[OsString],
) -> ! {
    let status = std::process::Command::new(delegate).args(args).status();
    let code = match status {
        Ok(s) => {
            if s.success() {
                if let Err(e) = cpus::ops::release(cfg, root, id) {
                    tracing::warn!(
                        container = id,
                        "cannot release the CPU allocation (GC will): {e}"
                    );
                }
            }
            s.code().unwrap_or(1)
        }
        Err(e) => {
            tracing::error!("berth: cannot run {}: {e}", delegate.display());
            1
        }
    };
    std::process::exit(code);
}

/// An in-memory file holding `bytes`, as a path the delegate can open after exec.
fn memfd_with(bytes: &[u8]) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a static name; no CLOEXEC, so the fd survives exec.
    let fd = unsafe { libc::memfd_create(c"berth-resources".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh descriptor we own; into_raw_fd keeps it open for the delegate.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes)?;
    let _ = std::os::fd::IntoRawFd::into_raw_fd(f);
    Ok(format!("/proc/self/fd/{fd}"))
}

/// Replaces the value of flag `long`/`short` (as `--flag V` or `--flag=V`) in `args`.
fn replace_value(args: &mut [OsString], long: &str, short: &str, value: &str) {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if (a == long || a == short) && i + 1 < args.len() {
            args[i + 1] = value.into();
            return;
        }
        if a.starts_with(&format!("{long}=")) {
            args[i] = format!("{long}={value}").into();
            return;
        }
        i += 1;
    }
}

/// The create/run half: pick the delegate, rewrite the bundle (planning CPUs
/// in the host ledger), record the container.
fn prepare(
    cfg: &RuntimeConfig,
    records: &Records,
    root: Option<&Path>,
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
    // The delegate and cgroup come from the document as the engine wrote it.
    let spec: serde_json::Value = match std::fs::read(rewrite::config_path(&bundle)) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    let delegate = delegate::for_new_container(
        cfg,
        berth_runtime::spec::annotation(&spec, delegate::ANNOTATION),
    )?;
    let cgroup = spec
        .pointer("/linux/cgroupsPath")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let allocator = if cfg.cpus.enabled {
        Some(cpus::HostAllocator::new(cfg, root, id)?)
    } else {
        None
    };
    let applied = rewrite::rewrite_bundle_with(
        &bundle,
        cfg,
        allocator.as_ref().map(|a| a as &dyn cpus::Allocator),
    )?;
    tracing::info!(container = id, applied = %applied, "config.json rewritten");
    // With the CPU ledger on, its GC removes the records of gone containers
    // as it frees them; without it, records are swept here.
    if !cfg.cpus.enabled {
        records.gc(id);
    }
    records.put(
        id,
        &delegate,
        cgroup.as_deref(),
        applied.get("cpu").is_some(),
    )?;
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
