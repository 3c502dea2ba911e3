//! The built-in backend's main proof: one bundle, run on runc and on the
//! built-in backend, compared field by field as the kernel reports it, for
//! the container's init and for exec'd processes (a command line, and a
//! `--process` file as engines pass one).
//!
//! A probe (`/probe.sh`, busybox sh) reports what the kernel says of the
//! process: `/proc/self/status` (seccomp mode and filters, the five
//! capability sets, NoNewPrivs, ids, groups, umask), its limits,
//! `oom_score_adj`, cgroups, mounts (normalised: no ids, peer groups reduced
//! to their kind), namespaces (host or private), cwd, hostname, sysctls, the
//! environment, and what a `mkdir` (the syscall the seccomp cases deny) does.
//! The built-in backend's report must equal runc's, except for the listed
//! differences (each documented in the README).

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::berth::{runtime_cmd_on, Backend};
use berth_integration::cmd::{try_run, Ran};
use berth_integration::images::{busybox_bundle, edit_config};
use berth_integration::names::unique;
use berth_integration::process::wait_until;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the probe reports. Status and limits are read by the shell itself
/// (`read` from /proc/self), so they describe the probed process, not a child.
const PROBE: &str = r#"
while IFS= read -r l; do
  case "$l" in
    Uid:*|Gid:*|Groups:*|Umask:*|NoNewPrivs:*|Seccomp:*|Seccomp_filters:*|Cap*) echo "$l" ;;
  esac
done < /proc/self/status
while IFS= read -r l; do echo "limit: $l"; done < /proc/self/limits
read -r oom < /proc/self/oom_score_adj; echo "oom_score_adj: $oom"
echo "cwd: $(pwd)"
echo "hostname: $(hostname)"
for k in net/ipv4/tcp_syncookies net/ipv4/tcp_max_syn_backlog net/ipv4/tcp_keepalive_time kernel/shm_rmid_forced; do
  v=$(cat /proc/sys/$k 2>&1); echo "sysctl: $k=$v"
done
for t in cgroup ipc mnt net pid time uts user; do echo "ns: $t $(readlink /proc/self/ns/$t)"; done
while IFS= read -r l; do echo "cgroup: ${l#*:}"; done < /proc/self/cgroup
awk '{ p = ""; i = 7; while ($i != "-") { split($i, a, ":"); p = p a[1] " "; i++ }
       print "mount: " $5 " root=" $4 " " $6 " [" p "] " $(i+1) " " $(i+2) " " $(i+3) }' /proc/self/mountinfo
env | while IFS= read -r l; do echo "env: $l"; done
for f in /proc/kcore /proc/sys/kernel/hostname /etc/hostname; do
  if [ -w "$f" ]; then echo "writable: $f"; else echo "not writable: $f"; fi
done
d=/dev/shm/probe-dir.$$
out=$( (mkdir "$d") 2>&1 ); rc=$?
rmdir "$d" 2>/dev/null
echo "mkdir: rc=$rc ${out##*: }"
"#;

/// Where a probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Probe {
    /// The container's init.
    Init,
    /// `exec ID /bin/sh /probe.sh`.
    ExecArgs,
    /// `exec --process FILE ID`, the spec's process with the probe as args.
    ExecProcess,
}

/// A container made for one probe run; force-deleted on drop.
struct Running {
    backend: Backend,
    root: PathBuf,
    id: String,
}

impl Running {
    fn cmd(&self) -> Command {
        runtime_cmd_on(self.backend, &self.root)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = try_run(self.cmd().args(["delete", "--force", &self.id]));
    }
}

/// The host's namespace of each type, to tell shared from private.
fn host_namespaces() -> BTreeMap<String, String> {
    ["cgroup", "ipc", "mnt", "net", "pid", "time", "uts", "user"]
        .iter()
        .filter_map(|t| {
            let l = std::fs::read_link(format!("/proc/self/ns/{t}")).ok()?;
            Some((t.to_string(), l.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Makes a report comparable across runtimes and runs: the container id,
/// bundle path and namespace identities go; mounts and cgroups are sorted.
fn normalise(raw: &str, id: &str, bundle: &Path) -> Vec<String> {
    let host = host_namespaces();
    let bundle = std::fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_path_buf());
    let mut lines: Vec<String> = raw
        .lines()
        .map(|l| {
            let l = l
                .replace(&bundle.to_string_lossy().into_owned(), "BUNDLE")
                .replace(id, "ID");
            if let Some(rest) = l.strip_prefix("ns: ") {
                let (t, v) = rest.split_once(' ').unwrap_or((rest, ""));
                let kind = if host.get(t).map(String::as_str) == Some(v) {
                    "host"
                } else {
                    "private"
                };
                return format!("ns: {t} {kind}");
            }
            l
        })
        .collect();
    // Mount and cgroup order is not part of the contract; their sets are.
    let (mut sets, rest): (Vec<String>, Vec<String>) = lines.drain(..).partition(|l| {
        l.starts_with("mount: ") || l.starts_with("cgroup: ") || l.starts_with("env: ")
    });
    sets.sort();
    let mut out = rest;
    out.extend(sets);
    out
}

/// The namespaces a report names, raw (to check that exec joined init's).
fn raw_namespaces(raw: &str) -> Vec<&str> {
    raw.lines().filter(|l| l.starts_with("ns: ")).collect()
}

/// Runs the case on `backend`: the three reports, normalised, or why the
/// container could not be made.
fn probe_on(backend: Backend, edit: &dyn Fn(&mut Value)) -> BTreeMap<Probe, Vec<String>> {
    let bundle = busybox_bundle(&[
        "/bin/sh",
        "-c",
        "/bin/sh /probe.sh; echo PROBE-END; exec sleep 60",
    ]);
    std::fs::write(bundle.join("rootfs/probe.sh"), PROBE).expect("probe.sh");
    let id = unique();
    edit_config(&bundle, |c| {
        // Engines always name the cgroup; `no_cgroups_path` takes it away.
        c["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        edit(c)
    });
    let root = fresh_dir("diff-root");
    let running = Running {
        backend,
        root: root.clone(),
        id: id.clone(),
    };
    let init_out = bundle.join("init.out");
    let st = running
        .cmd()
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&init_out).expect("init.out"))
        .stderr(std::fs::File::create(bundle.join("create.err")).expect("create.err"))
        .status()
        .expect("berth-runtime create");
    let mut out = BTreeMap::new();
    if !st.success() {
        // The error lines' messages, without times and ids.
        let err = std::fs::read_to_string(bundle.join("create.err")).unwrap_or_default();
        let msgs: Vec<String> = err
            .lines()
            .filter(|l| l.contains("level=error"))
            .filter_map(|l| l.split_once("msg=").map(|(_, m)| m.replace(&id, "ID")))
            .collect();
        out.insert(
            Probe::Init,
            vec![format!("create failed: {}", msgs.join(" | "))],
        );
        return out;
    }
    let started = try_run(running.cmd().args(["start", &id]));
    assert!(started.ok(), "{backend:?}: start: {}", started.stderr);
    let ended = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&init_out).is_ok_and(|s| s.contains("PROBE-END"))
    });
    let init_raw = std::fs::read_to_string(&init_out).unwrap_or_default();
    assert!(
        ended,
        "{backend:?}: the init's probe did not finish: {init_raw}"
    );
    let init_raw = init_raw.replace("PROBE-END\n", "");
    out.insert(Probe::Init, normalise(&init_raw, &id, &bundle));

    let report = |r: Ran, what: &str| -> String {
        if r.ok() {
            r.stdout
        } else {
            format!("{what} failed ({}): {}", r.code, r.stderr.trim())
        }
    };
    let args = report(
        try_run(running.cmd().args(["exec", &id, "/bin/sh", "/probe.sh"])),
        "exec",
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config"))
            .expect("config.json");
    let mut process = config["process"].clone();
    process["args"] = json!(["/bin/sh", "/probe.sh"]);
    let process_file = bundle.join("process.json");
    std::fs::write(&process_file, process.to_string()).expect("process.json");
    let with_file = report(
        try_run(
            running
                .cmd()
                .args(["exec", "--process"])
                .arg(&process_file)
                .arg(&id),
        ),
        "exec --process",
    );
    for (probe, raw) in [(Probe::ExecArgs, &args), (Probe::ExecProcess, &with_file)] {
        if raw_namespaces(raw).len() == raw_namespaces(&init_raw).len() {
            assert_eq!(
                raw_namespaces(raw),
                raw_namespaces(&init_raw),
                "{backend:?} {probe:?}: an exec'd process must join every namespace of the init"
            );
        }
        out.insert(probe, normalise(raw, &id, &bundle));
    }
    out
}

/// Differences from runc that are intended, each documented in the README:
/// (case or `*` for every case, the probes it concerns, a prefix of the
/// lines that differ).
const INTENDED: &[(&str, &[Probe], &str)] = &[
    // sysfs is read-only through its mount on both; runc also mounts its
    // superblock read-only, libcontainer does not.
    (
        "*",
        &ALL,
        "mount: /sys root=/ ro,nosuid,nodev,noexec,relatime [] sysfs sysfs ",
    ),
    // A readonly path keeps the flags of the mount it is on (/proc's
    // nosuid, nodev, noexec), as runc 1.2 does; Debian's runc 1.1.5 drops them.
    ("*", &ALL, "mount: /proc/bus root=/bus ro,"),
    ("*", &ALL, "mount: /proc/fs root=/fs ro,"),
    ("*", &ALL, "mount: /proc/irq root=/irq ro,"),
    ("*", &ALL, "mount: /proc/sys root=/sys ro,"),
    (
        "*",
        &ALL,
        "mount: /proc/sysrq-trigger root=/sysrq-trigger ro,",
    ),
    // An exec'd process gets its process's umask; runc 1.1.5 leaves it at
    // 0022 for exec'd processes (it applies the umask to the init only).
    (
        "user_groups_and_umask",
        &[Probe::ExecArgs, Probe::ExecProcess],
        "Umask:",
    ),
    // runc 1.1.5's Go runtime may leave RLIMIT_NOFILE's soft limit raised to
    // the hard one in an exec'd process; the built-in backend keeps the
    // spec's, which `compare` checks against the init's.
    (
        "rlimits",
        &[Probe::ExecArgs, Probe::ExecProcess],
        "limit: Max open files",
    ),
    // Without linux.cgroupsPath, Berth places the container under its own
    // cgroup of the first v1 controller in every hierarchy (libcontainer
    // takes one path); runc takes each hierarchy's own parent. They differ
    // only where the runtime sits in different cgroups per controller, as
    // in the test machine's memory hierarchy.
    ("no_cgroups_path", &ALL, "cgroup: memory:"),
    ("no_cgroups_path", &ALL, "mount: /sys/fs/cgroup/memory "),
    // The same for a relative path, which both resolve against that parent.
    ("systemd_form_cgroups_path", &ALL, "cgroup: memory:"),
    (
        "systemd_form_cgroups_path",
        &ALL,
        "mount: /sys/fs/cgroup/memory ",
    ),
];

const ALL: [Probe; 3] = [Probe::Init, Probe::ExecArgs, Probe::ExecProcess];

/// Runs a case on runc and on the built-in backend and asserts equal reports.
fn compare(case: &str, edit: &dyn Fn(&mut Value)) {
    berth_integration::require_root();
    let _ = binary("berth-runtime");
    let runc = probe_on(Backend::Runc, edit);
    let builtin = probe_on(Backend::Builtin, edit);
    let mut problems = Vec::new();
    for (probe, want) in &runc {
        let got = builtin.get(probe).cloned().unwrap_or_default();
        let intended = |l: &String| {
            INTENDED.iter().any(|(c, probes, prefix)| {
                (*c == "*" || *c == case) && probes.contains(probe) && l.starts_with(prefix)
            })
        };
        let missing: Vec<&String> = want
            .iter()
            .filter(|l| !got.contains(l) && !intended(l))
            .collect();
        let extra: Vec<&String> = got
            .iter()
            .filter(|l| !want.contains(l) && !intended(l))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "{probe:?}:\n  runc only:     {missing:#?}\n  built-in only: {extra:#?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "case {case}: the built-in backend differs from runc\n{}",
        problems.join("\n")
    );
    // Where runc's exec'd processes are not the reference, the built-in
    // backend's must match its own init, which matches runc's.
    let nofile = |r: &BTreeMap<Probe, Vec<String>>, p: Probe| {
        r.get(&p).and_then(|v| {
            v.iter()
                .find(|l| l.starts_with("limit: Max open files"))
                .cloned()
        })
    };
    for p in [Probe::ExecArgs, Probe::ExecProcess] {
        assert_eq!(
            nofile(&builtin, p),
            nofile(&runc, Probe::Init),
            "case {case}: the built-in {p:?} open-files limit is the spec's"
        );
    }
    // The reports must say something: a probe that ran.
    assert!(
        runc[&Probe::Init].iter().any(|l| l.starts_with("Seccomp:")),
        "case {case}: runc's probe reported nothing: {:?}",
        runc[&Probe::Init]
    );
}

/// A seccomp profile that applies `action` (with `errno`) to mkdir/mkdirat
/// and allows everything else.
fn deny_mkdir(action: &str, errno: Option<u32>) -> Value {
    let mut rule = json!({"names": ["mkdir", "mkdirat"], "action": action});
    if let Some(e) = errno {
        rule["errnoRet"] = json!(e);
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [rule],
    })
}

/// The runtime default profile (containers-common's, as podman and CRI-O
/// use it), turned into an OCI `linux.seccomp` for this architecture and the
/// bundle's capabilities, as engines do.
fn default_profile(caps: &[&str]) -> Value {
    let docker: Value = serde_json::from_slice(
        &std::fs::read("/usr/share/containers/seccomp.json")
            .expect("containers-common seccomp.json"),
    )
    .expect("seccomp.json");
    let applies = |r: &Value| {
        let inc = &r["includes"];
        let exc = &r["excludes"];
        let arch_ok = inc["arches"]
            .as_array()
            .is_none_or(|a| a.iter().any(|x| x == "amd64"));
        let caps_ok = inc["caps"]
            .as_array()
            .is_none_or(|a| a.iter().all(|c| caps.iter().any(|k| c == k)));
        let exc_ok = exc["caps"]
            .as_array()
            .is_none_or(|a| !a.iter().any(|c| caps.iter().any(|k| c == k)))
            && exc["arches"]
                .as_array()
                .is_none_or(|a| !a.iter().any(|x| x == "amd64"));
        arch_ok && caps_ok && exc_ok && inc["minKernel"].is_null()
    };
    let syscalls: Vec<Value> = docker["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| applies(r))
        .map(|r| {
            let mut o = json!({"names": r["names"], "action": r["action"]});
            for k in ["args", "errnoRet"] {
                if !r[k].is_null() {
                    o[k] = r[k].clone();
                }
            }
            o
        })
        .collect();
    json!({
        "defaultAction": docker["defaultAction"],
        "defaultErrnoRet": docker["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// runc spec's default capabilities.
const SPEC_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

fn set_caps(c: &mut Value, caps: &[&str]) {
    for set in [
        "bounding",
        "effective",
        "permitted",
        "ambient",
        "inheritable",
    ] {
        c["process"]["capabilities"][set] = json!(caps);
    }
}

/// Docker's defaults for what the cases do not set: privileges may be
/// gained (noNewPrivileges false), so seccomp must be installed while
/// Berth still holds CAP_SYS_ADMIN, as runc does.
fn docker_like(c: &mut Value) {
    c["process"]["noNewPrivileges"] = json!(false);
}

fn remove_namespace(c: &mut Value, t: &str) {
    if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != t);
    }
}

macro_rules! cases {
    ($($name:ident => $edit:expr;)*) => {
        $(
            #[test]
            fn $name() {
                compare(stringify!($name), &$edit);
            }
        )*
    };
}

cases! {
    plain_spec => |_c: &mut Value| {};
    // Without --systemd-cgroup, runc takes `slice:prefix:name` as a path.
    systemd_form_cgroups_path => |c: &mut Value| {
        let id = c["linux"]["cgroupsPath"].as_str().unwrap_or("/x").trim_start_matches('/').to_string();
        c["linux"]["cgroupsPath"] = json!(format!("{id}.slice:cri-containerd:{id}"));
    };
    no_cgroups_path => |c: &mut Value| {
        if let Some(l) = c["linux"].as_object_mut() {
            l.remove("cgroupsPath");
        }
    };
    seccomp_runtime_default => |c: &mut Value| {
        docker_like(c);
        c["linux"]["seccomp"] = default_profile(&SPEC_CAPS);
    };
    seccomp_deny_list => |c: &mut Value| {
        docker_like(c);
        c["linux"]["seccomp"] = deny_mkdir("SCMP_ACT_ERRNO", None);
    };
    seccomp_errno => |c: &mut Value| {
        docker_like(c);
        c["linux"]["seccomp"] = deny_mkdir("SCMP_ACT_ERRNO", Some(13));
    };
    seccomp_kill => |c: &mut Value| {
        docker_like(c);
        c["linux"]["seccomp"] = deny_mkdir("SCMP_ACT_KILL", None);
    };
    seccomp_with_no_new_privileges => |c: &mut Value| {
        c["process"]["noNewPrivileges"] = json!(true);
        c["linux"]["seccomp"] = deny_mkdir("SCMP_ACT_ERRNO", Some(1));
    };
    seccomp_unconfined => |c: &mut Value| {
        docker_like(c);
        if let Some(l) = c["linux"].as_object_mut() {
            l.remove("seccomp");
        }
    };
    capabilities_added => |c: &mut Value| {
        docker_like(c);
        let mut caps = SPEC_CAPS.to_vec();
        caps.extend(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHOWN"]);
        set_caps(c, &caps);
    };
    capabilities_dropped => |c: &mut Value| {
        docker_like(c);
        set_caps(c, &["CAP_KILL"]);
        c["process"]["capabilities"]["ambient"] = json!([]);
        c["process"]["capabilities"]["inheritable"] = json!([]);
    };
    capabilities_all_dropped => |c: &mut Value| {
        docker_like(c);
        set_caps(c, &[]);
    };
    user_groups_and_umask => |c: &mut Value| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 23});
    };
    rlimits => |c: &mut Value| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "hard": 2345, "soft": 1234},
            {"type": "RLIMIT_NPROC", "hard": 500, "soft": 400},
            {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
        ]);
    };
    oom_score_adj => |c: &mut Value| {
        c["process"]["oomScoreAdj"] = json!(500);
    };
    masked_and_readonly_paths => |c: &mut Value| {
        c["linux"]["maskedPaths"] = json!(["/proc/kcore", "/proc/keys", "/etc/hostname", "/sys/firmware"]);
        c["linux"]["readonlyPaths"] = json!(["/proc/sys", "/proc/sysrq-trigger", "/etc"]);
    };
    writable_rootfs => |c: &mut Value| {
        c["root"]["readonly"] = json!(false);
    };
    sysctls_and_hostname => |c: &mut Value| {
        c["hostname"] = json!("berth-probe");
        // kubelet's safe list and the test host's allow list admit these.
        c["linux"]["sysctl"] = json!({"net.ipv4.tcp_syncookies": "0", "net.ipv4.tcp_max_syn_backlog": "512"});
    };
    cwd_and_env => |c: &mut Value| {
        c["process"]["cwd"] = json!("/tmp");
        c["process"]["env"] = json!(["PATH=/bin:/usr/bin", "GREETING=hello world", "EMPTY="]);
    };
    host_pid_namespace => |c: &mut Value| remove_namespace(c, "pid");
    host_ipc_namespace => |c: &mut Value| remove_namespace(c, "ipc");
    host_uts_namespace => |c: &mut Value| {
        remove_namespace(c, "uts");
        // No hostname without a UTS namespace of its own (both refuse it).
        if let Some(o) = c.as_object_mut() {
            o.remove("hostname");
        }
    };
    no_path_in_env => |c: &mut Value| {
        c["process"]["env"] = json!(["GREETING=hello"]);
    };
    rootfs_propagation_rshared => |c: &mut Value| {
        c["linux"]["rootfsPropagation"] = json!("rshared");
    };
    rootfs_propagation_rslave => |c: &mut Value| {
        c["linux"]["rootfsPropagation"] = json!("rslave");
    };
    rootfs_propagation_rprivate => |c: &mut Value| {
        c["linux"]["rootfsPropagation"] = json!("rprivate");
    };
    host_network_namespace => |c: &mut Value| remove_namespace(c, "network");
    private_cgroup_namespace => |c: &mut Value| {
        c["linux"]["namespaces"].as_array_mut().expect("namespaces").push(json!({"type": "cgroup"}));
    };
}
