//! The CPU-count conformance matrix: every language runtime installable here
//! (rows) asked for its CPU count in a container run through Docker with
//! berth-runtime, under each kind of CPU limit (columns), on runc and on the
//! built-in backend. Every cell must report the declared count, except the
//! cells listed in [`known_difference`], each with its reason (the README's
//! table shows the same); those are asserted to their known value, so a
//! change either way is noticed.

use berth_integration::berth::{cpu_lock, Backend};
use berth_integration::engines::docker::{docker, DockerContainer};
use berth_integration::names::unique;
use berth_integration::programs::{matrix_binds, matrix_rootfs, tar_rootfs};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The rows, in the order `/matrix.sh` prints them.
const ROWS: &[&str] = &[
    "c-nproc",
    "c-getconf",
    "c-sysconf",
    "c-glibc-no-preload",
    "c-static-glibc",
    "c-musl",
    "c-static-musl",
    "busybox-nproc",
    "go-1.19",
    "go-1.24",
    "java-17",
    "python-3.11-cpu_count",
    "python-3.11-affinity",
    "python-3.13-process_cpu_count",
    "node-cpus",
    "node-parallelism",
    "rust",
    "proc-cpuinfo",
    // What berth-runtime's exec gives a `docker exec`'d process: Docker
    // builds it from its own copy of the spec, which lacks Berth's variables.
    "exec-env-GOMAXPROCS",
];

/// A column: the docker flags, and the count the container should see.
struct Column {
    name: &'static str,
    flags: &'static [&'static str],
    declared: u32,
    /// Run with --cpus 1.5, then `docker update --cpus 0.5`, then ask.
    updated: bool,
}

fn columns(host: u32) -> Vec<Column> {
    vec![
        Column {
            name: "--cpus 1.5 (split)",
            flags: &["--cpus", "1.5"],
            declared: 2.min(host),
            updated: false,
        },
        Column {
            name: "--cpus 2 (exclusive)",
            flags: &["--cpus", "2"],
            declared: 2.min(host),
            updated: false,
        },
        Column {
            name: "--cpuset-cpus 0",
            flags: &["--cpuset-cpus", "0"],
            declared: 1,
            updated: false,
        },
        Column {
            name: "--cpus 0.5 (fragment)",
            flags: &["--cpus", "0.5"],
            declared: 1,
            updated: false,
        },
        Column {
            name: "update 1.5 -> 0.5",
            flags: &["--cpus", "1.5"],
            declared: 1,
            updated: true,
        },
    ]
}

/// Cells that cannot report the declared count, with the value they do
/// report and why. `affinity` is the size of the container's real cpuset.
fn known_difference(row: &str, col: &Column, affinity: u32) -> Option<(u32, &'static str)> {
    match row {
        // Static programs reading the affinity mask with a raw system call:
        // neither the library nor a file reaches them.
        "busybox-nproc" | "c-static-musl" if affinity != col.declared => Some((
            affinity,
            "static binary: counts the affinity mask by a raw system call (the cpuset, not the quota)",
        )),
        // Rust's std takes the smaller of the affinity mask and
        // floor(quota/period) (at least 1) from the cgroup itself.
        "rust" if col.name.starts_with("--cpus 1.5") => Some((
            1,
            "std reads the cgroup quota itself and rounds down (1.5 -> 1)",
        )),
        // libuv counts the cpuN lines of /proc/stat, whose counters are live:
        // no static file can stand in for it.
        "node-cpus" => Some((
            host_cpus(),
            "libuv counts the cpuN lines of /proc/stat, which only a live generator (lxcfs) could change",
        )),
        _ => None,
    }
}

fn parse(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Runs the matrix on `backend`; returns the table as markdown and the
/// failures.
fn run_matrix(backend: Backend, image: &str) -> (String, Vec<String>) {
    let host = host_cpus();
    let binds = matrix_binds();
    let mut failures = Vec::new();
    let cols = columns(host);
    let mut results: Vec<BTreeMap<String, String>> = Vec::new();
    let mut affinities = Vec::new();
    for col in &cols {
        let mut args: Vec<String> = vec![
            "--runtime".into(),
            backend.docker_runtime().into(),
            "--network".into(),
            "none".into(),
        ];
        for b in &binds {
            args.push("-v".into());
            args.push(b.clone());
        }
        args.extend(col.flags.iter().map(|s| s.to_string()));
        args.push(image.into());
        // The container's own process asks again and again (with the
        // environment of create); after an update it must see the new count
        // within a second.
        args.extend(["python3".into(), "-c".into(), LIVE_LOOP.into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = DockerContainer::start(&refs);
        if col.updated {
            let before = wait_for(&c.id, |v| !v.is_empty(), Duration::from_secs(10));
            assert_eq!(
                before.as_deref(),
                Some(col_initial(host).to_string().as_str()),
                "{}: before the update",
                backend.docker_runtime()
            );
            let r = docker().run(&["update", "--cpus", "0.5", &c.id]);
            assert!(r.ok(), "docker update: {}", r.stderr);
            let t = Instant::now();
            let after = wait_for(&c.id, |v| v == "1", Duration::from_secs(3));
            let took = t.elapsed();
            if after.is_none() || took > Duration::from_secs(1) {
                failures.push(format!("{}: a running Python did not see the update within 1 s (took {took:?}, saw {after:?})", backend.docker_runtime()));
            }
        }
        if !col.updated {
            let live = wait_for(&c.id, |v| !v.is_empty(), Duration::from_secs(10));
            if live.as_deref() != Some(col.declared.to_string().as_str()) {
                failures.push(format!(
                    "{} / {}: the container's own process (Python) saw {live:?}, want {}",
                    backend.docker_runtime(),
                    col.name,
                    col.declared
                ));
            }
        }
        let r = docker().run(&["exec", &c.id, "sh", "/matrix.sh"]);
        assert!(r.ok(), "matrix.sh: {}", r.stderr);
        let aff = docker().run(&[
            "exec",
            &c.id,
            "sh",
            "-c",
            "grep Cpus_allowed_list /proc/self/status | cut -f2",
        ]);
        let affinity = berth_runtime::spec::cpuset_count(aff.stdout.trim()).unwrap_or(0);
        affinities.push(affinity);
        results.push(parse(&r.stdout));
        let id = c.id.clone();
        drop(c);
        if let Some(dir) = view_dir(&id) {
            failures.push(format!(
                "{}: the CPU view {} outlived the container",
                backend.docker_runtime(),
                dir.display()
            ));
        }
    }
    let mut table = format!("| row ({}) |", backend.docker_runtime());
    for col in &cols {
        table.push_str(&format!(" {} |", col.name));
    }
    table.push('\n');
    table.push_str(&"|---".repeat(cols.len() + 1));
    table.push_str("|\n");
    for row in ROWS {
        table.push_str(&format!("| {row} |"));
        for (i, col) in cols.iter().enumerate() {
            let got = results[i].get(*row).cloned().unwrap_or_default();
            let (want, why) = match known_difference(row, col, affinities[i]) {
                Some((v, why)) => (v, Some(why)),
                None => (col.declared, None),
            };
            let cell = if got == want.to_string() {
                match why {
                    Some(_) if want != col.declared => {
                        format!(" {got} (declared {})* |", col.declared)
                    }
                    _ => format!(" {got} |"),
                }
            } else {
                failures.push(format!(
                    "{} / {row} / {}: got {got:?}, want {want}{}",
                    backend.docker_runtime(),
                    col.name,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                ));
                format!(" **{got}** (want {want}) |")
            };
            table.push_str(&cell);
        }
        table.push('\n');
    }
    (table, failures)
}

/// The container's main process: Python asking `os.cpu_count()` every 50 ms.
const LIVE_LOOP: &str = "import os,time\nwhile True:\n    open('/tmp/live.new','w').write(str(os.cpu_count()))\n    os.rename('/tmp/live.new','/tmp/live')\n    time.sleep(0.05)";

/// The count before the update (--cpus 1.5).
fn col_initial(host: u32) -> u32 {
    2.min(host)
}

/// The CPU view directory of container `id`, if one is left.
fn view_dir(id: &str) -> Option<std::path::PathBuf> {
    let views = berth_integration::berth::config()
        .with_file_name("state")
        .join("cpuview");
    std::fs::read_dir(views)
        .ok()?
        .flatten()
        .map(|r| r.path().join(id))
        .find(|p| p.exists())
}

/// Polls the live file until `ok` holds; returns the last value seen.
fn wait_for(id: &str, ok: impl Fn(&str) -> bool, limit: Duration) -> Option<String> {
    let t = Instant::now();
    let mut last = None;
    while t.elapsed() < limit {
        let r = docker().run(&["exec", id, "cat", "/tmp/live"]);
        let v = r.stdout.trim().to_string();
        if r.ok() && ok(&v) {
            return Some(v);
        }
        last = Some(v);
        std::thread::sleep(Duration::from_millis(20));
    }
    last.filter(|v| ok(v))
}

#[test]
fn every_runtime_sees_the_declared_count_on_runc_and_builtin() {
    let _g = cpu_lock();
    let rootfs = matrix_rootfs();
    let image = format!("berth/{}:matrix", unique());
    let r = docker().run(&["import", tar_rootfs(&rootfs).to_str().unwrap(), &image]);
    assert!(r.ok(), "docker import: {}", r.stderr);
    let mut all = Vec::new();
    let mut tables = String::new();
    for backend in [Backend::Runc, Backend::Builtin] {
        let (table, failures) = run_matrix(backend, &image);
        tables.push_str(&table);
        tables.push('\n');
        all.extend(failures);
    }
    let _ = docker().run(&["rmi", &image]);
    println!("{tables}");
    assert!(
        all.is_empty(),
        "cells that differ:\n{}\n\n{tables}",
        all.join("\n")
    );
}

/// The two synthetic files' mount destinations on every backend berth-runtime
/// runs (runc, crun, built in), straight from its command line: a busybox
/// bundle with half a CPU of quota sees one processor and `online` = `0`.
#[test]
fn runc_crun_and_builtin_accept_the_view_mounts() {
    use berth_integration::artifacts::{binary, fresh_dir};
    use berth_integration::cmd::{command, try_run_via_files};
    use berth_integration::images::{busybox_bundle, edit_config};
    berth_integration::engines::crun::ensure_hugetlb_hierarchy();
    for backend in ["runc", "crun", "libcontainer"] {
        let dir = fresh_dir("view-backends");
        let cfg = dir.join("runtime.toml");
        std::fs::write(
            &cfg,
            format!(
                "backend = \"{backend}\"\nstate_dir = \"{}\"\n[cpus]\nenabled = false\n[preload]\nlibrary = \"{}\"\n",
                dir.join("state").display(),
                berth_integration::berth::preload_library().display()
            ),
        )
        .unwrap();
        let bundle = busybox_bundle(&[
            "sh",
            "-c",
            "grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online; cat /sys/devices/system/cpu/possible",
        ]);
        edit_config(&bundle, |c| {
            c["linux"]["resources"] =
                serde_json::json!({"cpu": {"quota": 50000, "period": 100000}});
        });
        let id = unique();
        let r = try_run_via_files(
            command(binary("berth-runtime"))
                .arg("--berth-config")
                .arg(&cfg)
                .arg("--root")
                .arg(dir.join("root"))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id),
        );
        assert!(r.ok(), "{backend}: run: {}", r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
        assert_eq!(
            lines,
            ["1", "0", possible.trim()],
            "{backend}: cpuinfo entries, online, possible (stays real); stderr: {}",
            r.stderr
        );
    }
}
