//! The OVS VLAN network configuration, checked with errors naming the key.

use berth_cni::caps::Common;
use berth_cni::env::Env;
use berth_cni::share::ShareConf;
use berth_cni::types::{non_empty, ConfError, NetConf};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Where OVSDB listens unless `socket_file` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/openvswitch/db.sock";

/// How traffic from the container is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressShaping {
    /// A tbf on the container's interface inside its netns: works on every
    /// kernel and datapath (the default).
    #[default]
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
    /// `uplink`: the bridge's port to the physical network, whose capacity
    /// `bandwidthShare` divides.
    pub uplink: Option<String>,
    /// `bandwidthShare` and what this attachment asks of it.
    pub share: Option<ShareConf>,
}

/// The plugin's own keys, as they are in the configuration.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    bridge: Option<String>,
    vlan: Option<i64>,
    trunk: Option<Vec<TrunkEntry>>,
    mtu: Option<u32>,
    #[serde(rename = "socket_file")]
    socket_file: Option<String>,
    ovs_timeout_seconds: Option<u32>,
    #[serde(rename = "vswitchd_socket_file")]
    vswitchd_socket_file: Option<String>,
    egress_shaping: Option<EgressShaping>,
    uplink: Option<String>,
}

/// A `trunk` entry: `{"id": N}` or `{"minID": N, "maxID": M}`.
#[derive(Deserialize)]
struct TrunkEntry {
    id: Option<i64>,
    #[serde(rename = "minID")]
    min_id: Option<i64>,
    #[serde(rename = "maxID")]
    max_id: Option<i64>,
}

fn vlan_id(n: i64, key: &str) -> Result<u16, ConfError> {
    match u16::try_from(n) {
        Ok(v) if (1..=4094).contains(&v) => Ok(v),
        _ => Err(ConfError::invalid(
            key,
            format!("{n} is not a VLAN ID (1 to 4094; 0 and 4095 are reserved)"),
        )),
    }
}

fn parse_trunk(items: &[TrunkEntry]) -> Result<Vec<u16>, ConfError> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let key = format!("trunk[{i}]");
        let (lo, hi) = match (it.id, it.min_id, it.max_id) {
            (Some(id), None, None) => {
                let id = vlan_id(id, &format!("{key}.id"))?;
                (id, id)
            }
            (None, Some(lo), Some(hi)) => {
                let lo = vlan_id(lo, &format!("{key}.minID"))?;
                let hi = vlan_id(hi, &format!("{key}.maxID"))?;
                if lo > hi {
                    return Err(ConfError::invalid(
                        key,
                        format!("has minID {lo} above maxID {hi}"),
                    ));
                }
                (lo, hi)
            }
            _ => {
                return Err(ConfError::invalid(
                    key,
                    "must be {\"id\": N} or {\"minID\": N, \"maxID\": M}",
                ))
            }
        };
        if let Some((a, b)) = ranges.iter().find(|(a, b)| lo <= *b && *a <= hi) {
            return Err(ConfError::invalid(
                key,
                format!("({lo}-{hi}) overlaps an earlier trunk entry ({a}-{b})"),
            ));
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
    /// `uplink` when the network has `bandwidthShare`: where to free the share.
    pub share_uplink: Option<String>,
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
        let share_uplink = match (get("bandwidthShare"), get("uplink")) {
            (Some(_), Some(Value::String(u))) if !u.is_empty() => Some(u.clone()),
            _ => None,
        };
        DelConf {
            socket,
            timeout: Duration::from_secs(timeout),
            share_uplink,
        }
    }
}

impl OvsConf {
    /// Reads the plugin's keys from `conf` and `env`'s `CNI_ARGS`.
    pub fn parse(conf: &NetConf, env: &Env) -> Result<OvsConf, ConfError> {
        let k: Keys = conf.keys()?;
        let bridge = non_empty(k.bridge).ok_or(ConfError::Missing("bridge".into()))?;
        let socket = non_empty(k.socket_file).unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        if crate::ovsdb::parse_target(&socket).is_none() {
            return Err(ConfError::invalid(
                "socket_file",
                format!("{socket:?} is not unix:PATH, tcp:HOST:PORT or an absolute path"),
            ));
        }
        let vswitchd_socket = match non_empty(k.vswitchd_socket_file) {
            None => None,
            Some(s) => {
                let path = s.strip_prefix("unix:").unwrap_or(&s);
                if !path.starts_with('/') {
                    return Err(ConfError::invalid(
                        "vswitchd_socket_file",
                        format!("{s:?} is not unix:PATH or an absolute path"),
                    ));
                }
                Some(path.to_string())
            }
        };
        let timeout = k.ovs_timeout_seconds.filter(|t| *t > 0).unwrap_or(10);
        let share = ShareConf::parse(conf, env)?;
        let uplink = non_empty(k.uplink);
        let egress_shaping = k.egress_shaping.unwrap_or_default();
        if share.is_some() {
            if uplink.is_none() {
                return Err(ConfError::Missing(
                    "uplink (the bridge's port to the physical network, which bandwidthShare divides)"
                        .into(),
                ));
            }
            if egress_shaping == EgressShaping::Police {
                return Err(ConfError::invalid(
                    "egressShaping",
                    "\"police\" cannot be combined with bandwidthShare: both need the port's ingress hook",
                ));
            }
        }
        Ok(OvsConf {
            bridge,
            vlan: k.vlan.map(|v| vlan_id(v, "vlan")).transpose()?,
            trunk: parse_trunk(k.trunk.as_deref().unwrap_or_default())?,
            mtu: k.mtu.filter(|m| *m > 0),
            socket,
            timeout: Duration::from_secs(u64::from(timeout)),
            vswitchd_socket,
            egress_shaping,
            common: Common::parse(conf, env)?,
            uplink,
            share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::types::parse_conf;
    use berth_cni::Failure;
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

    fn parse(extra: Value) -> Result<OvsConf, ConfError> {
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
            (json!({"vlan": "100"}), "vlan: "),
            (json!({"vlan": -1}), "vlan -1"),
            (
                json!({"trunk": [{"id": 10}, {"minID": 5, "maxID": 12}]}),
                "overlaps",
            ),
            (json!({"trunk": [{"minID": 9, "maxID": 5}]}), "trunk[0]"),
            (json!({"trunk": [{"id": 4095}]}), "trunk[0].id"),
            (json!({"trunk": [{"id": "7"}]}), "trunk[0].id: "),
            (json!({"trunk": [{"vlan": 7}]}), "trunk[0] must be"),
            (json!({"trunk": {"id": 1}}), "trunk: "),
            (json!({"bridge": ""}), "bridge is required"),
            (json!({"socket_file": "ssl:1.2.3.4:6640"}), "socket_file"),
            (json!({"egressShaping": "meter"}), "egressShaping: "),
            (
                json!({"bandwidthShare": {"linkRate": 1e8 as u64}}),
                "uplink",
            ),
            (
                json!({"bandwidthShare": {}, "uplink": "p0", "egressShaping": "police"}),
                "egressShaping \"police\" cannot",
            ),
            (json!({"ovsTimeoutSeconds": -3}), "ovsTimeoutSeconds: "),
            (
                json!({"vswitchd_socket_file": "rel/ctl"}),
                "vswitchd_socket_file",
            ),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code(), berth_cni::Code::InvalidConfig);
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let c = parse(json!({"egressShaping": "police", "ovsTimeoutSeconds": 3})).unwrap();
        assert_eq!(c.egress_shaping, EgressShaping::Police);
        assert_eq!(c.timeout, Duration::from_secs(3));
    }
}
