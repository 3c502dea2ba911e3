//! The OVS VLAN network configuration, checked with errors naming the key.

use berth_cni::caps::{invalid, object, opt_str, opt_u32, Common};
use berth_cni::env::Env;
use berth_cni::types::NetConf;
use berth_cni::CniError;
use serde_json::Value;
use std::time::Duration;

/// Where OVSDB listens unless `socket_file` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/openvswitch/db.sock";

/// How traffic from the container is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressShaping {
    /// A tbf on the container's interface inside its netns: works on every
    /// kernel and datapath (the default).
    Tbf,
    /// OVS `ingress_policing_rate`/`_burst` on the port, verified after
    /// vswitchd applied it (needs the kernel's act_police).
    Police,
}

/// What `berth-ovs-vlan` reads from its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OvsConf {
    /// `bridge`: the OVS bridge to attach to.
    pub bridge: String,
    /// `vlan`: the access tag (with `trunk`: the native VLAN).
    pub vlan: Option<u16>,
    /// `trunk`: the trunked VLANs, expanded and sorted.
    pub trunk: Vec<u16>,
    /// `mtu` of the veth pair.
    pub mtu: Option<u32>,
    /// `socket_file`: `unix:PATH`, `tcp:HOST:PORT` or a path.
    pub socket: String,
    /// `ovsTimeoutSeconds`: how long to wait for OVSDB and vswitchd.
    pub timeout: Duration,
    /// `vswitchd_socket_file`: ovs-vswitchd's control socket, for STATUS.
    /// Unset: found beside a unix `socket_file` (see
    /// `plugin::vswitchd_control`).
    pub vswitchd_socket: Option<String>,
    /// `egressShaping`.
    pub egress_shaping: EgressShaping,
    /// The shared keys (MAC, IPAM, static IPs, bandwidth, DNS).
    pub common: Common,
}

fn vlan_id(v: &Value, key: &str) -> Result<u16, CniError> {
    match v.as_i64() {
        Some(n) if (1..=4094).contains(&n) => Ok(n as u16),
        _ => Err(invalid(format!(
            "{key} {v} is not a VLAN ID (1 to 4094; 0 and 4095 are reserved)"
        ))),
    }
}

fn parse_trunk(v: &Value) -> Result<Vec<u16>, CniError> {
    let items = v
        .as_array()
        .ok_or_else(|| invalid("trunk must be a list of {id} or {minID, maxID}".into()))?;
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let key = format!("trunk[{i}]");
        let (lo, hi) = match (it.get("id"), it.get("minID"), it.get("maxID")) {
            (Some(id), None, None) => {
                let id = vlan_id(id, &format!("{key}.id"))?;
                (id, id)
            }
            (None, Some(lo), Some(hi)) => {
                let lo = vlan_id(lo, &format!("{key}.minID"))?;
                let hi = vlan_id(hi, &format!("{key}.maxID"))?;
                if lo > hi {
                    return Err(invalid(format!("{key}: minID {lo} is above maxID {hi}")));
                }
                (lo, hi)
            }
            _ => {
                return Err(invalid(format!(
                    "{key} must be {{\"id\": N}} or {{\"minID\": N, \"maxID\": M}}"
                )))
            }
        };
        if let Some((a, b)) = ranges.iter().find(|(a, b)| lo <= *b && *a <= hi) {
            return Err(invalid(format!(
                "{key} ({lo}-{hi}) overlaps an earlier trunk entry ({a}-{b})"
            )));
        }
        ranges.push((lo, hi));
    }
    let mut out: Vec<u16> = ranges.iter().flat_map(|(a, b)| *a..=*b).collect();
    out.sort_unstable();
    Ok(out)
}

/// What DEL needs to find an attachment: where OVSDB is and how long to
/// wait. Read leniently, so a configuration edited since ADD (or an ADD that
/// failed validation) never keeps DEL from cleaning up.
#[derive(Debug, Clone, PartialEq)]
pub struct DelConf {
    /// `socket_file`, or the default when it is missing or unusable.
    pub socket: String,
    /// `ovsTimeoutSeconds`, or 10 s.
    pub timeout: Duration,
}

impl DelConf {
    /// Reads what DEL needs from `conf`; anything invalid is logged and
    /// replaced by its default.
    pub fn parse(conf: &NetConf) -> DelConf {
        let obj = conf.raw.as_object();
        let get = |k: &str| obj.and_then(|o| o.get(k));
        let socket = match get("socket_file") {
            None | Some(Value::Null) => DEFAULT_SOCKET.to_string(),
            Some(Value::String(s)) if crate::ovsdb::parse_target(s).is_some() => s.clone(),
            Some(v) => {
                tracing::warn!(socket_file = %v, "DEL: socket_file is not usable; trying the default {DEFAULT_SOCKET}");
                DEFAULT_SOCKET.to_string()
            }
        };
        let timeout = match get("ovsTimeoutSeconds") {
            None | Some(Value::Null) => 10,
            Some(v) => v.as_u64().filter(|n| *n > 0).unwrap_or_else(|| {
                tracing::warn!(ovsTimeoutSeconds = %v, "DEL: ovsTimeoutSeconds is not usable; waiting 10 s");
                10
            }),
        };
        DelConf {
            socket,
            timeout: Duration::from_secs(timeout),
        }
    }
}

impl OvsConf {
    /// Reads the plugin's keys from `conf` and `env`'s `CNI_ARGS`.
    pub fn parse(conf: &NetConf, env: &Env) -> Result<OvsConf, CniError> {
        let obj = object(conf)?;
        let bridge = opt_str(obj, "bridge")?
            .ok_or_else(|| invalid("bridge is required".into()))?
            .to_string();
        let vlan = match obj.get("vlan") {
            None | Some(Value::Null) => None,
            Some(v) => Some(vlan_id(v, "vlan")?),
        };
        let trunk = match obj.get("trunk") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_trunk(v)?,
        };
        let socket = opt_str(obj, "socket_file")?
            .unwrap_or(DEFAULT_SOCKET)
            .to_string();
        if crate::ovsdb::parse_target(&socket).is_none() {
            return Err(invalid(format!(
                "socket_file {socket:?} is not unix:PATH, tcp:HOST:PORT or an absolute path"
            )));
        }
        let timeout =
            Duration::from_secs(u64::from(opt_u32(obj, "ovsTimeoutSeconds")?.unwrap_or(10)));
        let vswitchd_socket = match opt_str(obj, "vswitchd_socket_file")? {
            None => None,
            Some(s) => {
                let path = s.strip_prefix("unix:").unwrap_or(s);
                if !path.starts_with('/') {
                    return Err(invalid(format!(
                        "vswitchd_socket_file {s:?} is not unix:PATH or an absolute path"
                    )));
                }
                Some(path.to_string())
            }
        };
        let egress_shaping = match opt_str(obj, "egressShaping")? {
            None | Some("tbf") => EgressShaping::Tbf,
            Some("police") => EgressShaping::Police,
            Some(o) => {
                return Err(invalid(format!(
                    "egressShaping {o:?} is not \"tbf\" or \"police\""
                )))
            }
        };
        Ok(OvsConf {
            bridge,
            vlan,
            trunk,
            mtu: opt_u32(obj, "mtu")?,
            socket,
            timeout,
            vswitchd_socket,
            egress_shaping,
            common: Common::parse(conf, env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::types::parse_conf;
    use serde_json::json;

    fn env() -> Env {
        Env::from_fn(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        })
        .unwrap()
    }

    fn parse(extra: Value) -> Result<OvsConf, CniError> {
        let mut c =
            json!({"cniVersion": "1.1.0", "name": "n", "type": "berth-ovs-vlan", "bridge": "br0"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        OvsConf::parse(&parse_conf(c.to_string().as_bytes()).unwrap(), &env())
    }

    #[test]
    fn vlans_and_trunks() {
        let c = parse(json!({"vlan": 100, "trunk": [{"id": 7}, {"minID": 200, "maxID": 202}]}))
            .unwrap();
        assert_eq!(c.vlan, Some(100));
        assert_eq!(c.trunk, vec![7, 200, 201, 202]);
        assert_eq!(c.socket, DEFAULT_SOCKET);
        assert_eq!(c.egress_shaping, EgressShaping::Tbf);
        for (extra, needle) in [
            (json!({"vlan": 0}), "vlan 0"),
            (json!({"vlan": 4095}), "vlan 4095"),
            (json!({"vlan": "100"}), "vlan"),
            (
                json!({"trunk": [{"id": 10}, {"minID": 5, "maxID": 12}]}),
                "overlaps",
            ),
            (json!({"trunk": [{"minID": 9, "maxID": 5}]}), "trunk[0]"),
            (json!({"trunk": [{"id": 4095}]}), "trunk[0].id"),
            (json!({"trunk": {"id": 1}}), "trunk"),
            (json!({"bridge": ""}), "bridge is required"),
            (json!({"socket_file": "ssl:1.2.3.4:6640"}), "socket_file"),
            (json!({"egressShaping": "meter"}), "egressShaping"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, berth_cni::Code::InvalidConfig);
            assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        }
    }
}
