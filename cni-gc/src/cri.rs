//! The live pod sandboxes, from the engine's CRI API (containerd's socket).

use crate::GcError;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxState, PodSandboxStatusRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// A sandbox's network namespace, as its runtime spec names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The host's: it has no attachments.
    Host,
    /// Its own, at this path.
    Path(PathBuf),
    /// The engine did not say (taken as alive).
    Unknown,
}

/// One pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Its ID: `CNI_CONTAINERID` of its attachments.
    pub id: String,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Its network namespace.
    pub netns: Netns,
}

impl Sandbox {
    /// True when its attachments are in use: it is ready and its network
    /// namespace was not deleted behind the engine's back.
    pub fn network_alive(&self) -> bool {
        self.ready
            && match &self.netns {
                Netns::Path(p) => p.exists(),
                Netns::Host | Netns::Unknown => true,
            }
    }
}

/// The network namespace in a verbose `PodSandboxStatus` `info` JSON.
pub fn netns_of(info: &str) -> Netns {
    let Ok(v) = serde_json::from_str::<Value>(info) else {
        return Netns::Unknown;
    };
    let Some(nss) = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(Value::as_array)
    else {
        return Netns::Unknown;
    };
    match nss
        .iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
    {
        None => Netns::Host,
        Some(n) => match n.get("path").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => Netns::Path(p.into()),
            _ => Netns::Unknown,
        },
    }
}

/// `e` and its sources, as one line (tonic's own says only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A CRI client over the unix socket `socket`.
pub async fn connect(socket: PathBuf) -> Result<RuntimeServiceClient<Channel>, String> {
    let channel = Endpoint::try_from("http://[::]")
        .map_err(|e| chain(&e))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| chain(&e))?;
    Ok(RuntimeServiceClient::new(channel))
}

async fn list(socket: PathBuf) -> Result<Vec<Sandbox>, String> {
    let mut c = connect(socket).await?;
    let items = c
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .items;
    let mut out = Vec::with_capacity(items.len());
    for s in items {
        let ready = s.state == PodSandboxState::SandboxReady as i32;
        let netns = if ready {
            let st = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: s.id.clone(),
                    verbose: true,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            st.info.get("info").map_or(Netns::Unknown, |i| netns_of(i))
        } else {
            Netns::Unknown
        };
        out.push(Sandbox {
            id: s.id,
            ready,
            netns,
        });
    }
    Ok(out)
}

/// Every pod sandbox the engine at `socket` knows, within `timeout`.
pub fn sandboxes(socket: &Path, timeout: Duration) -> Result<Vec<Sandbox>, GcError> {
    let err = |why: String| GcError::Engine {
        socket: socket.display().to_string(),
        why,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    rt.block_on(async {
        tokio::time::timeout(timeout, list(socket.to_path_buf()))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    })
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netns_comes_from_the_runtime_spec() {
        let own = r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#;
        assert_eq!(netns_of(own), Netns::Path("/var/run/netns/cni-1".into()));
        let host = r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#;
        assert_eq!(netns_of(host), Netns::Host);
        assert_eq!(netns_of("{}"), Netns::Unknown);
        assert_eq!(netns_of("junk"), Netns::Unknown);
        let gone = Sandbox {
            id: "a".into(),
            ready: true,
            netns: Netns::Path("/nonexistent/netns".into()),
        };
        assert!(!gone.network_alive());
        assert!(Sandbox {
            netns: Netns::Unknown,
            ..gone.clone()
        }
        .network_alive());
        assert!(!Sandbox {
            ready: false,
            netns: Netns::Host,
            ..gone
        }
        .network_alive());
    }
}
