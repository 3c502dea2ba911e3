//! runc's command line, as `berth-runtime` accepts it, and its conversion
//! to the library's [`op::Operation`].

use berth_runtime::operation as op;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

const ABOUT: &str = "An OCI runtime with runc's command line that rewrites config.json, then runs the container on runc or crun";

const LONG_ABOUT: &str = "\
berth-runtime is called by Docker (--runtime), containerd (runc shim BinaryName) and podman
(--runtime) exactly like runc. On `create` and `run` it rewrites the bundle's config.json:

  1. sysctl policy: built-in defaults < machine-class file < app policy (annotation
     io.berth.sysctl-policy) < the container's linux.sysctl; only namespaced keys,
     container keys limited to kubelet's safe list plus the admin allowlist;
  2. CPU split (reserved for the CPU planner);
  3. CPU-count injection: libberth_cpus.so preloaded, BERTH_NPROC and GOMAXPROCS set,
     for containers with a CPU limit and a dynamic loader (opt out: io.berth.cpu-preload=false).

The rewrite is atomic and idempotent and is recorded in the annotation io.berth.applied.
Every verb is then handed (exec) to the delegate runtime with the same arguments.

Configuration: --berth-config PATH, else $BERTH_RUNTIME_CONFIG, else /etc/berth/runtime.toml
(optional; every key documented in the shipped example). Errors go to --log in runc's
format (JSON with --log-format json), so engines show them.";

/// runc's `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// logrus text lines.
    Text,
    /// JSON lines.
    Json,
}

/// The whole command line: runc's global flags, then a verb.
#[derive(Debug, Parser)]
#[command(name = "berth-runtime", about = ABOUT, long_about = LONG_ABOUT, disable_version_flag = true)]
pub struct Cli {
    /// Root directory for storage of container state (passed to the delegate).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log file (default: stderr).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(long)]
    pub debug: bool,
    /// Use systemd for cgroups (passed to the delegate).
    #[arg(long = "systemd-cgroup")]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (passed to the delegate).
    #[arg(long, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Path to criu (passed to the delegate).
    #[arg(long, value_name = "PATH")]
    pub criu: Option<PathBuf>,
    /// Berth configuration file (default $BERTH_RUNTIME_CONFIG, then /etc/berth/runtime.toml). Not passed on.
    #[arg(long = "berth-config", value_name = "FILE")]
    pub berth_config: Option<PathBuf>,
    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,
    /// The runc verb.
    #[command(subcommand)]
    pub verb: Option<Verb>,
}

/// `create`'s flags, shared with `run`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Bundle directory (default: current directory).
    #[arg(short, long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// AF_UNIX socket that receives the pty master.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N extra file descriptors (from fd 3) to the container.
    #[arg(long = "preserve-fds", value_name = "N")]
    pub preserve_fds: Option<u32>,
    /// The container id.
    pub id: String,
}

/// `run`: create and start.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Detach from the container's process.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

/// `exec`: run a process in a container.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<String>,
    /// process.json describing the process.
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long = "preserve-fds", value_name = "N")]
    pub preserve_fds: Option<u32>,
    #[arg(long)]
    pub cgroup: Vec<String>,
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// The container id.
    pub id: String,
    /// The command and its arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update`: change a container's resources.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// JSON resources, or `-` for stdin.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<String>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<String>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<String>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<String>,
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<String>,
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<String>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<String>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "kernel-memory")]
    pub kernel_memory: Option<String>,
    #[arg(long = "kernel-memory-tcp")]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<String>,
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    /// The container id.
    pub id: String,
}

/// runc's verbs. Anything else (checkpoint, restore, ...) is passed on as is.
#[derive(Debug, Clone, Subcommand)]
pub enum Verb {
    /// Create a container (rewrites config.json first).
    Create(CreateArgs),
    /// Create and start a container (rewrites config.json first).
    Run(RunArgs),
    /// Start a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (number or name, default SIGTERM) to a container.
    Kill {
        /// Signal every process in the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container.
    Delete {
        /// Kill it first if it is running.
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a process in a container.
    Exec(ExecArgs),
    /// List a container's processes.
    Ps {
        #[arg(short, long, value_name = "table|json")]
        format: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze a container.
    Pause { id: String },
    /// Thaw a container.
    Resume { id: String },
    /// Change a container's resources.
    Update(UpdateArgs),
    /// Stream a container's events and stats.
    Events {
        #[arg(long)]
        interval: Option<String>,
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Print the delegate's features JSON.
    Features,
    /// Write a template config.json.
    Spec {
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        #[arg(long)]
        rootless: bool,
    },
    /// List containers.
    List {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Berth's own: show the CPU ledger (free CPUs, fragments, each container's plan).
    Cpus {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// First free allocations of containers that no longer exist.
        #[arg(long)]
        gc: bool,
    },
    /// Any other runc verb, passed on unchanged.
    #[command(external_subcommand)]
    Other(Vec<OsString>),
}

/// `args` (without argv[0]) minus Berth's own global flag, which the delegate would refuse.
pub fn delegate_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    let mut in_globals = true;
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if in_globals {
            if s == "--berth-config" {
                it.next();
                continue;
            }
            if s.starts_with("--berth-config=") {
                continue;
            }
            if !s.starts_with('-') {
                in_globals = false;
            } else if matches!(
                s.as_ref(),
                "--root" | "--log" | "--log-format" | "--rootless" | "--criu"
            ) {
                out.push(a.clone());
                if let Some(v) = it.next() {
                    out.push(v.clone());
                }
                continue;
            }
        }
        out.push(a.clone());
    }
    out
}

/// The library's plain form of the parsed command line.
impl From<CreateArgs> for op::CreateArgs {
    fn from(a: CreateArgs) -> op::CreateArgs {
        op::CreateArgs {
            bundle: a.bundle,
            console_socket: a.console_socket,
            pid_file: a.pid_file,
            no_pivot: a.no_pivot,
            no_new_keyring: a.no_new_keyring,
            preserve_fds: a.preserve_fds,
            id: a.id,
        }
    }
}

impl From<RunArgs> for op::RunArgs {
    fn from(a: RunArgs) -> op::RunArgs {
        op::RunArgs {
            create: a.create.into(),
            detach: a.detach,
            keep: a.keep,
        }
    }
}

impl From<ExecArgs> for op::ExecArgs {
    fn from(a: ExecArgs) -> op::ExecArgs {
        op::ExecArgs {
            console_socket: a.console_socket,
            cwd: a.cwd,
            env: a.env,
            tty: a.tty,
            user: a.user,
            additional_gids: a.additional_gids,
            process: a.process,
            detach: a.detach,
            pid_file: a.pid_file,
            process_label: a.process_label,
            apparmor: a.apparmor,
            no_new_privs: a.no_new_privs,
            cap: a.cap,
            preserve_fds: a.preserve_fds,
            cgroup: a.cgroup,
            ignore_paused: a.ignore_paused,
            id: a.id,
            command: a.command,
        }
    }
}

impl From<UpdateArgs> for op::UpdateArgs {
    fn from(a: UpdateArgs) -> op::UpdateArgs {
        op::UpdateArgs {
            resources: a.resources,
            blkio_weight: a.blkio_weight,
            cpu_period: a.cpu_period,
            cpu_quota: a.cpu_quota,
            cpu_rt_period: a.cpu_rt_period,
            cpu_rt_runtime: a.cpu_rt_runtime,
            cpu_share: a.cpu_share,
            cpuset_cpus: a.cpuset_cpus,
            cpuset_mems: a.cpuset_mems,
            kernel_memory: a.kernel_memory,
            kernel_memory_tcp: a.kernel_memory_tcp,
            memory: a.memory,
            memory_reservation: a.memory_reservation,
            memory_swap: a.memory_swap,
            pids_limit: a.pids_limit,
            l3_cache_schema: a.l3_cache_schema,
            mem_bw_schema: a.mem_bw_schema,
            id: a.id,
        }
    }
}

impl From<Verb> for op::Operation {
    fn from(v: Verb) -> op::Operation {
        use op::Operation as O;
        match v {
            Verb::Create(a) => O::Create(a.into()),
            Verb::Run(a) => O::Run(a.into()),
            Verb::Start { id } => O::Start { id },
            Verb::State { id } => O::State { id },
            Verb::Kill { all, id, signal } => O::Kill { all, id, signal },
            Verb::Delete { force, id } => O::Delete { force, id },
            Verb::Exec(a) => O::Exec(a.into()),
            Verb::Ps {
                format,
                id,
                ps_args,
            } => O::Ps {
                format,
                id,
                ps_args,
            },
            Verb::Pause { id } => O::Pause { id },
            Verb::Resume { id } => O::Resume { id },
            Verb::Update(a) => O::Update(a.into()),
            Verb::Events {
                interval,
                stats,
                id,
            } => O::Events {
                interval,
                stats,
                id,
            },
            Verb::Features => O::Features,
            Verb::Spec { bundle, rootless } => O::Spec { bundle, rootless },
            Verb::List { format, quiet } => O::List { format, quiet },
            Verb::Cpus { json, gc } => O::Cpus { json, gc },
            Verb::Other(words) => O::Other(words),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth-runtime").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn docker_create_argv() {
        let c = parse(&[
            "--root",
            "/run/docker/runtime-berth/moby",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/s",
            "abc",
        ]);
        assert_eq!(c.log_format, LogFormat::Json);
        let Some(Verb::Create(a)) = c.verb else {
            panic!("not create")
        };
        assert_eq!(a.id, "abc");
        assert_eq!(a.bundle.unwrap(), PathBuf::from("/b"));
    }

    #[test]
    fn verbs_docker_and_containerd_use() {
        assert!(
            matches!(parse(&["kill", "abc", "15"]).verb, Some(Verb::Kill { ref signal, .. }) if signal.as_deref() == Some("15"))
        );
        assert!(matches!(
            parse(&["kill", "--all", "abc", "SIGKILL"]).verb,
            Some(Verb::Kill { all: true, .. })
        ));
        assert!(matches!(
            parse(&["delete", "--force", "abc"]).verb,
            Some(Verb::Delete { force: true, .. })
        ));
        assert!(matches!(
            parse(&["update", "--resources", "-", "abc"]).verb,
            Some(Verb::Update(_))
        ));
        let c = parse(&[
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/p",
            "abc",
        ]);
        let op: op::Operation = c.verb.unwrap().into();
        assert_eq!(op.container_id(), Some("abc"));
        let c = parse(&["exec", "abc", "sh", "-c", "echo --x"]);
        let Some(Verb::Exec(e)) = c.verb else {
            panic!()
        };
        assert_eq!(e.command, ["sh", "-c", "echo --x"]);
        assert!(matches!(
            parse(&["ps", "--format", "json", "abc"]).verb,
            Some(Verb::Ps { .. })
        ));
        assert!(matches!(
            parse(&["events", "--interval=5s", "abc"]).verb,
            Some(Verb::Events { .. })
        ));
        assert!(matches!(
            parse(&["checkpoint", "--work-path", "/w", "abc"]).verb,
            Some(Verb::Other(_))
        ));
        assert!(matches!(
            parse(&["--systemd-cgroup", "features"]).verb,
            Some(Verb::Features)
        ));
    }

    #[test]
    fn berth_flag_is_not_passed_on() {
        let args: Vec<OsString> = [
            "--berth-config",
            "/x.toml",
            "--root",
            "/r",
            "--berth-config=/y",
            "kill",
            "--berth-config",
            "id",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out = delegate_args(&args);
        assert_eq!(
            out,
            ["--root", "/r", "kill", "--berth-config", "id"].map(OsString::from)
        );
    }
}
