//! Running host commands with errors that say what failed.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

/// The output of a finished command, with stdout and stderr as text.
#[derive(Debug)]
pub struct Ran {
    /// Exit code, or -1 when killed by a signal.
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Ran {
    /// True when the command exited 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn to_ran(out: Output) -> Ran {
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `Command` for a host program, which must be in the list of
/// `scripts/install-test-deps` (see [`crate::deps`]).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let program = program.as_ref();
    crate::deps::require(&program.to_string_lossy());
    Command::new(program)
}

/// Runs `cmd` to completion (stdin closed) and returns what it did, success or not.
pub fn try_run(cmd: &mut Command) -> Ran {
    crate::deps::require(&cmd.get_program().to_string_lossy());
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    to_ran(out)
}

/// Runs `cmd` and panics with its stderr unless it exits 0; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let what = describe(cmd);
    let r = try_run(cmd);
    assert!(
        r.ok(),
        "`{what}` exited {}\nstdout: {}\nstderr: {}",
        r.code,
        r.stdout,
        r.stderr
    );
    r.stdout
}

/// Shorthand: runs `program args...`, panicking on failure; returns stdout.
pub fn sh<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(command(program).args(args))
}

/// Shorthand: runs `program args...` and returns the result without judging it.
pub fn try_sh<I, S>(program: &str, args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    try_run(command(program).args(args))
}

/// True when `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    which(program).is_some()
}

/// The full path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Like [`try_run`], but stdout and stderr go through files, not pipes: for
/// commands that leave a process holding them (`runc create`, `--detach`),
/// whose pipes would never reach end-of-file.
pub fn try_run_via_files(cmd: &mut Command) -> Ran {
    crate::deps::require(&cmd.get_program().to_string_lossy());
    let what = describe(cmd);
    let dir = crate::artifacts::fresh_dir("out");
    let (o, e) = (dir.join("stdout"), dir.join("stderr"));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).expect("stdout file"))
        .stderr(std::fs::File::create(&e).expect("stderr file"))
        .status()
        .unwrap_or_else(|err| panic!("cannot start `{what}`: {err}"));
    let r = Ran {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}
