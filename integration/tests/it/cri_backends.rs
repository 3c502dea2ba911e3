//! What Kubernetes does every day, through containerd's CRI, on both of
//! berth-runtime's backends (the `berth` handler delegating to runc, and
//! `berth-builtin`): every case that passes on runc must pass, with the same
//! observations, on the built-in backend.

use berth_integration::artifacts::fresh_dir;
use berth_integration::berth::{cpu_lock, Backend};
use berth_integration::engines::cri::{container_config, Pod};
use berth_integration::process::wait_until;
use k8s_cri::v1::{
    ContainerConfig, Int64Value, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    NamespaceMode,
};
use std::time::{Duration, Instant};

/// Runs `case` on runc's handler, then on the built-in one; the built-in
/// backend's observations must be runc's. Returns them.
fn on_both(case: impl Fn(Backend) -> String) -> String {
    let _g = cpu_lock();
    let runc = case(Backend::Runc);
    let builtin = case(Backend::Builtin);
    assert_eq!(builtin, runc, "the built-in backend, then runc");
    runc
}

fn pod(b: Backend) -> Pod {
    Pod::run(b.cri_handler()).expect("RunPodSandbox")
}

/// The container's security context, made if it has none.
fn security(cfg: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// `sh -c script` in container `c`: "exit code: stdout".
fn sh(pod: &mut Pod, c: &str, script: &str) -> String {
    let (code, out, err) = pod.exec_sync(c, &["sh", "-c", script]).expect("ExecSync");
    format!(
        "{code}: {}{}",
        out.trim(),
        if code != 0 { err.trim() } else { "" }
    )
}

#[test]
fn volumes_including_a_host_path_that_is_a_symlink() {
    let seen = on_both(|b| {
        let dir = fresh_dir("cri-vol");
        std::fs::write(dir.join("hello"), "from the host\n").unwrap();
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let mut p = pod(b);
        let mut cfg = container_config("vol", &["sleep", "300"]);
        cfg.mounts = vec![
            Mount {
                container_path: "/data".into(),
                host_path: dir.display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/link".into(),
                host_path: link.display().to_string(),
                readonly: true,
                ..Default::default()
            },
        ];
        let c = p.start(cfg).expect("container with volumes");
        let out = [
            sh(&mut p, &c, "cat /data/hello /link/hello"),
            sh(&mut p, &c, "echo x > /data/new && cat /data/new"),
            sh(&mut p, &c, "echo x > /link/new 2>/dev/null; echo $?"),
        ]
        .join(" | ");
        drop(p);
        let _ = std::fs::remove_file(&link);
        out
    });
    assert_eq!(
        seen, "0: from the host\nfrom the host | 0: x | 0: 1",
        "both volumes visible, the read-only one refuses writes"
    );
}

#[test]
fn exec_sync_with_and_without_a_timeout() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let c = p.start_container(&["sleep", "300"], None).unwrap();
        let quick = p.exec_sync_timeout(&c, &["echo", "hi"], 0).unwrap();
        let started = Instant::now();
        let slow = p.exec_sync_timeout(&c, &["sleep", "30"], 1);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(15),
            "{b:?}: the timeout was not kept ({waited:?})"
        );
        let slow = match slow {
            Ok((code, _, _)) => format!("exit {code}"),
            Err(s) => format!("error {:?}", s.code()),
        };
        format!("{} {} / {slow}", quick.0, quick.1.trim())
    });
    assert!(seen.starts_with("0 hi / "), "{seen}");
}

#[test]
fn container_stats_and_log_reopen() {
    on_both(|b| {
        let mut p = pod(b);
        let c = p
            .start_container(
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.1; done",
                ],
                None,
            )
            .unwrap();
        let busy = wait_until(Duration::from_secs(10), || {
            p.stats(&c).is_ok_and(|s| {
                s.memory
                    .and_then(|m| m.working_set_bytes)
                    .is_some_and(|v| v.value > 0)
                    && s.cpu
                        .and_then(|c| c.usage_core_nano_seconds)
                        .is_some_and(|v| v.value > 0)
            })
        });
        assert!(busy, "{b:?}: no CPU or memory usage in ContainerStats");
        let log = std::path::Path::new(p.log_directory()).join("main.log");
        assert!(
            wait_until(Duration::from_secs(5), || log.is_file()),
            "{b:?}: no log"
        );
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        p.reopen_log(&c).expect("ReopenContainerLog");
        let reopened = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("line"))
        });
        assert!(reopened, "{b:?}: no lines in the reopened log");
        "stats and reopen".to_string()
    });
}

#[test]
fn an_oom_killed_container_says_so_with_137() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let mut cfg =
            container_config("oom", &["sh", "-c", "x=a; while true; do x=\"$x$x\"; done"]);
        cfg.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        });
        let c = p.start(cfg).unwrap();
        let mut status = None;
        wait_until(Duration::from_secs(30), || {
            status = p.status(&c).ok();
            status.as_ref().is_some_and(|s| s.finished_at > 0)
        });
        let s = status.expect("ContainerStatus");
        format!("{} {}", s.exit_code, s.reason)
    });
    assert_eq!(seen, "137 OOMKilled");
}

#[test]
fn host_and_pod_pid_and_ipc_namespaces() {
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    let seen = on_both(|b| {
        let mut out = Vec::new();
        for mode in [NamespaceMode::Pod, NamespaceMode::Node] {
            let mut p = Pod::run_with(b.cri_handler(), mode, false).expect("sandbox");
            let mut cfg = container_config("ns", &["sleep", "300"]);
            let sc = security(&mut cfg);
            sc.namespace_options = Some(k8s_cri::v1::NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: mode as i32,
                ipc: mode as i32,
                ..Default::default()
            });
            let c = p.start(cfg).unwrap();
            let ipc = sh(&mut p, &c, "readlink /proc/self/ns/ipc");
            let init = sh(&mut p, &c, "cat /proc/1/comm");
            out.push(format!(
                "{mode:?}: ipc {} pid1 {}",
                if ipc.ends_with(host_ipc.to_str().unwrap()) {
                    "host"
                } else {
                    "own"
                },
                if init.ends_with(host_init.trim()) {
                    "host's"
                } else {
                    init.as_str()
                },
            ));
        }
        out.join(", ")
    });
    assert_eq!(
        seen,
        "Pod: ipc own pid1 0: sleep, Node: ipc host pid1 host's"
    );
}

#[test]
fn privileged_and_unprivileged_capabilities() {
    let seen = on_both(|b| {
        let mut out = Vec::new();
        for privileged in [false, true] {
            let mut p = Pod::run_with(b.cri_handler(), NamespaceMode::Pod, privileged).unwrap();
            let mut cfg = container_config("caps", &["sleep", "300"]);
            security(&mut cfg).privileged = privileged;
            let c = p.start(cfg).unwrap();
            out.push(sh(
                &mut p,
                &c,
                "grep -E '^(CapEff|Seccomp):' /proc/self/status | tr '\\n\\t' '  '",
            ));
        }
        out.join(" | ")
    });
    // CAP_SYS_ADMIN (bit 21): the privileged container has it, the other not.
    let sys_admin: Vec<bool> = seen
        .split(" | ")
        .map(|part| {
            let hex = part
                .split("CapEff: ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("0");
            u64::from_str_radix(hex, 16).unwrap_or(0) & (1 << 21) != 0
        })
        .collect();
    assert_eq!(sys_admin, [false, true], "{seen}");
}

#[test]
fn run_as_user_and_group() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let mut cfg = container_config("user", &["sleep", "300"]);
        let sc = security(&mut cfg);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000];
        let c = p.start(cfg).unwrap();
        [
            sh(&mut p, &c, "id -u; id -g; id -G"),
            sh(
                &mut p,
                &c,
                "grep -E '^(Uid|Gid|Groups):' /proc/1/status | tr '\\n\\t' '  '",
            ),
        ]
        .join(" | ")
    });
    assert!(seen.starts_with("0: 1000\n2000\n2000 3000"), "{seen}");
}

#[test]
fn read_only_rootfs_masked_and_read_only_paths() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let mut cfg = container_config("ro", &["sleep", "300"]);
        let sc = security(&mut cfg);
        sc.readonly_rootfs = true;
        // A file of the image (this kernel has no /proc/kcore to mask).
        sc.masked_paths = vec!["/proc/kcore".into(), "/etc/group".into()];
        sc.readonly_paths = vec!["/proc/sys".into()];
        let c = p.start(cfg).unwrap();
        [
            sh(&mut p, &c, "touch /new 2>/dev/null; echo rootfs $?"),
            sh(&mut p, &c, "wc -c < /etc/group"),
            sh(
                &mut p,
                &c,
                "echo 1 > /proc/sys/kernel/shm_rmid_forced 2>/dev/null; echo sys $?",
            ),
        ]
        .join(" | ")
    });
    assert_eq!(seen, "0: rootfs 1 | 0: 0 | 0: sys 1");
}

/// A terminal's output without what differs run to run: the pts number.
fn terminal_text(s: &str) -> String {
    let s = s.replace('\r', "");
    match s.find("/dev/pts/") {
        Some(i) => {
            let rest = &s[i + "/dev/pts/".len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}/dev/pts/N{}", &s[..i], &rest[digits..])
        }
        None => s,
    }
}

#[test]
fn exec_with_a_terminal_as_kubectl_exec_it() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let c = p.start_container(&["sleep", "300"], None).unwrap();
        let s = p
            .exec_tty(
                &c,
                &["sh", "-c", "read x; tty; stty size; echo typed:$x; exit 3"],
                "hello\n",
                (91, 33),
            )
            .expect("Exec with a terminal");
        format!(
            "{} / exit {}",
            terminal_text(&s.output).trim(),
            exit_code(&s.status)
        )
    });
    assert_eq!(seen, "hello\n/dev/pts/N\n33 91\ntyped:hello / exit 3");
}

/// The exit code in a channel-3 status document (0 for Success).
fn exit_code(status: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
    if v["status"] == "Success" {
        return "0".into();
    }
    v["details"]["causes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or(status)
        .to_string()
}

#[test]
fn attach_to_a_container_with_a_terminal() {
    let seen = on_both(|b| {
        let mut p = pod(b);
        let mut cfg = container_config("att", &["sh", "-c", "read x; echo attached:$x; sleep 300"]);
        cfg.stdin = true;
        cfg.tty = true;
        let c = p.start(cfg).unwrap();
        let s = p.attach(&c, "hi\n", "attached:hi").expect("Attach");
        terminal_text(&s.output).trim().to_string()
    });
    assert!(seen.ends_with("attached:hi"), "{seen}");
}
