//! `berth-runtime`: the thin CLI over the `berth_runtime` library.

use berth_runtime::builtin;
use berth_runtime::cli::{self, Cli, LogFormat, Verb};
use berth_runtime::config::RuntimeConfig;
use berth_runtime::cpus;
use berth_runtime::delegate::{self, Records};
use berth_runtime::logging::{self, Format};
use berth_runtime::rewrite;
use clap::Parser;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use berth_runtime::SPEC_VERSION;

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

/// Does Berth's part of `verb`, then becomes the delegate, or runs the verb
/// on the built-in backend and exits. Returns only on error.
fn run(cli: &Cli, verb: &Verb, args: &[OsString]) -> anyhow::Result<Never> {
    let (cfg, cfg_path) = RuntimeConfig::load(cli.berth_config.as_deref())?;
    tracing::debug!(config = ?cfg_path, "berth-runtime {}", env!("CARGO_PKG_VERSION"));
    let root = cli.root.as_deref();
    let records = Records::new(&cfg, root);
    // The built-in backend's container processes are clones of this one:
    // run from a sealed copy of the binary before making any (CVE-2019-5736).
    if spawns_on_builtin(&cfg, &records, verb)? && !builtin::seal::is_sealed() {
        return Err(builtin::seal::reexec().into());
    }
    let mut args = cli::delegate_args(args);
    let delegate = match verb {
        Verb::Create(c) => prepare(
            &cfg,
            &records,
            root,
            c.bundle.as_deref(),
            &c.id,
            cli.systemd_cgroup,
        )?,
        Verb::Run(r) => prepare(
            &cfg,
            &records,
            root,
            r.create.bundle.as_deref(),
            &r.create.id,
            cli.systemd_cgroup,
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
    if delegate::is_builtin(&delegate) {
        let ctx = builtin::Context {
            root: root.map_or_else(
                || PathBuf::from(delegate::BUILTIN_DEFAULT_ROOT),
                Path::to_path_buf,
            ),
            cfg: &cfg,
            records: &records,
            systemd: cli.systemd_cgroup,
        };
        let (verb, release) = match verb {
            Verb::Update(u) if planned(&u.id) && u.resources.is_some() => {
                let mut u = u.clone();
                u.resources = Some(replanned_resources(&cfg, root, &u)?);
                (Verb::Update(u), None)
            }
            Verb::Delete { id, .. } if holds(id) => (verb.clone(), Some(id.as_str())),
            Verb::Run(r) if !r.detach && !r.keep && holds(&r.create.id) => {
                (verb.clone(), Some(r.create.id.as_str()))
            }
            _ => (verb.clone(), None),
        };
        let code = builtin::run(&ctx, &verb)?;
        if let Some(id) = release.filter(|_| code == 0 || matches!(verb, Verb::Run(_))) {
            if let Err(e) = cpus::ops::release(&cfg, root, id) {
                tracing::warn!(
                    container = id,
                    "cannot release the CPU allocation (GC will): {e}"
                );
            }
        }
        std::process::exit(code);
    }
    match verb {
        // The allocation outlives the container unless released here: run the
        // delegate as a child, then release on success (exit code passed on).
        // (A foreground `run` still execs, so signals reach the delegate as
        // they would reach runc; its allocation goes at the next GC.)
        Verb::Delete { id, .. } if holds(id) => {
            finish_then_release(&cfg, root, id, &delegate, &args)
        }
        Verb::Update(u) if planned(&u.id) && u.resources.is_some() => {
            let path = replanned_resources(&cfg, root, u)?;
            replace_value(&mut args, "--resources", "-r", &path);
        }
        _ => {}
    }
    tracing::debug!(delegate = %delegate.display(), "handing over");
    Err(delegate::exec(&delegate, &args).into())
}

/// True when `verb` starts container processes on the built-in backend.
fn spawns_on_builtin(cfg: &RuntimeConfig, records: &Records, verb: &Verb) -> anyhow::Result<bool> {
    let backend = match verb {
        Verb::Create(c) => new_container_backend(cfg, c.bundle.as_deref())?,
        Verb::Run(r) => new_container_backend(cfg, r.create.bundle.as_deref())?,
        Verb::Exec(e) => match records.get(&e.id) {
            Some(d) => d,
            None => delegate::default_delegate(cfg)?,
        },
        _ => return Ok(false),
    };
    Ok(delegate::is_builtin(&backend))
}

/// The backend a new container in `bundle` (default: the current directory) gets.
fn new_container_backend(cfg: &RuntimeConfig, bundle: Option<&Path>) -> anyhow::Result<PathBuf> {
    let spec = rewrite::read_config(&rewrite::bundle_dir(bundle)?);
    Ok(delegate::for_new_container(
        cfg,
        berth_runtime::spec::annotation(&spec, delegate::ANNOTATION),
    )?)
}

/// `update --resources` with the CPU plan applied: the new resources in a
/// memfd, as a path the backend can read.
fn replanned_resources(
    cfg: &RuntimeConfig,
    root: Option<&Path>,
    u: &cli::UpdateArgs,
) -> anyhow::Result<String> {
    let src = u.resources.as_deref().unwrap_or("-");
    let text = if src == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(src)?
    };
    let mut res: serde_json::Value = serde_json::from_str(&text)?;
    cpus::ops::replan(cfg, root, &u.id, &mut res)?;
    memfd_with(&serde_json::to_vec(&res)?)
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
    systemd_cgroup: bool,
) -> anyhow::Result<PathBuf> {
    if !delegate::valid_id(id) {
        return Err(berth_runtime::Error::ContainerId(id.into()).into());
    }
    let bundle = rewrite::bundle_dir(bundle)?;
    // The delegate and cgroup come from the document as the engine wrote it.
    let spec = rewrite::read_config(&bundle);
    let delegate = delegate::for_new_container(
        cfg,
        berth_runtime::spec::annotation(&spec, delegate::ANNOTATION),
    )?;
    // Recorded resolved, for the driver this runtime was called with, so the
    // pool rewrite and a ledger rebuild find the directory systemd or runc made.
    let given = spec.pointer("/linux/cgroupsPath").and_then(|v| v.as_str());
    let cgroup = match berth_runtime::cgroup_path::resolve(given, id, systemd_cgroup) {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(container = id, "{e}; its cgroup is recorded as given");
            given.map(str::to_string)
        }
    };
    let allocator = if cfg.cpus.enabled {
        Some(cpus::HostAllocator::new(cfg, root, id)?)
    } else {
        None
    };
    let applied = rewrite::rewrite_bundle_with(
        &bundle,
        cfg,
        allocator.as_ref().map(|a| a as &dyn cpus::Allocator),
    )
    .inspect_err(|_| {
        // A stage after the CPU split failed: the container will not exist,
        // so its CPUs go back now, not at some later GC.
        if allocator.is_some() && cpus::ops::has_entry(cfg, root, id) {
            if let Err(e) = cpus::ops::release(cfg, root, id) {
                tracing::warn!(
                    container = id,
                    "cannot release the CPU allocation (GC will): {e}"
                );
            }
        }
    })?;
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
        berth_runtime::spec::rootfs(
            &spec,
            &std::fs::canonicalize(&bundle).unwrap_or_else(|_| bundle.clone()),
        )
        .as_deref(),
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
        Some(d) if delegate::is_builtin(&d) => println!("backend: libcontainer (built in)"),
        Some(d) => {
            let v = std::process::Command::new(&d)
                .arg("--version")
                .output()
                .ok();
            let first = v
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string));
            println!(
                "backend: {} ({})",
                d.display(),
                first.unwrap_or_else(|| "version unknown".into())
            );
        }
        None => println!("backend: none found"),
    }
}
