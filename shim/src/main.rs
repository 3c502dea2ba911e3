//! `berth-runtime`: the thin CLI over the `berth_runtime` library. Parses
//! runc's command line, sets up logging, hands the verb to the runtime core
//! and reports its error the way runc does.

mod cli;

use berth_runtime::backend::Backend;
use berth_runtime::config::RuntimeConfig;
use berth_runtime::logging::{self, Format};
use berth_runtime::runtime::Runtime;
use berth_runtime::SPEC_VERSION;
use clap::Parser;
use cli::{Cli, LogFormat};
use std::ffi::OsString;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Verbs Berth does not change go to the backend before any other work.
    // (Should the exec fail, the full path below tries again and reports it.)
    if let Some(h) = berth_runtime::fast::handover(&args) {
        let _ = h.backend.exec(&h.args);
    }
    let cli = Cli::parse();
    if cli.version {
        print_version(cli.berth_config.as_deref());
        return;
    }
    let Some(verb) = cli.verb.clone() else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        std::process::exit(1);
    };
    let format = match cli.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let to_file = logging::init(cli.log.as_deref(), format, cli.debug);
    let result = RuntimeConfig::load(cli.berth_config.as_deref())
        .map_err(berth_runtime::runtime::Error::from)
        .and_then(|(cfg, path)| {
            tracing::debug!(config = ?path, "berth-runtime {}", env!("CARGO_PKG_VERSION"));
            Runtime::new(cfg, cli.root.as_deref(), cli.systemd_cgroup)
                .handle(&verb.into(), cli::delegate_args(&args))
        });
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let msg = format!("berth: {err}");
            tracing::error!("{msg}");
            if to_file {
                eprintln!("{msg}");
            }
            std::process::exit(1);
        }
    }
}

fn print_version(config: Option<&Path>) {
    println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
    println!(
        "commit: {}",
        option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown")
    );
    println!("spec: {SPEC_VERSION}");
    let backend = RuntimeConfig::load(config)
        .ok()
        .and_then(|(c, _)| Backend::default_for(&c).ok());
    match backend {
        Some(Backend::Builtin) => println!("backend: libcontainer (built in)"),
        Some(Backend::Exec(d)) => {
            let first = std::process::Command::new(&d)
                .arg("--version")
                .output()
                .ok()
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
