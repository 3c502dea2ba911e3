//! The built-in libcontainer backend where it must match runc: the state
//! document, cgroup placement and removal, stdio at /dev/null, OOM kills,
//! signals in the foreground, the CVE-2019-5736 guard, and the demo on a
//! host with runc and crun hidden. Most cases run on both backends, runc's
//! result being the reference.

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::berth::{runtime_cmd_on, Backend};
use berth_integration::cmd::{command, try_run, try_run_via_files};
use berth_integration::images::{busybox_bundle, edit_config};
use berth_integration::names::unique;
use berth_integration::process::wait_until;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BOTH: [Backend; 2] = [Backend::Runc, Backend::Builtin];

/// A container this test made; dropping it force-deletes it, so a failed
/// assertion leaves no container, process or cgroup behind.
struct Created {
    binary: PathBuf,
    config: PathBuf,
    root: PathBuf,
    id: String,
    deleted: bool,
}

impl Created {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--berth-config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root);
        c
    }

    /// `delete --force`, asserting that it succeeds.
    fn delete(mut self) {
        self.deleted = true;
        let r = try_run(self.cmd().args(["delete", "--force", &self.id]));
        assert!(r.ok(), "delete {}: {}", self.id, r.stderr);
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = try_run(self.cmd().args(["delete", "--force", &self.id]));
        }
    }
}

/// `create` with `binary` (berth-runtime or a copy of it) on backend `b`,
/// with a pid file at `<bundle>/pid`.
fn create_with(binary: &Path, b: Backend, root: &Path, bundle: &Path, id: &str) -> Created {
    let created = Created {
        binary: binary.to_path_buf(),
        config: b.config().to_path_buf(),
        root: root.to_path_buf(),
        id: id.to_string(),
        deleted: false,
    };
    let r = try_run_via_files(
        created
            .cmd()
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("pid"))
            .arg(id),
    );
    assert!(r.ok(), "create on {b:?}: {}", r.stderr);
    created
}

fn create(b: Backend, root: &Path, bundle: &Path, id: &str) -> Created {
    create_with(&binary("berth-runtime"), b, root, bundle, id)
}

/// The hierarchies (mount names under /sys/fs/cgroup) holding a directory
/// whose path ends in `/<id>`.
fn hierarchies_with(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_paths: Vec<String> = own
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .collect();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let found = own_paths
            .iter()
            .any(|p| e.path().join(p.trim_start_matches('/')).join(id).is_dir());
        if found {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn state_prints_runcs_document_on_both_backends() {
    let mut docs = Vec::new();
    for b in BOTH {
        let root = fresh_dir("state-root");
        let bundle = busybox_bundle(&["sleep", "30"]);
        let id = unique();
        let c = create(b, &root, &bundle, &id);
        let pid: i64 = std::fs::read_to_string(bundle.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let raw = try_run(runtime_cmd_on(b, &root).args(["state", &id])).stdout;
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["pid"], json!(pid), "{b:?}: {v}");
        assert_eq!(v["status"], "created", "{b:?}");
        let list = try_run(runtime_cmd_on(b, &root).args(["list", "--format", "json"]));
        let listed: Value = serde_json::from_str(&list.stdout).expect("list JSON");
        assert_eq!(listed[0]["id"], json!(id), "{b:?}: {listed}");
        assert_eq!(listed[0]["owner"], "root", "{b:?}: list names the owner");
        assert_eq!(
            v["rootfs"],
            json!(std::fs::canonicalize(bundle.join("rootfs")).unwrap()),
            "{b:?}"
        );
        assert_eq!(
            v["bundle"],
            json!(std::fs::canonicalize(&bundle).unwrap()),
            "{b:?}"
        );
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        // Indented JSON, two spaces, as Go's MarshalIndent.
        assert!(raw.starts_with("{\n  \"ociVersion\""), "{b:?}: {raw}");
        c.delete();
        docs.push((keys, v["ociVersion"].clone(), v["owner"].clone()));
    }
    assert_eq!(
        docs[0], docs[1],
        "runc's fields and order, then the built-in's"
    );
}

#[test]
fn cgroups_are_placed_as_runc_places_them_and_removed_on_delete() {
    let mut placed = Vec::new();
    for b in BOTH {
        let root = fresh_dir("cg-root");
        let bundle = busybox_bundle(&["sleep", "30"]);
        edit_config(&bundle, |c| {
            if let Some(l) = c["linux"].as_object_mut() {
                l.remove("cgroupsPath");
            }
        });
        let id = unique();
        let c = create(b, &root, &bundle, &id);
        let hs = hierarchies_with(&id);
        assert!(
            hs.iter().any(|h| h == "memory"),
            "{b:?}: not in the memory hierarchy: {hs:?}"
        );
        assert!(
            !std::fs::read_dir("/sys/fs/cgroup/memory")
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(":youki:")),
            "a :youki: cgroup was made"
        );
        c.delete();
        assert!(
            wait_until(Duration::from_secs(3), || hierarchies_with(&id).is_empty()),
            "{b:?}: cgroups left after delete: {:?}",
            hierarchies_with(&id)
        );
        placed.push(hs);
    }
    assert_eq!(
        placed[0], placed[1],
        "runc's hierarchies, then the built-in backend's"
    );
    assert!(
        placed[0].iter().any(|h| h == "systemd"),
        "name=systemd joined: {:?}",
        placed[0]
    );
}

#[test]
fn stdout_at_dev_null_still_writes() {
    for b in BOTH {
        let root = fresh_dir("null-root");
        let bundle = busybox_bundle(&["sh", "-c", "echo to-null || exit 9; echo fine >&2"]);
        let id = unique();
        let out = Command::new(binary("berth-runtime"))
            .arg("--berth-config")
            .arg(b.config())
            .arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{b:?}: {err}");
        assert!(err.contains("fine"), "{b:?}: {err}");
    }
}

#[test]
fn foreground_run_exit_codes_signals_and_oom() {
    for b in BOTH {
        let root = fresh_dir("fg-root");
        let run = |bundle: &Path| {
            let mut c = runtime_cmd_on(b, &root);
            c.args(["run", "--bundle"]).arg(bundle).arg(unique());
            c
        };
        // The workload's exit code is run's.
        let bundle = busybox_bundle(&["sh", "-c", "exit 3"]);
        assert_eq!(try_run(&mut run(&bundle)).code, 3, "{b:?}");
        // SIGTERM to the runtime reaches the workload, whose trap decides.
        let bundle = busybox_bundle(&[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ]);
        let mut child = run(&bundle)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "{b:?}");
        // SAFETY: signalling the child this test spawned, by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(7), "{b:?}: signal forwarded");
        // An OOM kill ends the run with 137.
        let bundle = busybox_bundle(&["sh", "-c", "x=a; while true; do x=\"$x$x\"; done"]);
        edit_config(&bundle, |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 16 << 20, "swap": 16 << 20});
        });
        let r = try_run(&mut run(&bundle));
        assert_eq!(r.code, 137, "{b:?}: OOM kill: {}", r.stderr);
    }
}

/// Runs `line` (a shell line) on a fresh terminal made by `script`, with
/// `input` typed into it after a moment; its exit code and what the
/// terminal showed.
fn on_a_terminal(line: &str, input: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = command("script")
        .args([
            "-qec",
            // A bounded wait, so a lost keystroke fails the test, not hangs it.
            &format!("stty cols 91 rows 33; timeout --foreground -k 5 60 {line}"),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (bsdutils)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = stdin.write_all(input.as_bytes());
    let out = child.wait_with_output().expect("script");
    drop(stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// berth-runtime with backend `b` and state root `root`, as a shell line.
fn runtime_line(b: Backend, root: &Path) -> String {
    format!(
        "{} --berth-config {} --root {}",
        binary("berth-runtime").display(),
        b.config().display(),
        root.display()
    )
}

#[test]
fn foreground_run_and_exec_get_a_terminal_without_a_console_socket() {
    // The size is read after the input: runc sets it just after start, so
    // a workload reading it at once may see 0 0 on runc.
    let script = "tty; read x; stty size; echo got-$x; exit 5";
    for b in BOTH {
        let root = fresh_dir("tty-root");
        // run: the bundle asks for a terminal; the caller's size carries over.
        let bundle = busybox_bundle(&["sh", "-c", script]);
        edit_config(&bundle, |c| c["process"]["terminal"] = json!(true));
        let line = format!(
            "{} run --bundle {} {}",
            runtime_line(b, &root),
            bundle.display(),
            unique()
        );
        let (code, shown) = on_a_terminal(&line, "typed\n");
        assert_eq!(code, 5, "{b:?}: {shown}");
        assert!(shown.contains("/dev/pts/"), "{b:?}: no terminal: {shown}");
        assert!(
            shown.contains("33 91"),
            "{b:?}: size not passed on: {shown}"
        );
        assert!(
            shown.contains("got-typed"),
            "{b:?}: input not passed on: {shown}"
        );
        // exec --process with "terminal": true, into a running container.
        let bundle = busybox_bundle(&["sleep", "30"]);
        let c = create(b, &root, &bundle, &unique());
        assert!(try_run(c.cmd().args(["start", &c.id])).ok());
        let process = bundle.join("process.json");
        std::fs::write(
            &process,
            json!({
                "terminal": true, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                "args": ["sh", "-c", script], "env": ["PATH=/bin:/usr/bin"],
            })
            .to_string(),
        )
        .unwrap();
        let line = format!(
            "{} exec --process {} {}",
            runtime_line(b, &root),
            process.display(),
            c.id
        );
        let (code, shown) = on_a_terminal(&line, "again\n");
        assert_eq!(code, 5, "{b:?} exec: {shown}");
        assert!(
            shown.contains("/dev/pts/"),
            "{b:?} exec: no terminal: {shown}"
        );
        assert!(shown.contains("got-again"), "{b:?} exec: {shown}");
        c.delete();
        // Berth's own console socket is gone.
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !left
                .iter()
                .any(|n| n.to_string_lossy().starts_with(".berth-tty")),
            "{b:?}: {left:?}"
        );
    }
}

#[test]
fn exec_detached_with_process_json_and_pid_file() {
    for b in BOTH {
        let root = fresh_dir("exec-root");
        let bundle = busybox_bundle(&["sleep", "30"]);
        let id = unique();
        let c = create(b, &root, &bundle, &id);
        assert!(try_run(runtime_cmd_on(b, &root).args(["start", &id])).ok());
        let process = bundle.join("process.json");
        std::fs::write(
            &process,
            json!({
                "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                "args": ["sh", "-c", "sleep 30; : exec-marker"],
                "env": ["PATH=/bin:/usr/bin"],
            })
            .to_string(),
        )
        .unwrap();
        let pid_file = bundle.join("exec.pid");
        let r = try_run_via_files(
            runtime_cmd_on(b, &root)
                .args(["exec", "--detach", "--process"])
                .arg(&process)
                .arg("--pid-file")
                .arg(&pid_file)
                .arg(&id),
        );
        assert!(r.ok(), "{b:?} exec: {}", r.stderr);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ps = try_run(runtime_cmd_on(b, &root).args(["ps", "--format", "json", &id]));
        let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap_or_default();
        assert!(pids.contains(&pid), "{b:?}: {pid} not in {pids:?}");
        // The pid may be written just before the process execs its program.
        let cmdline = || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            wait_until(Duration::from_secs(3), || String::from_utf8_lossy(
                &cmdline()
            )
            .contains("exec-marker")),
            "{b:?}: pid {pid} is not the exec'd process"
        );
        // Foreground exec returns the process's code.
        let r = try_run(runtime_cmd_on(b, &root).args(["exec", &id, "sh", "-c", "exit 4"]));
        assert_eq!(r.code, 4, "{b:?}: {}", r.stderr);
        c.delete();
    }
}

#[test]
fn container_processes_cannot_overwrite_berth_cve_2019_5736() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    // A private copy of berth-runtime, so that no other test executes the
    // same file (which would make any write fail with ETXTBSY anyway).
    let dir = fresh_dir("seal");
    let bin = dir.join("berth-runtime");
    std::fs::copy(binary("berth-runtime"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(&bin).unwrap();
    let root = dir.join("root");
    let bundle = busybox_bundle(&["sleep", "30"]);
    let id = unique();
    let c = create_with(&bin, Backend::Builtin, &root, &bundle, &id);
    let pid = std::fs::read_to_string(bundle.join("pid")).unwrap();
    // The attack: while the init still runs Berth's code, hold its
    // /proc/<pid>/exe; once Berth is gone, reopen it for writing.
    let exe = std::fs::File::open(format!("/proc/{}/exe", pid.trim())).unwrap();
    assert!(std::fs::read(format!("/proc/self/fd/{}", exe.as_raw_fd())).unwrap() == before);
    assert!(try_run(c.cmd().args(["start", &id])).ok());
    // `start` returns before the init has exec'd the workload; until it
    // has, the kernel refuses writers with ETXTBSY. Like a real exploit,
    // retry until the file is no longer being executed.
    let mut reopened;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        match &reopened {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the init never left Berth's binary"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => break,
        }
    }
    let err =
        reopened.expect_err("the host binary was opened for writing from the container's exe");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
        "expected EROFS (read-only mount) or EPERM (sealed memfd): {err}"
    );
    assert!(std::fs::read(&bin).unwrap() == before, "binary changed");
    c.delete();
    // runc holds no state for it: the built-in backend ran it.
    assert!(!try_run(
        command("runc")
            .arg("--root")
            .arg(&root)
            .args(["state", &id])
    )
    .ok());
}

#[test]
fn the_demo_runs_with_runc_and_crun_hidden() {
    let _g = berth_integration::berth::cpu_lock();
    // A private mount namespace where runc and crun are /dev/null (not
    // executable files), and a PATH without their directories: berth-runtime's
    // `auto` must fall through to the built-in backend.
    let mut hide = String::new();
    for p in ["runc", "crun"] {
        for dir in [
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
            "/usr/local/sbin",
            "/usr/local/bin",
        ] {
            let f = Path::new(dir).join(p);
            if f.is_file() && !std::fs::symlink_metadata(&f).unwrap().is_symlink() {
                hide.push_str(&format!("mount --bind /dev/null {} && ", f.display()));
            }
        }
    }
    let script = format!(
        "{hide}! command -v runc >/dev/null && ! command -v crun >/dev/null && exec {demo} {dir}",
        demo = binary("berth-demo").display(),
        dir = binary("berth-runtime").parent().unwrap().display(),
    );
    let r =
        try_run(command("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]));
    assert!(r.ok(), "demo failed:\n{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("backend: libcontainer (built in)"),
        "demo did not run on the built-in backend:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("CPUs this container sees: 2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("2 packets received"),
        "no macvlan ping in the forwarded logs:\n{}",
        r.stdout
    );
}

/// On a host where systemd is not PID 1 (this one), the built-in backend
/// refuses `--systemd-cgroup` with an error that says why, leaving nothing
/// behind; with systemd it works (the VM tier's
/// `vm::builtin_backend_with_the_systemd_driver`).
#[test]
fn systemd_cgroup_without_systemd_is_a_clear_error() {
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test expects a host without systemd as PID 1"
    );
    let root = fresh_dir("builtin-sd-root");
    let bundle = busybox_bundle(&["true"]);
    let id = unique();
    let r = try_run_via_files(
        runtime_cmd_on(Backend::Builtin, &root)
            .arg("--systemd-cgroup")
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg(&id),
    );
    assert!(!r.ok(), "create with --systemd-cgroup succeeded");
    assert!(
        r.stderr.contains("systemd is not running on this host"),
        "{}",
        r.stderr
    );
    assert!(!root.join(&id).exists(), "state left behind");
}

/// A seccomp agent on `listenerPath`: takes each container process's notify
/// fd (SCM_RIGHTS, with runc's `ContainerProcessState` JSON), keeps the
/// states it was sent, and answers every notified syscall with ENOMSG.
struct SeccompAgent {
    path: PathBuf,
    states: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl SeccompAgent {
    fn start() -> SeccompAgent {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let path = fresh_dir("seccomp-agent").join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = states.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut buf = vec![0u8; 64 * 1024];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let Ok(msg) = recvmsg::<()>(
                    conn.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                ) else {
                    continue;
                };
                let n = msg.bytes;
                let fds: Vec<OwnedFd> = msg
                    .cmsgs()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => Some(fds),
                        _ => None,
                    })
                    .flatten()
                    // SAFETY: the kernel just gave us these descriptors.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .collect();
                let state: Value = serde_json::from_slice(&buf[..n]).unwrap_or(Value::Null);
                seen.lock().unwrap().push(state);
                for fd in fds {
                    std::thread::spawn(move || loop {
                        let Ok(req) = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()) else {
                            return;
                        };
                        let resp = libseccomp::ScmpNotifResp::new_error(
                            req.id,
                            -libc::ENOMSG,
                            libseccomp::ScmpNotifRespFlags::empty(),
                        );
                        let _ = resp.respond(fd.as_raw_fd());
                    });
                }
            }
        });
        SeccompAgent { path, states }
    }
}

/// `SCMP_ACT_NOTIFY` as runc has it, for the init and for an exec'd
/// process: each one's notify fd reaches the profile's `listenerPath` with
/// the container's state, and the agent's answer is what the process sees.
#[test]
fn seccomp_notify_reaches_the_agent_for_init_and_exec() {
    for b in BOTH {
        let agent = SeccompAgent::start();
        let root = fresh_dir("notify-root");
        let bundle = busybox_bundle(&["sleep", "30"]);
        edit_config(&bundle, |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "listenerPath": agent.path,
                "listenerMetadata": "berth-test",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
            });
            c["root"]["readonly"] = json!(false);
        });
        let id = unique();
        let c = create(b, &root, &bundle, &id);
        assert!(try_run(runtime_cmd_on(b, &root).args(["start", &id])).ok());
        let r = try_run(runtime_cmd_on(b, &root).args([
            "exec",
            &id,
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; mkdir /tmp/notified",
        ]));
        assert!(
            r.stdout.contains("Seccomp:\t2"),
            "{b:?}: the exec'd process has no filter: {} {}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains("No message of desired type"),
            "{b:?}: mkdir was not answered by the agent: {} {}",
            r.stdout,
            r.stderr
        );
        let states = agent.states.lock().unwrap().clone();
        assert_eq!(
            states.len(),
            2,
            "{b:?}: one fd for init, one for exec: {states:?}"
        );
        let init_pid: i64 = std::fs::read_to_string(bundle.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for s in &states {
            assert_eq!(s["metadata"], "berth-test", "{b:?}: {s}");
            assert_eq!(s["state"]["id"], id.as_str(), "{b:?}: {s}");
            assert_eq!(s["state"]["pid"], init_pid, "{b:?}: {s}");
            assert_eq!(s["fds"], json!(["seccompFd"]), "{b:?}: {s}");
        }
        assert_eq!(states[1]["state"]["status"], "running", "{b:?}");
        c.delete();
    }
}
