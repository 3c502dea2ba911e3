//! The pass-through path: verbs Berth does not change, for a container on a
//! binary backend, handed over before any of the full command line's work
//! (clap, logging set-up): `start`, `state`, `pause`, `resume`, `kill`,
//! `ps`, `events`, `exec` (probes and `kubectl exec` come this way), and
//! `delete` of a container that holds no planned CPUs. `exec` and `delete`
//! of a container with a CPU view ([`crate::cpuview`]) go the full way: the
//! exec'd process gets the CPU-count environment, the delete removes the view.
//!
//! It reads the configuration (for `state_dir`) and the container's record,
//! nothing else. Anything it is not sure of (an unknown flag, `--debug`, no
//! record, the built-in backend, a config error) goes the full way, which
//! also reports errors properly.

use crate::backend::Backend;
use crate::config::RuntimeConfig;
use crate::records::{valid_id, Records};
use std::ffi::OsString;
use std::path::PathBuf;

/// What the pass-through path found: the backend to exec and its arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Handover {
    /// The binary.
    pub backend: Backend,
    /// The command line it gets (Berth's own flag removed).
    pub args: Vec<OsString>,
}

/// The global flags runc takes with a value, which Berth passes on.
const VALUE_FLAGS: &[&str] = &["--root", "--log", "--log-format", "--rootless", "--criu"];

/// The handover for `args` (argv without the program), or None when the
/// verb needs the full path.
pub fn handover(args: &[OsString]) -> Option<Handover> {
    let mut root: Option<PathBuf> = None;
    let mut config: Option<PathBuf> = None;
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut it = args.iter();
    let verb = loop {
        let a = it.next()?.to_str()?;
        if !a.starts_with('-') {
            break a;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a, None),
        };
        if flag == "--systemd-cgroup" && inline.is_none() {
            out.push(a.into());
            continue;
        }
        if flag != "--berth-config" && !VALUE_FLAGS.contains(&flag) {
            return None; // --debug, --help, --version, anything unknown
        }
        let value = match inline {
            Some(v) => v,
            None => it.next()?.to_str()?.to_string(),
        };
        match flag {
            "--berth-config" => {
                config = Some(value.into());
                continue;
            }
            "--root" => root = Some(value.clone().into()),
            _ => {}
        }
        out.push(flag.into());
        out.push(value.into());
    };
    let rest: Vec<&str> = it.map(|a| a.to_str()).collect::<Option<_>>()?;
    // The second value: whether Berth has work in the verb for a container
    // that holds CPUs or has a CPU view.
    let (id, berth_part) = match (verb, rest.as_slice()) {
        ("start" | "state" | "pause" | "resume", [id]) => (*id, false),
        ("kill", ["-a" | "--all", id] | ["-a" | "--all", id, _]) => (*id, false),
        ("kill", [id] | [id, _]) => (*id, false),
        ("delete", [id] | ["-f" | "--force", id]) => (*id, true),
        ("ps", [id] | ["-f" | "--format", _, id]) => (*id, false),
        ("events", [id] | ["--stats", id] | ["--interval", _, id]) => (*id, false),
        ("exec", flags) => (exec_id(flags)?, true),
        _ => return None,
    };
    if id.starts_with('-') || !valid_id(id) {
        return None;
    }
    let (cfg, _) = RuntimeConfig::load(config.as_deref()).ok()?;
    let rec = Records::new(&cfg, root.as_deref()).record(id)?;
    if berth_part && verb == "delete" && cfg.cpus.enabled && rec.cpus_planned {
        return None;
    }
    if berth_part && crate::cpuview::CpuView::of(&cfg, root.as_deref(), id).exists() {
        return None;
    }
    if rec.delegate.is_builtin() || !rec.delegate.usable() {
        return None;
    }
    out.push(verb.into());
    out.extend(rest.iter().map(OsString::from));
    Some(Handover {
        backend: rec.delegate,
        args: out,
    })
}

/// `exec`'s flags that take a value, and those that do not.
const EXEC_VALUE_FLAGS: &[&str] = &[
    "--console-socket",
    "--cwd",
    "-e",
    "--env",
    "-u",
    "--user",
    "-g",
    "--additional-gids",
    "-p",
    "--process",
    "--pid-file",
    "--process-label",
    "--apparmor",
    "-c",
    "--cap",
    "--preserve-fds",
    "--cgroup",
];
const EXEC_BOOL_FLAGS: &[&str] = &[
    "-t",
    "--tty",
    "-d",
    "--detach",
    "--no-new-privs",
    "--ignore-paused",
];

/// The container id of `exec FLAGS ID [COMMAND...]`: the first word that is
/// not a flag or a flag's value. None on any flag Berth does not know.
fn exec_id<'a>(words: &[&'a str]) -> Option<&'a str> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if !w.starts_with('-') {
            return Some(w);
        }
        let flag = w.split_once('=').map_or(*w, |(f, _)| f);
        if EXEC_VALUE_FLAGS.contains(&flag) {
            if !w.contains('=') {
                it.next()?;
            }
        } else if !EXEC_BOOL_FLAGS.contains(w) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, Records) {
        let d = tempfile::tempdir().unwrap();
        let cfg_path = d.path().join("runtime.toml");
        let state = d.path().join("state");
        std::fs::write(
            &cfg_path,
            format!("state_dir = {:?}\n", state.display().to_string()),
        )
        .unwrap();
        let (cfg, _) = RuntimeConfig::load(Some(&cfg_path)).unwrap();
        let records = Records::new(&cfg, Some(&d.path().join("root")));
        (d, cfg_path, records)
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn exec_and_delete_of_a_container_with_a_cpu_view_go_the_full_way() {
        let (d, cfg_path, records) = setup();
        let sh = Backend::Exec("/bin/sh".into());
        records.put("viewed", &sh, None, None, false).unwrap();
        let (cfg, _) = RuntimeConfig::load(Some(&cfg_path)).unwrap();
        let root_dir = d.path().join("root");
        let root = root_dir.display().to_string();
        let c = cfg_path.display().to_string();
        let verb = |v: &[&str]| {
            let mut a = vec!["--root", root.as_str(), "--berth-config", c.as_str()];
            a.extend_from_slice(v);
            handover(&args(&a))
        };
        assert!(verb(&["exec", "viewed", "true"]).is_some(), "no view yet");
        crate::cpuview::CpuView::of(&cfg, Some(&root_dir), "viewed")
            .write(1, 0)
            .unwrap();
        assert!(verb(&["exec", "--process", "/p.json", "viewed"]).is_none());
        assert!(verb(&["delete", "viewed"]).is_none());
        assert!(
            verb(&["state", "viewed"]).is_some(),
            "other verbs still pass"
        );
    }

    #[test]
    fn plain_verbs_of_a_recorded_binary_container_pass_through() {
        let (d, cfg, records) = setup();
        let sh = Backend::Exec("/bin/sh".into());
        records.put("c1", &sh, None, None, false).unwrap();
        records.put("planned", &sh, None, None, true).unwrap();
        records
            .put("inproc", &Backend::Builtin, None, None, false)
            .unwrap();
        let root = d.path().join("root").display().to_string();
        let cfg = cfg.display().to_string();
        let h = handover(&args(&[
            "--root",
            &root,
            "--berth-config",
            &cfg,
            "kill",
            "--all",
            "c1",
            "KILL",
        ]))
        .unwrap();
        assert_eq!(h.backend, sh);
        assert_eq!(
            h.args,
            args(&["--root", &root, "kill", "--all", "c1", "KILL"])
        );
        let h = handover(&args(&[
            &format!("--root={root}"),
            &format!("--berth-config={cfg}"),
            "--log",
            "/l",
            "delete",
            "-f",
            "c1",
        ]))
        .unwrap();
        assert_eq!(
            h.args,
            args(&["--root", &root, "--log", "/l", "delete", "-f", "c1"])
        );
        let h = handover(&args(&[
            "--root",
            &root,
            "--berth-config",
            &cfg,
            "exec",
            "--process",
            "/p.json",
            "-d",
            "--pid-file=/pid",
            "c1",
        ]))
        .unwrap();
        assert_eq!(h.args.last().unwrap(), "c1");
        let h = handover(&args(&[
            "--root",
            &root,
            "--berth-config",
            &cfg,
            "exec",
            "-t",
            "c1",
            "sh",
            "-c",
            "true",
        ]))
        .unwrap();
        assert_eq!(h.args.len(), 8);
        assert!(handover(&args(&[
            "--root",
            &root,
            "--berth-config",
            &cfg,
            "ps",
            "-f",
            "json",
            "c1"
        ]))
        .is_some());
        for full in [
            vec!["--root", &root, "--berth-config", &cfg, "delete", "planned"], // its CPUs are released
            vec!["--root", &root, "--berth-config", &cfg, "state", "inproc"], // the built-in backend
            vec!["--root", &root, "--berth-config", &cfg, "state", "unknown"], // no record
            vec![
                "--root",
                &root,
                "--berth-config",
                &cfg,
                "--debug",
                "state",
                "c1",
            ],
            vec![
                "--root",
                &root,
                "--berth-config",
                &cfg,
                "exec",
                "inproc",
                "true",
            ],
            vec![
                "--root",
                &root,
                "--berth-config",
                &cfg,
                "exec",
                "--new-flag",
                "c1",
                "true",
            ],
            vec!["--root", &root, "--berth-config", &cfg, "state", "--help"],
            vec![
                "--root",
                &root,
                "--berth-config",
                &cfg,
                "state",
                "c1",
                "extra",
            ],
            vec![
                "--root",
                &root,
                "--berth-config",
                "/nonexistent.toml",
                "state",
                "c1",
            ],
        ] {
            assert_eq!(handover(&args(&full)), None, "{full:?}");
        }
    }
}
