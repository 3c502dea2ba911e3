//! Keys and capabilities every Berth plugin reads the same way: the MAC
//! (`mac` < `CNI_ARGS` `MAC=` < `runtimeConfig.mac`), requested IPs
//! (`runtimeConfig.ips`, `CNI_ARGS` `IP=`), `bandwidth` (replaced by
//! `runtimeConfig.bandwidth`), `ipam.type` and `dns`. Errors name the key.

use crate::env::Env;
use crate::ipam::IpamError;
use crate::ipcfg::Cidr;
use crate::link::parse_mac;
use crate::types::{keys, non_empty, CniResult, ConfError, IpConfig, NetConf};
use serde::Deserialize;
use serde_json::Value;

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

/// The shared keys at the top level of the configuration.
#[derive(Deserialize)]
struct SharedKeys {
    mac: Option<String>,
    bandwidth: Option<Value>,
    dns: Option<Value>,
}

/// The capabilities Berth reads from `runtimeConfig`.
#[derive(Deserialize)]
struct RuntimeKeys {
    mac: Option<String>,
    ips: Option<Vec<String>>,
    bandwidth: Option<Value>,
}

/// `ipam`'s `type`.
#[derive(Deserialize)]
struct IpamKeys {
    #[serde(rename = "type")]
    plugin_type: Option<String>,
}

fn mac(s: &str, key: &str) -> Result<[u8; 6], ConfError> {
    let m = parse_mac(s).ok_or_else(|| {
        ConfError::invalid(
            key,
            format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    })?;
    if m[0] & 1 == 1 {
        return Err(ConfError::invalid(
            key,
            format!("{s:?} is a multicast address; a link needs a unicast one"),
        ));
    }
    Ok(m)
}

impl Common {
    /// The addresses of a new attachment, each on result interface `ours`:
    /// the IPAM plugin's (ADD, with its routes) when there is IPAM, else the
    /// static IPs. An IPAM result without addresses is an error. Arm the
    /// rollback's IPAM DEL before calling: a lease may exist on failure.
    pub fn addresses(
        &self,
        env: &Env,
        conf: &NetConf,
        ours: usize,
    ) -> Result<CniResult, IpamError> {
        let mut result = CniResult::default();
        match &self.ipam_type {
            Some(t) => {
                let r = crate::ipam::add(t, env, &conf.bytes())?;
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
    pub fn parse(conf: &NetConf, env: &Env) -> Result<Common, ConfError> {
        let shared: SharedKeys = conf.keys()?;
        let rt: RuntimeKeys = keys(&Value::Object(conf.runtime_config.clone()), "runtimeConfig")?;
        let mut mac_v = non_empty(shared.mac).map(|s| mac(&s, "mac")).transpose()?;
        if let Some(m) = env.args.get("MAC").filter(|m| !m.is_empty()) {
            mac_v = Some(mac(m, "CNI_ARGS MAC")?);
        }
        if let Some(m) = non_empty(rt.mac) {
            mac_v = Some(mac(&m, "runtimeConfig.mac")?);
        }
        let ipam_type = match &conf.ipam {
            Some(i) => {
                let k: IpamKeys = keys(i, "ipam")?;
                Some(non_empty(k.plugin_type).ok_or(ConfError::Missing("ipam.type".into()))?)
            }
            None => None,
        };
        let mut requested: Vec<(String, &'static str)> = rt
            .ips
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s, "runtimeConfig.ips"))
            .collect();
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
                    return Err(ConfError::invalid(
                        *key,
                        format!("{s:?} is not an IP address"),
                    ))
                }
                None => {
                    return Err(ConfError::invalid(
                        *key,
                        format!(
                            "{s:?} needs a prefix length (e.g. 10.1.2.3/24) when there is no ipam"
                        ),
                    ))
                }
            }
        }
        if ipam_type.is_some() {
            static_ips.clear();
        }
        let bandwidth = match rt.bandwidth {
            Some(v) => Some((v, "runtimeConfig.bandwidth")),
            None => shared.bandwidth.map(|v| (v, "bandwidth")),
        };
        Ok(Common {
            mac: mac_v,
            ipam_type,
            static_ips,
            bandwidth,
            dns: shared.dns,
        })
    }
}
