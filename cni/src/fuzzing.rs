//! Property tests shared by the plugins (feature `fuzzing`): whatever
//! arrives on stdin or in `CNI_ARGS`, a plugin answers with one JSON document
//! and never panics. The netns never exists and `CNI_PATH` is empty, so
//! nothing on the host is touched.

use crate::skel::{dispatch, Plugin};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

fn answer<P: Plugin>(plugin: &P, verb: &str, args: &str, stdin: &[u8]) -> (String, i32) {
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
    dispatch(plugin, |k| env(k), stdin)
}

fn one_json(out: &str, code: i32) -> Result<(), TestCaseError> {
    if code != 0 {
        let v: Value = serde_json::from_str(out)
            .map_err(|e| TestCaseError::fail(format!("not one JSON document: {e}: {out}")))?;
        prop_assert!(v["code"].as_u64().is_some(), "no code: {out}");
    }
    Ok(())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,24}".prop_map(Value::String),
        Just(json!("lo")),
        Just(json!("unix:/nonexistent/db.sock")),
        Just(json!("02:00:00:00:00:01")),
        Just(json!({"ingressRate": 1_000_000, "egressBurst": 1})),
        Just(json!({"type": "host-local"})),
        Just(json!([{"id": 5}, {"minID": 1, "maxID": 9}])),
        Just(json!(["10.1.2.3/24", 7])),
    ]
}

/// Throws random stdin bytes, and random configs built from `keys`, at
/// every verb of `plugin` named `plugin_type`.
pub fn never_panics<P: Plugin>(plugin: &P, plugin_type: &str, keys: &'static [&'static str]) {
    let verbs = vec!["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];
    let mut runner = TestRunner::new(Config::with_cases(400));
    runner
        .run(
            &(
                prop::sample::select(verbs.clone()),
                ".{0,40}",
                prop::collection::vec(any::<u8>(), 0..200),
            ),
            |(verb, args, stdin)| {
                let (out, code) = answer(plugin, verb, &args, &stdin);
                one_json(&out, code)
            },
        )
        .expect("raw stdin");
    let args = vec![
        "",
        "IP=10.1.2.3",
        "MAC=zz",
        "IP=10.1.2.3/33;MAC=02:00:00:00:00:02",
        "IgnoreUnknown=1;K8S_POD_NAME=x",
        "=",
        "a;b",
    ];
    let versions = vec!["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "2.0.0"];
    let mut runner = TestRunner::new(Config::with_cases(400));
    runner
        .run(
            &(
                prop::sample::select(verbs),
                prop::sample::select(args),
                prop::sample::select(versions),
                prop::collection::vec((prop::sample::select(keys), value()), 0..6),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["mac", "ips", "bandwidth"]),
                        value(),
                    ),
                    0..3,
                ),
            ),
            |(verb, args, version, keys, rc)| {
                let mut c = json!({"cniVersion": version, "name": "fuzz", "type": plugin_type});
                for (k, v) in keys {
                    c[k] = v;
                }
                if !rc.is_empty() {
                    c["runtimeConfig"] = json!({});
                    for (k, v) in rc {
                        c["runtimeConfig"][k] = v;
                    }
                }
                let (out, code) = answer(plugin, verb, args, c.to_string().as_bytes());
                one_json(&out, code)
            },
        )
        .expect("structured configs");
}
