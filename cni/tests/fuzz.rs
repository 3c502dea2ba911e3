//! Arbitrary stdin and CNI_ARGS never panic the parsers; whatever parses
//! converts between every supported result version.

use berth_cni::env::parse_args;
use berth_cni::types::{parse_conf, CniResult};
use berth_cni::SUPPORTED_VERSIONS;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn stdin_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_conf(&bytes);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let _ = CniResult::from_json(&v);
        }
    }

    #[test]
    fn config_shaped_json_never_panics(
        version in prop::sample::select(vec!["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "2.0", ""]),
        name in "[a-z]{0,5}",
        ipam in prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!({})), Just(serde_json::json!([1])), Just(serde_json::json!({"type": "host-local"}))],
        rc in prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!({"mac": "x"})), Just(serde_json::json!(7))],
    ) {
        let doc = serde_json::json!({"cniVersion": version, "name": name, "type": "berth-macvlan", "ipam": ipam, "runtimeConfig": rc});
        let _ = parse_conf(&serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn cni_args_never_panic(s in ".{0,200}") {
        let _ = parse_args(&s);
    }

    #[test]
    fn results_round_trip_across_versions(
        addrs in prop::collection::vec(prop_oneof!["10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}", "fd00::[0-9a-f]{1,4}/64"], 0..4),
    ) {
        let r = CniResult::from_json(&serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/netns/x"}],
            "ips": addrs.iter().map(|a| serde_json::json!({"address": a, "interface": 0})).collect::<Vec<_>>(),
        })).unwrap();
        for v in SUPPORTED_VERSIONS {
            let back = CniResult::from_json(&r.to_json(v).unwrap()).unwrap();
            prop_assert_eq!(&back, &r);
        }
    }
}
