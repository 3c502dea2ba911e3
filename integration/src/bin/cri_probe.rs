//! `berth-cri-probe`: drives a containerd's CRI API as kubelet does, for the
//! VM tier, where the guest has no `crictl` (Debian 12 ships none) and the
//! host's CRI client cannot reach the guest's socket.
//!
//! ```text
//! berth-cri-probe SOCKET run-pod NAME CGROUP_PARENT             prints the sandbox id
//! berth-cri-probe SOCKET start POD NAME CGROUP_PARENT CPU_QUOTA prints the container id
//! berth-cri-probe SOCKET remove-pod POD
//! ```
//!
//! A pod is on the node's network; its containers run busybox's `sleep`
//! with the CPU quota given (per 100 ms period; 0 for none).

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

/// The sandbox configuration of pod `name` (the same for run and start).
fn pod_config(name: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: name.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: format!("/tmp/{name}-logs"),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("berth-cri-probe: {e}");
        std::process::exit(1)
    };
    let Some(socket) = args.first() else {
        fail(&"usage: berth-cri-probe SOCKET run-pod|start|remove-pod ...")
    };
    let mut client = rt
        .block_on(berth_cni_gc::cri::connect(socket.into()))
        .unwrap_or_else(|e| fail(&e));
    let a: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    match a.as_slice() {
        ["run-pod", name, parent] => {
            let r = rt
                .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config(name, parent)),
                    runtime_handler: String::new(),
                }))
                .unwrap_or_else(|e| fail(&e));
            println!("{}", r.into_inner().pod_sandbox_id);
        }
        ["start", pod, name, parent, quota] => {
            let quota: i64 = quota.parse().unwrap_or_else(|e| fail(&e));
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: berth_integration::images::BUSYBOX_IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "600".into()],
                log_path: "main.log".into(),
                linux: Some(LinuxContainerConfig {
                    resources: (quota > 0).then(|| LinuxContainerResources {
                        cpu_period: 100_000,
                        cpu_quota: quota,
                        cpu_shares: 1024,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let id = rt
                .block_on(client.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.to_string(),
                    config: Some(config),
                    sandbox_config: Some(pod_config(name, parent)),
                }))
                .unwrap_or_else(|e| fail(&e))
                .into_inner()
                .container_id;
            rt.block_on(client.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|e| fail(&e));
            println!("{id}");
        }
        ["remove-pod", pod] => {
            rt.block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            }))
            .unwrap_or_else(|e| fail(&e));
            rt.block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            }))
            .unwrap_or_else(|e| fail(&e));
        }
        _ => fail(&format!("unknown command {a:?}")),
    }
}
