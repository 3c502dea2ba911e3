//! The built-in backend: every runc verb run in-process on youki's
//! `libcontainer`, so a host needs no runc or crun.
//!
//! It keeps runc's contract: state lives under `--root` (default
//! [`crate::backend::BUILTIN_DEFAULT_ROOT`]), the pid file is written
//! atomically once the container exists, `state` prints runc's JSON, and the
//! exit codes are runc's. Where libcontainer 0.7 differs from runc, Berth
//! corrects it here:
//!
//! - stdio at `/dev/null` is reopened read-write, not read-only ([`stdio`]);
//! - cgroups are placed where runc places them, in every hierarchy including
//!   `name=systemd` and the unified one, and removed on delete ([`cgroup`]);
//! - `state` has `rootfs` and a user name as `owner` ([`state`]);
//! - a foreground process whose spec asks for a terminal gets one without a
//!   `--console-socket`, as with runc ([`terminal`]).
//!
//! `create`, `run` and `exec` first re-execute Berth from a read-only mount
//! of its binary (or a sealed memfd copy), so no container process can
//! overwrite the host binary through
//! `/proc/<pid>/exe` (CVE-2019-5736; [`seal`]).

pub mod cgroup;
mod events;
mod exec;
mod features;
mod foreground;
mod lifecycle;
mod ps;
pub mod seal;
mod state;
pub mod stdio;
mod terminal;
mod update;

use crate::config::RuntimeConfig;
use crate::operation::Operation;
use crate::records::{valid_id, Records};
use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig};
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use std::path::{Path, PathBuf};

/// Why a verb failed on the built-in backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libcontainer refused or failed; `what` says what Berth asked of it.
    #[error("{what}")]
    Container {
        /// The operation, e.g. `cannot start container "x"`.
        what: String,
        /// libcontainer's error.
        #[source]
        source: Box<LibcontainerError>,
    },
    /// No container of that id under the state root.
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    /// A container of that id already exists.
    #[error("container \"{0}\" already exists")]
    Exists(String),
    /// Bad input on the command line or in a file it names.
    #[error("{0}")]
    Usage(String),
    /// A file or system call failed.
    #[error("{what}")]
    Io {
        /// What Berth was doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup could not be read or changed.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// Berth's own part failed.
    #[error(transparent)]
    Berth(#[from] crate::Error),
}

impl Error {
    fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    fn container(what: impl Into<String>) -> impl FnOnce(LibcontainerError) -> Error {
        let what = what.into();
        move |source| Error::Container {
            what,
            source: Box::new(source),
        }
    }
}

/// The built-in backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every verb needs: where state lives and how to treat cgroups.
pub struct Context<'a> {
    /// The state root (`--root`, else the built-in default).
    pub root: PathBuf,
    /// Berth's configuration.
    pub cfg: &'a RuntimeConfig,
    /// Berth's per-container records (for `state`'s rootfs).
    pub records: &'a Records,
    /// `--systemd-cgroup` was given.
    pub systemd: bool,
    /// For `create` and `run`: the bundle, rewritten by the runtime core.
    pub bundle: Option<&'a crate::bundle::Bundle>,
}

impl Context<'_> {
    /// The state directory of container `id` (the id is checked first).
    fn dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(crate::Error::ContainerId(id.into()).into());
        }
        Ok(self.root.join(id))
    }

    /// Loads container `id`, refreshing its status from the live process.
    fn load(&self, id: &str) -> Result<Container> {
        let dir = self.dir(id)?;
        if !dir.join("state.json").is_file() {
            return Err(Error::NotExist(id.into()));
        }
        Container::load(dir).map_err(Error::container(format!("cannot load container \"{id}\"")))
    }
}

/// The cgroup path libcontainer recorded for container `c`.
fn cgroup_path(c: &Container) -> Result<PathBuf> {
    c.spec()
        .map(|s| s.cgroup_path)
        .map_err(Error::container(format!(
            "cannot read container \"{}\"",
            c.id()
        )))
}

/// The cgroup manager of container `c` (cgroupfs, or systemd's for a
/// container created with `--systemd-cgroup`), with the cgroup's directory
/// under the hierarchy root (a systemd `slice:prefix:name` resolved).
fn cgroup_manager(c: &Container) -> Result<(PathBuf, AnyCgroupManager)> {
    let path = cgroup_path(c)?;
    let m = create_cgroup_manager(CgroupConfig {
        cgroup_path: path.clone(),
        systemd_cgroup: c.systemd(),
        container_name: c.id().into(),
    })
    .map_err(|e| Error::Cgroup(e.to_string()))?;
    let dir = if c.systemd() {
        crate::cgroup_path::systemd(&path.to_string_lossy())
            .map(PathBuf::from)
            .map_err(Error::Cgroup)?
    } else {
        path
    };
    Ok((dir, m))
}

/// Runs `verb` on the built-in backend; returns the exit code to leave with.
pub fn run(ctx: &Context, verb: &Operation) -> Result<i32> {
    if ctx.systemd && !crate::cgroup_path::systemd_booted() {
        return Err(Error::Usage(
            "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); \
             configure the engine's cgroupfs driver"
                .into(),
        ));
    }
    match verb {
        Operation::Create(c) => lifecycle::create(ctx, c, true, None).map(|_| 0),
        Operation::Run(r) => lifecycle::run(ctx, r),
        Operation::Start { id } => lifecycle::start(ctx, id).map(|()| 0),
        Operation::State { id } => state::print(ctx, id).map(|()| 0),
        Operation::List { format, quiet } => {
            state::list(ctx, format.as_deref(), *quiet).map(|()| 0)
        }
        Operation::Kill { all, id, signal } => {
            lifecycle::kill(ctx, id, signal.as_deref(), *all).map(|()| 0)
        }
        Operation::Delete { force, id } => lifecycle::delete(ctx, id, *force).map(|()| 0),
        Operation::Pause { id } => lifecycle::pause(ctx, id, true).map(|()| 0),
        Operation::Resume { id } => lifecycle::pause(ctx, id, false).map(|()| 0),
        Operation::Exec(e) => exec::exec(ctx, e),
        Operation::Ps {
            format,
            id,
            ps_args,
        } => ps::ps(ctx, id, format.as_deref(), ps_args).map(|()| 0),
        Operation::Update(u) => update::update(ctx, u).map(|()| 0),
        Operation::Events {
            interval,
            stats,
            id,
        } => events::events(ctx, id, interval.as_deref(), *stats).map(|()| 0),
        Operation::Features => features::print().map(|()| 0),
        Operation::Spec { bundle, rootless } => {
            features::write_spec(bundle.as_deref(), *rootless).map(|()| 0)
        }
        Operation::Cpus { .. } => Err(Error::Usage("cpus is not a container verb".into())),
        Operation::Other(words) => Err(Error::Usage(format!(
            "{}: not supported by the built-in backend (use backend = \"runc\" or \"crun\")",
            words
                .first()
                .map(|w| w.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))),
    }
}

/// Writes `pid` to `path` as runc does: whole or not at all (temp file, rename).
fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(path)
    };
    crate::atomic::write_file(
        &path,
        pid.to_string().as_bytes(),
        0o644,
        crate::atomic::Durability::Atomic,
    )?;
    Ok(())
}
