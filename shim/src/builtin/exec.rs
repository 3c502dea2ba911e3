//! `exec`: a new process in a running container.

use super::terminal::{self, ConsoleSocket};
use super::{cgroup, foreground, stdio, write_pid_file, Context, Error, Result};
use crate::operation::ExecArgs;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// `uid[:gid]` as runc's `--user` takes it.
fn parse_user(u: &str) -> Result<(u32, Option<u32>)> {
    let bad = || Error::Usage(format!("--user {u:?}: expected uid[:gid] in numbers"));
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

/// `--cgroup`: runc takes `path` or `controller[,controller]:path`; one
/// sub-cgroup for all controllers is what libcontainer can join.
fn sub_cgroup(given: &[String]) -> Result<Option<String>> {
    let mut path: Option<String> = None;
    for g in given {
        let p = g
            .rsplit_once(':')
            .map_or(g.as_str(), |(_, p)| p)
            .to_string();
        if path.as_ref().is_some_and(|q| *q != p) {
            return Err(Error::Usage(
                "--cgroup: the built-in backend joins one sub-cgroup for all controllers".into(),
            ));
        }
        path = Some(p);
    }
    Ok(path)
}

/// Runs `exec`; returns 0 when detached, else the process's exit code.
///
/// As runc does, the process comes whole from a `--process` file, or else
/// from the container's own `process` in config.json with the command
/// line's overrides ([`cli_process`]); either way libcontainer is handed it
/// as a process file, so an exec'd process keeps the container's user,
/// groups, rlimits, `oomScoreAdj`, cwd, capabilities and labels.
pub fn exec(ctx: &Context, a: &ExecArgs) -> Result<i32> {
    let container = ctx.load(&a.id)?;
    let process = match &a.process {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| Error::io(p.display().to_string(), e))?;
            serde_json::from_slice(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?
        }
        None => {
            let config = crate::rewrite::read_config(container.bundle());
            cli_process(&config, a)?
        }
    };
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    let process_file =
        memfd_with(&serde_json::to_vec(&process).map_err(|e| Error::Usage(e.to_string()))?)?;
    let what = || format!("cannot exec in container \"{}\"", a.id);
    let own_tty = if !a.detach && a.console_socket.is_none() && terminal {
        Some(ConsoleSocket::new(&ctx.root)?)
    } else {
        None
    };
    // The process is cloned from this one: joining the container's
    // name=systemd and unified cgroups first puts it there before it runs
    // (libcontainer joins the controller hierarchies itself).
    let entered = match super::cgroup_path(&container) {
        Ok(cg) if !container.systemd() => Some(cgroup::enter_extra(&cg.to_string_lossy())?),
        _ => None,
    };
    let built = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_executor(stdio::Workload)
        .with_root_path(&ctx.root)
        .map_err(Error::container(what()))
        .and_then(|b| {
            b.with_console_socket(
                own_tty
                    .as_ref()
                    .map(ConsoleSocket::path)
                    .or(a.console_socket.clone()),
            )
            .with_preserved_fds(a.preserve_fds.unwrap_or(0) as i32)
            .validate_id()
            .map_err(Error::container(what()))
        })
        .and_then(|b| {
            b.as_tenant()
                // libcontainer takes a console socket only when detached; it
                // uses the flag for nothing else.
                .with_detach(a.detach || own_tty.is_some())
                .with_process(Some(process_file.path()))
                .with_ignore_paused(a.ignore_paused)
                .with_sub_cgroup(sub_cgroup(&a.cgroup)?)
                .build()
                .map_err(Error::container(what()))
        });
    if let Some(e) = entered {
        e.leave();
    }
    drop(process_file);
    let pid = built?.as_raw();
    if !a.detach {
        foreground::block_signals()?;
    }
    let tty = match own_tty
        .as_ref()
        .map(|s| s.receive().and_then(terminal::attach))
    {
        Some(Err(e)) => {
            // Nobody could talk to it: leave no process behind.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(e);
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    tracing::info!(container = %a.id, pid, detach = a.detach, "exec started");
    if a.detach {
        return Ok(0);
    }
    let code = foreground::wait(pid, tty.as_ref())?;
    if let Some(t) = tty {
        t.finish();
    }
    Ok(code)
}

/// The process runc's `exec` runs for a command line: the container's
/// `process` from config.json, with the command, and `--cwd`, `--env`
/// (appended), `--tty`, `--user`, `--additional-gids` (appended), `--cap`
/// (added to the bounding, effective and permitted sets, and to the ambient
/// set when the spec has an inheritable one), `--no-new-privs`,
/// `--apparmor` and `--process-label` applied on top (runc's `getProcess`).
fn cli_process(config: &Value, a: &ExecArgs) -> Result<Value> {
    if a.command.is_empty() {
        return Err(Error::Usage(
            "exec needs a command or --process FILE".into(),
        ));
    }
    let mut p = match config.get("process") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => {
            return Err(Error::Usage(
                "config.json has no process to exec from".into(),
            ))
        }
    };
    p["args"] = json!(a.command);
    if let Some(cwd) = &a.cwd {
        p["cwd"] = json!(cwd);
    }
    if let Some(ap) = &a.apparmor {
        p["apparmorProfile"] = json!(ap);
    }
    if let Some(label) = &a.process_label {
        p["selinuxLabel"] = json!(label);
    }
    if !a.cap.is_empty() {
        let inheritable = !p["capabilities"]["inheritable"].is_null();
        let mut sets = vec!["bounding", "effective", "permitted"];
        if inheritable {
            sets.push("ambient");
        }
        for set in sets {
            append(&mut p["capabilities"][set], a.cap.iter().map(|c| json!(c)));
        }
    }
    append(&mut p["env"], a.env.iter().map(|e| json!(e)));
    p["terminal"] = json!(a.tty);
    if a.no_new_privs {
        p["noNewPrivileges"] = json!(true);
    }
    if let Some(u) = &a.user {
        let (uid, gid) = parse_user(u)?;
        p["user"]["uid"] = json!(uid);
        if let Some(g) = gid {
            p["user"]["gid"] = json!(g);
        }
    }
    let gids = a
        .additional_gids
        .iter()
        .map(|g| {
            g.parse::<u32>()
                .map(|g| json!(g))
                .map_err(|_| Error::Usage(format!("--additional-gids {g:?}: not a number")))
        })
        .collect::<Result<Vec<Value>>>()?;
    append(&mut p["user"]["additionalGids"], gids);
    Ok(p)
}

/// Appends `items` to the JSON array at `slot` (made one if it is not).
fn append(slot: &mut Value, items: impl IntoIterator<Item = Value>) {
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Value::Array(v) = slot {
        v.extend(items);
    }
}

/// An in-memory file holding `bytes` (closed on exec, so the workload never
/// sees it), for libcontainer to read by its `/proc/self/fd` path.
struct MemFile(std::os::fd::OwnedFd);

impl MemFile {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

fn memfd_with(bytes: &[u8]) -> Result<MemFile> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a static name; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"berth-exec-process".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(owned);
    f.write_all(bytes)
        .map_err(|e| Error::io("writing the exec process", e))?;
    Ok(MemFile(f.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_cgroups_parse() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, Some(50)));
        assert!(parse_user("root").is_err());
        assert_eq!(
            sub_cgroup(&["cpu,memory:/sub".into(), "/sub".into()]).unwrap(),
            Some("/sub".into())
        );
        assert!(sub_cgroup(&["a:/x".into(), "b:/y".into()]).is_err());
        assert_eq!(sub_cgroup(&[]).unwrap(), None);
    }
}
