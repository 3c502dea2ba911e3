//! Keys and capabilities every Berth plugin reads the same way: the MAC
//! (`mac` < `CNI_ARGS` `MAC=` < `runtimeConfig.mac`), requested IPs
//! (`runtimeConfig.ips`, `CNI_ARGS` `IP=`), `bandwidth` (replaced by
//! `runtimeConfig.bandwidth`), `ipam.type` and `dns`. Errors name the key.

use crate::env::Env;
use crate::ipcfg::Cidr;
use crate::link::parse_mac;
use crate::types::{CniResult, IpConfig, NetConf};
use crate::{CniError, Code};
use serde_json::{Map, Value};

/// What the shared keys say.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// The MAC for the container's interface, if one is asked for.
    pub mac: Option<[u8; 6]>,
    /// `ipam.type`, if there is IPAM.
    pub ipam_type: Option<String>,
    /// Requested IPs to assign directly (only when there is no IPAM; an
    /// IPAM plugin reads the same keys itself).
    pub static_ips: Vec<Cidr>,
    /// The bandwidth settings and the key they came from.
    pub bandwidth: Option<(Value, &'static str)>,
    /// `dns`, for the result.
    pub dns: Option<Value>,
}

/// An invalid-configuration error (code 7) with `msg`, which names the key.
pub fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

/// The configuration's top-level object.
pub fn object(conf: &NetConf) -> Result<&Map<String, Value>, CniError> {
    conf.raw
        .as_object()
        .ok_or_else(|| invalid("the configuration is not an object".into()))
}

/// A string key: absent, null or empty is `None`; another type is an error.
pub fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

/// A positive integer key (0 or absent is `None`).
pub fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(0) => Ok(None),
            Some(n) if n > 0 && n <= i64::from(u32::MAX) => Ok(Some(n as u32)),
            _ => Err(invalid(format!("{key} {v} must be a positive integer"))),
        },
    }
}

fn mac(s: &str, key: &str) -> Result<[u8; 6], CniError> {
    let m = parse_mac(s).ok_or_else(|| {
        invalid(format!(
            "{key} {s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
        ))
    })?;
    if m[0] & 1 == 1 {
        return Err(invalid(format!(
            "{key} {s:?} is a multicast address; a link needs a unicast one"
        )));
    }
    Ok(m)
}

impl Common {
    /// The addresses of a new attachment, each on result interface `ours`:
    /// the IPAM plugin's (ADD, with its routes) when there is IPAM, else the
    /// static IPs. An IPAM result without addresses is an error. Arm the
    /// rollback's IPAM DEL before calling: a lease may exist on failure.
    pub fn addresses(&self, env: &Env, conf: &NetConf, ours: usize) -> Result<CniResult, CniError> {
        let mut result = CniResult::default();
        match &self.ipam_type {
            Some(t) => {
                let r = crate::ipam::add(t, env, &conf.bytes())?;
                if r.ips.is_empty() {
                    return Err(CniError::new(
                        Code::Plugin(100),
                        format!("IPAM plugin {t} returned no IP configuration"),
                    ));
                }
                result.ips = r.ips;
                result.routes = r.routes;
            }
            None => {
                result.ips = self
                    .static_ips
                    .iter()
                    .map(|c| IpConfig {
                        address: c.to_string(),
                        gateway: None,
                        interface: None,
                    })
                    .collect();
            }
        }
        for ip in &mut result.ips {
            ip.interface = Some(ours);
        }
        Ok(result)
    }

    /// Reads the shared keys of `conf` and `env`'s `CNI_ARGS`.
    pub fn parse(conf: &NetConf, env: &Env) -> Result<Common, CniError> {
        let obj = object(conf)?;
        let mut mac_v = opt_str(obj, "mac")?.map(|s| mac(s, "mac")).transpose()?;
        if let Some(m) = env.args.get("MAC").filter(|m| !m.is_empty()) {
            mac_v = Some(mac(m, "CNI_ARGS MAC")?);
        }
        if let Some(m) = opt_str(&conf.runtime_config, "mac")? {
            mac_v = Some(mac(m, "runtimeConfig.mac")?);
        }
        let ipam_type = match &conf.ipam {
            Some(i) => match i.get("type") {
                Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                _ => return Err(invalid("ipam.type must be a non-empty string".into())),
            },
            None => None,
        };
        let mut requested: Vec<(String, &'static str)> = Vec::new();
        match conf.runtime_config.get("ips") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for ip in a {
                    let s = ip
                        .as_str()
                        .ok_or_else(|| invalid("runtimeConfig.ips must be strings".into()))?;
                    requested.push((s.to_string(), "runtimeConfig.ips"));
                }
            }
            Some(_) => return Err(invalid("runtimeConfig.ips must be an array".into())),
        }
        if let Some(ips) = env.args.get("IP").filter(|s| !s.is_empty()) {
            requested.extend(
                ips.split(',')
                    .map(|s| (s.trim().to_string(), "CNI_ARGS IP")),
            );
        }
        let mut static_ips = Vec::new();
        for (s, key) in &requested {
            match Cidr::parse(s) {
                Some(c) => static_ips.push(c),
                None if ipam_type.is_some() && s.parse::<std::net::IpAddr>().is_ok() => {}
                None if ipam_type.is_some() => {
                    return Err(invalid(format!("{key} {s:?} is not an IP address")))
                }
                None => {
                    return Err(invalid(format!(
                        "{key} {s:?} needs a prefix length (e.g. 10.1.2.3/24) when there is no ipam"
                    )))
                }
            }
        }
        if ipam_type.is_some() {
            static_ips.clear();
        }
        let bandwidth = match conf.runtime_config.get("bandwidth") {
            Some(v) if !v.is_null() => Some((v.clone(), "runtimeConfig.bandwidth")),
            _ => obj
                .get("bandwidth")
                .filter(|v| !v.is_null())
                .map(|v| (v.clone(), "bandwidth")),
        };
        Ok(Common {
            mac: mac_v,
            ipam_type,
            static_ips,
            bandwidth,
            dns: obj.get("dns").filter(|v| !v.is_null()).cloned(),
        })
    }
}
