//! `berth-bench [planner|runtime-cycle|builtin-cycle|docker-run|preload|cni-macvlan|cni-ovs-vlan|cni-share|nri|log-appender|docker-log-driver|all]`: Berth's benchmarks,
//! each measured interleaved against the reference it names, in one run on
//! one machine, printed as medians and a ratio. Run as root (`bench/run`).

use berth_integration::artifacts::{binary, fresh_dir};
use berth_integration::cmd::{sh, try_run};
use berth_integration::engines::docker::docker;
use berth_integration::images::busybox_bundle;
use berth_integration::names::unique;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Mounts a tmpfs on `dir` (unmounted with the scratch directory at exit),
/// for state that lives under /run on production hosts.
fn mount_tmpfs(dir: &Path) {
    sh(
        "mount",
        [
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A tmpfs for a runtime cycle (bundles, state roots and Berth's records
/// on a tmpfs, as under /run on production hosts; this machine's /run is on
/// disk): a Berth configuration of `config_head` plus its state_dir, and a
/// copy of one busybox `true` bundle per name. Returns the tmpfs, the
/// configuration's path and the bundles.
fn cycle_setup(dir: &str, config_head: &str, names: &[&str]) -> (PathBuf, String, Vec<PathBuf>) {
    let tmp = fresh_dir(dir);
    mount_tmpfs(&tmp);
    let cfg_path = tmp.join("runtime.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "{config_head}state_dir = \"{}\"\n",
            tmp.join("berth-state").display()
        ),
    )
    .expect("config");
    let src = busybox_bundle(&["true"]);
    let bundles = names
        .iter()
        .map(|name| {
            let dst = tmp.join(name);
            sh("cp", ["-a".as_ref(), src.as_os_str(), dst.as_os_str()]);
            dst
        })
        .collect();
    (tmp, cfg_path.display().to_string(), bundles)
}

/// create + start + delete --force of a busybox `true` bundle; milliseconds.
fn cycle(runtime: &Path, extra: &[&str], root: &Path, bundle: &Path) -> f64 {
    let id = unique();
    let rt = || {
        let mut c = Command::new(runtime);
        c.args(extra).arg("--root").arg(root);
        c
    };
    let t = Instant::now();
    assert!(
        quiet(rt().args(["create", "--bundle"]).arg(bundle).arg(&id)),
        "{} create failed",
        runtime.display()
    );
    assert!(quiet(rt().args(["start", &id])), "start failed");
    assert!(
        quiet(rt().args(["delete", "--force", &id])),
        "delete failed"
    );
    t.elapsed().as_secs_f64() * 1e3
}

fn runtime_cycle(n: usize) {
    let runc = berth_integration::cmd::which("runc").expect("runc");
    let berth = binary("berth-runtime");
    // A neutral configuration: Berth's wrapper cost, not extra container work.
    let (tmp, cfg, bundles) = cycle_setup("bench-tmpfs", "", &["runc-bundle", "berth-bundle"]);
    let (rb, bb) = (&bundles[0], &bundles[1]);
    let root = tmp.join("root");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let (x, y) = if i % 2 == 0 {
            let x = cycle(&runc, &[], &root, rb);
            (x, cycle(&berth, &["--berth-config", &cfg], &root, bb))
        } else {
            let y = cycle(&berth, &["--berth-config", &cfg], &root, bb);
            (cycle(&runc, &[], &root, rb), y)
        };
        if i >= 3 {
            a.push(x);
            b.push(y);
        }
    }
    let pass = pass_through(&runc, &berth, &cfg, &root, rb, bb, n * 4);
    let _ = sh("umount", ["-l".as_ref(), tmp.as_os_str()]);
    let (ma, mb) = (median(a), median(b));
    println!(
        "runtime-cycle (create+start+delete, busybox, tmpfs, n={n}): runc {ma:.2} ms, berth-runtime {mb:.2} ms median; \
         overhead {:+.2} ms (goal <= 3 ms); ratio {:.3} vs runc",
        mb - ma,
        mb / ma
    );
    let (pa, pb) = pass;
    println!(
        "pass-through verb (`state` of a created container, n={}): runc {pa:.3} ms, berth-runtime {pb:.3} ms median; \
         overhead {:+.3} ms (goal <= 0.3 ms); ratio {:.3} vs runc",
        n * 4,
        pb - pa,
        pb / pa
    );
}

/// `state` of a created container, runc and berth-runtime interleaved;
/// the medians in milliseconds.
fn pass_through(
    runc: &Path,
    berth: &Path,
    cfg: &str,
    root: &Path,
    rb: &Path,
    bb: &Path,
    n: usize,
) -> (f64, f64) {
    let cmd = |rt: &Path, extra: &[&str]| {
        let mut c = Command::new(rt);
        c.args(extra).arg("--root").arg(root);
        c
    };
    let runners: [(&Path, Vec<&str>, &Path); 2] =
        [(runc, vec![], rb), (berth, vec!["--berth-config", cfg], bb)];
    let ids: Vec<String> = runners
        .iter()
        .map(|(rt, extra, bundle)| {
            let id = unique();
            assert!(
                quiet(
                    cmd(rt, extra)
                        .args(["create", "--bundle"])
                        .arg(bundle)
                        .arg(&id)
                ),
                "{} create failed",
                rt.display()
            );
            id
        })
        .collect();
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..n + 10 {
        for k in 0..2 {
            let j = (i + k) % 2;
            let (rt, extra, _) = &runners[j];
            let t = Instant::now();
            assert!(
                quiet(cmd(rt, extra).args(["state", &ids[j]])),
                "state failed"
            );
            if i >= 10 {
                times[j].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    for ((rt, extra, _), id) in runners.iter().zip(&ids) {
        let _ = quiet(cmd(rt, extra).args(["delete", "--force", id]));
    }
    let [a, b] = times.map(median);
    (a, b)
}

/// The built-in backend against runc and crun: create+start+delete of the
/// same busybox bundle, the three interleaved (rotating who goes first).
fn builtin_cycle(n: usize) {
    berth_integration::engines::crun::ensure_hugetlb_hierarchy();
    let runc = berth_integration::cmd::which("runc").expect("runc");
    let crun = berth_integration::cmd::which("crun").expect("crun");
    let berth = binary("berth-runtime");
    let (tmp, cfg, bundles) = cycle_setup(
        "bench-builtin",
        "backend = \"libcontainer\"\n",
        &["runc", "crun", "builtin"],
    );
    let root = tmp.join("root");
    let runners: [(&Path, Vec<&str>); 3] = [
        (&runc, vec![]),
        (&crun, vec![]),
        (&berth, vec!["--berth-config", &cfg]),
    ];
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..n + 3 {
        for k in 0..3 {
            let j = (i + k) % 3;
            let (rt, extra) = &runners[j];
            let t = cycle(rt, extra, &root, &bundles[j]);
            if i >= 3 {
                times[j].push(t);
            }
        }
    }
    let _ = sh("umount", ["-l".as_ref(), tmp.as_os_str()]);
    let [r, c, b] = times.map(median);
    println!(
        "builtin-cycle (create+start+delete, busybox, tmpfs, n={n}): runc {r:.2} ms, crun {c:.2} ms, \
         berth-runtime built-in {b:.2} ms median; ratio {:.3} vs runc (goal < 1), {:.3} vs crun (goal <= 1.2)",
        b / r,
        b / c
    );
}

fn docker_run(n: usize) {
    let d = docker();
    let img = d.busybox_image();
    let run = |rt: &str| {
        let t = Instant::now();
        assert!(
            quiet(d.cli().args([
                "run",
                "--rm",
                "--network",
                "none",
                "--runtime",
                rt,
                img,
                "true"
            ])),
            "docker run --runtime {rt}"
        );
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n + 2 {
        let (x, y) = if i % 2 == 0 {
            let x = run("runc");
            (x, run("berth"))
        } else {
            let y = run("berth");
            (run("runc"), y)
        };
        if i >= 2 {
            a.push(x);
            b.push(y);
        }
    }
    let (ma, mb) = (median(a), median(b));
    println!(
        "docker-run (docker run --rm true, n={n}): runc {ma:.1} ms, berth {mb:.1} ms median; ratio {:.3} vs runc (goal <= 1.02)",
        mb / ma
    );
}

fn preload() {
    let dir = fresh_dir("bench-preload");
    let src = dir.join("bench_preload.c");
    std::fs::write(&src, include_str!("../../fixtures/bench_preload.c")).expect("write");
    let bin = dir.join("bench_preload");
    sh(
        "gcc",
        [
            "-O2".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            src.as_os_str(),
        ],
    );
    let lib = binary("libberth_cpus.so");
    // The live count file, as the runtime writes it for a container.
    let view = berth_runtime::cpuview::CpuView::at(dir.join("view"));
    view.write(1, 0).expect("count file");
    let count_file = view.file(berth_runtime::cpuview::COUNT_FILE);
    // 0: native, 1: the library with BERTH_NPROC, 2: with the live count file.
    let measure = |mode: u8| -> (f64, f64) {
        let mut c = Command::new(&bin);
        if mode > 0 {
            c.env("LD_PRELOAD", &lib).env("BERTH_NPROC", "1");
        }
        if mode == 2 {
            c.env("BERTH_NPROC_FILE", &count_file);
        }
        let r = try_run(&mut c);
        assert!(r.ok(), "bench_preload: {}", r.stderr);
        let v: Vec<f64> = r
            .stdout
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (v[0], v[1])
    };
    let mut s: [Vec<f64>; 3] = Default::default();
    let mut a: [Vec<f64>; 3] = Default::default();
    for _ in 0..7 {
        for mode in 0..3u8 {
            let (x, y) = measure(mode);
            s[mode as usize].push(x);
            a[mode as usize].push(y);
        }
    }
    let [ns, nw, nf] = s.map(median);
    let [as_, aw, af] = a.map(median);
    println!(
        "preload sysconf(_SC_NPROCESSORS_ONLN): native {ns:.1} ns, with libberth_cpus {nw:.1} ns (ratio {:.2}), with the live count file {nf:.1} ns per call; ratio {:.2} vs native (goal <= 2, < 50 ns)",
        nw / ns,
        nf / ns
    );
    println!(
        "preload sched_getaffinity: native {as_:.1} ns, with libberth_cpus {aw:.1} ns (ratio {:.2}), with the live count file {af:.1} ns per call; ratio {:.2} vs native (goal <= 2, < 50 ns)",
        aw / as_,
        af / as_
    );
}

/// berth-nri: CreateContainer handling time per call as the ledger fills to
/// 1000 containers (in process, state on a tmpfs; goal p99 < 1 ms), and CRI
/// pod create-to-running on containerd 1.7 with the plugin against without
/// it (goal <= 1.02).
fn nri(pods: usize) {
    nri_handling();
    nri_pods(pods);
}

/// berth-nri's CreateContainer handling time, in process, as the ledger
/// fills to 1000 containers.
fn nri_handling() {
    use berth_nri::plugin::Handler;
    use berth_nri::proto;
    let dir = fresh_dir("bench-nri");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    mount_tmpfs(&state);
    let runc_root = state.join("runc");
    let text = format!(
        "state_dir = \"{}\"\n[cpus]\nbase = 1000\n[preload]\nlibrary = \"{}\"\n",
        state.display(),
        berth_integration::berth::preload_library().display()
    );
    let cfg = berth_runtime::config::RuntimeConfig::parse(&text, &dir.join("runtime.toml"))
        .expect("bench config");
    let mut h = berth_nri::berth::Berth::new(cfg, runc_root.clone());
    let mut times = Vec::new();
    for i in 0..1000 {
        let id = format!("bench{i:04}");
        // runc's state, so the ledger's GC sees a live container.
        std::fs::create_dir_all(runc_root.join(&id)).expect("runc state dir");
        let req = proto::ContainerRequest {
            pod: None,
            container: Some(proto::Container {
                id: id.clone(),
                linux: Some(proto::LinuxContainer {
                    resources: Some(proto::LinuxResources {
                        cpu: Some(proto::LinuxCpu {
                            quota: Some(proto::OptionalInt64 { value: 100 }),
                            period: Some(proto::OptionalUInt64 { value: 100_000 }),
                            ..Default::default()
                        }),
                    }),
                    cgroups_path: format!("/berth-bench/{id}"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let t = Instant::now();
        h.create_container(req).expect("CreateContainer");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let last: Vec<f64> = times[900..].to_vec();
    let p99 = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[(v.len() * 99).div_ceil(100) - 1]
    };
    let (p99_all, p99_last) = (p99(times.clone()), p99(last.clone()));
    println!(
        "nri CreateContainer handling (in process, 0.001 CPU each, 1000 containers): median {:.3} ms, p99 {p99_all:.3} ms; at 900-1000 containers median {:.3} ms, p99 {p99_last:.3} ms; p99 ratio {:.2} vs the 1 ms goal",
        median(times),
        median(last),
        p99_last / 1.0
    );
}

/// CRI pod create-to-running with berth-nri against without it, in rounds
/// of `pods / rounds` each way.
fn nri_pods(pods: usize) {
    let dir = fresh_dir("bench-nri-pods");
    let rounds = 4;
    let c = berth_integration::engines::containerd::containerd_nri();
    let run_pod = |label: &str| -> f64 {
        let t = Instant::now();
        let mut pod = berth_integration::engines::cri::Pod::run_on(c, "").expect("RunPodSandbox");
        pod.start_container(&["sleep", "60"], Some(0.1))
            .unwrap_or_else(|e| panic!("{label}: CreateContainer: {e}"));
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(pod);
        ms
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let _ = run_pod("warm-up");
    for round in 0..rounds {
        for _ in 0..pods / rounds {
            without.push(run_pod("without"));
        }
        let log = dir.join(format!("berth-nri-{round}.log"));
        let mut plugin = berth_integration::process::Daemon::spawn(
            "berth-nri",
            berth_integration::cmd::command(binary("berth-nri"))
                .arg("--socket")
                .arg(c.nri_socket())
                .arg("--berth-config")
                .arg(berth_integration::berth::config()),
            &log,
        );
        let up = berth_integration::process::wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("synchronized with the runtime"))
        });
        assert!(up, "berth-nri did not register");
        for _ in 0..pods / rounds {
            with.push(run_pod("with"));
        }
        plugin.stop(Duration::from_secs(5));
    }
    let (a, b) = (median(without), median(with));
    println!(
        "nri pod create-to-running (CRI, containerd 1.7.24, n={pods} each): without berth-nri {a:.1} ms, with {b:.1} ms median; ratio {:.3} (goal <= 1.02)",
        b / a
    );
}

/// A small deterministic generator, so both fits see the same stream.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn planner() {
    use berth_runtime::config::RuntimeConfig;
    use berth_runtime::cpus::ledger::Store;
    use berth_runtime::cpus::plan::{Fit, Host, Mode};
    use berth_runtime::cpus::topology::Topology;
    use std::collections::BTreeSet;
    let topo = Topology::synthetic(4, 32, 2);
    // Speed: plan + durable ledger update per create with 1000 live containers,
    // the ledger on a tmpfs as /run/berth is on production hosts.
    let tmp = fresh_dir("bench-ledger");
    mount_tmpfs(&tmp);
    let cfg = RuntimeConfig {
        state_dir: tmp.join("state"),
        ..RuntimeConfig::default()
    };
    let store = Store::new(&cfg);
    let mut rng = Lcg(42);
    let root = std::path::PathBuf::from("/run/bench-root");
    store
        .transaction(&cfg, &topo, |l| {
            for i in 0..1000 {
                let pieces = 5 + (rng.next() % 40) as u32; // 0.05..0.45 CPUs
                l.allocate(Some(&root), &format!("c{i}"), Mode::Split, pieces)
                    .expect("populate");
            }
            Ok(())
        })
        .expect("populate ledger");
    let mut times = Vec::new();
    for i in 0..300 {
        let pieces = 5 + (rng.next() % 40) as u32;
        let t = Instant::now();
        store
            .transaction(&cfg, &topo, |l| {
                l.gc_some(berth_runtime::cpus::GC_PER_CREATE);
                l.remove(&berth_runtime::records::container_key(
                    Some(&root),
                    &format!("c{i}"),
                ));
                l.allocate(Some(&root), &format!("n{i}"), Mode::Split, pieces)
                    .map_err(|e| berth_runtime::Error::Cpu(e.to_string()))?;
                Ok(())
            })
            .expect("create");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = sh("umount", ["-l".as_ref(), tmp.as_os_str()]);
    println!("planner speed (256 CPUs, 4 nodes, SMT2, 1000 live containers, ledger on tmpfs): {:.3} ms median per create incl. ledger update (goal < 1 ms)", median(times));
    // Packing: containers placed before the first refusal, same request stream.
    let mut ratios = Vec::new();
    let (mut best_total, mut first_total) = (0usize, 0usize);
    for seed in 1..=20u64 {
        let place = |fit: Fit| {
            let mut h = Host::new(topo.clone(), 100, BTreeSet::new(), 1.0);
            h.fit = fit;
            let mut rng = Lcg(seed);
            let mut n = 0;
            loop {
                let pieces = 10 + (rng.next() % 290) as u32; // 0.1..3.0 CPUs
                if h.allocate(&format!("c{n}"), Mode::Split, pieces).is_err() {
                    return n;
                }
                n += 1;
            }
        };
        let (b, f) = (place(Fit::Best), place(Fit::First));
        best_total += b;
        first_total += f;
        ratios.push(b as f64 / f as f64);
    }
    println!(
        "planner packing (20 random streams of 0.1-3.0 CPU requests, 256 CPUs): best-fit placed {best_total}, first-fit {first_total} before the first refusal; ratio {:.3} vs first-fit (median per stream {:.3})",
        best_total as f64 / first_total as f64,
        median(ratios)
    );
}

/// Median ms of ADD and of DEL for each of two (plugin, conf) pairs, each in
/// its own fresh netns, interleaved over `n` rounds after 5 of warm-up.
fn interleaved_add_del(n: usize, calls: [(&Path, &serde_json::Value); 2]) -> [(f64, f64); 2] {
    use berth_integration::cni::Call;
    let ns = [
        berth_integration::net::Netns::new(),
        berth_integration::net::Netns::new(),
    ];
    let mut add = [Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new()];
    for i in 0..n + 5 {
        for k in 0..2 {
            let j = (i + k) % 2;
            let (plugin, conf) = calls[j];
            let id = unique();
            let t = Instant::now();
            let a = Call::new(plugin, "ADD", &id, Some(&ns[j].path())).run(conf);
            let ta = t.elapsed().as_secs_f64() * 1000.0;
            assert!(a.ok, "{} ADD: {}", plugin.display(), a.stdout);
            let t = Instant::now();
            let d = Call::new(plugin, "DEL", &id, Some(&ns[j].path())).run(conf);
            let td = t.elapsed().as_secs_f64() * 1000.0;
            assert!(d.ok, "{} DEL: {}", plugin.display(), d.stdout);
            if i >= 5 {
                add[j].push(ta);
                del[j].push(td);
            }
        }
    }
    let [a0, a1] = add;
    let [d0, d1] = del;
    [(median(a0), median(d0)), (median(a1), median(d1))]
}

/// ADD and DEL per operation: berth-macvlan vs the reference macvlan plugin,
/// same config (CNI 1.0.0, bridge mode, host-local IPAM), interleaved.
fn cni_macvlan(n: usize) {
    use berth_integration::cni::{berth_macvlan, host_local, REFERENCE_MACVLAN};
    use berth_integration::net::ParentLink;
    let master = ParentLink::new();
    let name = unique();
    let plugins = [
        (
            "reference macvlan",
            Path::new(REFERENCE_MACVLAN).to_path_buf(),
            "macvlan",
        ),
        ("berth-macvlan", berth_macvlan(), "berth-macvlan"),
    ];
    let confs: Vec<serde_json::Value> = plugins
        .iter()
        .map(|(_, _, ty)| {
            serde_json::json!({
                "cniVersion": "1.0.0", "name": name, "type": ty, "master": master.name,
                "ipam": host_local("10.250.0.0/24", "10.250.0.1", &fresh_dir("bench-ipam")),
            })
        })
        .collect();
    let [(ra, rd), (ba, bd)] =
        interleaved_add_del(n, [(&plugins[0].1, &confs[0]), (&plugins[1].1, &confs[1])]);
    println!(
        "cni-macvlan ADD (n={n}, interleaved, host-local IPAM): berth-macvlan {ba:.2} ms vs reference {ra:.2} ms, ratio {:.3} (goal <= 0.25)",
        ba / ra
    );
    println!(
        "cni-macvlan DEL (n={n}, interleaved, host-local IPAM): berth-macvlan {bd:.2} ms vs reference {rd:.2} ms, ratio {:.3} (goal <= 0.25)",
        bd / rd
    );
}

/// ADD and DEL per operation of berth-macvlan with a `bandwidthShare`
/// guarantee (admission, the book, two classes and filters; the first
/// grant builds the trees, so a second attachment holds them up) against
/// the same plugin without, interleaved. Static IPs, no IPAM.
fn cni_share(n: usize) {
    use berth_integration::cni::{berth_macvlan, Call};
    use berth_integration::net::{Netns, Veth};
    let link = Veth::new();
    let name = unique();
    let base = serde_json::json!({
        "cniVersion": "1.0.0", "name": name, "type": "berth-macvlan", "master": link.host,
        "runtimeConfig": {"ips": ["10.251.0.5/24"]},
    });
    let mut shared = base.clone();
    shared["bandwidthShare"] =
        serde_json::json!({"linkRate": 1_000_000_000u64, "guarantee": 10_000_000});
    let confs = [base, shared];
    let holder = Netns::new();
    let hold = Call::new(
        &berth_macvlan(),
        "ADD",
        "bench-holder",
        Some(&holder.path()),
    )
    .run(&{
        let mut c = confs[1].clone();
        c["runtimeConfig"]["ips"] = serde_json::json!(["10.251.0.4/24"]);
        c
    });
    assert!(hold.ok, "holder ADD: {}", hold.stdout);
    let plugin = berth_macvlan();
    let [(pa, pd), (sa, sd)] = interleaved_add_del(n, [(&plugin, &confs[0]), (&plugin, &confs[1])]);
    let del_holder = Call::new(
        &berth_macvlan(),
        "DEL",
        "bench-holder",
        Some(&holder.path()),
    )
    .run(&confs[1]);
    assert!(del_holder.ok, "holder DEL: {}", del_holder.stdout);
    println!(
        "cni-share ADD (n={n}, interleaved, berth-macvlan): with a guarantee {sa:.2} ms vs without {pa:.2} ms, ratio {:.3}",
        sa / pa
    );
    println!(
        "cni-share DEL (n={n}, interleaved, berth-macvlan): with a guarantee {sd:.2} ms vs without {pd:.2} ms, ratio {:.3}",
        sd / pd
    );
}

/// ADD and DEL per operation: berth-ovs-vlan (veth + OVSDB port, access
/// VLAN, no IPAM) against `ovs-vsctl add-port` / `del-port` of a ready veth,
/// interleaved, on the private userspace OVS.
fn cni_ovs_vlan(n: usize) {
    use berth_integration::cni::{berth_ovs_vlan, Call};
    use berth_integration::net::{Netns, Veth};
    use berth_integration::ovs::{ovs, OvsBridge};
    let br = OvsBridge::new();
    let c = serde_json::json!({
        "cniVersion": "1.1.0", "name": unique(), "type": "berth-ovs-vlan",
        "bridge": br.name, "vlan": 100,
        "socket_file": format!("unix:{}", ovs().db_socket.display()),
    });
    let ns = Netns::new();
    let (mut add, mut del, mut vadd, mut vdel) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let id = unique();
        let t = Instant::now();
        let a = Call::new(&berth_ovs_vlan(), "ADD", &id, Some(&ns.path())).run(&c);
        let ta = t.elapsed().as_secs_f64() * 1000.0;
        assert!(a.ok, "ADD: {}", a.stdout);
        let t = Instant::now();
        let d = Call::new(&berth_ovs_vlan(), "DEL", &id, Some(&ns.path())).run(&c);
        let td = t.elapsed().as_secs_f64() * 1000.0;
        assert!(d.ok, "DEL: {}", d.stdout);
        let v = Veth::new();
        let t = Instant::now();
        assert!(quiet(
            ovs()
                .vsctl_cmd()
                .args(["add-port", &br.name, &v.host, "tag=100"])
        ));
        let tva = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        assert!(quiet(
            ovs().vsctl_cmd().args(["del-port", &br.name, &v.host])
        ));
        let tvd = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 3 {
            add.push(ta);
            del.push(td);
            vadd.push(tva);
            vdel.push(tvd);
        }
    }
    let (a, d, va, vd) = (median(add), median(del), median(vadd), median(vdel));
    println!(
        "cni-ovs-vlan (n={n}): berth-ovs-vlan ADD {a:.2} ms + DEL {d:.2} ms = {:.2} ms (goal < 15; includes creating and deleting the veth) vs ovs-vsctl add-port {va:.2} ms + del-port {vd:.2} ms = {:.2} ms (port only); ratio {:.3}",
        a + d,
        va + vd,
        (a + d) / (va + vd)
    );
}

/// The same envelopes the appender would send, for the raw producer.
fn envelope_lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{prefix}-{i} GET /api/v1/items?page={} 200 {}ms user-agent=curl/7.88",
                i % 97,
                i % 250
            )
        })
        .collect()
}

/// The Docker logging plugin under overload: a container paced at 100 MB/s
/// of 1000-byte lines, the broker down, against `--log-driver none` and
/// `json-file` (interleaved, 5 rounds of 500 MB): the writer's throughput
/// and dockerd's RSS.
fn docker_log_driver() {
    use berth_integration::engines::log_plugin::{broker_down_yaml, log_plugin, overload};
    let p = log_plugin();
    let cfg = p.write_config("bench-overload.yaml", &broker_down_yaml());
    let opt = format!("config={cfg}");
    let drivers: [(&str, Vec<&str>); 3] = [
        ("none", vec!["--log-driver", "none"]),
        ("json-file", vec!["--log-driver", "json-file"]),
        ("berth", vec!["--log-driver", &p.name, "--log-opt", &opt]),
    ];
    for (_, args) in &drivers {
        overload(args, 100);
    }
    let mut rates = vec![Vec::new(); 3];
    let mut growth = [0u64; 3];
    for _ in 0..5 {
        for (i, (_, args)) in drivers.iter().enumerate() {
            let o = overload(args, 500);
            rates[i].push(o.mb_per_s);
            growth[i] = growth[i].max(o.rss_peak_kib.saturating_sub(o.rss_before_kib));
        }
    }
    let m: Vec<f64> = rates.into_iter().map(median).collect();
    println!(
        "docker log driver, writer paced at 100 MB/s, broker down: none {:.1} MB/s, json-file {:.1} MB/s ({:.3}x none), berth {:.1} MB/s ({:.3}x none, {:.3}x json-file; goal >= 0.9x none)",
        m[0],
        m[1],
        m[1] / m[0],
        m[2],
        m[2] / m[0],
        m[2] / m[1]
    );
    println!(
        "docker log driver, dockerd RSS growth during a run (largest of 5): none {} KiB, json-file {} KiB, berth {} KiB",
        growth[0], growth[1], growth[2]
    );
}

/// berth-log-appender against a minimal raw rdkafka producer (same settings,
/// broker and input); write() latency while the broker is down; RSS at 10x
/// the rate limit.
fn log_appender() {
    use berth_integration::appender::AppenderConfig;
    use berth_integration::broker::Broker;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use std::io::Write;
    let broker = Broker::start();
    let n = 300_000;
    // Throughput: interleaved rounds, each on a fresh topic.
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let name = format!("{}-{round}", unique());
        let lines = envelope_lines(&name, n);
        broker.create_topic(&format!("{name}-a"), 1);
        broker.create_topic(&format!("{name}-r"), 1);
        let cfg = AppenderConfig::new(&format!(
            "kafka:\n  brokers: [\"{}\"]\n  topic: \"{name}-a\"\nmetrics:\n  log_interval_secs: 0\n",
            broker.bootstrap()
        ));
        let input = fresh_dir("bench-input").join("lines");
        std::fs::write(&input, lines.join("\n") + "\n").expect("input");
        let t = Instant::now();
        let st = Command::new(binary("berth-log-appender"))
            .arg("--config")
            .arg(&cfg.path)
            .args(["--stdin", "--name", &name])
            .stdin(std::fs::File::open(&input).expect("open input"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("appender");
        assert!(st.success());
        ours.push(n as f64 / t.elapsed().as_secs_f64());
        // The raw producer: same librdkafka settings, records the appender
        // would build (envelopes made up front, outside the clock).
        let c: berth_log_appender::config::Config =
            berth_log_appender::config::Config::load(&cfg.path).expect("config");
        let origin = berth_log_appender::record::Origin {
            container_id: name.clone(),
            container_name: name.clone(),
            host: "h".into(),
            ..Default::default()
        };
        let recs: Vec<berth_log_appender::record::Record> = lines
            .iter()
            .map(|l| {
                berth_log_appender::record::make(
                    &c,
                    &origin,
                    "stdout",
                    l.as_bytes(),
                    berth_log_appender::record::Cut::Whole,
                )
            })
            .collect();
        let producer: ThreadedProducer<DefaultProducerContext> =
            berth_log_appender::kafka::client_config(&c)
                .create()
                .expect("raw producer");
        let topic = format!("{name}-r");
        let t = Instant::now();
        for r in &recs {
            let mut rec = BaseRecord::to(&topic)
                .payload(&r.payload)
                .key(r.key.as_deref().unwrap_or_default());
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
        raw.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let (o, r) = (median(ours), median(raw));
    println!(
        "log-appender throughput (n={n} lines, median of 3 interleaved runs): berth-log-appender {o:.0} lines/s end to end vs raw rdkafka producer {r:.0} lines/s; ratio {:.3} (goal >= 0.9)",
        o / r
    );

    // write() latency while the broker is down, 1M lines.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let cfg = AppenderConfig::new(&format!(
        "kafka:\n  brokers: [\"127.0.0.1:{dead}\"]\n  topic: t\nspill:\n  dir: SPILL_DIR\n  max_bytes: 2147483648\nmetrics:\n  log_interval_secs: 0\n"
    ));
    let mut child = Command::new(binary("berth-log-appender"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["--stdin", "--name", &unique(), "--drain-seconds", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("appender");
    let mut w = child.stdin.take().expect("stdin");
    let mut lat = Vec::with_capacity(1_000_000);
    let line =
        b"2026-11-22T02:00:00Z INFO request served path=/api/v1/items status=200 took=12ms\n";
    for _ in 0..1_000_000 {
        let t = Instant::now();
        w.write_all(line).expect("write");
        lat.push(t.elapsed().as_nanos() as u64);
    }
    drop(w);
    let _ = child.wait();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    println!(
        "log-appender write() with the broker down (1M lines, one write each): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.0} us (goal p99.9 < 100 us)",
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0)
    );

    // RSS at 10x the rate limit for 60 s.
    let name = unique();
    broker.create_topic(&name, 1);
    let cap_mb = 64;
    let cfg = AppenderConfig::new(&format!(
        "kafka:\n  brokers: [\"{}\"]\n  topic: \"{name}\"\nrate_limit:\n  lines_per_sec: 2000\nmemory_max_bytes: {}\nmetrics:\n  log_interval_secs: 0\n",
        broker.bootstrap(),
        cap_mb << 20
    ));
    let mut child = Command::new(binary("berth-log-appender"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["--stdin", "--name", &name, "--drain-seconds", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("appender");
    let pid = child.id();
    let mut w = child.stdin.take().expect("stdin");
    let start = Instant::now();
    let mut i = 0u64;
    let mut peak_kb = 0u64;
    while start.elapsed() < Duration::from_secs(60) {
        // 20 000 lines/s: 10x the limit.
        for _ in 0..200 {
            let _ = writeln!(w, "{name}-{i} {}", "p".repeat(150));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
        if i.is_multiple_of(20_000) {
            peak_kb = peak_kb.max(berth_integration::process::rss_kib(pid));
        }
    }
    drop(w);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "log-appender RSS at 10x the rate limit for 60 s ({i} lines, memory cap {cap_mb} MiB): peak {:.1} MiB (goal <= cap + 32 = {} MiB)",
        peak_kb as f64 / 1024.0,
        cap_mb + 32
    );
}

fn main() {
    berth_integration::cleanup::tear_down_on_panic();
    berth_integration::require_root();
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match what.as_str() {
        "runtime-cycle" => runtime_cycle(80),
        "builtin-cycle" => builtin_cycle(80),
        "docker-run" => docker_run(40),
        "preload" => preload(),
        "planner" => planner(),
        "cni-macvlan" => cni_macvlan(100),
        "cni-ovs-vlan" => cni_ovs_vlan(60),
        "cni-share" => cni_share(100),
        "nri" => nri(40),
        "nri-handling" => nri_handling(),
        "nri-pods" => nri_pods(40),
        "log-appender" => log_appender(),
        "docker-log-driver" => docker_log_driver(),
        "all" => {
            log_appender();
            docker_log_driver();
            cni_macvlan(100);
            cni_ovs_vlan(60);
            cni_share(100);
            nri(40);
            planner();
            preload();
            runtime_cycle(80);
            builtin_cycle(80);
            docker_run(40);
        }
        other => {
            eprintln!(
                "usage: berth-bench [planner|runtime-cycle|builtin-cycle|docker-run|preload|cni-macvlan|cni-ovs-vlan|cni-share|nri|nri-handling|nri-pods|log-appender|docker-log-driver|all] (not {other:?})"
            );
            std::process::exit(2);
        }
    }
}
