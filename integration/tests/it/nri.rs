//! berth-nri against Debian 13's containerd 1.7 with NRI enabled, driven
//! through CRI as kubelet drives it: the plugin registers, splits a pod's
//! CPUs in the shared ledger, gives the container its CPU count (variables
//! and the synthetic files), refuses what cannot fit with Berth's message,
//! and releases the CPUs when the container is removed. Plain runc is the
//! runtime: no berth-runtime involved.

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::berth::{config, cpu_lock, cpu_status};
use berth_integration::cmd::command;
use berth_integration::engines::containerd::{containerd_nri, Containerd};
use berth_integration::engines::cri::{container_config, Pod};
use berth_integration::process::{wait_until, Daemon};
use k8s_cri::v1::ContainerConfig;
use std::time::Duration;

fn in_ledger(id: &str) -> bool {
    cpu_status()["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
}

/// What a container sees: count and GOMAXPROCS, online, cpuinfo entries,
/// its cpuset, LD_PRELOAD, and whether the library is there.
fn probe(pod: &mut Pod, id: &str) -> Vec<String> {
    let (code, out, err) = pod
        .exec_sync(
            id,
            &[
                "sh",
                "-c",
                "echo $BERTH_NPROC $GOMAXPROCS; cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo; grep Cpus_allowed_list /proc/self/status | cut -f2; echo $LD_PRELOAD; test -f /usr/lib/berth/libberth_cpus.so && echo mounted; true",
            ],
        )
        .expect("ExecSync");
    assert_eq!(code, 0, "{out}{err}");
    out.lines().map(str::to_string).collect()
}

/// A busybox `sleep` container `name` with a quota of `cpus` (None: no
/// limit) and `annotations`.
fn limited(name: &str, cpus: Option<f64>, annotations: &[(&str, &str)]) -> ContainerConfig {
    let mut cfg = container_config(name, &["sleep", "600"]);
    cfg.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        resources: cpus.map(|c| k8s_cri::v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: (c * 100_000.0) as i64,
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg.annotations.extend(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    cfg
}

/// Creates and starts `cfg`; a failure shows the plugin's log at `log`.
fn started(pod: &mut Pod, log: &std::path::Path, cfg: ContainerConfig) -> String {
    let name = cfg
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    pod.start(cfg).unwrap_or_else(|e| {
        panic!(
            "CreateContainer {name}: {e}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Starts a busybox `sleep` container `name` with a quota of `cpus`.
fn start(pod: &mut Pod, log: &std::path::Path, name: &str, cpus: Option<f64>) -> String {
    started(pod, log, limited(name, cpus, &[]))
}

/// The number of CPUs in a cpuset list.
fn size(list: &str) -> u32 {
    berth_runtime::spec::cpuset_count(list).unwrap_or(0)
}

/// Starts berth-nri on `c`'s NRI socket and waits until it has registered.
fn start_plugin(c: &Containerd, label: &str) -> (Daemon, std::path::PathBuf) {
    start_plugin_with(c, label, &[])
}

/// [`start_plugin`] with extra environment variables.
fn start_plugin_with(
    c: &Containerd,
    label: &str,
    env: &[(&str, &str)],
) -> (Daemon, std::path::PathBuf) {
    let log = fresh_dir("berth-nri").join(format!("berth-nri-{label}.log"));
    let mut cmd = command(binary("berth-nri"));
    cmd.arg("--socket")
        .arg(c.nri_socket())
        .arg("--berth-config")
        .arg(config())
        .env("BERTH_NRI_LOG", "debug")
        .envs(env.iter().copied());
    let mut plugin = Daemon::spawn("berth-nri", &mut cmd, &log);
    let registered = wait_until(Duration::from_secs(15), || {
        plugin.assert_alive(&log);
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("synchronized with the runtime"))
    });
    assert!(
        registered,
        "berth-nri did not register: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (plugin, log)
}

#[test]
fn nri_plugin_splits_cpus_injects_the_count_refuses_what_cannot_fit_and_releases() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let (mut plugin, log) = start_plugin(c, "first");
    // containerd 1.7's NRI has no sysctl adjustment: said once, at start.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("the sysctl policy is not applied"), "{text}");
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        host, 2,
        "this test's expectations are for the 2-CPU test host"
    );
    // 1.5 CPUs: one exclusive core plus a fragment core; it sees 2.
    let big = start(&mut pod, &log, "big", Some(1.5));
    let p = probe(&mut pod, &big);
    assert_eq!(p[..3], ["2 2", "0-1", "2"], "{p:?}");
    assert_eq!(size(&p[3]), 2, "{p:?}");
    assert_eq!(
        p[4..],
        ["/usr/lib/berth/libberth_cpus.so", "mounted"],
        "{p:?}"
    );
    // 0.5 CPUs: on the fragment core; it sees 1.
    let half = start(&mut pod, &log, "half", Some(0.5));
    let p = probe(&mut pod, &half);
    assert_eq!(p[..3], ["1 1", "0", "1"], "{p:?}");
    assert_eq!(size(&p[3]), 1, "{p:?}");
    assert!(
        in_ledger(&big) && in_ledger(&half),
        "both are in the shared ledger"
    );
    // No limit (BestEffort): the shared pool, off the exclusive core.
    let free = start(&mut pod, &log, "free", None);
    let p = probe(&mut pod, &free);
    assert_eq!(
        size(&p[3]),
        1,
        "the shared pool excludes the exclusive core: {p:?}"
    );
    assert_eq!(p[1], "0", "it sees the pool's one CPU: {p:?}");
    // 2 CPUs no longer fit: Berth's message is CreateContainer's error,
    // which kubelet shows in the pod's events.
    let e = pod
        .start(limited("two", Some(2.0), &[]))
        .expect_err("2 more CPUs cannot fit");
    assert!(e.message().contains("berth: cpus"), "{}", e.message());
    // Removing the 1.5 gives its core back: the shared container grows live.
    pod.remove(&big).expect("RemoveContainer");
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&big)),
        "the removed container still holds CPUs"
    );
    let p = probe(&mut pod, &free);
    assert_eq!(
        size(&p[3]),
        2,
        "the shared container grew onto the freed core: {p:?}"
    );
    assert_eq!(p[1], "0-1", "and sees it: {p:?}");
    // By containerd's own update (StopContainer's answer), so containerd's
    // record of the container agrees with its cgroup.
    assert_eq!(
        pod.recorded_cpu(&free).expect("ContainerStatus")["cpus"],
        "0-1"
    );
    let id = half;
    // The plugin killed with -9 and started again: it re-registers, and the
    // ledger it shares stays true.
    plugin.signal(libc::SIGKILL);
    plugin.stop(Duration::from_secs(5));
    let (mut plugin, log) = start_plugin(c, "again");
    let again = start(&mut pod, &log, "again", Some(0.5));
    assert_eq!(probe(&mut pod, &again)[0], "1 1");
    // A container created while the plugin is away runs unplanned; the
    // plugin adopts it when it comes back and moves it onto its CPUs.
    plugin.stop(Duration::from_secs(5));
    let away = start(&mut pod, &log, "away", Some(1.0));
    assert!(!in_ledger(&away), "nobody planned it");
    let (mut plugin, log) = start_plugin(c, "back");
    assert!(
        in_ledger(&away),
        "adopted at Synchronize: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // (It keeps the environment and mounts it started with: no view.)
    let (_, out, _) = pod
        .exec_sync(
            &away,
            &[
                "sh",
                "-c",
                "grep Cpus_allowed_list /proc/self/status | cut -f2",
            ],
        )
        .expect("ExecSync");
    assert_eq!(size(out.trim()), 1, "moved onto its exclusive core: {out}");
    pod.remove(&away).expect("RemoveContainer");
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&away)),
        "the removed container still holds CPUs"
    );
    // containerd restarted: the plugin reconnects by itself.
    c.restart();
    assert!(
        wait_until(Duration::from_secs(20), || {
            plugin.assert_alive(&log);
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.matches("synchronized with the runtime").count() >= 2)
        }),
        "berth-nri did not reconnect after containerd restarted: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    pod.reconnect(c);
    let third = start(&mut pod, &log, "third", Some(0.5));
    assert_eq!(probe(&mut pod, &third)[0], "1 1");
    let status = cpu_status();
    let base = status["base"].as_u64().unwrap();
    for cpu in status["cpus"].as_array().unwrap() {
        assert!(
            cpu["fragment_pieces"].as_u64().unwrap_or(0) <= base,
            "no CPU is given twice: {status}"
        );
    }
    // Removing the pod releases the CPUs.
    drop(pod);
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&id)),
        "the removed container still holds CPUs"
    );
    plugin.stop(Duration::from_secs(5));
}

/// Pre-registered: containerd starts `berth-nri` itself from its plugin
/// directory (as `/opt/nri/plugins/10-berth`), handing it the connection.
#[test]
fn nri_plugin_started_by_containerd_from_its_plugin_directory() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let installed = c.config.with_file_name("nri-plugins").join("10-berth");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(binary("berth-nri"), &installed).unwrap();
    // Its configuration: the test host's runtime.toml, as NRI's plugin
    // configuration (containerd starts it without Berth's environment).
    let conf = c.config.with_file_name("nri-conf").join("10-berth.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::copy(config(), &conf).unwrap();
    c.restart();
    let log = c.config.with_file_name("containerd.log");
    // CRI answers "not initialized" for a moment after a start.
    let mut pod = None;
    wait_until(Duration::from_secs(20), || match Pod::run_on(c, "") {
        Ok(p) => {
            pod = Some(p);
            true
        }
        Err(e) if e.message().contains("not initialized") => false,
        Err(e) => panic!("RunPodSandbox: {e}"),
    });
    let mut pod = pod.expect("CRI did not initialize within 20 s");
    let id = start(&mut pod, &log, "launched", Some(0.5));
    let p = probe(&mut pod, &id);
    assert_eq!(p[..3], ["1 1", "0", "1"], "{p:?}");
    assert!(in_ledger(&id));
    drop(pod);
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&id)),
        "the removed container still holds CPUs"
    );
    // Uninstalled: after the next restart containerd runs without it.
    std::fs::remove_file(&installed).unwrap();
    std::fs::remove_file(&conf).unwrap();
    c.restart();
}

/// A host with both: berth-runtime as the pod's runtime (RuntimeClass
/// handler `berth`) and berth-nri. The plugin plans the container as
/// containerd creates it; the runtime then finds its explicit cpuset and the
/// variables already there and plans nothing again: one ledger entry, one
/// `LD_PRELOAD` entry, the same count.
#[test]
fn nri_plugin_and_berth_runtime_on_one_host_plan_a_container_once() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let (mut plugin, log) = start_plugin(c, "both");
    let mut pod = Pod::run_on(c, "berth").expect("RunPodSandbox with handler berth");
    let id = start(&mut pod, &log, "both", Some(0.5));
    let p = probe(&mut pod, &id);
    assert_eq!(p[..3], ["1 1", "0", "1"], "{p:?}");
    assert_eq!(size(&p[3]), 1, "{p:?}");
    assert_eq!(
        p[4..],
        ["/usr/lib/berth/libberth_cpus.so", "mounted"],
        "{p:?}"
    );
    let status = cpu_status();
    let entries: Vec<_> = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == id.as_str())
        .collect();
    assert_eq!(entries.len(), 1, "one ledger entry: {status}");
    assert_eq!(entries[0]["cpus"], 0.5, "{status}");
    drop(pod);
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&id)),
        "the removed container still holds CPUs"
    );
    plugin.stop(Duration::from_secs(5));
}

/// The ledger's entry for `id`: (its exclusive CPUs, its CPUs).
fn entry(id: &str) -> Option<(String, f64)> {
    cpu_status()["containers"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .map(|c| {
            (
                c["exclusive"].as_str().unwrap_or_default().to_string(),
                c["cpus"].as_f64().unwrap_or_default(),
            )
        })
}

/// Shared containers move through containerd's update path (NRI's
/// CreateContainer, UpdateContainer and StopContainer answers), and an
/// in-place resize (CRI `UpdateContainerResources`, as kubelet sends it)
/// re-plans the container in the ledger: the CPUs, the count it sees, and
/// the shared pool all follow, with no restart.
#[test]
fn nri_plugin_resizes_in_place_and_moves_shared_containers_through_containerd() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let (mut plugin, log) = start_plugin(c, "resize");
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    let shared = start(&mut pod, &log, "shared", None);
    assert_eq!(size(&probe(&mut pod, &shared)[3]), 2);
    // One exclusive core: the shared container moves off it, and
    // containerd's record says so (the engine applied it, not Berth).
    let one = start(&mut pod, &log, "one", Some(1.0));
    let p = probe(&mut pod, &one);
    assert_eq!((p[0].as_str(), size(&p[3])), ("1 1", 1), "{p:?}");
    let core = p[3].clone();
    let s = probe(&mut pod, &shared);
    assert_eq!(size(&s[3]), 1, "{s:?}");
    assert_ne!(s[3], core, "the shared container left the exclusive core");
    assert_eq!(pod.recorded_cpu(&shared).unwrap()["cpus"], s[3].as_str());
    assert_eq!(entry(&one), Some((core.clone(), 1.0)));
    // Drift: the shared container's cpuset rewritten behind the runtime's
    // back (onto the exclusive core too) while the plugin is away; when it
    // comes back, Synchronize pushes the pool again.
    plugin.stop(Duration::from_secs(5));
    let cg = cpu_status()["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|e| e["id"] == shared.as_str()))
        .and_then(|e| e["cgroup"].as_str().map(str::to_string))
        .expect("the shared container's cgroup in the ledger");
    berth_runtime::cpus::cgroup::set_cpuset(&cg, "0-1").expect("drift");
    assert_eq!(size(&probe(&mut pod, &shared)[3]), 2, "drifted");
    let (p2, log) = start_plugin(c, "resize-back");
    plugin = p2;
    assert_eq!(
        probe(&mut pod, &shared)[3],
        s[3],
        "pushed back onto the pool"
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("drifted=1"));
    // Shrunk to half a CPU in place: a fragment, no exclusive core, so the
    // shared container grows back onto both CPUs.
    pod.update_cpus(&one, Some(0.5)).unwrap_or_else(|e| {
        panic!(
            "resize: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(
        entry(&one),
        Some((String::new(), 0.5)),
        "re-planned in the ledger"
    );
    let grown = wait_until(Duration::from_secs(10), || {
        size(&probe(&mut pod, &shared)[3]) == 2
    });
    assert!(
        grown,
        "the shared container did not grow back: {:?}\n{}",
        probe(&mut pod, &shared),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(pod.recorded_cpu(&shared).unwrap()["cpus"], "0-1");
    // Grown to one CPU again: exclusive again, the shared container shrinks.
    pod.update_cpus(&one, Some(1.0)).expect("resize back");
    let p = probe(&mut pod, &one);
    assert_eq!(size(&p[3]), 1, "{p:?}");
    assert_eq!(entry(&one), Some((p[3].clone(), 1.0)));
    assert_eq!(pod.recorded_cpu(&one).unwrap()["cpus"], p[3].as_str());
    assert_eq!(size(&probe(&mut pod, &shared)[3]), 1);
    // A resize that cannot fit is refused with Berth's message, and the
    // container keeps what it had.
    let e = pod
        .update_cpus(&one, Some(3.0))
        .expect_err("3 CPUs on a 2-CPU host");
    assert!(e.message().contains("berth: cpus"), "{}", e.message());
    assert_eq!(entry(&one), Some((p[3].clone(), 1.0)));
    assert_eq!(probe(&mut pod, &one)[3], p[3]);
    // Stopped: its core goes back to the shared container at once.
    pod.remove(&one).expect("RemoveContainer");
    assert_eq!(entry(&one), None);
    let s = probe(&mut pod, &shared);
    assert_eq!(size(&s[3]), 2, "{s:?}");
    assert_eq!(pod.recorded_cpu(&shared).unwrap()["cpus"], "0-1");
    drop(pod);
    plugin.stop(Duration::from_secs(5));
}

/// The preload library in effect in an NRI-managed container: half a CPU in
/// the shared pool (`io.berth.cpu-mode: shared`), so its cpuset spans both
/// CPUs while its count is 1, and every program that asks must get 1 from
/// Berth, not from the cpuset: nproc, glibc's sysconf, Java 17 (without its
/// own container support), Python 3.11 and 3.13, Go. The conformance
/// matrix's rootfs and script run through ExecSync, whose process containerd
/// builds from the container's spec as the plugin adjusted it.
#[test]
fn nri_plugin_gives_java_python_and_go_the_count_in_a_containerd_container() {
    use berth_integration::programs::{matrix_binds, matrix_rootfs, tar_rootfs, MATRIX_SCRIPT};
    let rootfs = matrix_rootfs();
    let _g = cpu_lock();
    let c = containerd_nri();
    let image = "docker.io/berth/matrix:nri";
    let archive = berth_integration::images::oci_archive(&tar_rootfs(&rootfs), image, &["sh"]);
    berth_integration::cmd::run(
        command("ctr")
            .arg("--address")
            .arg(&c.socket)
            .args(["--namespace", "k8s.io", "image", "import"])
            .arg(&archive),
    );
    let (mut plugin, log) = start_plugin(c, "matrix");
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    let mut cfg = limited("matrix", Some(0.5), &[("io.berth.cpu-mode", "shared")]);
    cfg.image = Some(k8s_cri::v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    cfg.mounts = matrix_binds()
        .iter()
        .map(|b| {
            let mut parts = b.split(':');
            k8s_cri::v1::Mount {
                host_path: parts.next().unwrap_or_default().into(),
                container_path: parts.next().unwrap_or_default().into(),
                readonly: true,
                ..Default::default()
            }
        })
        .collect();
    let id = started(&mut pod, &log, cfg);
    assert!(MATRIX_SCRIPT.contains("row java-17"));
    // Loaded, so mapped executable (a noexec mount would refuse it): a
    // dynamic program's own maps show it. (The shell's `nproc` is busybox's
    // static applet: it counts the cpuset.)
    let (_, env, _) = pod
        .exec_sync(
            &id,
            &[
                "python3",
                "-c",
                "import os; print(os.environ['LD_PRELOAD'], 'berth_cpus' in open('/proc/self/maps').read())",
            ],
        )
        .expect("ExecSync");
    assert_eq!(env, "/usr/lib/berth/libberth_cpus.so True\n");
    let (code, out, err) = pod
        .exec_sync_timeout(&id, &["sh", "/matrix.sh"], 120)
        .expect("ExecSync");
    assert_eq!(code, 0, "{out}{err}");
    let rows: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once(' ')).collect();
    // The cpuset is both CPUs: a static program counting it says 2.
    assert_eq!(rows.get("c-static-musl"), Some(&"2"), "{out}");
    for row in [
        "c-nproc",
        "c-getconf",
        "c-sysconf",
        "c-musl",
        "java-17",
        "python-3.11-cpu_count",
        "python-3.11-affinity",
        "python-3.13-process_cpu_count",
        "go-1.19",
        "go-1.24",
        "node-parallelism",
        "rust",
        "proc-cpuinfo",
        "exec-env-GOMAXPROCS",
    ] {
        assert_eq!(rows.get(row), Some(&"1"), "{row}:\n{out}");
    }
    drop(pod);
    plugin.stop(Duration::from_secs(5));
}

/// A create refused after its CPUs were planned (an annotation the
/// injection rejects) gives its CPUs back, and the shared containers keep
/// the count of the cpuset they still have: the moves planned for them were
/// never sent, and their views say so.
#[test]
fn nri_plugin_refusal_after_planning_leaves_shared_containers_as_they_were() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let (mut plugin, log) = start_plugin(c, "refusal");
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    // Two CPUs' worth in the shared pool: it sees as many CPUs as the pool has.
    let wide = started(
        &mut pod,
        &log,
        limited("wide", Some(2.0), &[("io.berth.cpu-mode", "shared")]),
    );
    let p = probe(&mut pod, &wide);
    assert_eq!((p[1].as_str(), size(&p[3])), ("0-1", 2), "{p:?}");
    // One exclusive CPU, refused by the injection after the CPU plan.
    let bad = limited("bad", Some(1.0), &[("io.berth.cpu-preload", "maybe")]);
    let e = pod.start(bad).expect_err("a bad io.berth.cpu-preload");
    assert!(
        e.message().contains("io.berth.cpu-preload"),
        "{}",
        e.message()
    );
    let p = probe(&mut pod, &wide);
    assert_eq!(
        (p[1].as_str(), size(&p[3])),
        ("0-1", 2),
        "the shared container still has both CPUs and sees them: {p:?}"
    );
    drop(pod);
    plugin.stop(Duration::from_secs(5));
}

/// The plugin killed with -9 in the middle of a CreateContainer, once the
/// ledger holds the container's CPUs and once its record is written too,
/// before it answered: containerd goes on without it (a plugin that is
/// gone adjusts nothing), so the container runs unpinned. The plugin
/// started again gets it onto its CPUs at Synchronize: a plan without a
/// record is freed and the container adopted; a recorded plan that never
/// reached the container is applied.
#[test]
fn nri_plugin_killed_mid_create_converges_when_back() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    for (step, fix) in [
        ("create:planned", "adopted=1"),
        ("create:recorded", "reapplied=1"),
    ] {
        let (mut plugin, cut_log) =
            start_plugin_with(c, "mid-create", &[("BERTH_DEBUG_STOP_AT", step)]);
        // When it stops itself at the step, kill it there.
        let pid = plugin.pid() as i32;
        let killer = std::thread::spawn(move || {
            wait_until(Duration::from_secs(20), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
            })
            // SAFETY: a signal to the plugin this test started.
            .then(|| unsafe { libc::kill(pid, libc::SIGKILL) })
        });
        let cut = start(&mut pod, &cut_log, "cut", Some(1.0));
        assert_eq!(
            killer.join().unwrap(),
            Some(0),
            "{step}: the plugin stopped at the step and was killed"
        );
        plugin.stop(Duration::from_secs(5));
        let p = probe(&mut pod, &cut);
        assert_eq!(
            (p[0].as_str(), size(&p[3])),
            ("", 2),
            "{step}: unadjusted: {p:?}"
        );
        let (mut plugin, log) = start_plugin(c, "after-cut");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let p = probe(&mut pod, &cut);
        assert_eq!(
            size(&p[3]),
            1,
            "{step}: pinned at Synchronize: {p:?}\n{text}"
        );
        assert_eq!(entry(&cut), Some((p[3].clone(), 1.0)), "{step}: {text}");
        assert!(text.contains(fix), "{step}: {text}");
        pod.remove(&cut).expect("RemoveContainer");
        assert_eq!(entry(&cut), None);
        plugin.stop(Duration::from_secs(5));
    }
}

/// The runtime's side of an NRI connection, for what no runtime here can
/// do: NRI 0.11's sysctl adjustment needs containerd 2.2.1, which neither
/// Debian 13 (1.7.24) nor Debian's testing (2.1) packages. It speaks the
/// wire as containerd does (multiplexed ttrpc: the plugin's calls on
/// connection 2, the runtime's on connection 1) and nothing more.
struct NriRuntime {
    sock: std::os::unix::net::UnixStream,
    frames: berth_nri::wire::Reassembler,
    next: u32,
}

impl NriRuntime {
    /// Accepts the plugin on `listener`, answers its RegisterPlugin and
    /// configures it as `runtime` `version` speaking NRI `nri`.
    fn accept(
        listener: &std::os::unix::net::UnixListener,
        runtime: &str,
        version: &str,
        nri: &str,
    ) -> NriRuntime {
        use berth_nri::wire;
        use prost::Message as _;
        let (sock, _) = listener.accept().expect("the plugin connects");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rt = NriRuntime {
            sock,
            frames: Default::default(),
            next: 1,
        };
        let register = rt.next_message(wire::RUNTIME_CONN, wire::TYPE_REQUEST);
        let req = wire::Request::decode(register.body.as_slice()).unwrap();
        assert_eq!(req.method, "RegisterPlugin");
        let ok = wire::Response {
            status: None,
            payload: Vec::new(),
        };
        wire::write_response(&mut rt.sock, wire::RUNTIME_CONN, register.stream, &ok).unwrap();
        let configured: Result<berth_nri::proto::ConfigureResponse, _> = rt.call(
            "Configure",
            berth_nri::proto::ConfigureRequest {
                runtime_name: runtime.into(),
                runtime_version: version.into(),
                nri_version: nri.into(),
                request_timeout: 2000,
                ..Default::default()
            },
        );
        configured.expect("Configure");
        let synced: Result<berth_nri::proto::SynchronizeResponse, _> = rt.call(
            "Synchronize",
            berth_nri::proto::SynchronizeRequest::default(),
        );
        synced.expect("Synchronize");
        rt
    }

    /// The next message of `kind` on connection `conn` (others skipped:
    /// the plugin's unsolicited updates).
    fn next_message(&mut self, conn: u32, kind: u8) -> berth_nri::wire::Message {
        loop {
            let (c, data) = berth_nri::wire::read_frame(&mut self.sock).expect("a frame");
            let msgs = self.frames.push(c, &data).expect("a message");
            if let Some(m) = msgs.into_iter().find(|m| c == conn && m.kind == kind) {
                return m;
            }
        }
    }

    /// Calls the plugin's `method`; its error message on failure.
    fn call<R: prost::Message + Default>(
        &mut self,
        method: &str,
        req: impl prost::Message,
    ) -> Result<R, String> {
        use berth_nri::wire;
        use prost::Message as _;
        let stream = self.next;
        self.next += 2;
        wire::write_request(
            &mut self.sock,
            wire::PLUGIN_CONN,
            stream,
            berth_nri::proto::PLUGIN_SERVICE,
            method,
            req.encode_to_vec(),
        )
        .unwrap();
        let answer = self.next_message(wire::PLUGIN_CONN, wire::TYPE_RESPONSE);
        assert_eq!(answer.stream, stream);
        let r = wire::Response::decode(answer.body.as_slice()).unwrap();
        match r.status.filter(|s| s.code != 0) {
            Some(s) => Err(s.message),
            None => Ok(R::decode(r.payload.as_slice()).unwrap()),
        }
    }

    /// CreateContainer of a container `id` with `namespaces` of its own
    /// (new ones), its own `sysctl` and `annotations`: the sysctls the
    /// plugin adjusts, or its error.
    fn create(
        &mut self,
        id: &str,
        namespaces: &[&str],
        sysctl: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        use berth_nri::proto;
        let pairs = |kv: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let container = proto::Container {
            id: id.into(),
            pod_sandbox_id: "pod".into(),
            name: id.into(),
            annotations: pairs(annotations),
            linux: Some(proto::LinuxContainer {
                namespaces: namespaces
                    .iter()
                    .map(|t| proto::LinuxNamespace {
                        r#type: t.to_string(),
                        path: String::new(),
                    })
                    .collect(),
                sysctl: pairs(sysctl),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer: proto::CreateContainerResponse = self.call(
            "CreateContainer",
            proto::ContainerRequest {
                pod: None,
                container: Some(container),
            },
        )?;
        Ok(answer
            .adjust
            .and_then(|a| a.linux)
            .map(|l| l.sysctl.into_iter().collect())
            .unwrap_or_default())
    }

    /// StopContainer and RemoveContainer of `id`.
    fn remove(&mut self, id: &str) {
        use berth_nri::proto;
        let req = || proto::ContainerRequest {
            pod: None,
            container: Some(proto::Container {
                id: id.into(),
                ..Default::default()
            }),
        };
        let stopped: Result<proto::StopContainerResponse, _> = self.call("StopContainer", req());
        stopped.expect("StopContainer");
        let removed: Result<proto::Empty, _> = self.call("RemoveContainer", req());
        removed.expect("RemoveContainer");
    }
}

/// The sysctl policy through NRI: a runtime that takes sysctl adjustments
/// (NRI 0.11) gets the machine-class and app policy layers under the
/// container's own keys, and Berth's refusals; one that does not (NRI 0.8,
/// containerd 1.7) gets none, and the plugin says so at start and for each
/// container that asks for a policy. The runtime is the fake above:
/// containerd 2.2.1 cannot run here.
#[test]
fn nri_plugin_applies_the_sysctl_policy_where_the_runtime_takes_sysctls() {
    use berth_integration::berth::{APP_POLICY, APP_SYSCTL, MACHINE_IPC_SYSCTL, MACHINE_SYSCTL};
    let _g = cpu_lock();
    let dir = fresh_dir("berth-nri-sysctl");
    let socket = dir.join("nri.sock");
    let runc_root = dir.join("runc");
    std::fs::create_dir_all(&runc_root).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let log = dir.join("berth-nri.log");
    let mut cmd = command(binary("berth-nri"));
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--berth-config")
        .arg(config())
        .arg("--runc-root")
        .arg(&runc_root)
        .env("BERTH_NRI_LOG", "info");
    let mut plugin = Daemon::spawn("berth-nri", &mut cmd, &log);
    let policy = ("io.berth.sysctl-policy", APP_POLICY);
    let own = ["network", "ipc"];
    let pairs = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let id = |n: &str| format!("{}-{n}", berth_integration::names::run_id());

    let mut rt = NriRuntime::accept(&listener, "containerd", "v2.2.1", "v0.11.0");
    // The layers: machine class < app policy < the container's own keys
    // (which the runtime already sets: not in the adjustment).
    let web = id("web");
    assert_eq!(
        rt.create(&web, &own, &[(MACHINE_SYSCTL.0, "300")], &[policy]),
        Ok(pairs(&[APP_SYSCTL, MACHINE_IPC_SYSCTL])),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // No policy asked: the machine class alone, for the namespaces it has.
    let plain = id("plain");
    assert_eq!(
        rt.create(&plain, &["network"], &[], &[]),
        Ok(pairs(&[MACHINE_SYSCTL]))
    );
    // The host's network: the policy's net key cannot apply, so the
    // container is refused, and the machine class's is skipped.
    let err = rt
        .create(&id("hostnet"), &["ipc"], &[], &[policy])
        .expect_err("a net policy on the host's network");
    assert!(
        err.contains(APP_SYSCTL.0) && err.contains("network namespace"),
        "{err}"
    );
    assert_eq!(
        rt.create(&id("hostnet-plain"), &["ipc"], &[], &[]),
        Ok(pairs(&[MACHINE_IPC_SYSCTL]))
    );
    // A key of its own beyond the safe list and the admin's allow list.
    let err = rt
        .create(&id("rmem"), &own, &[("net.core.rmem_max", "1")], &[])
        .expect_err("a key not allowed");
    assert!(
        err.contains("net.core.rmem_max") && err.contains("not allowed"),
        "{err}"
    );
    // A tenant naming a file outside the policy directory.
    let err = rt
        .create(
            &id("escape"),
            &own,
            &[],
            &[("io.berth.sysctl-policy", "../web")],
        )
        .expect_err("a policy name with a path");
    assert!(err.contains("io.berth.sysctl-policy"), "{err}");
    rt.remove(&web);
    rt.remove(&plain);
    rt.remove(&id("hostnet-plain"));
    drop(rt);

    // containerd 1.7: no sysctl adjustment, said at registration and for
    // the container that asked for a policy.
    let mut rt = NriRuntime::accept(&listener, "containerd", "v1.7.24", "");
    let old = id("old");
    assert_eq!(rt.create(&old, &own, &[], &[policy]), Ok(pairs(&[])));
    rt.remove(&old);
    drop(rt);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("the sysctl policy is applied through NRI"),
        "{text}"
    );
    let said = text
        .lines()
        .find(|l| l.contains("the sysctl policy is not applied"))
        .unwrap_or_else(|| panic!("no warning at registration: {text}"));
    assert!(
        said.contains("v1.7.24") && said.contains("berth-runtime"),
        "{said}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("sysctl policy not applied") && l.contains(&old)),
        "{text}"
    );
    plugin.stop(Duration::from_secs(5));
}
