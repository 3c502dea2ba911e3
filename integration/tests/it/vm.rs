//! The VM tier: Berth in a Debian 12 guest with systemd as PID 1 and cgroup
//! v2 unified (see `berth_integration::vm`). Each test is one guest script
//! (emulated time is dear) that prints what it saw; the assertions are here.

use berth_integration::berth::cpu_list as cpus;
use berth_integration::images::{busybox_bundle, edit_config};
use berth_integration::names::unique;
use berth_integration::vm::{vm, Vm};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// runc as the delegate (a `runtime.toml` backend line).
const RUNC: &str = "delegate = \"runc\"";
/// crun as the delegate.
const CRUN: &str = "delegate = \"crun\"";
/// The built-in backend.
const BUILTIN: &str = "backend = \"libcontainer\"";

/// The guest's `runtime.toml` with `backend` (one of [`RUNC`], [`CRUN`],
/// [`BUILTIN`]), in the share: state on the guest's /run (a tmpfs there),
/// the preload library from the share. Written once per backend; returns
/// its guest path.
fn guest_config(v: &Vm, backend: &str) -> String {
    static WRITTEN: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    written
        .entry(backend.to_string())
        .or_insert_with(|| {
            let name = backend.split('"').nth(1).unwrap_or("runtime");
            v.put_file(
                &format!("etc/runtime-{name}.toml"),
                &format!(
                    "{backend}\n\
                     state_dir = \"/run/berth-vm-test\"\n\
                     \n\
                     [preload]\n\
                     enabled = true\n\
                     library = \"/berth/bin/libberth_cpus.so\"\n"
                ),
            )
        })
        .clone()
}

/// A busybox `config.json` (as `runc spec` writes it) running `args`, with
/// `edit` applied, put in the share as `<case>/<name>.json`.
fn put_config(v: &Vm, case: &str, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) {
    let bundle = busybox_bundle(args);
    edit_config(&bundle, edit);
    let text = std::fs::read_to_string(bundle.join("config.json")).expect("config.json");
    v.put_file(&format!("{case}/{name}.json"), &text);
}

/// The guest script's preamble: `br` runs berth-runtime on root `$R`, `mk
/// NAME` makes bundle `/tmp/$CASE/NAME` from the share's `NAME.json`, `say
/// K V` prints a `K=V` line for the test to read.
fn preamble(case: &str, config: &str) -> String {
    format!(
        "set -eu\n\
         CASE={case}; R=/run/$CASE; mkdir -p $R /tmp/$CASE\n\
         br() {{ /berth/bin/berth-runtime --berth-config {config} --root $R \"$@\"; }}\n\
         mk() {{ mkdir -p /tmp/$CASE/$1; cp -a /berth/rootfs /tmp/$CASE/$1/rootfs; cp /berth/$CASE/$1.json /tmp/$CASE/$1/config.json; }}\n\
         say() {{ printf '%s=%s\\n' \"$1\" \"$2\"; }}\n"
    )
}

/// The `K=V` lines a guest script printed (the last value of each key).
fn said(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Held by each test that plans CPUs in the guest: they share its 4 CPUs
/// and its ledger, and assert what is free.
fn guest_cpu_lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guest is what the tier promises: systemd as PID 1, cgroup v2 only,
/// 4 CPUs, and the share.
#[test]
fn the_guest_runs_systemd_on_cgroup_v2() {
    let v = vm();
    let out = said(&v.run(
        "say() { printf '%s=%s\\n' \"$1\" \"$2\"; }\n\
         say pid1 \"$(cat /proc/1/comm)\"; say fs \"$(stat -f -c %T /sys/fs/cgroup)\"\n\
         say v1 \"$(ls /sys/fs/cgroup/cpuset 2>/dev/null | wc -l)\"; say cpus \"$(nproc)\"\n\
         say controllers \"$(cat /sys/fs/cgroup/cgroup.controllers)\"\n\
         say state \"$(systemctl is-system-running)\"; say share \"$(ls /berth/bin | tr '\\n' ' ')\"",
    ));
    assert_eq!(out["pid1"], "systemd", "{out:?}");
    assert_eq!(out["fs"], "cgroup2fs", "{out:?}");
    assert_eq!(out["v1"], "0", "{out:?}");
    assert_eq!(out["cpus"], "4", "{out:?}");
    assert!(out["controllers"].contains("cpuset"), "{out:?}");
    assert_eq!(out["state"], "running", "{out:?}");
    assert!(out["share"].contains("berth-runtime"), "{out:?}");
}

/// The CPU split on cgroup v2, through runc's cgroupfs driver: a 1.5-CPU
/// container gets one exclusive CPU and half of a fragment CPU, seen in
/// `cpuset.cpus.effective`, `cpu.max` and `cpu.weight`; a shared container
/// is moved off the exclusive CPU (the pool rewrite); `update` re-plans; a
/// lost ledger is rebuilt from the live v2 cgroups; delete removes the
/// cgroups and gives the CPUs back.
#[test]
fn cgroup_v2_cpu_split_update_rebuild_and_delete() {
    let v = vm();
    let _cpus = guest_cpu_lock();
    let config = guest_config(v, RUNC);
    let case = unique();
    let (a, b) = (format!("{case}a"), format!("{case}b"));
    put_config(v, &case, "a", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{case}/{a}"));
        c["linux"]["resources"]["cpu"] = json!({"quota": 150000, "period": 100000});
    });
    put_config(v, &case, "b", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{case}/{b}"));
    });
    v.put_file(
        &format!("{case}/up.json"),
        &json!({"cpu": {"quota": 250000, "period": 100000}}).to_string(),
    );
    let script = format!(
        "{pre}\
         G=/sys/fs/cgroup/{case}\n\
         trap 'br delete --force {a} 2>/dev/null; br delete --force {b} 2>/dev/null; rmdir $G 2>/dev/null; true' EXIT\n\
         mk a; mk b\n\
         br create --bundle /tmp/$CASE/b {b}; br start {b}\n\
         say b.before \"$(cat $G/{b}/cpuset.cpus.effective)\"\n\
         br create --bundle /tmp/$CASE/a {a}; br start {a}\n\
         say a.cpus \"$(cat $G/{a}/cpuset.cpus.effective)\"\n\
         say a.max \"$(cat $G/{a}/cpu.max)\"\n\
         say a.weight \"$(cat $G/{a}/cpu.weight)\"\n\
         say b.after \"$(cat $G/{b}/cpuset.cpus.effective)\"\n\
         say ledger \"$(br cpus --json | tr -d '\\n')\"\n\
         br update --resources /berth/$CASE/up.json {a}\n\
         say a.up.cpus \"$(cat $G/{a}/cpuset.cpus.effective)\"\n\
         say a.up.max \"$(cat $G/{a}/cpu.max)\"\n\
         say b.up \"$(cat $G/{b}/cpuset.cpus.effective)\"\n\
         rm /run/berth-vm-test/cpus/ledger\n\
         say rebuilt \"$(br cpus --json | tr -d '\\n')\"\n\
         br delete --force {a}\n\
         say a.gone \"$(test -e $G/{a} && echo no || echo yes)\"\n\
         say b.freed \"$(cat $G/{b}/cpuset.cpus.effective)\"\n\
         br delete --force {b}\n\
         say b.gone \"$(test -e $G/{b} && echo no || echo yes)\"\n",
        pre = preamble(&case, &config),
    );
    let out = said(&v.run(&script));
    let ledger: Value = serde_json::from_str(&out["ledger"]).expect("ledger JSON");
    let entry = |l: &Value, id: &str| -> Value {
        l["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in the ledger: {l}"))
    };
    let ea = entry(&ledger, &a);
    let excl = cpus(ea["exclusive"].as_str().unwrap_or(""));
    assert_eq!(excl.len(), 1, "1.5 CPUs: one exclusive CPU: {ea}");
    let a_cpus = cpus(&out["a.cpus"]);
    assert_eq!(a_cpus.len(), 2, "exclusive + fragment CPU: {out:?}");
    assert!(a_cpus.contains(&excl[0]), "{out:?}");
    assert_eq!(out["a.max"], "150000 100000");
    // runc's shares-to-weight conversion of Berth's 1536 shares.
    assert_eq!(out["a.weight"], "59");
    assert_eq!(cpus(&out["b.before"]), vec![0, 1, 2, 3]);
    assert!(
        !cpus(&out["b.after"]).contains(&excl[0]),
        "the shared container kept the exclusive CPU: {out:?}"
    );
    let up = cpus(&out["a.up.cpus"]);
    assert_eq!(up.len(), 3, "2.5 CPUs: two exclusive + a fragment: {out:?}");
    assert_eq!(out["a.up.max"], "250000 100000");
    let rebuilt: Value = serde_json::from_str(&out["rebuilt"]).expect("rebuilt JSON");
    let ra = entry(&rebuilt, &a);
    assert_eq!(
        ra["cpus"].as_f64(),
        Some(2.5),
        "rebuilt from the v2 cgroup: {ra}"
    );
    let up_excl = cpus(ra["exclusive"].as_str().unwrap_or(""));
    assert_eq!(up_excl.len(), 2, "{ra}");
    assert!(
        up_excl.iter().all(|c| !cpus(&out["b.up"]).contains(c)),
        "the shared container overlaps the re-planned exclusive CPUs: {out:?}"
    );
    assert_eq!(out["a.gone"], "yes", "the cgroup outlived delete");
    assert_eq!(
        cpus(&out["b.freed"]),
        vec![0, 1, 2, 3],
        "CPUs not given back"
    );
    assert_eq!(out["b.gone"], "yes");
}

/// The preload injection on cgroup v2: a 1.5-CPU container's dynamically
/// linked `nproc` sees the count Berth declared (2), not the guest's 4,
/// through the library mounted from the host configuration.
#[test]
fn cgroup_v2_preload_injection_gives_the_declared_count() {
    let v = vm();
    let _cpus = guest_cpu_lock();
    let config = guest_config(v, RUNC);
    let case = unique();
    put_config(
        v,
        &case,
        "a",
        &[
            "sh",
            "-c",
            "echo nproc=$(nproc); echo env=$BERTH_NPROC; echo preload=$LD_PRELOAD",
        ],
        |c| {
            c["linux"]["cgroupsPath"] = json!(format!("/{case}/a"));
            c["linux"]["resources"]["cpu"] = json!({"quota": 150000, "period": 100000});
        },
    );
    let script = format!(
        "{pre}trap 'br delete --force {case}a 2>/dev/null; rmdir /sys/fs/cgroup/{case} 2>/dev/null; true' EXIT\n\
         mk a\nbr run --bundle /tmp/$CASE/a {case}a\n",
        pre = preamble(&case, &config)
    );
    let out = said(&v.run(&script));
    assert_eq!(out["nproc"], "2", "{out:?}");
    assert_eq!(out["env"], "2", "{out:?}");
    assert!(out["preload"].contains("libberth_cpus.so"), "{out:?}");
}

/// The built-in backend (libcontainer's v2 manager) on cgroup v2: create
/// and start with the CPU split, `update` of memory and CPU seen in
/// `memory.max` and `cpu.max`, `events --stats` with the v2 counters,
/// `ps`, kill, and delete removing the cgroup.
#[test]
fn cgroup_v2_builtin_backend_lifecycle_update_and_events() {
    let v = vm();
    let _cpus = guest_cpu_lock();
    let config = guest_config(v, BUILTIN);
    let case = unique();
    let id = format!("{case}a");
    put_config(v, &case, "a", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{case}/{id}"));
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000});
        c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    });
    // One that allocates past its limit a moment after it starts.
    put_config(
        v,
        &case,
        "o",
        &[
            "sh",
            "-c",
            "sleep 3; dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
        |c| {
            c["linux"]["cgroupsPath"] = json!(format!("/{case}/{id}o"));
            c["linux"]["resources"]["memory"] = json!({"limit": 16 << 20, "swap": 16 << 20});
        },
    );
    v.put_file(
        &format!("{case}/up.json"),
        &json!({"cpu": {"quota": 50000, "period": 100000}, "memory": {"limit": 96 << 20}})
            .to_string(),
    );
    let script = format!(
        "{pre}G=/sys/fs/cgroup/{case}/{id}\n\
         trap 'br delete --force {id} 2>/dev/null; rmdir /sys/fs/cgroup/{case} 2>/dev/null; true' EXIT\n\
         mk a\nbr create --bundle /tmp/$CASE/a {id}\nbr start {id}\n\
         say status \"$(br state {id} | tr -d '\\n')\"\n\
         say cpus \"$(cat $G/cpuset.cpus.effective)\"\n\
         say mem \"$(cat $G/memory.max)\"\n\
         say max \"$(cat $G/cpu.max)\"\n\
         br update --resources /berth/$CASE/up.json {id}\n\
         say up.mem \"$(cat $G/memory.max)\"\n\
         say up.max \"$(cat $G/cpu.max)\"\n\
         say up.cpus \"$(cat $G/cpuset.cpus.effective)\"\n\
         say stats \"$(br events --stats {id} | head -n1)\"\n\
         say ps \"$(br ps --format json {id} | tr -d '\\n')\"\n\
         br kill {id} KILL\n\
         for i in $(seq 50); do br state {id} | grep -q stopped && break; sleep 0.1; done\n\
         br delete {id}\n\
         say gone \"$(test -e $G && echo no || echo yes)\"\n\
         mk o\nbr create --bundle /tmp/$CASE/o {id}o\nbr start {id}o\n\
         say oom \"$(timeout 120 /berth/bin/berth-runtime --berth-config {config} --root $R events --interval 30s {id}o | grep -c '\"type\":\"oom\"' || true)\"\n\
         br delete --force {id}o\n",
        pre = preamble(&case, &config)
    );
    let out = said(&v.run(&script));
    let state: Value = serde_json::from_str(&out["status"]).expect("state JSON");
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(cpus(&out["cpus"]).len(), 1, "one exclusive CPU: {out:?}");
    assert_eq!(out["mem"], (64u64 << 20).to_string());
    assert_eq!(out["max"], "100000 100000");
    assert_eq!(out["up.mem"], (96u64 << 20).to_string());
    assert_eq!(out["up.max"], "50000 100000");
    assert_eq!(
        cpus(&out["up.cpus"]).len(),
        1,
        "half a CPU: a fragment of one CPU: {out:?}"
    );
    let stats: Value = serde_json::from_str(&out["stats"]).expect("stats JSON");
    assert_eq!(stats["type"], "stats", "{stats}");
    assert!(
        stats["data"]["cpu"]["usage"]["total"].as_u64().is_some(),
        "no v2 CPU usage: {stats}"
    );
    assert!(
        stats["data"]["memory"]["usage"]["usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "no v2 memory usage: {stats}"
    );
    let ps: Value = serde_json::from_str(&out["ps"]).expect("ps JSON");
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(out["gone"], "yes", "the cgroup outlived delete");
    assert_eq!(out["oom"], "1", "no oom event from memory.events: {out:?}");
}

/// The systemd cgroup driver for real: berth-runtime with runc
/// `--systemd-cgroup` places a pod's containers in
/// `kubepods.slice/kubepods-burstable.slice/…/cri-containerd-ID.scope`.
/// An exclusive container's CPU shows in its scope's cpuset and in
/// systemd's own `AllowedCPUs`; the shared container beside it is moved off
/// that CPU, in the cgroup and in systemd's view alike, and stays moved
/// when systemd re-applies its units' settings (`daemon-reload`); a lost
/// ledger is rebuilt from the scopes; delete stops the scopes.
#[test]
fn systemd_driver_scopes_agree_with_the_cpu_split() {
    let v = vm();
    let _cpus = guest_cpu_lock();
    let config = guest_config(v, RUNC);
    let case = unique();
    let pod = format!("kubepods-burstable-pod{case}.slice");
    let dir = format!("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{pod}");
    let (s, e) = (format!("{case}s"), format!("{case}e"));
    put_config(v, &case, "s", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("{pod}:cri-containerd:{s}"));
    });
    put_config(v, &case, "e", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("{pod}:cri-containerd:{e}"));
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000});
    });
    let script = format!(
        "{pre}D={dir}\n\
         trap 'br --systemd-cgroup delete --force {s} 2>/dev/null; br --systemd-cgroup delete --force {e} 2>/dev/null; systemctl stop {pod} 2>/dev/null; true' EXIT\n\
         allowed() {{ systemctl show -P AllowedCPUs cri-containerd-$1.scope; }}\n\
         mk s; mk e\n\
         br --systemd-cgroup create --bundle /tmp/$CASE/s {s}; br --systemd-cgroup start {s}\n\
         say s.before \"$(cat $D/cri-containerd-{s}.scope/cpuset.cpus.effective)\"\n\
         br --systemd-cgroup create --bundle /tmp/$CASE/e {e}; br --systemd-cgroup start {e}\n\
         say e.cpus \"$(cat $D/cri-containerd-{e}.scope/cpuset.cpus.effective)\"\n\
         say e.allowed \"$(allowed {e})\"\n\
         say e.active \"$(systemctl is-active cri-containerd-{e}.scope)\"\n\
         say s.after \"$(cat $D/cri-containerd-{s}.scope/cpuset.cpus.effective)\"\n\
         say s.allowed \"$(allowed {s})\"\n\
         systemctl daemon-reload\n\
         say s.reload \"$(cat $D/cri-containerd-{s}.scope/cpuset.cpus.effective)\"\n\
         rm /run/berth-vm-test/cpus/ledger\n\
         say rebuilt \"$(br cpus --json | tr -d '\\n')\"\n\
         br --systemd-cgroup delete --force {e}\n\
         say e.after \"$(systemctl is-active cri-containerd-{e}.scope || true)\"\n\
         say s.freed \"$(cat $D/cri-containerd-{s}.scope/cpuset.cpus.effective)\"\n\
         say s.freed.allowed \"$(allowed {s})\"\n",
        pre = preamble(&case, &config)
    );
    let out = said(&v.run(&script));
    let excl = cpus(&out["e.cpus"]);
    assert_eq!(excl.len(), 1, "one exclusive CPU: {out:?}");
    assert_eq!(out["e.active"], "active", "{out:?}");
    assert_eq!(
        cpus(&out["e.allowed"]),
        excl,
        "systemd's view of {e}: {out:?}"
    );
    assert_eq!(cpus(&out["s.before"]), vec![0, 1, 2, 3], "{out:?}");
    let after = cpus(&out["s.after"]);
    assert!(!after.contains(&excl[0]), "not moved off: {out:?}");
    assert_eq!(
        cpus(&out["s.allowed"]),
        after,
        "systemd's view of the shared scope disagrees with its cpuset: {out:?}"
    );
    assert_eq!(
        cpus(&out["s.reload"]),
        after,
        "daemon-reload put the shared scope back on the exclusive CPU: {out:?}"
    );
    let rebuilt: Value = serde_json::from_str(&out["rebuilt"]).expect("rebuilt JSON");
    let found: Vec<&str> = rebuilt["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        found.contains(&e.as_str()),
        "not rebuilt from its scope: {rebuilt}"
    );
    assert_ne!(
        out["e.after"], "active",
        "the scope outlived delete: {out:?}"
    );
    assert_eq!(cpus(&out["s.freed"]), vec![0, 1, 2, 3], "{out:?}");
    assert_eq!(cpus(&out["s.freed.allowed"]), vec![0, 1, 2, 3], "{out:?}");
}

/// containerd's CRI with `SystemdCgroup = true` and berth-runtime as the
/// runc binary, driven as kubelet drives it: a Burstable pod's sandbox and
/// a one-CPU container land in
/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod….slice/cri-containerd-….scope`;
/// the container's scope has its exclusive CPU in the cgroup and in
/// systemd's `AllowedCPUs`, the sandbox's scope is moved off it in both,
/// and removing the pod stops the scopes and gives the CPU back.
#[test]
fn containerd_cri_with_the_systemd_driver_places_pods_in_kubepods_slices() {
    let v = vm();
    let config = guest_config(v, RUNC);
    let _cpus = guest_cpu_lock();
    let case = unique();
    let wrapper = v.put_file(
        &format!("{case}/berth-runtime-runc"),
        &format!("#!/bin/sh\nexec /berth/bin/berth-runtime --berth-config {config} \"$@\"\n"),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let host = v.share().join(format!("{case}/berth-runtime-runc"));
        std::fs::set_permissions(host, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let toml = berth_integration::engines::containerd::base_config_toml(
        std::path::Path::new(&format!("/var/lib/{case}")),
        std::path::Path::new(&format!("/run/{case}/containerd.sock")),
        &[
            "SystemdCgroup = true",
            &format!("BinaryName = \"{wrapper}\""),
        ],
    );
    v.put_file(&format!("{case}/containerd.toml"), &toml);
    let pod = format!("kubepods-burstable-pod{case}.slice");
    let dir = format!("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{pod}");
    let script = format!(
        "{pre}S=/run/$CASE/containerd.sock; D={dir}\n\
         probe() {{ /berth/bin/berth-cri-probe $S \"$@\"; }}\n\
         mkdir -p /var/lib/$CASE/cni-bin /var/lib/$CASE/cni-conf /run/$CASE\n\
         containerd --config /berth/$CASE/containerd.toml >/tmp/$CASE/containerd.log 2>&1 &\n\
         CPID=$!\n\
         trap 'test -n \"${{P:-}}\" && probe remove-pod $P; kill $CPID; wait $CPID; systemctl stop {pod} 2>/dev/null; rm -rf /var/lib/$CASE; true' EXIT\n\
         for i in $(seq 300); do test -S $S && break; sleep 0.1; done\n\
         for img in pause busybox; do ctr --address $S -n k8s.io image import /berth/images/$img.tar >/dev/null; done\n\
         P=$(probe run-pod $CASE {pod})\n\
         C=$(probe start $P $CASE {pod} 100000)\n\
         say c.scope \"$(systemctl is-active cri-containerd-$C.scope)\"\n\
         say c.cpus \"$(cat $D/cri-containerd-$C.scope/cpuset.cpus.effective)\"\n\
         say c.allowed \"$(systemctl show -P AllowedCPUs cri-containerd-$C.scope)\"\n\
         say c.max \"$(cat $D/cri-containerd-$C.scope/cpu.max)\"\n\
         say p.cpus \"$(cat $D/cri-containerd-$P.scope/cpuset.cpus.effective)\"\n\
         say p.allowed \"$(systemctl show -P AllowedCPUs cri-containerd-$P.scope)\"\n\
         say ledger \"$(br cpus --json | tr -d '\\n')\"\n\
         probe remove-pod $P\n\
         say c.after \"$(systemctl is-active cri-containerd-$C.scope || true)\"\n\
         say freed \"$(br cpus --json | tr -d '\\n')\"\n\
         P=\n\
         say C \"$C\"\n",
        pre = preamble(&case, &config)
    );
    let r = v.sh(&script);
    assert!(
        r.ok(),
        "the CRI script failed ({}):\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    let out = said(&r.stdout);
    assert_eq!(out["c.scope"], "active", "{out:?}");
    let excl = cpus(&out["c.cpus"]);
    assert_eq!(excl.len(), 1, "one exclusive CPU: {out:?}");
    assert_eq!(cpus(&out["c.allowed"]), excl, "systemd's view: {out:?}");
    assert_eq!(out["c.max"], "100000 100000");
    let sandbox = cpus(&out["p.cpus"]);
    assert!(
        !sandbox.contains(&excl[0]),
        "the sandbox kept the exclusive CPU: {out:?}"
    );
    assert_eq!(
        cpus(&out["p.allowed"]),
        sandbox,
        "systemd's view of the sandbox: {out:?}"
    );
    let ledger: Value = serde_json::from_str(&out["ledger"]).expect("ledger JSON");
    let c = &out["C"];
    let entry = ledger["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|e| e["id"] == c.as_str()))
        .unwrap_or_else(|| panic!("{c} not in the ledger: {ledger}"));
    assert_eq!(
        entry["cgroup"],
        format!("/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{c}.scope"),
        "{entry}"
    );
    assert_ne!(out["c.after"], "active", "{out:?}");
    let freed: Value = serde_json::from_str(&out["freed"]).expect("ledger JSON");
    assert!(
        freed["containers"]
            .as_array()
            .is_none_or(|cs| cs.iter().all(|e| e["id"] != c.as_str())),
        "the removed pod's container still holds CPUs: {freed}"
    );
}

/// berth-ovs-vlan on the kernel datapath (this host has no openvswitch
/// module): two containers on VLAN 100 reach each other and one on VLAN 200
/// does not; `egressShaping "police"` (OVS ingress policing, which this
/// host's userspace datapath silently ignores) is applied as a police
/// action on the port, and CHECK and DEL work.
#[test]
fn ovs_vlan_on_the_kernel_datapath_with_ingress_policing() {
    let v = vm();
    let case = unique();
    let br = format!("br{}", &case[case.len() - 6..]);
    for (n, vlan) in [(1, 100), (2, 100), (3, 200)] {
        let conf = json!({
            "cniVersion": "1.1.0", "name": case, "type": "berth-ovs-vlan",
            "bridge": br, "vlan": vlan, "egressShaping": "police",
            "bandwidth": {"egressRate": 50_000_000, "ingressRate": 50_000_000},
            "runtimeConfig": {"ips": [format!("10.77.0.{n}/24")]},
        });
        v.put_file(&format!("{case}/net{n}.json"), &conf.to_string());
    }
    let script = format!(
        "set -u\nCASE={case}; BR={br}\n\
         say() {{ printf '%s=%s\\n' \"$1\" \"$2\"; }}\n\
         cni() {{ CNI_COMMAND=$1 CNI_NETNS=/run/netns/$CASE$2 CNI_IFNAME=eth0 CNI_CONTAINERID=$CASE$2 CNI_PATH=/berth/bin /berth/bin/berth-ovs-vlan < ${{3:-/berth/$CASE/net$2.json}}; }}\n\
         trap 'for n in 1 2 3; do cni DEL $n >/dev/null 2>&1; ip netns del $CASE$n 2>/dev/null; rm -f /tmp/$CASE.add$n; done; ovs-vsctl --if-exists del-br $BR; systemctl stop openvswitch-switch; true' EXIT\n\
         systemctl start openvswitch-switch || exit 1\n\
         ovs-vsctl add-br $BR && ip link set $BR up\n\
         say datapath \"$(ovs-vsctl get bridge $BR datapath_type)/$(ovs-dpctl show | head -n1)\"\n\
         for n in 1 2 3; do ip netns add $CASE$n; cni ADD $n | tr -d '\\n' > /tmp/$CASE.add$n; say add$n \"$(cat /tmp/$CASE.add$n)\"; done\n\
         ip netns exec ${{CASE}}1 busybox ping -c 2 -W 3 10.77.0.2 >/dev/null 2>&1 && say ping12 ok || say ping12 fail\n\
         ip netns exec ${{CASE}}1 busybox ping -c 2 -W 2 10.77.0.3 >/dev/null 2>&1 && say ping13 ok || say ping13 fail\n\
         H=$(ovs-vsctl --bare --columns=name find Port external_ids:berth.container_id=${{CASE}}1)\n\
         say police \"$(tc filter show dev $H ingress | grep -c police)\"\n\
         say rate \"$(ovs-vsctl get interface $H ingress_policing_rate)\"\n\
         say htb \"$(tc qdisc show dev $H | grep -c htb)\"\n\
         CHK=$(mktemp); sed \"s#}}\\$#,\\\"prevResult\\\":$(cat /tmp/$CASE.add1)}}#\" /berth/$CASE/net1.json > $CHK\n\
         cni CHECK 1 $CHK >/dev/null && say check ok || say check fail\n\
         cni DEL 1 >/dev/null && say del ok || say del fail\n\
         say gone \"$(ovs-vsctl --bare --columns=name find Port external_ids:berth.container_id=${{CASE}}1 | wc -l)\"\n"
    );
    let out = said(&v.sh(&script).stdout);
    assert!(
        out["datapath"].starts_with("\"\"/system@ovs-system")
            || out["datapath"].starts_with("system/system@"),
        "not the kernel datapath: {out:?}"
    );
    for n in 1..=3 {
        let r: Value = serde_json::from_str(&out[&format!("add{n}")])
            .unwrap_or_else(|e| panic!("ADD {n}: {e}: {out:?}"));
        assert!(r.get("code").is_none(), "ADD {n} failed: {r}");
    }
    assert_eq!(out["ping12"], "ok", "same VLAN: {out:?}");
    assert_eq!(out["ping13"], "fail", "across VLANs: {out:?}");
    assert_eq!(out["police"], "1", "no police action on the port: {out:?}");
    assert_eq!(out["rate"], "50000", "{out:?}");
    assert_eq!(out["htb"], "1", "no linux-htb for ingress: {out:?}");
    assert_eq!(out["check"], "ok", "{out:?}");
    assert_eq!(out["del"], "ok", "{out:?}");
    assert_eq!(out["gone"], "0", "{out:?}");
}

/// The built-in backend with `--systemd-cgroup` (libcontainer's systemd
/// manager, over D-Bus): the container runs in
/// `cri-containerd-ID.scope` under the pod's slice, with its exclusive CPU
/// in the scope's cpuset and in systemd's `AllowedCPUs`; an exec'd process
/// joins the scope; `update` and `events` reach the scope; delete stops it.
#[test]
fn builtin_backend_with_the_systemd_driver() {
    let v = vm();
    let config = guest_config(v, BUILTIN);
    let _cpus = guest_cpu_lock();
    let case = unique();
    let id = format!("{case}a");
    let pod = format!("kubepods-burstable-pod{case}.slice");
    let scope = format!(
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{id}.scope"
    );
    put_config(v, &case, "a", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("{pod}:cri-containerd:{id}"));
        c["linux"]["resources"]["cpu"] = json!({"quota": 100000, "period": 100000});
        c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    });
    v.put_file(
        &format!("{case}/up.json"),
        &json!({"memory": {"limit": 96 << 20}}).to_string(),
    );
    let script = format!(
        "{pre}G={scope}\n\
         sb() {{ br --systemd-cgroup \"$@\"; }}\n\
         trap 'sb delete --force {id} 2>/dev/null; systemctl stop {pod} 2>/dev/null; true' EXIT\n\
         mk a\nsb create --bundle /tmp/$CASE/a {id}\nsb start {id}\n\
         say active \"$(systemctl is-active cri-containerd-{id}.scope)\"\n\
         say cpus \"$(cat $G/cpuset.cpus.effective)\"\n\
         say allowed \"$(systemctl show -P AllowedCPUs cri-containerd-{id}.scope)\"\n\
         say max \"$(cat $G/cpu.max)\"\n\
         say init \"$(cat /proc/$(sb state {id} | grep -o '\"pid\": [0-9]*' | grep -o '[0-9]*')/cgroup)\"\n\
         say exec \"$(sb exec {id} cat /proc/self/cgroup)\"\n\
         sb update --resources /berth/$CASE/up.json {id}\n\
         say mem \"$(cat $G/memory.max)\"\n\
         say stats \"$(sb events --stats {id} 2>&1 | head -n1 | tr -d '\\n')\"\n\
         sb delete --force {id}\n\
         say after \"$(systemctl is-active cri-containerd-{id}.scope || true)\"\n",
        pre = preamble(&case, &config)
    );
    let r = v.sh(&script);
    let out = said(&r.stdout);
    assert!(r.ok(), "({}) {out:?}\n{}", r.code, r.stderr);
    let rel =
        format!("0::/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{id}.scope");
    assert_eq!(out["active"], "active", "{out:?}");
    assert_eq!(cpus(&out["cpus"]).len(), 1, "{out:?}");
    assert_eq!(
        cpus(&out["allowed"]),
        cpus(&out["cpus"]),
        "systemd's view: {out:?}"
    );
    assert_eq!(out["max"], "100000 100000");
    assert_eq!(out["init"], rel, "{out:?}");
    assert_eq!(
        out["exec"], rel,
        "the exec'd process is outside the scope: {out:?}"
    );
    assert_eq!(out["mem"], (96u64 << 20).to_string());
    let stats: Value =
        serde_json::from_str(&out["stats"]).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(
        stats["data"]["memory"]["usage"]["usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "no stats from the scope: {stats}"
    );
    assert_ne!(out["after"], "active", "{out:?}");
}

/// crun as the delegate on cgroup v2 (crun 1.8 refuses this host's v1
/// hybrid without hugetlb; the guest has none of that): the 1.5-CPU split
/// reaches crun's cgroup, and delete removes it.
#[test]
fn cgroup_v2_cpu_split_through_crun() {
    let v = vm();
    let config = guest_config(v, CRUN);
    let _cpus = guest_cpu_lock();
    let case = unique();
    let id = format!("{case}a");
    put_config(v, &case, "a", &["sleep", "600"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{case}/{id}"));
        c["linux"]["resources"]["cpu"] = json!({"quota": 150000, "period": 100000});
    });
    let script = format!(
        "{pre}G=/sys/fs/cgroup/{case}/{id}\n\
         trap 'br delete --force {id} 2>/dev/null; rmdir /sys/fs/cgroup/{case} 2>/dev/null; true' EXIT\n\
         mk a\nbr create --bundle /tmp/$CASE/a {id}\nbr start {id}\n\
         say runtime \"$(cat /proc/$(br state {id} | grep -o '\"pid\": [0-9]*' | grep -o '[0-9]*')/cgroup)\"\n\
         say cpus \"$(cat $G/cpuset.cpus.effective)\"\n\
         say max \"$(cat $G/cpu.max)\"\n\
         say ledger \"$(br cpus --json | tr -d '\\n')\"\n\
         br delete --force {id}\n\
         say gone \"$(test -e $G && echo no || echo yes)\"\n",
        pre = preamble(&case, &config)
    );
    let r = v.sh(&script);
    let out = said(&r.stdout);
    assert!(r.ok(), "({}) {out:?}\n{}", r.code, r.stderr);
    assert_eq!(out["runtime"], format!("0::/{case}/{id}"), "{out:?}");
    assert_eq!(cpus(&out["cpus"]).len(), 2, "exclusive + fragment: {out:?}");
    assert_eq!(out["max"], "150000 100000");
    assert!(out["ledger"].contains(&id), "{out:?}");
    assert_eq!(out["gone"], "yes", "{out:?}");
}
