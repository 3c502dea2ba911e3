//! The runtime core: Berth's part of each verb around the backend's.
//!
//! [`Runtime::handle`] runs Berth's hooks once (the rewrite before a
//! create, the CPU re-plan around an update, the release after a delete),
//! then the verb on the container's [`Backend`]: a binary gets it by
//! `exec(2)` when nothing is left to do afterwards, else as a child; the
//! built-in backend runs it in this process.

use crate::backend::Backend;
use crate::builtin;
use crate::bundle::Bundle;
use crate::config::RuntimeConfig;
use crate::cpus;
use crate::debug_stop;
use crate::operation::{Operation, UpdateArgs};
use crate::records::{valid_id, Records};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why a verb could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Berth's own part failed (config, rewrite, ledger, backend lookup).
    #[error(transparent)]
    Berth(#[from] crate::Error),
    /// The built-in backend failed (boxed: libcontainer's errors are large).
    #[error(transparent)]
    Builtin(Box<builtin::Error>),
    /// `update --resources` could not be read or is not JSON.
    #[error("update --resources {source_name}: {message}")]
    Resources {
        /// The file, or `-` for stdin.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// `exec --process` could not be read or is not JSON.
    #[error("exec --process {path}: {message}")]
    Process {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl From<builtin::Error> for Error {
    fn from(e: builtin::Error) -> Error {
        Error::Builtin(Box::new(e))
    }
}

/// The result of [`Runtime::handle`].
pub type Result<T> = std::result::Result<T, Error>;

/// One runtime invocation's settings: the configuration, the state root
/// and the cgroup driver, and the records of that root.
#[derive(Debug)]
pub struct Runtime {
    /// Berth's configuration.
    pub cfg: RuntimeConfig,
    /// The state root (`--root`), if given.
    pub root: Option<PathBuf>,
    /// `--systemd-cgroup` was given.
    pub systemd_cgroup: bool,
    /// The records of containers under `root`.
    pub records: Records,
}

impl Runtime {
    /// A runtime for state root `root` with configuration `cfg`.
    pub fn new(cfg: RuntimeConfig, root: Option<&Path>, systemd_cgroup: bool) -> Runtime {
        let records = Records::new(&cfg, root);
        Runtime {
            cfg,
            root: root.map(Path::to_path_buf),
            systemd_cgroup,
            records,
        }
    }

    /// Runs `verb`; `args` is the command line the backend gets (Berth's
    /// own flags removed). Returns the exit code, or does not return when a
    /// binary backend takes over the process.
    pub fn handle(&self, verb: &Operation, args: Vec<OsString>) -> Result<i32> {
        if let Operation::Cpus { json, gc } = verb {
            let v = cpus::ops::status(&self.cfg, *gc, &mut cpus::WriteCgroups)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", cpus::ops::format_status(&v));
            }
            return Ok(0);
        }
        let mut bundle = match verb {
            Operation::Create(c) => Some(self.bundle(&c.id, c.bundle.as_deref())?),
            Operation::Run(r) => Some(self.bundle(&r.create.id, r.create.bundle.as_deref())?),
            _ => None,
        };
        let backend = match (&bundle, verb) {
            (Some(b), _) => {
                Backend::for_new_container(&self.cfg, b.annotation(crate::backend::ANNOTATION))?
            }
            (None, Operation::Other(words)) => {
                tracing::debug!(verb = ?words.first(), "not a verb Berth knows; passing it on");
                Backend::default_for(&self.cfg)?
            }
            (None, v) => match v.container_id().and_then(|id| self.records.get(id)) {
                Some(b) => b,
                None => Backend::default_for(&self.cfg)?,
            },
        };
        // The built-in backend's container processes are clones of this one:
        // run from a sealed copy of the binary before making any (CVE-2019-5736).
        let spawns = matches!(
            verb,
            Operation::Create(_) | Operation::Run(_) | Operation::Exec(_)
        );
        if backend.is_builtin() && spawns && !builtin::seal::is_sealed() {
            return Err(builtin::seal::reexec().into());
        }
        if let (Some(b), Some(id)) = (bundle.as_mut(), verb.container_id()) {
            self.prepare(b, id, &backend)?;
        }
        let mut args = args;
        let mut verb = verb.clone();
        if let Operation::Exec(e) = &mut verb {
            self.inject_exec(e, &mut args)?;
        }
        // What to do once the backend is done: settle an update, release CPUs.
        let after = match &mut verb {
            Operation::Update(u) if u.resources.is_some() && self.planned(&u.id) => {
                let path = self.begin_update(u)?;
                replace_value(&mut args, "--resources", "-r", &path);
                u.resources = Some(path);
                After::SettleUpdate(u.id.clone())
            }
            Operation::Update(u) if self.has_view(&u.id) => After::RefreshView(u.id.clone()),
            Operation::Delete { id, .. } if self.holds(id) => After::Release(id.clone()),
            Operation::Delete { id, .. } if self.has_view(id) => After::Forget(id.clone()),
            Operation::Run(r)
                if backend.is_builtin() && !r.detach && !r.keep && self.holds(&r.create.id) =>
            {
                After::Release(r.create.id.clone())
            }
            _ => After::Nothing,
        };
        let code = match &backend {
            Backend::Builtin => {
                let ctx = builtin::Context {
                    root: self
                        .root
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(crate::backend::BUILTIN_DEFAULT_ROOT)),
                    cfg: &self.cfg,
                    records: &self.records,
                    systemd: self.systemd_cgroup,
                    bundle: bundle.as_ref(),
                };
                let out = builtin::run(&ctx, &verb);
                if out.is_err() {
                    // A failed update applied nothing: the ledger rolls back.
                    self.after(&after, false, &verb);
                }
                out?
            }
            Backend::Exec(_) if matches!(after, After::Nothing) => {
                tracing::debug!(backend = %backend, "handing over");
                return Err(backend.exec(&args).into());
            }
            Backend::Exec(_) => {
                let out = backend.status(&args);
                if out.is_err() {
                    self.after(&after, false, &verb);
                }
                out?
            }
        };
        self.after(&after, code == 0, &verb);
        Ok(code)
    }

    /// Loads the bundle of a new container `id`.
    fn bundle(&self, id: &str, dir: Option<&Path>) -> Result<Bundle> {
        if !valid_id(id) {
            return Err(crate::Error::ContainerId(id.into()).into());
        }
        Ok(Bundle::load(dir)?)
    }

    /// The create/run half: rewrite the bundle (planning CPUs in the host
    /// ledger; on the built-in backend, placing the cgroup), record the container.
    fn prepare(&self, bundle: &mut Bundle, id: &str, backend: &Backend) -> Result<()> {
        let root = self.root.as_deref();
        // Recorded resolved, for the driver this runtime was called with, so the
        // pool rewrite and a ledger rebuild find the directory systemd or runc made.
        let given = bundle.cgroups_path().map(str::to_string);
        let resolved = match crate::cgroup_path::resolve(given.as_deref(), id, self.systemd_cgroup)
        {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::warn!(container = id, "{e}; its cgroup is recorded as given");
                given
            }
        };
        let allocator = if self.cfg.cpus.enabled {
            Some(cpus::HostAllocator::new(&self.cfg, root, id)?)
        } else {
            None
        };
        let place = backend.is_builtin().then_some(crate::rewrite::Placement {
            id,
            systemd: self.systemd_cgroup,
        });
        let applied = bundle
            .rewrite(
                &self.cfg,
                allocator.as_ref().map(|a| a as &dyn cpus::Allocator),
                place,
                Some((root, id)),
            )
            .inspect_err(|_| {
                crate::cpuview::CpuView::of(&self.cfg, root, id).remove();
                // A stage after the CPU split failed: the container will not
                // exist, so its CPUs go back now, not at some later GC.
                if allocator.is_some() && cpus::ops::has_entry(&self.cfg, root, id) {
                    self.release(id);
                }
            })?;
        debug_stop::at("create:rewritten");
        tracing::info!(container = id, applied = %applied, "config.json rewritten");
        // The built-in pipeline placed the cgroup: that is where it will be.
        let cgroup = if backend.is_builtin() {
            bundle.cgroups_path().map(str::to_string)
        } else {
            resolved
        };
        self.records.gc(id);
        self.records.put(
            id,
            backend,
            cgroup.as_deref(),
            bundle.rootfs().as_deref(),
            applied.get("cpu").is_some(),
        )?;
        debug_stop::at("create:recorded");
        Ok(())
    }

    /// The CPU view of container `id`.
    fn view(&self, id: &str) -> crate::cpuview::CpuView {
        crate::cpuview::CpuView::of(&self.cfg, self.root.as_deref(), id)
    }

    /// True when container `id` has CPU view files to keep up to date.
    fn has_view(&self, id: &str) -> bool {
        crate::records::valid_id(id) && self.view(id).exists()
    }

    /// Rewrites `id`'s CPU view from its cgroup after an update.
    fn refresh_view(&self, id: &str) {
        let Some(cgroup) = self.records.record(id).and_then(|r| r.cgroup) else {
            tracing::warn!(
                container = id,
                "no recorded cgroup: its CPU view keeps the old count"
            );
            return;
        };
        if let Err(e) = self.view(id).refresh_from_cgroup(&cgroup, id) {
            tracing::warn!(container = id, "cannot update the CPU view: {e}");
        }
    }

    /// Gives an exec'd process the CPU-count environment the container's own
    /// got at create, with the count of now (engines build exec'd processes
    /// from their copy of the spec, which lacks it).
    fn inject_exec(&self, e: &mut crate::operation::ExecArgs, args: &mut [OsString]) -> Result<()> {
        if !self.has_view(&e.id) {
            return Ok(());
        }
        let view = self.view(&e.id);
        let (Some(inj), Some(n)) = (view.injection(), view.count()) else {
            return Ok(());
        };
        let Some(path) = e.process.clone() else {
            // Without --process, runc and the built-in backend start from
            // the container's config.json, which has them from create.
            tracing::debug!(container = %e.id, "exec without --process: the CPU-count variables come from the container's config");
            return Ok(());
        };
        let bad = |message: String| Error::Process {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read(&path).map_err(|err| bad(err.to_string()))?;
        let mut process: serde_json::Value =
            serde_json::from_slice(&text).map_err(|err| bad(err.to_string()))?;
        let Some(obj) = process.as_object_mut() else {
            return Ok(());
        };
        let env = obj
            .entry("env")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let Some(env) = env.as_array_mut() else {
            return Ok(());
        };
        crate::rewrite::preload::inject_env(env, n, &inj);
        let bytes = serde_json::to_vec(&process).map_err(|err| bad(err.to_string()))?;
        let fd_path =
            memfd_with(&bytes).map_err(|err| bad(format!("cannot pass the process on: {err}")))?;
        replace_value(args, "--process", "-p", &fd_path);
        e.process = Some(PathBuf::from(fd_path));
        tracing::debug!(container = %e.id, nproc = n, "exec'd process given the CPU-count environment");
        Ok(())
    }

    /// True when the ledger holds an allocation for `id`.
    fn planned(&self, id: &str) -> bool {
        self.cfg.cpus.enabled && cpus::ops::has_entry(&self.cfg, self.root.as_deref(), id)
    }

    /// True when `id` holds CPUs to free as soon as it is deleted.
    fn holds(&self, id: &str) -> bool {
        self.cfg.cpus.enabled && cpus::ops::holds_capacity(&self.cfg, self.root.as_deref(), id)
    }

    /// Re-plans `update --resources` in the ledger (the old allocation
    /// held); returns the new resources as a path the backend can read.
    fn begin_update(&self, u: &UpdateArgs) -> Result<String> {
        let src = u.resources.as_deref().unwrap_or("-");
        let bad = |message: String| Error::Resources {
            source_name: src.to_string(),
            message,
        };
        let text = if src == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(src)
        }
        .map_err(|e| bad(e.to_string()))?;
        let mut res: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cpus::ops::begin_update(
            &self.cfg,
            self.root.as_deref(),
            &u.id,
            &mut res,
            &mut cpus::WriteCgroups,
        )?;
        let bytes = serde_json::to_vec(&res).map_err(|e| bad(e.to_string()))?;
        memfd_with(&bytes).map_err(|e| bad(format!("cannot pass the re-planned resources on: {e}")))
    }

    /// Berth's part after the backend: `ok` says whether the verb succeeded.
    fn after(&self, after: &After, ok: bool, verb: &Operation) {
        match after {
            After::Nothing => {}
            After::SettleUpdate(id) => {
                if ok {
                    debug_stop::at("update:applied");
                }
                if let Err(e) = cpus::ops::finish_update(
                    &self.cfg,
                    self.root.as_deref(),
                    id,
                    ok,
                    &mut cpus::WriteCgroups,
                ) {
                    tracing::warn!(container = id, "cannot settle the CPU ledger after the update (the next transaction will): {e}");
                }
                if ok {
                    self.refresh_view(id);
                }
            }
            After::RefreshView(id) if ok => self.refresh_view(id),
            After::RefreshView(_) => {}
            After::Forget(id) if ok => self.view(id).remove(),
            After::Forget(_) => {}
            // A foreground run releases whatever its exit code.
            After::Release(id) if ok || matches!(verb, Operation::Run(_)) => {
                debug_stop::at("delete:deleted");
                self.release(id);
                self.view(id).remove();
            }
            After::Release(_) => {}
        }
    }

    fn release(&self, id: &str) {
        if let Err(e) =
            cpus::ops::release(&self.cfg, self.root.as_deref(), id, &mut cpus::WriteCgroups)
        {
            tracing::warn!(
                container = id,
                "cannot release the CPU allocation (GC will): {e}"
            );
        }
    }
}

/// Berth's part once the backend has run.
enum After {
    Nothing,
    SettleUpdate(String),
    /// An update of a container with a CPU view but no planned CPUs.
    RefreshView(String),
    Release(String),
    /// A delete of a container with a CPU view but no CPUs to release.
    Forget(String),
}

/// An in-memory file holding `bytes`, as a path the backend can open (also
/// after exec: the descriptor is inherited).
fn memfd_with(bytes: &[u8]) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: memfd_create with a static name; no CLOEXEC, so the fd survives exec.
    let fd = unsafe { libc::memfd_create(c"berth-resources".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own; into_raw_fd keeps it open.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes)?;
    Ok(format!("/proc/self/fd/{}", f.into_raw_fd()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resources_flag_is_replaced_in_every_spelling() {
        for given in [
            vec!["update", "--resources", "-", "c1"],
            vec!["update", "-r", "/tmp/r.json", "c1"],
            vec!["update", "--resources=-", "c1"],
        ] {
            let mut args: Vec<OsString> = given.iter().map(OsString::from).collect();
            replace_value(&mut args, "--resources", "-r", "/proc/self/fd/9");
            let text: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert!(
                text.iter().any(|a| a.ends_with("/proc/self/fd/9"))
                    && !text.contains(&"-".to_string()),
                "{text:?}"
            );
        }
    }
}
