//! `exec`: a new process in a running container.

use super::terminal::{self, ConsoleSocket};
use super::{cgroup, foreground, stdio, write_pid_file, Context, Error, Result};
use crate::cli::ExecArgs;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use std::collections::HashMap;

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
pub fn exec(ctx: &Context, a: &ExecArgs) -> Result<i32> {
    let container = ctx.load(&a.id)?;
    if a.process.is_none() && a.command.is_empty() {
        return Err(Error::Usage(
            "exec needs a command or --process FILE".into(),
        ));
    }
    let (user, group) = match &a.user {
        Some(u) => {
            let (u, g) = parse_user(u)?;
            (Some(u), g)
        }
        None => (None, None),
    };
    let env: HashMap<String, String> = a
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let gids = a
        .additional_gids
        .iter()
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| Error::Usage(format!("--additional-gids {g:?}: not a number")))
        })
        .collect::<Result<Vec<u32>>>()?;
    let what = || format!("cannot exec in container \"{}\"", a.id);
    let own_tty = if !a.detach && a.console_socket.is_none() && wants_terminal(a)? {
        Some(ConsoleSocket::new(&ctx.root)?)
    } else {
        None
    };
    let pid = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_executor(stdio::Workload)
        .with_root_path(&ctx.root)
        .map_err(Error::container(what()))?
        .with_console_socket(
            own_tty
                .as_ref()
                .map(ConsoleSocket::path)
                .or(a.console_socket.clone()),
        )
        .with_preserved_fds(a.preserve_fds.unwrap_or(0) as i32)
        .validate_id()
        .map_err(Error::container(what()))?
        .as_tenant()
        // libcontainer takes a console socket only when detached; it uses
        // the flag for nothing else.
        .with_detach(a.detach || own_tty.is_some())
        .with_cwd(a.cwd.as_ref())
        .with_env(env)
        .with_process(a.process.as_ref())
        .with_no_new_privs(a.no_new_privs)
        .with_container_args(a.command.clone())
        .with_additional_gids(gids)
        .with_user(user)
        .with_group(group)
        .with_capabilities(a.cap.clone())
        .with_ignore_paused(a.ignore_paused)
        .with_sub_cgroup(sub_cgroup(&a.cgroup)?)
        .with_apparmor(a.apparmor.clone())
        .with_process_label(a.process_label.clone())
        .build()
        .map_err(Error::container(what()))?
        .as_raw();
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
    if let Ok(cg) = super::cgroup_path(&container) {
        if let Err(e) = cgroup::join_extra(pid, &cg.to_string_lossy()) {
            tracing::warn!(container = %a.id, pid, "{e}");
        }
    }
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

/// Whether the `--process` file asks for a terminal. (libcontainer 0.7
/// builds a process from command-line arguments without one, so `--tty`
/// takes effect only through `--process`, which is what engines pass.)
fn wants_terminal(a: &ExecArgs) -> Result<bool> {
    let Some(p) = &a.process else {
        if a.tty {
            tracing::warn!(
                "exec --tty: the built-in backend gives a terminal only to a --process \
                 file with \"terminal\": true; running without one"
            );
        }
        return Ok(false);
    };
    let text = std::fs::read(p).map_err(|e| Error::io(p.display().to_string(), e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
    Ok(v["terminal"].as_bool().unwrap_or(false))
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
