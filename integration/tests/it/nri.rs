//! berth-nri against Debian 13's containerd 1.7 with NRI enabled, driven
//! through CRI as kubelet drives it: the plugin registers, splits a pod's
//! CPUs in the shared ledger, gives the container its CPU count (variables
//! and the synthetic files), refuses what cannot fit with Berth's message,
//! and releases the CPUs when the container is removed. Plain runc is the
//! runtime: no berth-runtime involved.

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::berth::{config, cpu_lock, cpu_status};
use berth_integration::cmd::command;
use berth_integration::engines::containerd::containerd_nri;
use berth_integration::engines::cri::{container_config, Pod};
use berth_integration::process::{wait_until, Daemon};
use std::time::Duration;

fn in_ledger(id: &str) -> bool {
    cpu_status()["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
}

#[test]
fn nri_plugin_splits_cpus_injects_the_count_refuses_what_cannot_fit_and_releases() {
    let _g = cpu_lock();
    let c = containerd_nri();
    let log = fresh_dir("berth-nri").join("berth-nri.log");
    let mut plugin = Daemon::spawn(
        "berth-nri",
        command(binary("berth-nri"))
            .arg("--socket")
            .arg(c.nri_socket())
            .arg("--berth-config")
            .arg(config())
            .env("BERTH_NRI_LOG", "debug"),
        &log,
    );
    let registered = wait_until(Duration::from_secs(15), || {
        plugin.assert_alive(&log);
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("synchronized with the runtime"))
    });
    assert!(
        registered,
        "berth-nri did not register: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut pod = Pod::run_on(c, "").expect("RunPodSandbox");
    let id = pod
        .start_container(&["sleep", "600"], Some(0.5))
        .unwrap_or_else(|e| {
            panic!(
                "CreateContainer: {e}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let (code, out, err) = pod
        .exec_sync(
            &id,
            &[
                "sh",
                "-c",
                "echo $BERTH_NPROC $GOMAXPROCS; cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo; grep Cpus_allowed_list /proc/self/status | cut -f2",
            ],
        )
        .expect("ExecSync");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["1 1", "0", "1"],
        "count, online, cpuinfo: {out}"
    );
    assert_eq!(
        berth_runtime::spec::cpuset_count(lines[3]),
        Some(1),
        "0.5 CPU lands on one fragment CPU: {out}"
    );
    assert!(in_ledger(&id), "the container is in the shared ledger");
    // More than the host has: CreateContainer fails with Berth's message,
    // which kubelet shows in the pod's events.
    let mut big = container_config("big", &["sleep", "1"]);
    big.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        resources: Some(k8s_cri::v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 6_400_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = pod.start(big).expect_err("64 CPUs cannot fit");
    assert!(e.message().contains("berth: cpus"), "{}", e.message());
    // Removing the pod releases the CPUs.
    drop(pod);
    assert!(
        wait_until(Duration::from_secs(10), || !in_ledger(&id)),
        "the removed container still holds CPUs"
    );
    plugin.stop(Duration::from_secs(5));
}
