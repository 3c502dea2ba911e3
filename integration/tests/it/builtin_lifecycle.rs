//! The built-in backend's lifecycle against runc's: what a failing hook of
//! each kind does to create, start and delete, and mount propagation both
//! ways for Kubernetes' Bidirectional and HostToContainer mounts.

use berth_integration::artifacts::fresh_dir;
use berth_integration::berth::{runtime_cmd_on, Backend};
use berth_integration::cmd::{sh, try_run, try_run_via_files};
use berth_integration::images::{busybox_bundle, edit_config};
use berth_integration::names::unique;
use berth_integration::process::wait_until;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const BOTH: [Backend; 2] = [Backend::Runc, Backend::Builtin];

/// Whether any cgroup hierarchy still holds a directory named `id`.
fn cgroup_left(id: &str) -> bool {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().any(|h| h.path().join(id).exists()))
        .unwrap_or(false)
}

/// Creates, starts, stops and deletes a container whose `kind` hook fails,
/// on `b`; says what each step did and what was left.
fn with_failing_hook(b: Backend, kind: &str) -> String {
    let root = fresh_dir("hook-root");
    let bundle = busybox_bundle(&["sleep", "30"]);
    let id = unique();
    edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        // createContainer and startContainer run in the container: busybox's false.
        c["hooks"][kind] = json!([{"path": "/bin/false", "args": ["false"]}]);
    });
    let cmd = || runtime_cmd_on(b, &root);
    let mut out = Vec::new();
    let created = try_run_via_files(cmd().args(["create", "--bundle"]).arg(&bundle).arg(&id));
    out.push(format!("create ok={}", created.ok()));
    if created.ok() {
        let started = try_run_via_files(cmd().args(["start", &id]));
        out.push(format!("start ok={}", started.ok()));
        let status = || {
            let state = try_run(cmd().args(["state", &id]));
            serde_json::from_str::<serde_json::Value>(&state.stdout)
                .map(|v| v["status"].as_str().unwrap_or("?").to_string())
                .unwrap_or_else(|_| "gone".into())
        };
        // A failing startContainer hook ends the init a moment after start
        // returns: give the state a second to settle.
        wait_until(Duration::from_secs(1), || status() != "running");
        let status = status();
        out.push(format!("then {status}"));
        if status == "running" {
            let _ = try_run(cmd().args(["kill", &id, "KILL"]));
            wait_until(Duration::from_secs(5), || {
                try_run(cmd().args(["state", &id]))
                    .stdout
                    .contains("stopped")
            });
        }
        let deleted = try_run(cmd().args(["delete", &id]));
        out.push(format!("delete ok={}", deleted.ok()));
    }
    // Whatever happened, --force leaves nothing; then count what is left.
    let _ = try_run(cmd().args(["delete", "--force", &id]));
    let left = wait_until(Duration::from_secs(3), || {
        !root.join(&id).exists() && !cgroup_left(&id)
    });
    out.push(format!("clean={left}"));
    out.join(", ")
}

#[test]
fn a_failing_hook_of_each_kind_does_what_it_does_on_runc() {
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let runc = with_failing_hook(Backend::Runc, kind);
        let got = with_failing_hook(Backend::Builtin, kind);
        // Debian's runc 1.1.5 runs poststart hooks during `create` (fixed in
        // runc 1.2); the OCI spec and the built-in backend run them at
        // `start`. Either way a failing one fails the verb and leaves
        // nothing running.
        let want = if kind == "poststart" {
            assert_eq!(runc, "create ok=false, clean=true");
            "create ok=true, start ok=false, then stopped, delete ok=true, clean=true".to_string()
        } else {
            runc
        };
        assert_eq!(
            got, want,
            "a failing {kind} hook: built-in, then the expectation"
        );
        if kind == "poststop" {
            // The OCI spec: a failing poststop hook is a warning, and the
            // delete goes on.
            assert!(
                want.contains("delete ok=true") && want.contains("clean=true"),
                "{want}"
            );
        }
    }
}

/// True when the mount table of `pid` has a mount point ending in `suffix`.
fn mounted(pid: &str, suffix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m.ends_with(suffix)))
}

/// A bind mount with `propagation` (`rshared` or `rslave`): does a mount
/// made on the host under its source appear in the container, and does one
/// made in the container appear on the host?
fn propagation(b: Backend, propagation: &str) -> (bool, bool) {
    let shared = fresh_dir("prop");
    let d = shared.to_str().unwrap();
    // The source must itself be a shared mount for anything to propagate.
    sh("mount", ["--bind", d, d]);
    sh("mount", ["--make-shared", d]);
    std::fs::create_dir_all(shared.join("from-host")).unwrap();
    std::fs::create_dir_all(shared.join("from-container")).unwrap();
    let root = fresh_dir("prop-root");
    let bundle = busybox_bundle(&["sleep", "30"]);
    let id = unique();
    edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        // containerd sets the root's propagation from its mounts' strongest.
        c["linux"]["rootfsPropagation"] = json!(propagation);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/mnt/prop", "type": "bind", "source": d, "options": ["rbind", propagation]}));
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_ADMIN"));
        }
    });
    let cmd = || runtime_cmd_on(b, &root);
    let r = try_run_via_files(
        cmd()
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(bundle.join("pid"))
            .arg(&id),
    );
    assert!(r.ok(), "{b:?} {propagation}: create: {}", r.stderr);
    assert!(try_run(cmd().args(["start", &id])).ok());
    let pid = std::fs::read_to_string(bundle.join("pid")).unwrap();
    sh(
        "mount",
        ["-t", "tmpfs", "berth-prop", &format!("{d}/from-host")],
    );
    let to_container = wait_until(Duration::from_secs(2), || {
        mounted(pid.trim(), "/mnt/prop/from-host")
    });
    let inside = try_run(cmd().args([
        "exec",
        &id,
        "mount",
        "-t",
        "tmpfs",
        "berth-prop",
        "/mnt/prop/from-container",
    ]));
    assert!(
        inside.ok(),
        "{b:?} {propagation}: mount inside: {}",
        inside.stderr
    );
    let to_host = wait_until(Duration::from_secs(2), || {
        mounted("self", &format!("{d}/from-container"))
    });
    let _ = try_run(cmd().args(["delete", "--force", &id]));
    for m in ["from-container", "from-host", ""] {
        let _ =
            try_run(berth_integration::cmd::command("umount").args(["-l", &format!("{d}/{m}")]));
    }
    assert!(!mounted("self", d), "{d} still mounted");
    assert!(!Path::new(&root.join(&id)).exists());
    (to_container, to_host)
}

#[test]
fn bidirectional_and_host_to_container_mounts_propagate_as_on_runc() {
    for b in BOTH {
        assert_eq!(
            propagation(b, "rshared"),
            (true, true),
            "{b:?}: rshared (Bidirectional) propagates both ways"
        );
        assert_eq!(
            propagation(b, "rslave"),
            (true, false),
            "{b:?}: rslave (HostToContainer) propagates to the container only"
        );
    }
}

/// A busybox container running `sleep 30` on `b`, created and started under
/// `root`, in cgroup `/<id>`; returns its bundle and id.
fn running(b: Backend, root: &Path) -> (std::path::PathBuf, String) {
    let bundle = busybox_bundle(&["sleep", "30"]);
    let id = unique();
    edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{id}"))
    });
    let cmd = || runtime_cmd_on(b, root);
    let r = try_run_via_files(cmd().args(["create", "--bundle"]).arg(&bundle).arg(&id));
    assert!(r.ok(), "{b:?}: create: {}", r.stderr);
    let r = try_run_via_files(cmd().args(["start", &id]));
    assert!(r.ok(), "{b:?}: start: {}", r.stderr);
    (bundle, id)
}

#[test]
fn a_second_start_is_refused_and_the_container_keeps_running() {
    for b in BOTH {
        let root = fresh_dir("start-root");
        let (_, id) = running(b, &root);
        let cmd = || runtime_cmd_on(b, &root);
        let again = try_run_via_files(cmd().args(["start", &id]));
        let state = try_run(cmd().args(["state", &id])).stdout;
        let _ = try_run(cmd().args(["delete", "--force", &id]));
        assert!(!again.ok(), "{b:?}: a second start must fail");
        assert!(state.contains("\"running\""), "{b:?}: {state}");
    }
}

#[test]
fn exec_keeps_preserved_fds_as_runc() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    for b in BOTH {
        let root = fresh_dir("fds-root");
        let (bundle, id) = running(b, &root);
        let cmd = || runtime_cmd_on(b, &root);
        let secret = bundle.join("passed");
        std::fs::write(&secret, "through fd 3\n").unwrap();
        let file = std::fs::File::open(&secret).unwrap();
        let fd = file.as_raw_fd();
        let mut c = cmd();
        c.args([
            "exec",
            "--preserve-fds",
            "1",
            &id,
            "sh",
            "-c",
            "cat <&3; ls /proc/self/fd | wc -l",
        ]);
        // SAFETY: dup2 and fcntl in the child before exec, onto fd 3.
        unsafe {
            c.pre_exec(move || {
                // (dup2 onto itself would keep close-on-exec: clear it.)
                if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let r = try_run(&mut c);
        let _ = try_run(cmd().args(["delete", "--force", &id]));
        assert!(r.ok(), "{b:?}: {}", r.stderr);
        let mut lines = r.stdout.lines();
        assert_eq!(lines.next(), Some("through fd 3"), "{b:?}: {}", r.stdout);
        // stdin, stdout, stderr, fd 3 and the one ls opened: nothing of Berth's leaks.
        assert_eq!(
            lines.next().map(str::trim),
            Some("5"),
            "{b:?}: {}",
            r.stdout
        );
    }
}
