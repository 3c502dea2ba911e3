//! Network configuration and results, for spec versions 0.3.0 to 1.1.0, with
//! conversion between them.
//!
//! Results differ across versions only in ways that matter here: before 1.0.0
//! every IP carries `"version": "4"|"6"`; 1.1.0 adds route attributes (`mtu`,
//! `advmss`, `priority`, `table`, `scope`), which older versions drop.

use crate::error::{CniError, Code};
use crate::SUPPORTED_VERSIONS;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// pairs; entries without both are skipped.
    pub fn valid_attachments(&self) -> Vec<(String, String)> {
        self.raw
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| {
                        Some((
                            v.get("containerID")?.as_str()?.to_string(),
                            v.get("ifname")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The configuration as JSON bytes, as an IPAM plugin is given it.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.raw).unwrap_or_default()
    }
}

/// Parses a network configuration from stdin bytes: 6 for JSON that does not
/// decode, 7 for missing or mistyped keys, 1 for an unsupported `cniVersion`.
pub fn parse_conf(bytes: &[u8]) -> Result<NetConf, CniError> {
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(Code::Decode, "the network configuration is not valid JSON")
            .with_details(e.to_string())
    })?;
    let obj = raw.as_object().ok_or_else(|| {
        CniError::new(
            Code::Decode,
            "the network configuration is not a JSON object",
        )
    })?;
    let string = |k: &str| -> Result<String, CniError> {
        match obj.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(CniError::new(
                Code::InvalidConfig,
                format!("{k} must be a non-empty string"),
            )),
            None => Err(CniError::new(
                Code::InvalidConfig,
                format!("{k} is required"),
            )),
        }
    };
    let cni_version = string("cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {cni_version} is not supported"),
        )
        .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
    }
    let runtime_config = match obj.get("runtimeConfig") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(CniError::new(
                Code::InvalidConfig,
                "runtimeConfig must be an object",
            ))
        }
    };
    let ipam = match obj.get("ipam") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(m)) if !m.is_empty() => Some(v.clone()),
        Some(Value::Object(_)) => None,
        Some(_) => return Err(CniError::new(Code::InvalidConfig, "ipam must be an object")),
    };
    Ok(NetConf {
        name: string("name")?,
        plugin_type: string("type")?,
        ipam,
        prev_result: obj.get("prevResult").filter(|v| !v.is_null()).cloned(),
        runtime_config,
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

fn decode_field<T: for<'de> Deserialize<'de>>(
    v: Option<&Value>,
    what: &str,
) -> Result<Vec<T>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(Code::Decode, format!("result {what} do not decode"))
                .with_details(e.to_string())
        }),
    }
}

impl CniResult {
    /// Reads a result of any supported version (e.g. an IPAM plugin's).
    pub fn from_json(v: &Value) -> Result<CniResult, CniError> {
        let obj = v
            .as_object()
            .ok_or_else(|| CniError::new(Code::Decode, "the result is not a JSON object"))?;
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
    pub fn to_json(&self, version: &str) -> Result<Value, CniError> {
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!("cannot write a result in cniVersion {version}"),
            ));
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
        assert_eq!(parse_conf(b"{").unwrap_err().code, Code::Decode);
        assert_eq!(parse_conf(b"[]").unwrap_err().code, Code::Decode);
        let e = parse_conf(br#"{"cniVersion":"1.0.0","type":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (Code::InvalidConfig, "name is required")
        );
        assert_eq!(
            parse_conf(br#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#)
                .unwrap_err()
                .code,
            Code::IncompatibleVersion
        );
        let c = parse_conf(br#"{"cniVersion":"0.4.0","name":"n","type":"x","ipam":{"type":"host-local"},"master":"eth9"}"#).unwrap();
        assert_eq!(c.raw["master"], "eth9");
        assert!(c.ipam.is_some());
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
