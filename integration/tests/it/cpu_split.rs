//! CPU splitting through Docker on this 2-CPU host, and the ledger's crash
//! safety under kill -9 of concurrent creators.

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::berth::{self, cpu_lock, cpu_status};
use berth_integration::cmd::{command, try_run, try_run_via_files};
use berth_integration::engines::docker::{docker, DockerContainer};
use berth_integration::images::{busybox_bundle, edit_config};
use berth_integration::names::unique;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A `sleep 120` busybox container on berth-runtime with no network and `extra` run flags.
fn berth_sleeper(extra: &[&str]) -> DockerContainer {
    let img = docker().busybox_image();
    let mut args = vec!["--runtime", "berth"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--network", "none", img, "sleep", "120"]);
    DockerContainer::start(&args)
}

fn cgroup_cpus(c: &DockerContainer) -> String {
    std::fs::read_to_string(c.cgroup("cpuset").join("cpuset.cpus"))
        .expect("cpuset.cpus")
        .trim()
        .to_string()
}

fn entry(status: &Value, id: &str) -> Option<Value> {
    status["containers"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

/// No CPU carries more than `base` fragment pieces, and none is both
/// exclusive and shared.
fn assert_not_oversubscribed(status: &Value) {
    let base = status["base"].as_u64().unwrap();
    let mut frag: BTreeMap<u64, u64> = BTreeMap::new();
    let mut excl: BTreeMap<u64, String> = BTreeMap::new();
    for c in status["containers"].as_array().unwrap() {
        if let Some(f) = c["fragment"].as_object() {
            *frag.entry(f["cpu"].as_u64().unwrap()).or_default() += f["pieces"].as_u64().unwrap();
        }
        for cpu in berth::cpu_list(c["exclusive"].as_str().unwrap_or("")) {
            assert!(
                excl.insert(cpu, c["id"].to_string()).is_none(),
                "cpu {cpu} exclusive twice: {status}"
            );
        }
    }
    for (cpu, used) in &frag {
        assert!(*used <= base, "cpu {cpu} carries {used}/{base}: {status}");
        assert!(
            !excl.contains_key(cpu),
            "cpu {cpu} exclusive and fragmented: {status}"
        );
    }
}

#[test]
fn twenty_parallel_requests_of_0_3_start_exactly_six() {
    let _g = cpu_lock();
    let img = docker().busybox_image();
    let results: Vec<Result<DockerContainer, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(move || {
                    let r = docker().run(&[
                        "run",
                        "-d",
                        "--runtime",
                        "berth",
                        "--cpus",
                        "0.3",
                        "--network",
                        "none",
                        img,
                        "sleep",
                        "120",
                    ]);
                    if r.ok() {
                        Ok(DockerContainer {
                            id: r.stdout.trim().to_string(),
                        })
                    } else {
                        // A failed create leaves a stopped container behind in Docker.
                        Err(r.stderr)
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let failures: Vec<String> = failed.into_iter().map(|e| e.err().unwrap()).collect();
    assert_eq!(ok.len(), 6, "with base 100 and no reserved cores, two CPUs take six 0.3 fragments; failures: {failures:?}");
    for f in &failures {
        assert!(
            f.contains("need a fragment of 30/100"),
            "capacity error expected, got: {f}"
        );
    }
    let running: Vec<DockerContainer> = ok.into_iter().map(Result::unwrap).collect();
    let status = cpu_status();
    assert_not_oversubscribed(&status);
    for c in &running {
        let e = entry(&status, &c.id).expect("ledger entry");
        let frag = e["fragment"]["cpu"].as_u64().expect("fragment cpu");
        assert_eq!(
            cgroup_cpus(c),
            frag.to_string(),
            "cgroup cpuset agrees with the ledger"
        );
        let quota = std::fs::read_to_string(c.cgroup("cpu").join("cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota.trim(), "30000");
    }
    // Docker keeps the containers whose create failed: remove them.
    let _ = docker().run(&["container", "prune", "-f"]);
    drop(running);
    let after = cpu_status();
    assert!(
        after["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["fragment"].is_null()),
        "allocations released on delete: {after}"
    );
}

#[test]
fn one_and_a_half_then_a_half_then_refusal() {
    let _g = cpu_lock();
    let img = docker().busybox_image();
    let big = berth_sleeper(&["--cpus", "1.5"]);
    assert_eq!(cgroup_cpus(&big), "0-1");
    let status = cpu_status();
    let e = entry(&status, &big.id).unwrap();
    assert_eq!(
        berth::cpu_list(e["exclusive"].as_str().unwrap()).len(),
        1,
        "one exclusive core: {e}"
    );
    let frag_cpu = e["fragment"]["cpu"].as_u64().unwrap();
    // The table for people says the same.
    let table = berth_integration::cmd::run(
        Command::new(binary("berth-runtime"))
            .arg("--berth-config")
            .arg(berth::config())
            .arg("cpus"),
    );
    assert!(
        table.contains(&format!("exclusive   {}", big.id)),
        "{table}"
    );
    assert!(table.contains("fragment    50/100 pieces"), "{table}");
    assert!(
        table.contains(&format!("{:<64} split      1.5", big.id)),
        "{table}"
    );
    let half = berth_sleeper(&["--cpus", "0.5"]);
    assert_eq!(
        cgroup_cpus(&half),
        frag_cpu.to_string(),
        "0.5 lands on the fragment core"
    );
    // A whole CPU no longer fits: the docker CLI shows why.
    let r = docker().run_berth(&["--cpus", "1"], img, &["true"]);
    assert!(!r.ok());
    assert!(
        r.stderr
            .contains("berth: cpus: need 1 exclusive cores, 0 free (NUMA 0: 0)"),
        "{}",
        r.stderr
    );
    // Shared containers stay off the exclusive core.
    let excl = berth::cpu_list(e["exclusive"].as_str().unwrap())[0];
    let shared = berth_sleeper(&[]);
    assert_eq!(
        cgroup_cpus(&shared),
        frag_cpu.to_string(),
        "the shared pool excludes exclusive cpu {excl}"
    );
    // It is limited to that one CPU, and sees one.
    let online = |c: &DockerContainer| {
        let r = docker().run(&["exec", &c.id, "cat", "/sys/devices/system/cpu/online"]);
        assert!(r.ok(), "{}", r.stderr);
        r.stdout.trim().to_string()
    };
    assert_eq!(online(&shared), "0");
    // docker update re-plans, keeping the current cores: 1.5 -> 0.5 frees the exclusive core...
    let r = docker().run(&["update", "--cpus", "0.5", &big.id]);
    assert!(r.ok(), "docker update: {}", r.stderr);
    assert_eq!(cgroup_cpus(&big), frag_cpu.to_string());
    // ...and the shared container is moved onto the grown pool, and sees it.
    assert_eq!(cgroup_cpus(&shared), "0-1");
    assert_eq!(
        online(&shared),
        "0-1",
        "the moved container's CPU view follows its pool"
    );
    assert_not_oversubscribed(&cpu_status());
}

#[test]
fn bad_requests_are_clear_errors() {
    let _g = cpu_lock();
    let root = fresh_dir("runc-root");
    for (value, expect) in [
        ("0", "more than zero"),
        ("-1", "not a positive"),
        ("NaN", "not a positive"),
        ("1e9", "not a positive"),
        ("99999999", "absurd"),
        ("0.001", "finer"),
    ] {
        let bundle = busybox_bundle(&["true"]);
        edit_config(&bundle, |c| {
            c["annotations"] = json!({"io.berth.cpus": value});
            c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000});
        });
        let r = try_run_via_files(
            berth::runtime_cmd(&root)
                .args(["create", "--bundle"])
                .arg(&bundle)
                .arg(unique()),
        );
        assert!(!r.ok(), "io.berth.cpus={value} accepted");
        assert!(
            r.stderr.contains("io.berth.cpus") && r.stderr.contains(expect),
            "io.berth.cpus={value}: {}",
            r.stderr
        );
    }
    let bundle = busybox_bundle(&["true"]);
    edit_config(&bundle, |c| {
        c["annotations"] = json!({"io.berth.cpus": "0.5", "io.berth.cpu-mode": "exclusive"});
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000});
    });
    let r = try_run_via_files(
        berth::runtime_cmd(&root)
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg(unique()),
    );
    assert!(
        r.stderr.contains("mode exclusive needs a whole number"),
        "{}",
        r.stderr
    );
}

#[test]
fn kill_minus_nine_during_concurrent_creates_leaks_nothing_gc_cannot_free() {
    let _g = cpu_lock();
    let root = fresh_dir("crash-root");
    let bundles: Vec<_> = (0..4)
        .map(|_| {
            let b = busybox_bundle(&["sleep", "60"]);
            edit_config(&b, |c| {
                c["annotations"] = json!({"io.berth.cpus": "0.1"});
                c["linux"]["resources"]["cpu"] = json!({"quota": 10000, "period": 100000});
            });
            b
        })
        .collect();
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = bundles
            .iter()
            .enumerate()
            .map(|(w, bundle)| {
                let root = root.clone();
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..25u64 {
                        let id = unique();
                        let mut child = berth::runtime_cmd(&root)
                            .args(["create", "--bundle"])
                            .arg(bundle)
                            .arg(&id)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .expect("spawn berth-runtime");
                        // A pseudo-random point of the create: 0 to ~12 ms in.
                        std::thread::sleep(Duration::from_micros(
                            (i * 7919 + w as u64 * 104_729) % 12_000,
                        ));
                        let _ = child.kill();
                        let _ = child.wait();
                        ids.push(id);
                        // Whatever got created is deleted again (by runc, so the ledger is left to GC).
                        let _ = try_run(command("runc").arg("--root").arg(&root).args([
                            "delete",
                            "--force",
                            ids.last().unwrap(),
                        ]));
                    }
                    ids
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(ids.len(), 100);
    // Consistent at every point, and GC frees every leak: no container is left, so no allocation is.
    let status = cpu_status();
    assert_not_oversubscribed(&status);
    let left: Vec<&Value> = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| ids.iter().any(|i| c["id"] == i.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "GC left allocations of killed creates: {left:?}"
    );
    // runc-level leftovers of creates killed mid-way (cgroups named by id) are removed.
    for id in &ids {
        berth_integration::engines::remove_cgroup_dirs(id);
    }
}

#[test]
fn a_corrupt_ledger_is_rebuilt_from_live_containers() {
    let _g = cpu_lock();
    let c = berth_sleeper(&["--cpus", "1.2"]);
    let before = entry(&cpu_status(), &c.id).expect("entry");
    let ledger = berth::config().parent().unwrap().join("state/cpus/ledger");
    let mut bytes = std::fs::read(&ledger).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // a bit-flipped payload
    std::fs::write(&ledger, bytes).unwrap();
    let after = entry(&cpu_status(), &c.id).expect("rebuilt entry");
    assert_eq!(after["exclusive"], before["exclusive"]);
    assert_eq!(after["fragment"], before["fragment"]);
    // A missing ledger is rebuilt the same way.
    std::fs::remove_file(&ledger).unwrap();
    let after = entry(&cpu_status(), &c.id).expect("rebuilt entry");
    assert_eq!(after["exclusive"], before["exclusive"]);
    assert_eq!(after["fragment"], before["fragment"]);
    assert_eq!(cgroup_cpus(&c), "0-1");
}

#[test]
fn an_explicit_cpuset_is_respected_and_not_split() {
    let _g = cpu_lock();
    let c = berth_sleeper(&["--cpuset-cpus", "1", "--cpus", "0.5"]);
    assert_eq!(cgroup_cpus(&c), "1");
    let st = cpu_status();
    assert!(
        entry(&st, &c.id).is_none(),
        "a user cpuset stays outside the ledger: {:?}",
        entry(&st, &c.id)
    );
}

/// A bundle limited to `limit` CPUs by the engine (quota/period), with `annotations`.
fn limited_bundle(limit: Option<f64>, annotations: serde_json::Value) -> std::path::PathBuf {
    let bundle = busybox_bundle(&["true"]);
    edit_config(&bundle, |c| {
        c["annotations"] = annotations;
        if let Some(l) = limit {
            c["linux"]["resources"]["cpu"] =
                json!({"quota": (l * 100_000.0) as i64, "period": 100000});
        }
    });
    bundle
}

fn create(
    root: &std::path::Path,
    bundle: &std::path::Path,
) -> (berth_integration::cmd::Ran, String) {
    let id = unique();
    let r = try_run_via_files(
        berth::runtime_cmd(root)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg(&id),
    );
    let _ = try_run(
        command("runc")
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", &id]),
    );
    (r, id)
}

#[test]
fn annotations_may_ask_for_less_than_the_engine_granted_never_more() {
    let _g = cpu_lock();
    let root = fresh_dir("ann-root");
    // 2 CPUs on a 0.5-CPU pod: refused, naming the annotation, the limit and the key.
    let b = limited_bundle(
        Some(0.5),
        json!({"io.berth.cpus": "2", "io.berth.cpu-mode": "exclusive"}),
    );
    let (r, _) = create(&root, &b);
    assert!(!r.ok(), "an annotation raised the engine's limit");
    for needle in ["io.berth.cpus", "0.5 CPUs", "within-limit"] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    // No engine limit: capped by [cpus] max_request (0 by default).
    let b = limited_bundle(None, json!({"io.berth.cpus": "1"}));
    let (r, _) = create(&root, &b);
    assert!(!r.ok() && r.stderr.contains("max_request"), "{}", r.stderr);
    // Less than the limit is taken: 0.25 of a 0.5 limit.
    let b = limited_bundle(Some(0.5), json!({"io.berth.cpus": "0.25"}));
    let (r, _) = create(&root, &b);
    assert!(r.ok(), "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 25000, "{v}");
}

#[test]
fn a_forged_applied_record_is_not_taken_as_berths_own() {
    let _g = cpu_lock();
    let root = fresh_dir("forge-root");
    // A tenant pre-sets Berth's bookkeeping: 2 exclusive CPUs "already planned"
    // for a pod the engine limited to 0.5.
    let forged = json!({"cpu": {"mode": "exclusive", "pieces": 200, "quota": 50000}}).to_string();
    let b = limited_bundle(
        Some(0.5),
        json!({"io.berth.applied": forged, "io.berth.applied-mark": "00".repeat(32)}),
    );
    let (r, _) = create(&root, &b);
    assert!(r.ok(), "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let applied: serde_json::Value =
        serde_json::from_str(v["annotations"]["io.berth.applied"].as_str().unwrap()).unwrap();
    assert_eq!(
        applied["cpu"]["pieces"], 50,
        "planned from the engine's limit: {applied}"
    );
    assert_eq!(applied["cpu"]["mode"], "split", "{applied}");
    // Berth's own record, marked, makes a second create of the bundle idempotent.
    let (r, _) = create(&root, &b);
    assert!(r.ok(), "{}", r.stderr);
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        again["linux"]["resources"]["cpu"],
        v["linux"]["resources"]["cpu"]
    );
}

/// The systemd cgroup driver, as Kubernetes hosts use it, without systemd
/// (this machine has none): berth-runtime gets `--systemd-cgroup` and a
/// `slice:prefix:name` path, and its delegate is a stand-in for runc's
/// systemd driver that runs runc with cgroupfs at the directory systemd
/// would make, nested by the slice's dashes (written out here by hand, not
/// by Berth's code). The shared pool rewrite and a ledger rebuild must find
/// the container there.
#[test]
fn the_systemd_driver_s_nested_slices_are_found_by_the_pool_rewrite_and_rebuild() {
    use std::os::unix::fs::PermissionsExt;
    let _g = cpu_lock();
    let p = unique();
    let id = unique();
    let systemd_form = format!("{p}kubepods-burstable-{p}pod1.slice:cri-containerd:{id}");
    let nested = format!(
        "/{p}kubepods.slice/{p}kubepods-burstable.slice/{p}kubepods-burstable-{p}pod1.slice/cri-containerd-{id}.scope"
    );
    let dir = fresh_dir("systemd-driver");
    let wrapper = dir.join("runc-systemd-stand-in");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             # runc's systemd driver needs systemd: run runc with cgroupfs at\n\
             # the directory systemd would have made instead.\n\
             for a do shift; [ \"$a\" = --systemd-cgroup ] || set -- \"$@\" \"$a\"; done\n\
             if [ -n \"$STAND_IN_BUNDLE\" ]; then\n\
               sed -i 's#\"cgroupsPath\":\"[^\"]*\"#\"cgroupsPath\":\"{nested}\"#' \"$STAND_IN_BUNDLE/config.json\"\n\
             fi\n\
             exec runc \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(berth::config()).unwrap().replacen(
        "delegate = \"runc\"",
        &format!("backend = \"{}\"", wrapper.display()),
        1,
    );
    let cfg = dir.join("runtime.toml");
    std::fs::write(&cfg, text).unwrap();
    let root = fresh_dir("systemd-root");
    let berth = |stand_in_bundle: Option<&std::path::Path>| {
        let mut c = Command::new(binary("berth-runtime"));
        c.arg("--berth-config")
            .arg(&cfg)
            .arg("--root")
            .arg(&root)
            .arg("--systemd-cgroup")
            .env(
                "STAND_IN_BUNDLE",
                stand_in_bundle.map(|b| b.as_os_str()).unwrap_or_default(),
            );
        c
    };
    // Removes the container and the slices the stand-in made, also when an
    // assertion fails.
    struct Gone<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Gone<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _gone = Gone(|| {
        let _ = try_run(berth(None).args(["delete", "--force", &id]));
        let dirs: Vec<String> = (1..=3)
            .rev()
            .map(|depth| {
                let parts: Vec<&str> = nested
                    .trim_start_matches('/')
                    .split('/')
                    .take(depth)
                    .collect();
                parts.join("/")
            })
            .collect();
        // The scope may leave a hierarchy a moment after delete returns.
        berth_integration::process::wait_until(Duration::from_secs(3), || {
            let mut left = false;
            for h in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                for d in &dirs {
                    let _ = std::fs::remove_dir(h.path().join(d));
                }
                left |= h.path().join(&dirs[2]).exists();
            }
            !left
        });
    });
    // A shared container (no CPU request) in the pod's slice.
    let bundle = busybox_bundle(&["sleep", "60"]);
    edit_config(&bundle, |c| c["linux"]["cgroupsPath"] = json!(systemd_form));
    let r = try_run_via_files(
        berth(Some(&bundle))
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg(&id),
    );
    assert!(r.ok(), "create: {}", r.stderr);
    assert!(try_run_via_files(berth(None).args(["start", &id])).ok());
    let cpuset = std::path::Path::new("/sys/fs/cgroup/cpuset")
        .join(nested.trim_start_matches('/'))
        .join("cpuset.cpus");
    let read = || std::fs::read_to_string(&cpuset).map(|s| s.trim().to_string());
    let before = read().expect("the container's cgroup at the nested slice path");
    // An exclusive container takes a CPU: the shared one must move off it.
    let excl = berth_sleeper(&["--cpus", "1"]);
    let e = entry(&cpu_status(), &excl.id).expect("exclusive entry");
    let taken = berth::cpu_list(e["exclusive"].as_str().unwrap());
    let after = read().unwrap();
    let after_cpus = berth::cpu_list(&after);
    assert!(
        !after_cpus.iter().any(|c| taken.contains(c)),
        "the shared container in {nested} still has exclusive cpu {taken:?}: {before} -> {after}"
    );
    // A rebuilt ledger finds it there too.
    let ledger = berth::config().parent().unwrap().join("state/cpus/ledger");
    std::fs::remove_file(&ledger).unwrap();
    let st = cpu_status();
    let rebuilt = entry(&st, &id);
    drop(excl);
    let rebuilt = rebuilt.unwrap_or_else(|| panic!("not rebuilt from its nested cgroup: {st}"));
    assert_eq!(rebuilt["cgroup"], nested.as_str(), "{rebuilt}");
}

#[test]
fn a_create_failing_after_the_cpu_split_gives_its_cpus_back_at_once() {
    let _g = cpu_lock();
    let root = fresh_dir("fail-root");
    // A whole CPU is planned, then the preload stage refuses the bad value.
    let b = limited_bundle(Some(1.0), json!({"io.berth.cpu-preload": "bogus"}));
    let (r, id) = create(&root, &b);
    assert!(!r.ok(), "a bad io.berth.cpu-preload must fail create");
    assert!(r.stderr.contains("io.berth.cpu-preload"), "{}", r.stderr);
    // Read without GC: the allocation must already be gone.
    let out = berth_integration::cmd::run(
        Command::new(binary("berth-runtime"))
            .arg("--berth-config")
            .arg(berth::config())
            .args(["cpus", "--json"]),
    );
    let st: Value = serde_json::from_str(&out).unwrap();
    assert!(entry(&st, &id).is_none(), "allocation left behind: {st}");
}

#[test]
fn cpus_freed_by_gc_go_back_to_running_shared_containers() {
    let _g = cpu_lock();
    let shared = berth_sleeper(&[]);
    // An exclusive container through berth-runtime (runc as the delegate)...
    let root = fresh_dir("gc-root");
    let bundle = busybox_bundle(&["sleep", "60"]);
    edit_config(&bundle, |c| {
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000})
    });
    let id = unique();
    let r = try_run_via_files(
        berth::runtime_cmd(&root)
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg(&id),
    );
    assert!(r.ok(), "{}", r.stderr);
    let e = entry(&cpu_status(), &id).expect("exclusive entry");
    let taken = berth::cpu_list(e["exclusive"].as_str().unwrap());
    assert!(
        !berth::cpu_list(&cgroup_cpus(&shared))
            .iter()
            .any(|c| taken.contains(c)),
        "the shared container moved off the exclusive cpu"
    );
    // ...deleted behind Berth's back: only GC can free its CPU.
    let r = try_run(
        command("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id]),
    );
    assert!(r.ok(), "{}", r.stderr);
    let st = cpu_status(); // `cpus --json --gc`
    assert!(entry(&st, &id).is_none(), "GC freed it: {st}");
    assert_eq!(
        cgroup_cpus(&shared),
        "0-1",
        "the CPU GC freed went back to the running shared container"
    );
}

/// A runc state root whose containers are force-deleted when it is dropped,
/// so a failed assertion leaves no container, process or cgroup behind.
struct RuncRoot(std::path::PathBuf);

impl RuncRoot {
    fn new(label: &str) -> RuncRoot {
        RuncRoot(fresh_dir(label))
    }
}

impl std::ops::Deref for RuncRoot {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for RuncRoot {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for RuncRoot {
    fn drop(&mut self) {
        let listed = try_run(
            command("runc")
                .arg("--root")
                .arg(&self.0)
                .args(["list", "-q"]),
        );
        for id in listed.stdout.split_whitespace() {
            let _ = try_run(
                command("runc")
                    .arg("--root")
                    .arg(&self.0)
                    .args(["delete", "--force", id]),
            );
        }
    }
}

/// berth-runtime (a debug build) stopped by `BERTH_DEBUG_STOP_AT=step` and
/// killed with -9 there. Returns false when it ended without reaching the step.
fn kill_at(mut cmd: Command, step: &str) -> bool {
    let mut child = cmd
        .env("BERTH_DEBUG_STOP_AT", step)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth-runtime");
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        if child.try_wait().expect("wait").is_some() {
            break false;
        }
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        if state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        {
            break true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{step}: never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    stopped
}

/// The ledger entry of `id` after the next transaction, and its cgroup's
/// cpuset; asserts that no CPU is owned twice.
fn after_next_transaction(id: &str) -> (Option<Value>, Option<String>) {
    let st = cpu_status();
    assert_not_oversubscribed(&st);
    let e = entry(&st, id);
    let cpus = e
        .as_ref()
        .and_then(|e| e["cgroup"].as_str())
        .and_then(|cg| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/cpuset/{}/cpuset.cpus",
                cg.trim_start_matches('/')
            ))
            .ok()
            .map(|s| s.trim().to_string())
        });
    (e, cpus)
}

/// The CPUs an entry owns, as a cpuset list as the kernel prints it.
fn owned(e: &Value) -> String {
    let mut cpus = berth::cpu_list(e["exclusive"].as_str().unwrap_or(""));
    cpus.extend(e["fragment"]["cpu"].as_u64());
    cpus.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// kill -9 of berth-runtime at every step of create, update and delete:
/// the next ledger transaction shows no CPU owned twice, no allocation of a
/// container that does not exist, and for an update exactly what the
/// cgroup has (the old allocation if runc had not applied the new one).
#[test]
fn kill_minus_nine_at_every_step_leaves_the_ledger_true() {
    let _g = cpu_lock();
    let root = RuncRoot::new("kill9-root");
    let bundle = || {
        let b = busybox_bundle(&["sleep", "60"]);
        edit_config(&b, |c| {
            c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000})
        });
        b
    };
    let runc_delete = |id: &str| {
        let _ = try_run(
            command("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id]),
        );
    };
    let create_cmd = |b: &std::path::Path, id: &str| {
        let mut c = berth::runtime_cmd(&root);
        c.args(["create", "--bundle"]).arg(b).arg(id);
        c
    };
    // Create: killed after the CPU plan, after the rewrite, after the record.
    for step in ["create:planned", "create:rewritten", "create:recorded"] {
        let id = unique();
        assert!(
            kill_at(create_cmd(&bundle(), &id), step),
            "{step} not reached"
        );
        let (e, _) = after_next_transaction(&id);
        assert!(
            e.is_none(),
            "{step}: the killed create's allocation leaked: {e:?}"
        );
        runc_delete(&id);
    }
    // Update from one whole CPU to half of one: killed before runc ran, and
    // after runc applied it but before the ledger was settled.
    let half = fresh_dir("kill9-res").join("half.json");
    std::fs::write(
        &half,
        json!({"cpu": {"quota": 50000, "period": 100000}}).to_string(),
    )
    .unwrap();
    for (step, applied) in [("update:planned", false), ("update:applied", true)] {
        let id = unique();
        let r = try_run_via_files(&mut create_cmd(&bundle(), &id));
        assert!(r.ok(), "{}", r.stderr);
        let (before, _) = after_next_transaction(&id);
        let before = before.expect("entry after create");
        let mut up = berth::runtime_cmd(&root);
        up.args(["update", "--resources"]).arg(&half).arg(&id);
        assert!(kill_at(up, step), "{step} not reached");
        let (e, cgroup) = after_next_transaction(&id);
        let e = e.unwrap_or_else(|| panic!("{step}: entry lost"));
        let want = if applied { 0.5 } else { 1.0 };
        assert_eq!(
            e["cpus"].as_f64(),
            Some(want),
            "{step}: {e} (before {before})"
        );
        assert_eq!(
            cgroup.as_deref(),
            Some(owned(&e).as_str()),
            "{step}: the ledger and the cgroup disagree: {e}"
        );
        runc_delete(&id);
        after_next_transaction(&id);
    }
    // Delete: killed after runc deleted the container, before the release.
    let id = unique();
    let r = try_run_via_files(&mut create_cmd(&bundle(), &id));
    assert!(r.ok(), "{}", r.stderr);
    let mut del = berth::runtime_cmd(&root);
    del.args(["delete", "--force", &id]);
    assert!(kill_at(del, "delete:deleted"), "delete:deleted not reached");
    let (e, _) = after_next_transaction(&id);
    assert!(
        e.is_none(),
        "the deleted container's allocation leaked: {e:?}"
    );
    runc_delete(&id);
}

/// An update the backend refuses leaves the ledger and the cgroup's cpuset
/// as they were: a memory limit below what the container uses, and a
/// real-time runtime above the host's, which runc refuses only after it
/// wrote the new cpuset (so Berth writes the old one back).
#[test]
fn an_update_the_backend_refuses_is_rolled_back() {
    let _g = cpu_lock();
    let root = RuncRoot::new("upd-root");
    let bundle = busybox_bundle(&["sleep", "60"]);
    edit_config(&bundle, |c| {
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000})
    });
    let id = unique();
    let mut create = berth::runtime_cmd(&root);
    create.args(["create", "--bundle"]).arg(&bundle).arg(&id);
    let r = try_run_via_files(&mut create);
    assert!(r.ok(), "{}", r.stderr);
    let (before, cgroup) = after_next_transaction(&id);
    let before = before.expect("entry");
    assert_eq!(cgroup.as_deref(), Some(owned(&before).as_str()));
    // Two whole CPUs: a cpuset other than the one it has.
    let two = json!({"quota": 200000, "period": 100000});
    let mut rt = two.clone();
    rt["realtimeRuntime"] = json!(1_000_000);
    rt["realtimePeriod"] = json!(1_000_000);
    for (refused, why) in [
        (
            json!({"cpu": two, "memory": {"limit": 4096}}),
            "memory limit",
        ),
        (json!({"cpu": rt}), "rt_runtime_us"),
    ] {
        let res = fresh_dir("upd-res").join("r.json");
        std::fs::write(&res, refused.to_string()).unwrap();
        let mut up = berth::runtime_cmd(&root);
        up.args(["update", "--resources"]).arg(&res).arg(&id);
        let r = try_run_via_files(&mut up);
        assert!(
            !r.ok() && r.stderr.contains(why),
            "runc must refuse {refused}: {}",
            r.stderr
        );
        let (after, cgroup) = after_next_transaction(&id);
        let after = after.expect("entry");
        assert_eq!(after["cpus"], before["cpus"], "{refused}: {after}");
        assert_eq!(
            after["exclusive"], before["exclusive"],
            "{refused}: {after}"
        );
        assert_eq!(
            cgroup.as_deref(),
            Some(owned(&before).as_str()),
            "{refused}: cpuset restored ({})",
            r.stderr
        );
    }
    let _ = try_run(
        command("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id]),
    );
}

/// Records of containers the ledger never held (a respected user cpuset)
/// are collected too, once the backend no longer has the container.
#[test]
fn records_of_unplanned_containers_are_collected() {
    let _g = cpu_lock();
    let root = RuncRoot::new("rec-root");
    let create = |b: &std::path::Path| {
        let id = unique();
        let r = try_run_via_files(
            berth::runtime_cmd(&root)
                .args(["create", "--bundle"])
                .arg(b)
                .arg(&id),
        );
        assert!(r.ok(), "{}", r.stderr);
        id
    };
    let pinned = busybox_bundle(&["sleep", "60"]);
    edit_config(&pinned, |c| {
        c["linux"]["resources"]["cpu"] = json!({"cpus": "1"})
    });
    let id = create(&pinned);
    assert!(
        entry(&cpu_status(), &id).is_none(),
        "a user cpuset stays outside the ledger"
    );
    let containers = berth::config().parent().unwrap().join("state/containers");
    let record = std::fs::read_dir(&containers)
        .unwrap()
        .flatten()
        .map(|d| d.path().join(&id))
        .find(|p| p.exists())
        .expect("the container's record");
    let _ = try_run(
        command("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id]),
    );
    // Older than a create in progress can be.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&record)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let next = create(&busybox_bundle(&["sleep", "60"]));
    assert!(
        !record.exists(),
        "the record of a gone unplanned container stayed"
    );
    let _ = try_run(
        command("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &next]),
    );
}
