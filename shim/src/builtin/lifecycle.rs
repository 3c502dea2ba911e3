//! `create`, `run`, `start`, `kill`, `delete`, `pause` and `resume`.

use super::terminal::{self, ConsoleSocket};
use super::{cgroup, foreground, stdio, write_pid_file, Context, Error, Result};
use crate::operation::{CreateArgs, RunArgs};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;

use std::str::FromStr;

/// The bundle a create works on: loaded and rewritten by the runtime core
/// (whose built-in pipeline placed the cgroup), with that cgroup path.
fn bundle<'a>(ctx: &'a Context) -> Result<(&'a crate::bundle::Bundle, String)> {
    let b = ctx
        .bundle
        .ok_or_else(|| Error::Usage("create needs the rewritten bundle".into()))?;
    let cg = b
        .cgroups_path()
        .ok_or_else(|| Error::Usage("the bundle's cgroup was not placed".into()))?;
    Ok((b, cg.to_string()))
}

/// `create` (and the first half of `run`): builds the container, stopped
/// before the workload's `execve` until `start`. `own_tty` is the console
/// socket of a foreground `run` that makes its own terminal.
pub fn create(
    ctx: &Context,
    a: &CreateArgs,
    detach: bool,
    own_tty: Option<&ConsoleSocket>,
) -> Result<Container> {
    let dir = ctx.dir(&a.id)?;
    if dir.exists() {
        return Err(Error::Exists(a.id.clone()));
    }
    let (bundle, cg) = bundle(ctx)?;
    let bundle = &bundle.dir;
    std::fs::create_dir_all(&ctx.root)
        .map_err(|e| Error::io(format!("state root {}", ctx.root.display()), e))?;
    let what = || format!("cannot create container \"{}\"", a.id);
    // With the systemd driver, systemd makes the scope and places the
    // process (libcontainer asks it over D-Bus); there are no extra
    // hierarchies to join or directories of Berth's to remove.
    let systemd = ctx.systemd;
    let cleanup = |cg: &str| {
        if !systemd {
            cgroup::remove(cg);
        }
    };
    let entered = if systemd {
        None
    } else {
        match cgroup::enter_extra(&cg) {
            Ok(e) => Some(e),
            Err(e) => {
                cgroup::remove(&cg);
                return Err(e);
            }
        }
    };
    let built = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_executor(stdio::Workload)
        .with_console_socket(
            own_tty
                .map(ConsoleSocket::path)
                .or(a.console_socket.clone()),
        )
        .with_root_path(&ctx.root)
        .map_err(Error::container(what()))
        .and_then(|b| {
            b.with_preserved_fds(a.preserve_fds.unwrap_or(0) as i32)
                .validate_id()
                .map_err(Error::container(what()))
        })
        .and_then(|b| {
            b.as_init(bundle)
                .with_systemd(systemd)
                // libcontainer takes a console socket only when detached;
                // it uses the flag for nothing else.
                .with_detach(detach || own_tty.is_some())
                .with_no_pivot(a.no_pivot)
                .build()
                .map_err(Error::container(what()))
        });
    // A failed create, or a foreground run (which outlives create and later
    // deletes these cgroups), moves Berth back out; a detached create just
    // exits and leaves them to the container.
    if built.is_err() || !detach {
        if let Some(e) = entered {
            e.leave();
        }
    }
    // Leave nothing half made: the engine will not delete what it was told
    // failed to be created.
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            cleanup(&cg);
            return Err(e);
        }
    };
    let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    if let Some(p) = &a.pid_file {
        if let Err(e) = write_pid_file(p, pid) {
            let _ = container.delete(true);
            cleanup(&cg);
            return Err(e);
        }
    }
    tracing::info!(container = %a.id, pid, cgroup = %cg, "created on the built-in backend");
    Ok(container)
}

/// `run`: create and start; in the foreground, wait, pass signals on, and
/// delete the container afterwards unless `--keep`.
pub fn run(ctx: &Context, r: &RunArgs) -> Result<i32> {
    let id = r.create.id.as_str();
    let own_tty = if !r.detach && r.create.console_socket.is_none() && wants_terminal(ctx) {
        Some(ConsoleSocket::new(&ctx.root)?)
    } else {
        None
    };
    let mut c = create(ctx, &r.create, r.detach, own_tty.as_ref())?;
    if !r.detach {
        // The init exists (with its own signal mask): from here on signals
        // are queued for the workload, not lost.
        foreground::block_signals()?;
    }
    let tty = match own_tty
        .as_ref()
        .map(|s| s.receive().and_then(terminal::attach))
    {
        Some(Err(e)) => {
            let _ = delete(ctx, id, true);
            return Err(e);
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    if let Err(e) = c.start() {
        let _ = delete(ctx, id, true);
        return Err(Error::container(format!("cannot start container \"{id}\""))(e));
    }
    if r.detach {
        return Ok(0);
    }
    let pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
    let code = foreground::wait(pid, tty.as_ref())?;
    if let Some(t) = tty {
        t.finish();
    }
    if !r.keep {
        delete(ctx, id, true)?;
    }
    Ok(code)
}

/// Whether the bundle's `process.terminal` is true.
fn wants_terminal(ctx: &Context) -> bool {
    ctx.bundle
        .and_then(|b| {
            b.spec
                .pointer("/process/terminal")
                .and_then(|t| t.as_bool())
        })
        .unwrap_or(false)
}

/// `start`: lets a created container run its workload.
///
/// If starting a created container fails once its workload runs (a
/// failing poststart hook), the container is killed, as runc terminates it:
/// a start that reports failure leaves nothing running. (A container that
/// was not in the created state is left alone: that start is refused.)
pub fn start(ctx: &Context, id: &str) -> Result<()> {
    let mut c = ctx.load(id)?;
    let was_created = c.status() == ContainerStatus::Created;
    c.start().map_err(|source| {
        if was_created {
            let _ = c.kill(Signal::SIGKILL, true);
        }
        Error::container(format!("cannot start container \"{id}\""))(source)
    })
}

/// Parses a signal as runc does: a number, `KILL` or `SIGKILL`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || Error::Usage(format!("unknown signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// `kill`: sends a signal (default SIGTERM) to the init process, or with
/// `--all` to every process of the container.
pub fn kill(ctx: &Context, id: &str, signal: Option<&str>, all: bool) -> Result<()> {
    let sig = parse_signal(signal.unwrap_or("SIGTERM"))?;
    let mut c = ctx.load(id)?;
    if c.status() == ContainerStatus::Stopped && !all {
        return Err(Error::Usage("container not running".into()));
    }
    c.kill(sig, all)
        .map_err(Error::container(format!("cannot kill container \"{id}\"")))
}

/// `delete`: removes a stopped (or created) container; `--force` kills a
/// running one first. Its cgroups go from every hierarchy.
pub fn delete(ctx: &Context, id: &str, force: bool) -> Result<()> {
    let dir = ctx.dir(id)?;
    if !dir.join("state.json").is_file() {
        // A create that died before writing its state leaves a bare
        // directory: runc removes it too.
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return if force {
            Ok(())
        } else {
            Err(Error::NotExist(id.into()))
        };
    }
    let mut c = ctx.load(id)?;
    let cg = super::cgroup_path(&c)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let what = || format!("cannot delete container \"{id}\"");
    if let Err(e) = c.delete(force) {
        if c.status() != ContainerStatus::Stopped {
            return Err(Error::container(what())(e));
        }
        // A stopped init can leave processes behind (no PID namespace):
        // runc kills them too before removing the cgroup.
        tracing::debug!(container = id, "delete failed ({e}); killing what is left");
        let _ = c.kill(Signal::SIGKILL, true);
        c.delete(true).map_err(Error::container(what()))?;
    }
    if let Some(cg) = cg.filter(|_| !c.systemd()) {
        cgroup::remove(&cg);
    }
    Ok(())
}

/// `pause` (`freeze` true) and `resume` (false).
pub fn pause(ctx: &Context, id: &str, freeze: bool) -> Result<()> {
    let mut c = ctx.load(id)?;
    if freeze {
        c.pause()
            .map_err(Error::container(format!("cannot pause container \"{id}\"")))
    } else {
        c.resume().map_err(Error::container(format!(
            "cannot resume container \"{id}\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
