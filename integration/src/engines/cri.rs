//! A CRI client for the private containerd, driving it as kubelet does: a pod
//! sandbox with a runtime handler (what a Kubernetes RuntimeClass names), a
//! container in it, and `ExecSync`. Debian 12 ships no `crictl`.

use super::containerd::{containerd, Containerd};
use crate::cmd::command;
use crate::images::{busybox_tar, oci_archive};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AttachRequest, ContainerConfig, ContainerMetadata, ContainerStats, ContainerStatsRequest,
    ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ExecRequest, ExecSyncRequest,
    ImageSpec, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use std::sync::OnceLock;
use tonic::transport::Channel;

pub use super::containerd::PAUSE_IMAGE;
/// The containerd namespace CRI works in.
pub const CRI_NAMESPACE: &str = "k8s.io";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Imports the sandbox and busybox images into CRI's namespace (once).
pub fn import_images() {
    import_images_into(containerd());
}

/// Imports the sandbox and busybox images into `c`'s CRI namespace (once).
pub fn import_images_into(c: &Containerd) {
    c.cri_images.get_or_init(|| {
        let pause = oci_archive(busybox_tar(), PAUSE_IMAGE, &["sleep", "1000000"]);
        let busybox = oci_archive(busybox_tar(), crate::images::BUSYBOX_IMAGE, &["sh"]);
        for a in [pause, busybox] {
            crate::cmd::run(
                command("ctr")
                    .arg("--address")
                    .arg(&c.socket)
                    .args(["--namespace", CRI_NAMESPACE, "image", "import"])
                    .arg(&a),
            );
        }
    });
}

fn client() -> RuntimeServiceClient<Channel> {
    client_for(containerd())
}

fn client_for(c: &Containerd) -> RuntimeServiceClient<Channel> {
    // The same connector berth-cni-gc uses.
    rt().block_on(berth_cni_gc::cri::connect(c.socket.clone()))
        .unwrap_or_else(|e| panic!("connect to containerd's CRI: {e}"))
}

/// A pod sandbox on the host network, removed on drop.
pub struct Pod {
    client: RuntimeServiceClient<Channel>,
    /// The sandbox id.
    pub id: String,
    config: PodSandboxConfig,
}

impl Pod {
    /// Runs a pod sandbox with `handler` (a RuntimeClass's handler name).
    pub fn run(handler: &str) -> Result<Pod, tonic::Status> {
        Pod::run_with(handler, NamespaceMode::Pod, false)
    }

    /// Runs a pod sandbox with `handler`, its PID and IPC namespaces the
    /// pod's own or the node's (`pid_ipc`), privileged or not.
    pub fn run_with(
        handler: &str,
        pid_ipc: NamespaceMode,
        privileged: bool,
    ) -> Result<Pod, tonic::Status> {
        Pod::run_full(handler, pid_ipc, privileged, NamespaceMode::Node)
    }

    /// Runs a pod sandbox with `handler` on containerd `c` (another than the
    /// shared one: [`super::containerd::containerd_nri`]).
    pub fn run_on(c: &Containerd, handler: &str) -> Result<Pod, tonic::Status> {
        Pod::run_in(c, handler, NamespaceMode::Pod, false, NamespaceMode::Node)
    }

    /// Runs a pod sandbox on the pod network: containerd calls the CNI
    /// plugins of its configuration directory ([`cni_dirs`]).
    pub fn run_on_pod_network(handler: &str) -> Result<Pod, tonic::Status> {
        Pod::run_full(handler, NamespaceMode::Pod, false, NamespaceMode::Pod)
    }

    fn run_full(
        handler: &str,
        pid_ipc: NamespaceMode,
        privileged: bool,
        network: NamespaceMode,
    ) -> Result<Pod, tonic::Status> {
        Pod::run_in(containerd(), handler, pid_ipc, privileged, network)
    }

    fn run_in(
        c: &Containerd,
        handler: &str,
        pid_ipc: NamespaceMode,
        privileged: bool,
        network: NamespaceMode,
    ) -> Result<Pod, tonic::Status> {
        import_images_into(c);
        let mut client = client_for(c);
        let name = crate::names::unique();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: name.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: crate::artifacts::fresh_dir("pod-logs")
                .display()
                .to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}k", crate::names::process_prefix()),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: pid_ipc as i32,
                        ipc: pid_ipc as i32,
                        ..Default::default()
                    }),
                    privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let id = rt()
            .block_on(client.run_pod_sandbox(req))?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod { client, id, config })
    }

    /// The sandbox's network namespace path, from its verbose status.
    pub fn netns(&mut self) -> Option<String> {
        let st = rt()
            .block_on(
                self.client
                    .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
                        pod_sandbox_id: self.id.clone(),
                        verbose: true,
                    }),
            )
            .ok()?
            .into_inner();
        match berth_cni_gc::cri::netns_of(st.info.get("info")?) {
            berth_cni_gc::cri::Netns::Path(p) => Some(p.display().to_string()),
            _ => None,
        }
    }

    /// The sandbox's log directory (container logs are relative to it).
    pub fn log_directory(&self) -> &str {
        &self.config.log_directory
    }

    /// Creates and starts a busybox container running `command` with a CPU quota of `cpus`.
    pub fn start_container(
        &mut self,
        command: &[&str],
        cpus: Option<f64>,
    ) -> Result<String, tonic::Status> {
        let mut config = container_config("main", command);
        config.linux = Some(LinuxContainerConfig {
            resources: cpus.map(|c| LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: (c * 100_000.0) as i64,
                ..Default::default()
            }),
            ..Default::default()
        });
        self.start(config)
    }

    /// Creates and starts a container from `config` (see [`container_config`]).
    pub fn start(&mut self, config: ContainerConfig) -> Result<String, tonic::Status> {
        let req = CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = rt()
            .block_on(self.client.create_container(req))?
            .into_inner()
            .container_id;
        rt().block_on(self.client.start_container(StartContainerRequest {
            container_id: id.clone(),
        }))?;
        Ok(id)
    }

    /// Connects again to `c` (after it restarted).
    pub fn reconnect(&mut self, c: &Containerd) {
        self.client = client_for(c);
    }

    /// Stops and removes container `id`.
    pub fn remove(&mut self, id: &str) -> Result<(), tonic::Status> {
        rt().block_on(
            self.client
                .stop_container(k8s_cri::v1::StopContainerRequest {
                    container_id: id.into(),
                    timeout: 0,
                }),
        )?;
        rt().block_on(
            self.client
                .remove_container(k8s_cri::v1::RemoveContainerRequest {
                    container_id: id.into(),
                }),
        )?;
        Ok(())
    }

    /// `ExecSync`: runs `cmd` in the container; returns (exit code, stdout, stderr).
    pub fn exec_sync(
        &mut self,
        container: &str,
        cmd: &[&str],
    ) -> Result<(i32, String, String), tonic::Status> {
        self.exec_sync_timeout(container, cmd, 20)
    }

    /// `ExecSync` with a timeout in seconds (0: none).
    pub fn exec_sync_timeout(
        &mut self,
        container: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<(i32, String, String), tonic::Status> {
        let req = ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        let r = rt().block_on(self.client.exec_sync(req))?.into_inner();
        Ok((
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ))
    }
}

impl Pod {
    /// `ContainerStatus`.
    pub fn status(&mut self, container: &str) -> Result<ContainerStatus, tonic::Status> {
        let req = ContainerStatusRequest {
            container_id: container.into(),
            verbose: false,
        };
        rt().block_on(self.client.container_status(req))?
            .into_inner()
            .status
            .ok_or_else(|| tonic::Status::not_found("no status"))
    }

    /// The CPU resources containerd records for the container (its
    /// `runtimeSpec` in the verbose `ContainerStatus`): what it applies and
    /// reports, as opposed to what the cgroup shows.
    pub fn recorded_cpu(&mut self, container: &str) -> Result<serde_json::Value, tonic::Status> {
        let req = ContainerStatusRequest {
            container_id: container.into(),
            verbose: true,
        };
        let info = rt()
            .block_on(self.client.container_status(req))?
            .into_inner()
            .info;
        let v: serde_json::Value = info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .ok_or_else(|| tonic::Status::not_found("no verbose info"))?;
        Ok(v["runtimeSpec"]["linux"]["resources"]["cpu"].clone())
    }

    /// `UpdateContainerResources` with a CPU quota of `cpus` (None: no limit),
    /// as kubelet's in-place resize sends it.
    pub fn update_cpus(&mut self, container: &str, cpus: Option<f64>) -> Result<(), tonic::Status> {
        let req = k8s_cri::v1::UpdateContainerResourcesRequest {
            container_id: container.into(),
            linux: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: cpus.map_or(-1, |c| (c * 100_000.0) as i64),
                cpu_shares: cpus.map_or(2, |c| (c * 1024.0) as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        rt().block_on(self.client.update_container_resources(req))?;
        Ok(())
    }

    /// `ContainerStats`.
    pub fn stats(&mut self, container: &str) -> Result<ContainerStats, tonic::Status> {
        let req = ContainerStatsRequest {
            container_id: container.into(),
        };
        rt().block_on(self.client.container_stats(req))?
            .into_inner()
            .stats
            .ok_or_else(|| tonic::Status::not_found("no stats"))
    }

    /// `ReopenContainerLog`.
    pub fn reopen_log(&mut self, container: &str) -> Result<(), tonic::Status> {
        let req = ReopenContainerLogRequest {
            container_id: container.into(),
        };
        rt().block_on(self.client.reopen_container_log(req))?;
        Ok(())
    }
}

/// What a streaming session (Exec with a terminal, or Attach) showed.
#[derive(Debug, Default)]
pub struct Streamed {
    /// The terminal's output (channel 1; 2 has nothing with a terminal).
    pub output: String,
    /// The status document of channel 3, if the session ended with one.
    pub status: String,
}

impl Pod {
    /// `Exec` with a terminal, as `kubectl exec -it` asks for it: `input`
    /// is typed into the terminal of size `cols`x`rows` after a moment;
    /// returns once the process ended.
    pub fn exec_tty(
        &mut self,
        container: &str,
        cmd: &[&str],
        input: &str,
        (cols, rows): (u16, u16),
    ) -> Result<Streamed, tonic::Status> {
        let req = ExecRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let url = rt().block_on(self.client.exec(req))?.into_inner().url;
        stream(&url, input, (cols, rows), None).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// `Attach` to a container made with a terminal and stdin, as `kubectl
    /// attach -it`: types `input`, reads until the output contains `until`.
    pub fn attach(
        &mut self,
        container: &str,
        input: &str,
        until: &str,
    ) -> Result<Streamed, tonic::Status> {
        let req = AttachRequest {
            container_id: container.into(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        };
        let url = rt().block_on(self.client.attach(req))?.into_inner().url;
        stream(&url, input, (80, 24), Some(until))
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// One session with CRI's streaming server over WebSocket (the kubelet
/// protocol `v4.channel.k8s.io`: each frame starts with its channel, 0
/// stdin, 1 stdout, 2 stderr, 3 status, 4 resize).
fn stream(
    url: &str,
    input: &str,
    (cols, rows): (u16, u16),
    until: Option<&str>,
) -> std::io::Result<Streamed> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let io = |e: tungstenite::Error| std::io::Error::other(e.to_string());
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .map_err(io)?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| std::io::Error::other(format!("no host in {url}")))?;
    let tcp = std::net::TcpStream::connect(host)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let (mut ws, _) =
        tungstenite::client::client(req, tcp).map_err(|e| std::io::Error::other(e.to_string()))?;
    let frame = |channel: u8, bytes: &[u8]| {
        let mut v = vec![channel];
        v.extend_from_slice(bytes);
        Message::binary(v)
    };
    ws.send(frame(
        4,
        format!("{{\"Width\":{cols},\"Height\":{rows}}}").as_bytes(),
    ))
    .map_err(io)?;
    // Let the process reach its first read before typing.
    std::thread::sleep(std::time::Duration::from_millis(500));
    ws.send(frame(0, input.as_bytes())).map_err(io)?;
    let mut out = Streamed::default();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => match b.first() {
                Some(1) | Some(2) => out.output.push_str(&String::from_utf8_lossy(&b[1..])),
                Some(3) => out.status.push_str(&String::from_utf8_lossy(&b[1..])),
                _ => {}
            },
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(e) => return Err(io(e)),
        }
        if until.is_some_and(|u| out.output.contains(u)) {
            let _ = ws.close(None);
            break;
        }
    }
    Ok(out)
}

/// A busybox container named `name` running `command`, logging to
/// `<name>.log` in the pod's log directory; tests adjust the rest.
pub fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: crate::images::BUSYBOX_IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let id = self.id.clone();
        let _ = rt().block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        }));
        let _ = rt().block_on(
            self.client
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
        );
        super::remove_cgroup_dirs(&format!("{}k", crate::names::process_prefix()));
    }
}

/// containerd's CRI CNI directories: (configuration, plugins).
pub fn cni_dirs() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = containerd()
        .config
        .parent()
        .expect("containerd's directory")
        .to_path_buf();
    (dir.join("cni-conf"), dir.join("cni-bin"))
}

/// True when containerd's CRI reports its pod network ready (a CNI
/// configuration loaded from [`cni_dirs`]).
pub fn network_ready() -> bool {
    let mut c = client();
    rt().block_on(c.status(k8s_cri::v1::StatusRequest { verbose: false }))
        .ok()
        .and_then(|r| r.into_inner().status)
        .is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        })
}
