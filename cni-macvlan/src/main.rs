//! `berth-macvlan`: a CNI 1.1 macvlan plugin with bandwidth QoS shaped
//! inside the container's network namespace. See the README for its keys.

mod conf;
mod plugin;

fn main() {
    std::process::exit(berth_cni::skel::run(&plugin::Macvlan));
}

#[cfg(test)]
mod fuzz {
    //! Whatever arrives on stdin or in `CNI_ARGS`, the plugin answers with
    //! one JSON document and never panics. The netns never exists and
    //! `CNI_PATH` is empty, so nothing on the host is touched.

    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn answer(verb: &str, args: &str, stdin: &[u8]) -> (String, i32) {
        let env = |k: &str| -> Option<String> {
            Some(
                match k {
                    "CNI_COMMAND" => verb,
                    "CNI_CONTAINERID" => "fuzz",
                    "CNI_NETNS" => "/nonexistent/berth-fuzz-netns",
                    "CNI_IFNAME" => "eth0",
                    "CNI_PATH" => "/nonexistent/berth-fuzz-bin",
                    "CNI_ARGS" => args,
                    "BERTH_CNI_LOG_FILE" => "/dev/null",
                    "BERTH_CNI_CONFIG" => "/nonexistent",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let env = &env;
        berth_cni::skel::dispatch(&crate::plugin::Macvlan, |k| env(k), stdin)
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            ".{0,24}".prop_map(Value::String),
            Just(json!("lo")),
            Just(json!("02:00:00:00:00:01")),
            Just(json!({"ingressRate": 1_000_000, "egressBurst": 1})),
            Just(json!({"type": "host-local"})),
            Just(json!(["10.1.2.3/24", 7])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn raw_stdin_never_panics(
            verb in prop::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"]),
            args in ".{0,40}",
            stdin in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let (out, code) = answer(verb, &args, &stdin);
            if code != 0 {
                let v: Value = serde_json::from_str(&out).expect("error JSON");
                prop_assert!(v["code"].as_u64().is_some());
            }
        }

        #[test]
        fn structured_configs_never_panic(
            verb in prop::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC"]),
            args in prop::sample::select(vec!["", "IP=10.1.2.3", "MAC=zz", "IP=10.1.2.3/33;MAC=02:00:00:00:00:02", "IgnoreUnknown=1;K8S_POD_NAME=x", "=", "a;b"]),
            version in prop::sample::select(vec!["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "2.0.0"]),
            keys in prop::collection::vec((prop::sample::select(vec!["master", "mode", "mtu", "mac", "linkInContainer", "bandwidth", "ipam", "dns", "prevResult", "runtimeConfig"]), value()), 0..6),
            rc in prop::collection::vec((prop::sample::select(vec!["mac", "ips", "bandwidth"]), value()), 0..3),
        ) {
            let mut c = json!({"cniVersion": version, "name": "fuzz", "type": "berth-macvlan"});
            for (k, v) in keys {
                c[k] = v;
            }
            if !rc.is_empty() {
                c["runtimeConfig"] = json!({});
                for (k, v) in rc {
                    c["runtimeConfig"][k] = v;
                }
            }
            let (out, code) = answer(verb, args, c.to_string().as_bytes());
            if code != 0 {
                let v: Value = serde_json::from_str(&out).expect("error JSON");
                prop_assert!(v["code"].as_u64().is_some());
            }
        }
    }
}
