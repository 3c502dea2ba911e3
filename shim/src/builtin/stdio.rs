//! Container stdio at `/dev/null` stays writable.
//!
//! After `pivot_root`, libcontainer 0.7 (`reopen_dev_null`) replaces every
//! stdio descriptor that points at the host's `/dev/null` with the
//! container's `/dev/null` opened *read-only*, so a workload whose stdout is
//! `/dev/null` fails with "write error: Bad file descriptor". runc opens it
//! read-write. [`Workload`] runs in the container process right before the
//! workload's `execve`, after libcontainer's reopen, and reopens those
//! descriptors read-write. It also lets a process without `PATH` run a
//! path, as runc does; everything else is libcontainer's default executor.

use libcontainer::workload::{
    default::get_executor, Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;
use std::collections::HashMap;

/// The device number of `/dev/null` (major 1, minor 3).
const DEV_NULL: libc::dev_t = 0x103;

/// The executor Berth gives libcontainer: its default, plus the stdio fix.
#[derive(Clone, Default)]
pub struct Workload;

impl Executor for Workload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reopen_dev_null_writable();
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        // libcontainer 0.7 refuses a process without PATH in its env even
        // when args[0] is a path; runc runs it (a pause image may set no
        // env at all). An empty PATH keeps every other check (the file
        // exists and is executable) and still finds no bare name, as runc.
        let has_path = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().as_ref())
            .is_some_and(|env| env.iter().any(|e| e.starts_with("PATH=")));
        if has_path {
            return get_executor().validate(spec);
        }
        let mut with_path = spec.clone();
        if let Some(p) = with_path.process_mut() {
            let mut env = p.env().clone().unwrap_or_default();
            env.push("PATH=".into());
            p.set_env(Some(env));
        }
        get_executor().validate(&with_path)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        get_executor().setup_envs(envs)
    }
}

/// True when `fd` is the `/dev/null` character device opened without write access.
fn is_readonly_dev_null(fd: libc::c_int) -> bool {
    // SAFETY: fstat writes into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != DEV_NULL {
        return false;
    }
    // SAFETY: F_GETFL on a descriptor we just stat'ed.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_ACCMODE == libc::O_RDONLY
}

/// Points stdout and stderr that are a read-only `/dev/null` at a
/// read-write one (as runc's `reOpenDevNull`). Best effort: a failure
/// leaves the descriptor as it was.
pub fn reopen_dev_null_writable() {
    for fd in 1..=2 {
        if !is_readonly_dev_null(fd) {
            continue;
        }
        // SAFETY: a static path; the new descriptor is dup'ed over `fd` and closed.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_a_readonly_dev_null_counts() {
        let ro = std::fs::File::open("/dev/null").unwrap();
        let rw = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let file = tempfile::tempfile().unwrap();
        assert!(is_readonly_dev_null(ro.as_raw_fd()));
        assert!(!is_readonly_dev_null(rw.as_raw_fd()));
        assert!(!is_readonly_dev_null(file.as_raw_fd()));
    }
}
