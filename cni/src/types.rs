//! Network configuration and results, for spec versions 0.3.0 to 1.1.0, with
//! conversion between them.
//!
//! Results differ across versions only in ways that matter here: before 1.0.0
//! every IP carries `"version": "4"|"6"`; 1.1.0 adds route attributes (`mtu`,
//! `advmss`, `priority`, `table`, `scope`), which older versions drop.

use crate::error::{Code, Failure};
use crate::SUPPORTED_VERSIONS;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A network configuration that cannot be used: 6 when it does not decode,
/// 1 for an unsupported `cniVersion`, 7 otherwise. Every message names the
/// key (`runtimeConfig.bandwidth.egressRate`, `trunk[1].minID`).
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// Not JSON at all.
    #[error("the network configuration is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("the network configuration is not a JSON object")]
    NotObject,
    /// A `cniVersion` this library does not speak.
    #[error("cniVersion {0} is not supported")]
    Version(String),
    /// A required key is absent (or empty).
    #[error("{0} is required")]
    Missing(String),
    /// A key of the wrong type or shape.
    #[error("{key}: {source}")]
    Type {
        /// The key's path.
        key: String,
        /// What serde expected.
        #[source]
        source: serde_json::Error,
    },
    /// A key whose value is not allowed.
    #[error("{key} {problem}")]
    Invalid {
        /// The key's path.
        key: String,
        /// What is wrong with it, starting with the value.
        problem: String,
    },
}

impl ConfError {
    /// Key `key` has a value that is not allowed: `problem`, which reads
    /// after the key (`"fast" is not one of ...`).
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfError {
        ConfError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Failure for ConfError {
    fn code(&self) -> Code {
        match self {
            ConfError::NotJson(_) | ConfError::NotObject => Code::Decode,
            ConfError::Version(_) => Code::IncompatibleVersion,
            _ => Code::InvalidConfig,
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            ConfError::NotJson(e) => Some(e.to_string()),
            ConfError::Version(_) => Some(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))),
            _ => None,
        }
    }
}

/// Deserializes `v`, found at key path `at` ("" for the top level), into a
/// struct of keys; an error names the offending key by its whole path.
pub fn keys<T: DeserializeOwned>(v: &Value, at: &str) -> Result<T, ConfError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let key = match (at, path.as_str()) {
            ("", ".") => "the configuration".to_string(),
            (at, ".") => at.to_string(),
            ("", p) => p.to_string(),
            (at, p) => format!("{at}.{p}"),
        };
        ConfError::Type {
            key,
            source: e.into_inner(),
        }
    })
}

/// A string that may be absent, null or empty (all `None`).
pub fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The keys every network configuration has, as the spec defines them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaseKeys {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    ipam: Option<Map<String, Value>>,
    prev_result: Option<Value>,
    runtime_config: Option<Map<String, Value>>,
}

/// One entry of a GC's `cni.dev/valid-attachments`.
#[derive(Deserialize)]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Deserialize)]
struct GcKeys {
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid: Option<Vec<ValidAttachment>>,
}

/// The parts of a network configuration every plugin reads; the whole
/// document stays in `raw` for plugin-specific keys.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name`.
    pub name: String,
    /// `type`.
    pub plugin_type: String,
    /// `ipam`, if any.
    pub ipam: Option<Value>,
    /// `prevResult`, if any (chained plugins, CHECK).
    pub prev_result: Option<Value>,
    /// `runtimeConfig` (capability arguments), empty when absent.
    pub runtime_config: Map<String, Value>,
    /// The whole document.
    pub raw: Value,
}

impl NetConf {
    /// `ipam.type`, if there is IPAM and it names one.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }

    /// A GC's `cni.dev/valid-attachments`, as (`containerID`, `ifname`)
    /// pairs. A malformed list is an error, never read as "nothing is
    /// valid".
    pub fn valid_attachments(&self) -> Result<Vec<(String, String)>, ConfError> {
        let gc: GcKeys = keys(&self.raw, "")?;
        Ok(gc
            .valid
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect())
    }

    /// Deserializes the plugin's own keys (see [`keys`]).
    pub fn keys<T: DeserializeOwned>(&self) -> Result<T, ConfError> {
        keys(&self.raw, "")
    }

    /// The configuration as JSON bytes, as an IPAM plugin is given it.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.raw).unwrap_or_default()
    }
}

/// Parses a network configuration from stdin bytes: 6 for JSON that does not
/// decode, 7 for missing or mistyped keys, 1 for an unsupported `cniVersion`.
pub fn parse_conf(bytes: &[u8]) -> Result<NetConf, ConfError> {
    let raw: Value = serde_json::from_slice(bytes).map_err(ConfError::NotJson)?;
    if !raw.is_object() {
        return Err(ConfError::NotObject);
    }
    let base: BaseKeys = keys(&raw, "")?;
    let required = |v: Option<String>, k: &str| non_empty(v).ok_or(ConfError::Missing(k.into()));
    let cni_version = required(base.cni_version, "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(ConfError::Version(cni_version));
    }
    Ok(NetConf {
        name: required(base.name, "name")?,
        plugin_type: required(base.plugin_type, "type")?,
        ipam: base.ipam.filter(|m| !m.is_empty()).map(Value::Object),
        prev_result: base.prev_result,
        runtime_config: base.runtime_config.unwrap_or_default(),
        cni_version,
        raw,
    })
}

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. `10.1.0.5/16`.
    pub address: String,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// `"4"` or `"6"`, as results before 1.0.0 spell it.
    pub fn family(&self) -> &'static str {
        if self.address.contains(':') {
            "6"
        } else {
            "4"
        }
    }
}

/// A route in a result; 1.1.0 attributes are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// `mtu`, `advmss`, `priority`, `table`, `scope` (1.1.0).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// Interfaces created.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes added.
    pub routes: Vec<Route>,
    /// DNS settings, passed through.
    pub dns: Option<Value>,
}

/// A result (an IPAM plugin's, or `prevResult`) that cannot be used (code
/// 6), or a version it cannot be written in (code 1).
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// Not an object.
    #[error("the result is not a JSON object")]
    NotObject,
    /// `ips`, `interfaces` or `routes` do not decode.
    #[error("result {what} do not decode")]
    Field {
        /// Which list.
        what: &'static str,
        /// serde's words.
        #[source]
        source: serde_json::Error,
    },
    /// An address or route destination that is not a CIDR.
    #[error("{what} {value:?} is not a CIDR")]
    NotCidr {
        /// Where it was, e.g. `IPAM result address`.
        what: &'static str,
        /// The text.
        value: String,
    },
    /// A route gateway that is not an address.
    #[error("IPAM result route gateway {0:?} is not an address")]
    BadGateway(String),
    /// A version results are not written in.
    #[error("cannot write a result in cniVersion {0}")]
    Version(String),
}

impl Failure for ResultError {
    fn code(&self) -> Code {
        match self {
            ResultError::Version(_) => Code::IncompatibleVersion,
            _ => Code::Decode,
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            ResultError::Field { source, .. } => Some(source.to_string()),
            _ => None,
        }
    }
}

fn decode_field<T: for<'de> Deserialize<'de>>(
    v: Option<&Value>,
    what: &'static str,
) -> Result<Vec<T>, ResultError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|source| ResultError::Field { what, source })
        }
    }
}

impl CniResult {
    /// Reads a result of any supported version (e.g. an IPAM plugin's).
    pub fn from_json(v: &Value) -> Result<CniResult, ResultError> {
        let obj = v.as_object().ok_or(ResultError::NotObject)?;
        let mut ips: Vec<Map<String, Value>> = decode_field(obj.get("ips"), "ips")?;
        for ip in &mut ips {
            ip.remove("version");
        }
        Ok(CniResult {
            interfaces: decode_field(obj.get("interfaces"), "interfaces")?,
            ips: decode_field(
                Some(&Value::Array(ips.into_iter().map(Value::Object).collect())),
                "ips",
            )?,
            routes: decode_field(obj.get("routes"), "routes")?,
            dns: obj.get("dns").filter(|d| !d.is_null()).cloned(),
        })
    }

    /// Writes the result in `version`.
    pub fn to_json(&self, version: &str) -> Result<Value, ResultError> {
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ResultError::Version(version.into()));
        }
        let pre_1 = version.starts_with("0.");
        let pre_1_1 = version != "1.1.0";
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.into()));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if pre_1_1 {
                        i.mtu = None;
                    }
                    serde_json::to_value(i).unwrap_or(Value::Null)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut v = serde_json::to_value(ip).unwrap_or(Value::Null);
                    if pre_1 {
                        if let Some(m) = v.as_object_mut() {
                            m.insert("version".into(), Value::String(ip.family().into()));
                        }
                    }
                    v
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if pre_1_1 {
                        r.extra.clear();
                    }
                    serde_json::to_value(r).unwrap_or(Value::Null)
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        if let Some(d) = &self.dns {
            out.insert("dns".into(), d.clone());
        }
        Ok(Value::Object(out))
    }
}

/// The VERSION answer.
pub fn version_json() -> Value {
    serde_json::json!({"cniVersion": crate::LATEST, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_carry_the_spec_codes() {
        assert_eq!(parse_conf(b"{").unwrap_err().code(), Code::Decode);
        assert_eq!(parse_conf(b"[]").unwrap_err().code(), Code::Decode);
        let e = parse_conf(br#"{"cniVersion":"1.0.0","type":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (Code::InvalidConfig, "name is required")
        );
        assert_eq!(
            parse_conf(br#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#)
                .unwrap_err()
                .code(),
            Code::IncompatibleVersion
        );
        for (conf, key) in [
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"x","runtimeConfig":[]}"#,
                "runtimeConfig: ",
            ),
            (r#"{"cniVersion":"1.0.0","name":7,"type":"x"}"#, "name: "),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":"host-local"}"#,
                "ipam: ",
            ),
        ] {
            let e = parse_conf(conf.as_bytes()).unwrap_err();
            assert_eq!(e.code(), Code::InvalidConfig, "{conf}");
            assert!(e.to_string().starts_with(key), "{conf}: {e}");
        }
        let c = parse_conf(br#"{"cniVersion":"0.4.0","name":"n","type":"x","ipam":{"type":"host-local"},"master":"eth9"}"#).unwrap();
        assert_eq!(c.raw["master"], "eth9");
        assert!(c.ipam.is_some());
    }

    #[test]
    fn a_malformed_valid_list_is_refused_not_read_as_empty() {
        let gc = |list: Value| {
            let c = json!({"cniVersion": "1.1.0", "name": "n", "type": "x", "cni.dev/valid-attachments": list});
            parse_conf(c.to_string().as_bytes())
                .unwrap()
                .valid_attachments()
        };
        assert_eq!(
            gc(json!([{"containerID": "a", "ifname": "eth0"}])).unwrap(),
            vec![("a".to_string(), "eth0".to_string())]
        );
        assert_eq!(gc(Value::Null).unwrap(), vec![]);
        let e =
            gc(json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b"}])).unwrap_err();
        assert!(
            e.to_string().starts_with("cni.dev/valid-attachments[1]"),
            "{e}"
        );
        assert!(gc(json!({"containerID": "a"})).is_err());
    }

    #[test]
    fn results_convert_between_versions() {
        let r = CniResult::from_json(&json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                    {"version": "6", "address": "fd00::5/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap();
        let v1 = r.to_json("1.0.0").unwrap();
        assert!(v1["ips"][0].get("version").is_none());
        let v03 = r.to_json("0.3.1").unwrap();
        assert_eq!(v03["ips"][0]["version"], "4");
        assert_eq!(v03["ips"][1]["version"], "6");
        assert_eq!(CniResult::from_json(&v03).unwrap(), r);
        assert_eq!(CniResult::from_json(&v1).unwrap(), r);
        // 1.1.0 route attributes are dropped for older versions.
        let mut r11 = r.clone();
        r11.routes[0].extra.insert("mtu".into(), json!(1400));
        assert_eq!(r11.to_json("1.1.0").unwrap()["routes"][0]["mtu"], 1400);
        assert!(r11.to_json("1.0.0").unwrap()["routes"][0]
            .get("mtu")
            .is_none());
    }
}
