//! NRI's protocol messages (`nri.pkg.api.v1alpha1`), the subset Berth uses,
//! written from NRI's published `api.proto`: field numbers and types match
//! it, so fields Berth does not declare are skipped on decode.

use std::collections::HashMap;

/// The service plugins call (registration).
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The service the runtime calls on a plugin.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";

/// `Event` values a plugin subscribes to (as bit `event - 1`).
pub mod event {
    /// CREATE_CONTAINER.
    pub const CREATE_CONTAINER: u32 = 4;
    /// UPDATE_CONTAINER.
    pub const UPDATE_CONTAINER: u32 = 8;
    /// POST_UPDATE_CONTAINER.
    pub const POST_UPDATE_CONTAINER: u32 = 9;
    /// STOP_CONTAINER.
    pub const STOP_CONTAINER: u32 = 10;
    /// REMOVE_CONTAINER.
    pub const REMOVE_CONTAINER: u32 = 11;

    /// The subscription mask of `events`.
    pub fn mask(events: &[u32]) -> i32 {
        events.iter().fold(0i32, |m, e| m | (1 << (e - 1)))
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterPluginRequest {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(string, tag = "2")]
    pub plugin_idx: String,
    #[prost(string, tag = "3")]
    pub nri_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigureRequest {
    #[prost(string, tag = "1")]
    pub config: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(int64, tag = "4")]
    pub registration_timeout: i64,
    #[prost(int64, tag = "5")]
    pub request_timeout: i64,
    #[prost(string, tag = "6")]
    pub nri_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigureResponse {
    #[prost(int32, tag = "2")]
    pub events: i32,
    #[prost(int64, tag = "3")]
    pub request_timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SynchronizeRequest {
    #[prost(message, repeated, tag = "1")]
    pub pods: Vec<PodSandbox>,
    #[prost(message, repeated, tag = "2")]
    pub containers: Vec<Container>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SynchronizeResponse {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<ContainerUpdate>,
    #[prost(bool, tag = "2")]
    pub more: bool,
}

/// CreateContainer, StopContainer, RemoveContainer and StateChange requests
/// share this shape (pod 1, container 2); UpdateContainer adds field 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerRequest {
    #[prost(message, optional, tag = "1")]
    pub pod: Option<PodSandbox>,
    #[prost(message, optional, tag = "2")]
    pub container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub adjust: Option<ContainerAdjustment>,
    #[prost(message, repeated, tag = "2")]
    pub update: Vec<ContainerUpdate>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateContainerRequest {
    #[prost(message, optional, tag = "1")]
    pub pod: Option<PodSandbox>,
    #[prost(message, optional, tag = "2")]
    pub container: Option<Container>,
    #[prost(message, optional, tag = "3")]
    pub linux_resources: Option<LinuxResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateContainerResponse {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<ContainerUpdate>,
}

/// The runtime service's `UpdateContainers`: updates a plugin asks for
/// outside any call (after a RemoveContainer, whose answer carries none).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateContainersRequest {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<ContainerUpdate>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub failed: Vec<ContainerUpdate>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerResponse {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<ContainerUpdate>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub uid: String,
    #[prost(string, tag = "4")]
    pub namespace: String,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(int32, tag = "4")]
    pub state: i32,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
    #[prost(string, repeated, tag = "8")]
    pub env: Vec<String>,
    #[prost(message, repeated, tag = "9")]
    pub mounts: Vec<Mount>,
    #[prost(message, optional, tag = "11")]
    pub linux: Option<LinuxContainer>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub destination: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, tag = "3")]
    pub source: String,
    #[prost(string, repeated, tag = "4")]
    pub options: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainer {
    #[prost(message, repeated, tag = "1")]
    pub namespaces: Vec<LinuxNamespace>,
    #[prost(message, optional, tag = "3")]
    pub resources: Option<LinuxResources>,
    #[prost(string, tag = "5")]
    pub cgroups_path: String,
    /// The container's own sysctls (sent by NRI 0.11 and later).
    #[prost(map = "string, string", tag = "9")]
    pub sysctl: HashMap<String, String>,
}

/// A namespace the container gets: a new one (no path) or one joined.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxNamespace {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxResources {
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<LinuxCpu>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxCpu {
    #[prost(message, optional, tag = "1")]
    pub shares: Option<OptionalUInt64>,
    #[prost(message, optional, tag = "2")]
    pub quota: Option<OptionalInt64>,
    #[prost(message, optional, tag = "3")]
    pub period: Option<OptionalUInt64>,
    #[prost(string, tag = "6")]
    pub cpus: String,
    #[prost(string, tag = "7")]
    pub mems: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionalInt64 {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionalUInt64 {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAdjustment {
    #[prost(message, repeated, tag = "3")]
    pub mounts: Vec<Mount>,
    #[prost(message, repeated, tag = "4")]
    pub env: Vec<KeyValue>,
    #[prost(message, optional, tag = "6")]
    pub linux: Option<LinuxContainerAdjustment>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerAdjustment {
    #[prost(message, optional, tag = "2")]
    pub resources: Option<LinuxResources>,
    /// Sysctls to set (NRI 0.11 and later; an older runtime drops the
    /// field unread, see [`takes_sysctl`]).
    #[prost(map = "string, string", tag = "8")]
    pub sysctl: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerUpdate {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(message, optional, tag = "2")]
    pub linux: Option<LinuxContainerUpdate>,
    #[prost(bool, tag = "3")]
    pub ignore_failure: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerUpdate {
    #[prost(message, optional, tag = "1")]
    pub resources: Option<LinuxResources>,
}

/// `StateChangeEvent`: how NRI 0.x delivers events without a reply
/// (RemoveContainer among them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StateChangeEvent {
    #[prost(int32, tag = "1")]
    pub event: i32,
    #[prost(message, optional, tag = "2")]
    pub pod: Option<PodSandbox>,
    #[prost(message, optional, tag = "3")]
    pub container: Option<Container>,
}

/// Whether the runtime that sent `req` applies an adjustment's sysctls:
/// NRI 0.11 added them (containerd 2.2.1). A runtime that names its NRI
/// version is taken at its word; one that does not (older NRI sends none,
/// a development build may send no readable version) only if it is
/// containerd 2.2.1 or later. An older runtime would drop the field
/// without a word, so the plugin must not count on it.
pub fn takes_sysctl(req: &ConfigureRequest) -> bool {
    if let Some(nri) = version(&req.nri_version) {
        return nri >= (0, 11, 0);
    }
    req.runtime_name == "containerd"
        && version(&req.runtime_version).is_some_and(|v| v >= (2, 2, 1))
}

/// `major.minor.patch` of a version string such as `v0.11.0`,
/// `2.2.1~ds1-1` or `v0.11.1-0.20250101-abcdef` (a missing patch is 0).
fn version(s: &str) -> Option<(u32, u32, u32)> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut parts = s.splitn(3, '.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(name: &str, version: &str, nri: &str) -> ConfigureRequest {
        ConfigureRequest {
            runtime_name: name.into(),
            runtime_version: version.into(),
            nri_version: nri.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sysctl_adjustments_from_nri_0_11_or_containerd_2_2_1() {
        assert!(!takes_sysctl(&runtime("containerd", "v1.7.24", "")));
        assert!(!takes_sysctl(&runtime("containerd", "1.7.24~ds1-10", "")));
        assert!(!takes_sysctl(&runtime("containerd", "v2.2.0", "")));
        assert!(takes_sysctl(&runtime("containerd", "v2.2.1", "")));
        assert!(takes_sysctl(&runtime("containerd", "2.3.0~ds1-1", "")));
        assert!(!takes_sysctl(&runtime("cri-o", "1.34.0", "")));
        assert!(!takes_sysctl(&runtime("cri-o", "1.34.0", "v0.10.0")));
        assert!(takes_sysctl(&runtime("cri-o", "1.35.0", "v0.11.0")));
        assert!(takes_sysctl(&runtime("x", "", "v0.11.1-0.20250101-abcdef")));
        assert!(takes_sysctl(&runtime("x", "", "v1.0")));
        // Said, but unreadable: the runtime's own version decides.
        assert!(takes_sysctl(&runtime("containerd", "v2.2.1", "(devel)")));
        assert!(!takes_sysctl(&runtime("containerd", "v1.7.24", "(devel)")));
        assert!(!takes_sysctl(&runtime("containerd", "", "")));
    }
}
