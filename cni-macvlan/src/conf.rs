//! The macvlan network configuration: its keys, capabilities and `CNI_ARGS`,
//! checked with errors that name the offending key.

use berth_cni::caps::Common;
use berth_cni::env::Env;
use berth_cni::link::MacvlanMode;
use berth_cni::share::ShareConf;
use berth_cni::types::{non_empty, ConfError, NetConf};
use serde::Deserialize;

/// What `berth-macvlan` reads from its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MacvlanConf {
    /// `master`; `None` means the link of the default route.
    pub master: Option<String>,
    /// `mode` (bridge when absent).
    pub mode: MacvlanMode,
    /// `mtu`; `None` (or 0) inherits the master's.
    pub mtu: Option<u32>,
    /// `linkInContainer`: the master lives in the container's netns.
    pub link_in_container: bool,
    /// The shared keys (MAC, IPAM, static IPs, bandwidth, DNS).
    pub common: Common,
    /// `bandwidthShare` and what this attachment asks of it.
    pub share: Option<ShareConf>,
}

/// The plugin's own keys, as they are in the configuration.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    master: Option<String>,
    mode: Option<String>,
    mtu: Option<u32>,
    link_in_container: Option<bool>,
}

impl MacvlanConf {
    /// Reads the plugin's keys from `conf` and `env`'s `CNI_ARGS`.
    pub fn parse(conf: &NetConf, env: &Env) -> Result<MacvlanConf, ConfError> {
        let k: Keys = conf.keys()?;
        let mode_s = k.mode.unwrap_or_default();
        let mode = MacvlanMode::parse(&mode_s).ok_or_else(|| {
            ConfError::invalid(
                "mode",
                format!("{mode_s:?} is not one of bridge, private, vepa, passthru"),
            )
        })?;
        Ok(MacvlanConf {
            master: non_empty(k.master),
            mode,
            mtu: k.mtu.filter(|m| *m > 0),
            link_in_container: k.link_in_container.unwrap_or(false),
            common: Common::parse(conf, env)?,
            share: ShareConf::parse(conf, env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::types::parse_conf;
    use berth_cni::Failure;
    use serde_json::{json, Value};

    fn env(args: &str) -> Env {
        Env::from_fn(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        })
        .unwrap()
    }

    fn conf(v: Value) -> NetConf {
        parse_conf(v.to_string().as_bytes()).unwrap()
    }

    fn base() -> Value {
        json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-macvlan", "master": "m0"})
    }

    #[test]
    fn mac_precedence_is_conf_then_args_then_runtime_config() {
        let mut c = base();
        c["mac"] = json!("02:00:00:00:00:01");
        let m = MacvlanConf::parse(&conf(c.clone()), &env("")).unwrap();
        assert_eq!(m.common.mac, Some([2, 0, 0, 0, 0, 1]));
        let m = MacvlanConf::parse(&conf(c.clone()), &env("MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(m.common.mac, Some([2, 0, 0, 0, 0, 2]));
        c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
        let m = MacvlanConf::parse(&conf(c), &env("MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(m.common.mac, Some([2, 0, 0, 0, 0, 3]));
    }

    #[test]
    fn errors_name_the_key() {
        for (k, v, needle) in [
            ("mode", json!("fast"), "mode"),
            ("mtu", json!(-1), "mtu: "),
            ("mtu", json!("9000"), "mtu: "),
            ("mode", json!(["bridge"]), "mode: "),
            ("mac", json!("01:00:00:00:00:01"), "multicast"),
            ("mac", json!("nope"), "mac"),
            ("master", json!(3), "master: "),
            ("linkInContainer", json!("yes"), "linkInContainer: "),
            (
                "runtimeConfig",
                json!({"ips": "10.1.2.3/24"}),
                "runtimeConfig.ips: ",
            ),
            (
                "runtimeConfig",
                json!({"ips": ["10.1.2.3/24", 7]}),
                "runtimeConfig.ips[1]: ",
            ),
            (
                "runtimeConfig",
                json!({"mac": "nope"}),
                "runtimeConfig.mac \"nope\"",
            ),
            ("ipam", json!({"type": ""}), "ipam.type is required"),
            ("ipam", json!({"type": 7}), "ipam.type: "),
        ] {
            let mut c = base();
            c[k] = v;
            let e = MacvlanConf::parse(&conf(c), &env("")).unwrap_err();
            assert_eq!(e.code(), berth_cni::Code::InvalidConfig);
            assert!(e.to_string().contains(needle), "{k}: {e}");
        }
        let e = MacvlanConf::parse(&conf(base()), &env("IP=10.1.2.3")).unwrap_err();
        assert!(e.to_string().contains("CNI_ARGS IP"), "{e}");
        let e = MacvlanConf::parse(&conf(base()), &env("MAC=zz")).unwrap_err();
        assert!(e.to_string().starts_with("CNI_ARGS MAC \"zz\""), "{e}");
    }

    #[test]
    fn capabilities_override_config() {
        let mut c = base();
        c["bandwidth"] = json!({"egressRate": 1_000_000});
        c["runtimeConfig"] =
            json!({"bandwidth": {"ingressRate": 2_000_000}, "ips": ["10.9.0.5/24"]});
        let m = MacvlanConf::parse(&conf(c), &env("IP=10.9.0.6/24")).unwrap();
        assert_eq!(m.common.bandwidth.unwrap().1, "runtimeConfig.bandwidth");
        assert_eq!(m.common.static_ips.len(), 2);
        assert_eq!(m.mode, MacvlanMode::Bridge);
    }
}
