//! What the runtime is asked to do: runc's verbs and their flags as plain
//! data, free of any command-line parser. `berth-runtime`'s CLI builds an
//! [`Operation`] from runc's command line; another front end (an NRI
//! plugin, a test) can build one directly.

use std::ffi::OsString;
use std::path::PathBuf;

/// `create`'s flags, shared with `run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateArgs {
    /// Bundle directory (default: current directory).
    pub bundle: Option<PathBuf>,
    /// AF_UNIX socket that receives the pty master.
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root.
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    pub no_new_keyring: bool,
    /// Pass N extra file descriptors (from fd 3) to the container.
    pub preserve_fds: Option<u32>,
    /// The container id.
    pub id: String,
}

/// `run`: create and start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    pub create: CreateArgs,
    /// Detach from the container's process.
    pub detach: bool,
    /// Keep the container's state after it exits.
    pub keep: bool,
}

/// `exec`: run a process in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecArgs {
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub user: Option<String>,
    pub additional_gids: Vec<String>,
    /// process.json describing the process.
    pub process: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub process_label: Option<String>,
    pub apparmor: Option<String>,
    pub no_new_privs: bool,
    pub cap: Vec<String>,
    pub preserve_fds: Option<u32>,
    pub cgroup: Vec<String>,
    pub ignore_paused: bool,
    /// The container id.
    pub id: String,
    /// The command and its arguments (unless --process).
    pub command: Vec<String>,
}

/// `update`: change a container's resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateArgs {
    /// JSON resources, or `-` for stdin.
    pub resources: Option<String>,
    pub blkio_weight: Option<String>,
    pub cpu_period: Option<String>,
    pub cpu_quota: Option<String>,
    pub cpu_rt_period: Option<String>,
    pub cpu_rt_runtime: Option<String>,
    pub cpu_share: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub kernel_memory: Option<String>,
    pub kernel_memory_tcp: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub pids_limit: Option<String>,
    pub l3_cache_schema: Option<String>,
    pub mem_bw_schema: Option<String>,
    /// The container id.
    pub id: String,
}

/// runc's verbs. Anything else (checkpoint, restore, ...) is passed on as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
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
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container.
    Delete {
        /// Kill it first if it is running.
        force: bool,
        id: String,
    },
    /// Run a process in a container.
    Exec(ExecArgs),
    /// List a container's processes.
    Ps {
        format: Option<String>,
        id: String,
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
        interval: Option<String>,
        stats: bool,
        id: String,
    },
    /// Print the delegate's features JSON.
    Features,
    /// Write a template config.json.
    Spec {
        bundle: Option<PathBuf>,
        rootless: bool,
    },
    /// List containers.
    List { format: Option<String>, quiet: bool },
    /// Berth's own: show the CPU ledger (free CPUs, fragments, each container's plan).
    Cpus {
        /// Print JSON instead of a table.
        json: bool,
        /// First free allocations of containers that no longer exist.
        gc: bool,
    },
    /// Any other runc verb, passed on unchanged.
    Other(Vec<OsString>),
}

impl Operation {
    /// The container id the verb concerns, if any.
    pub fn container_id(&self) -> Option<&str> {
        Some(match self {
            Operation::Create(a) => &a.id,
            Operation::Run(a) => &a.create.id,
            Operation::Start { id }
            | Operation::State { id }
            | Operation::Kill { id, .. }
            | Operation::Delete { id, .. }
            | Operation::Ps { id, .. }
            | Operation::Pause { id }
            | Operation::Resume { id }
            | Operation::Events { id, .. } => id,
            Operation::Exec(a) => &a.id,
            Operation::Update(a) => &a.id,
            Operation::Features
            | Operation::Spec { .. }
            | Operation::List { .. }
            | Operation::Cpus { .. }
            | Operation::Other(_) => return None,
        })
    }
}
