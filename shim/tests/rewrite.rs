//! The config.json rewrite as users rely on it: policy applied, unknown fields
//! kept, idempotent, atomic on failure, never a panic on arbitrary JSON.

use berth_runtime::config::RuntimeConfig;
use berth_runtime::rewrite::{rewrite_bundle, rewrite_spec, Context, APPLIED_ANNOTATION};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

struct Host {
    dir: tempfile::TempDir,
    cfg: RuntimeConfig,
}

/// A host with a machine-class file, a "web" app policy, an allowlist and a
/// (fake, but present) preload library.
fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("policies")).unwrap();
    std::fs::write(
        etc.join("machine.toml"),
        "[sysctl]\n\"net.ipv4.tcp_keepalive_time\" = \"600\"\n\"kernel.shm_rmid_forced\" = 1\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("policies/web.toml"),
        "[sysctl]\n\"net.core.somaxconn\" = \"4096\"\n",
    )
    .unwrap();
    std::fs::write(etc.join("libberth_cpus.so"), b"\x7fELF").unwrap();
    let mut cfg = RuntimeConfig::default();
    cfg.sysctl.machine_class_file = etc.join("machine.toml");
    cfg.sysctl.policy_dir = etc.join("policies");
    cfg.sysctl.allow = vec!["net.ipv4.tcp_max_syn_backlog".into()];
    cfg.preload.library = etc.join("libberth_cpus.so");
    cfg.state_dir = dir.path().join("state");
    Host { dir, cfg }
}

fn base_spec() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "env": ["PATH=/bin", "LD_PRELOAD=/usr/lib/libjemalloc.so"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "mount"}],
            "resources": {"cpu": {"quota": 150000, "period": 100000}},
            "sysctl": {"net.ipv4.tcp_syncookies": "1"},
            "x-vendor-field": {"kept": [1, 2, 3]}
        },
        "x-unknown-top": "kept"
    })
}

fn bundle(h: &Host, spec: &Value, dynamic: bool) -> PathBuf {
    let b = h.dir.path().join("bundle");
    let lib = b.join("rootfs/lib64");
    std::fs::create_dir_all(&lib).unwrap();
    if dynamic {
        std::fs::write(lib.join("ld-linux-x86-64.so.2"), b"").unwrap();
        std::fs::write(lib.join("libdl.so.2"), b"").unwrap();
    }
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
    b
}

fn read(b: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap()
}

fn env(spec: &Value, name: &str) -> Option<String> {
    spec["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

#[test]
fn policy_layers_and_preload_are_applied_and_recorded() {
    let h = host();
    let mut spec = base_spec();
    spec["annotations"] = json!({"io.berth.sysctl-policy": "web"});
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    let sysctl = &out["linux"]["sysctl"];
    assert_eq!(
        sysctl["net.ipv4.tcp_syncookies"], "1",
        "the container's own key"
    );
    assert_eq!(
        sysctl["net.ipv4.tcp_keepalive_time"], "600",
        "machine class"
    );
    assert_eq!(
        sysctl["kernel.shm_rmid_forced"], "1",
        "machine class, integer value"
    );
    assert_eq!(sysctl["net.core.somaxconn"], "4096", "app policy");
    // Preload: library first, the image's preload kept, counts set.
    assert_eq!(
        env(&out, "LD_PRELOAD").unwrap(),
        "/usr/lib/berth/libberth_cpus.so:/usr/lib/libjemalloc.so"
    );
    assert_eq!(env(&out, "BERTH_NPROC").unwrap(), "2");
    assert_eq!(env(&out, "GOMAXPROCS").unwrap(), "2");
    let m = out["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/usr/lib/berth/libberth_cpus.so")
        .unwrap();
    assert_eq!(m["source"], json!(h.cfg.preload.library));
    assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
    // Unknown fields survive.
    assert_eq!(out["x-unknown-top"], "kept");
    assert_eq!(out["linux"]["x-vendor-field"], json!({"kept": [1, 2, 3]}));
    // The record says what changed.
    let rec: Value =
        serde_json::from_str(out["annotations"][APPLIED_ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(rec["sysctl"]["net.core.somaxconn"], "4096");
    assert!(
        rec["sysctl"].get("net.ipv4.tcp_syncookies").is_none(),
        "Berth did not set the container's own key"
    );
    assert_eq!(rec["preload"]["nproc"], 2);
}

#[test]
fn a_second_pass_changes_nothing() {
    let h = host();
    let mut spec = base_spec();
    spec["annotations"] = json!({"io.berth.sysctl-policy": "web"});
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let once = std::fs::read(b.join("config.json")).unwrap();
    rewrite_bundle(&b, &h.cfg).unwrap();
    let twice = std::fs::read(b.join("config.json")).unwrap();
    assert_eq!(
        String::from_utf8(once).unwrap(),
        String::from_utf8(twice).unwrap()
    );
}

#[test]
fn opt_in_overrides_come_from_config_or_annotation_and_the_image_wins() {
    let mut h = host();
    h.cfg
        .preload
        .overrides
        .push(berth_runtime::config::CountOverride::Openmp);
    let mut spec = base_spec();
    spec["annotations"] = json!({"io.berth.cpu-overrides": "java, python"});
    spec["process"]["env"] = json!(["OMP_NUM_THREADS=8", "JAVA_TOOL_OPTIONS=-Xmx1g"]);
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    assert_eq!(
        env(&out, "OMP_NUM_THREADS").unwrap(),
        "8",
        "the image's own wins"
    );
    assert_eq!(
        env(&out, "JAVA_TOOL_OPTIONS").unwrap(),
        "-Xmx1g -XX:ActiveProcessorCount=2",
        "the image's options are kept"
    );
    assert_eq!(env(&out, "PYTHON_CPU_COUNT").unwrap(), "2");
    // A second pass adds nothing.
    rewrite_bundle(&b, &h.cfg).unwrap();
    assert_eq!(
        env(&read(&b), "JAVA_TOOL_OPTIONS").unwrap(),
        "-Xmx1g -XX:ActiveProcessorCount=2"
    );
    // A name that is not an override is refused, naming it.
    let mut spec = base_spec();
    spec["annotations"] = json!({"io.berth.cpu-overrides": "java,rubby"});
    refused(spec, &["io.berth.cpu-overrides", "rubby"]);
}

#[test]
fn user_gomaxprocs_is_kept() {
    let h = host();
    let mut spec = base_spec();
    spec["process"]["env"] = json!(["GOMAXPROCS=7"]);
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    assert_eq!(env(&out, "GOMAXPROCS").unwrap(), "7");
    assert_eq!(
        env(&out, "LD_PRELOAD").unwrap(),
        "/usr/lib/berth/libberth_cpus.so"
    );
}

#[test]
fn injection_is_skipped_without_loader_limit_or_consent() {
    let h = host();
    // Static rootfs: no library, but the count and the runtimes' variables
    // (static Go reads GOMAXPROCS).
    let b = bundle(&h, &base_spec(), false);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    assert_eq!(env(&out, "BERTH_NPROC").unwrap(), "2");
    assert_eq!(env(&out, "GOMAXPROCS").unwrap(), "2");
    assert_eq!(env(&out, "DOTNET_PROCESSOR_COUNT").unwrap(), "2");
    assert_eq!(env(&out, "LD_PRELOAD").unwrap(), "/usr/lib/libjemalloc.so");
    assert!(!out["mounts"].to_string().contains("libberth_cpus"));
    // glibc without libdl.so.2: likewise no library.
    let b = bundle(&h, &base_spec(), true);
    std::fs::remove_file(b.join("rootfs/lib64/libdl.so.2")).unwrap();
    rewrite_bundle(&b, &h.cfg).unwrap();
    assert_eq!(
        env(&read(&b), "LD_PRELOAD").unwrap(),
        "/usr/lib/libjemalloc.so"
    );
    // No CPU limit.
    let mut spec = base_spec();
    spec["linux"]["resources"] = json!({});
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    assert_eq!(env(&read(&b), "BERTH_NPROC"), None);
    // Opt-out annotation.
    let mut spec = base_spec();
    spec["annotations"] = json!({"io.berth.cpu-preload": "false"});
    let b = bundle(&h, &spec, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    assert_eq!(env(&out, "BERTH_NPROC"), None);
    assert_eq!(env(&out, "LD_PRELOAD").unwrap(), "/usr/lib/libjemalloc.so");
}

fn refused(spec: Value, expect: &[&str]) {
    let h = host();
    let b = bundle(&h, &spec, true);
    let before = std::fs::read(b.join("config.json")).unwrap();
    let err = rewrite_bundle(&b, &h.cfg).unwrap_err().to_string();
    for e in expect {
        assert!(err.contains(e), "error {err:?} should mention {e:?}");
    }
    assert_eq!(
        std::fs::read(b.join("config.json")).unwrap(),
        before,
        "config.json must stay untouched"
    );
}

#[test]
fn non_namespaced_sysctl_is_refused() {
    let mut s = base_spec();
    s["linux"]["sysctl"] = json!({"vm.swappiness": "0"});
    refused(s, &["sysctl vm.swappiness", "not namespaced"]);
}

#[test]
fn a_containers_namespaced_sysctl_passes_by_default_as_with_runc() {
    let h = host();
    let mut s = base_spec();
    s["linux"]["sysctl"] = json!({"net.core.somaxconn": "1024"});
    let b = bundle(&h, &s, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    assert_eq!(read(&b)["linux"]["sysctl"]["net.core.somaxconn"], "1024");
}

#[test]
fn with_the_safe_list_an_unlisted_sysctl_is_refused_and_allowlisted_one_passes() {
    let mut h = host();
    h.cfg.sysctl.container_keys = berth_runtime::config::ContainerKeys::SafeList;
    let mut s = base_spec();
    s["linux"]["sysctl"] = json!({"net.core.rmem_max": "1"});
    let b = bundle(&h, &s, true);
    let err = rewrite_bundle(&b, &h.cfg).unwrap_err().to_string();
    assert!(
        err.contains("net.core.rmem_max") && err.contains("safe-list"),
        "{err}"
    );
    let mut s = base_spec();
    s["linux"]["sysctl"] = json!({"net.ipv4.tcp_max_syn_backlog": "512"});
    let b = bundle(&h, &s, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    assert_eq!(
        read(&b)["linux"]["sysctl"]["net.ipv4.tcp_max_syn_backlog"],
        "512"
    );
}

#[test]
fn host_network_refuses_net_keys_but_skips_machine_class_ones() {
    let mut s = base_spec();
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}]);
    s["linux"]["sysctl"] = json!({"net.ipv4.tcp_syncookies": "1"});
    refused(s.clone(), &["net.ipv4.tcp_syncookies", "network namespace"]);
    // Without its own net key it runs, and the machine class's net key is left out.
    let h = host();
    s["linux"]["sysctl"] = json!({});
    let b = bundle(&h, &s, true);
    rewrite_bundle(&b, &h.cfg).unwrap();
    let out = read(&b);
    assert!(out["linux"]["sysctl"]
        .get("net.ipv4.tcp_keepalive_time")
        .is_none());
    assert_eq!(out["linux"]["sysctl"]["kernel.shm_rmid_forced"], "1");
}

#[test]
fn unknown_policy_and_bad_annotations_are_refused() {
    let mut s = base_spec();
    s["annotations"] = json!({"io.berth.sysctl-policy": "nope"});
    refused(s, &["io.berth.sysctl-policy", "no such sysctl policy"]);
    let mut s = base_spec();
    s["annotations"] = json!({"io.berth.sysctl-policy": "../../etc/passwd"});
    refused(s, &["io.berth.sysctl-policy"]);
    let mut s = base_spec();
    s["annotations"] = json!({"io.berth.cpu-preload": "maybe"});
    refused(s, &["io.berth.cpu-preload"]);
}

#[test]
fn broken_config_json_is_a_clear_error_and_untouched() {
    let h = host();
    let b = bundle(&h, &base_spec(), true);
    std::fs::write(b.join("config.json"), b"{\"ociVersion\": ").unwrap();
    let err = rewrite_bundle(&b, &h.cfg).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("invalid"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(b.join("config.json")).unwrap(),
        b"{\"ociVersion\": "
    );
    std::fs::write(b.join("config.json"), b"[1,2]").unwrap();
    assert!(rewrite_bundle(&b, &h.cfg).is_err());
}

/// An allocator that fits any request: exclusive CPUs from 0 up, the
/// fragment on the next one, and a pool of the rest.
struct AnyFits;

impl berth_runtime::cpus::Allocator for AnyFits {
    fn allocate(
        &self,
        mode: berth_runtime::cpus::plan::Mode,
        pieces: u32,
    ) -> berth_runtime::Result<(berth_runtime::cpus::plan::Allocation, Option<String>)> {
        let whole = pieces / 100;
        Ok((
            berth_runtime::cpus::plan::Allocation {
                mode,
                pieces,
                exclusive: (0..whole.min(64)).collect(),
                fragment: None,
                nodes: vec![0],
            },
            Some("64-127".into()),
        ))
    }
    fn base(&self) -> u32 {
        100
    }
    fn respect_user_cpuset(&self) -> bool {
        true
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z./_-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("process".to_string()),
                        Just("linux".to_string()),
                        Just("env".to_string()),
                        Just("sysctl".to_string()),
                        Just("resources".to_string()),
                        Just("cpu".to_string()),
                        Just("quota".to_string()),
                        Just("period".to_string()),
                        Just("cpus".to_string()),
                        Just("annotations".to_string()),
                        Just("mounts".to_string()),
                        Just("root".to_string()),
                        Just("path".to_string()),
                        Just("namespaces".to_string()),
                        "[a-z]{1,6}".prop_map(String::from),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let h = host();
        let b = bundle(&h, &json!({}), true);
        let mut spec = v;
        let _ = rewrite_spec(&mut spec, &Context { bundle: &b, config: &h.cfg, cpus: None, marks: None, place_cgroup: None, container: None });
    }

    #[test]
    fn arbitrary_shaped_specs_rewrite_idempotently(quota in -5i64..500_000, period in 0u64..200_000, cpus in "[0-9,-]{0,8}", gomax in proptest::option::of("[0-9]{1,2}")) {
        let h = host();
        let mut s = base_spec();
        s["linux"]["resources"]["cpu"] = json!({"quota": quota, "period": period, "cpus": cpus});
        if let Some(g) = gomax { s["process"]["env"].as_array_mut().unwrap().push(json!(format!("GOMAXPROCS={g}"))); }
        let b = bundle(&h, &s, true);
        if rewrite_bundle(&b, &h.cfg).is_ok() {
            let once = std::fs::read(b.join("config.json")).unwrap();
            rewrite_bundle(&b, &h.cfg).unwrap();
            prop_assert_eq!(once, std::fs::read(b.join("config.json")).unwrap());
        }
    }

    #[test]
    fn the_cpu_stage_never_panics_nor_exceeds_the_engine_limit(
        quota in any::<i64>(),
        period in prop_oneof![any::<u64>(), 1u64..2_000_000],
        request in proptest::option::of(prop_oneof!["[0-9]{1,12}(\\.[0-9]{0,4})?".prop_map(String::from), "[-a-z0-9.e]{0,8}".prop_map(String::from)]),
        mode in proptest::option::of(prop_oneof![Just("split"), Just("exclusive"), Just("shared"), Just("x")]),
        trusted in any::<bool>(),
    ) {
        let mut h = host();
        if trusted {
            h.cfg.cpus.annotations = berth_runtime::config::AnnotationPolicy::Trusted;
        }
        let mut s = base_spec();
        s["linux"]["resources"]["cpu"] = json!({"quota": quota, "period": period});
        let mut ann = serde_json::Map::new();
        if let Some(r) = request { ann.insert("io.berth.cpus".into(), json!(r)); }
        if let Some(m) = mode { ann.insert("io.berth.cpu-mode".into(), json!(m)); }
        s["annotations"] = Value::Object(ann);
        let b = bundle(&h, &s, true);
        let mut spec = s.clone();
        let r = rewrite_spec(&mut spec, &Context { bundle: &b, config: &h.cfg, cpus: Some(&AnyFits), marks: None, place_cgroup: None, container: None });
        if r.is_ok() && !trusted && quota > 0 {
            let written = spec["linux"]["resources"]["cpu"]["quota"].as_i64().unwrap_or(quota);
            let eff_period = spec["linux"]["resources"]["cpu"]["period"].as_u64().unwrap_or(period);
            // Never more CPUs than the engine granted (pieces are rounded up to 1/base).
            prop_assert!(
                (written as f64) / (eff_period as f64) <= (quota as f64) / (period.max(1) as f64) + 0.011,
                "quota {quota}/{period} became {written}/{eff_period}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let h = host();
        let b = bundle(&h, &json!({}), true);
        std::fs::write(b.join("config.json"), &bytes).unwrap();
        let _ = rewrite_bundle(&b, &h.cfg);
    }
}
