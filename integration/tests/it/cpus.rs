//! libberth_cpus.so: programs see the configured CPU count, exactly the real
//! one without it, on glibc and musl, on the host and inside containers run
//! through berth-runtime.

use berth_integration::artifacts::binary;
use berth_integration::berth::preload_library;
use berth_integration::cmd::{command, sh, try_run, Ran};
use berth_integration::engines::docker::docker;
use berth_integration::names::unique;
use berth_integration::programs::{glibc_probe, glibc_rootfs, musl_probe, musl_rootfs, tar_rootfs};
use std::process::Command;

fn real_cpus() -> u32 {
    sh("nproc", std::iter::empty::<&str>())
        .trim()
        .parse()
        .expect("nproc")
}

fn with(var: Option<(&str, &str)>, program: &str, args: &[&str]) -> Ran {
    let mut c = Command::new(program);
    c.args(args)
        .env("LD_PRELOAD", preload_library())
        .env_remove("BERTH_NPROC")
        .env_remove("LIBSYSCONFCPUS")
        .env_remove("CONTAINER_CORE_LIMIT");
    if let Some((k, v)) = var {
        c.env(k, v);
    }
    let r = try_run(&mut c);
    assert!(
        r.ok(),
        "{program} {args:?} with {var:?} failed: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("symbol") && !r.stderr.contains("version"),
        "loader complained: {}",
        r.stderr
    );
    r
}

fn out(var: Option<(&str, &str)>, program: &str, args: &[&str]) -> String {
    with(var, program, args).stdout.trim().to_string()
}

const JAVA_PROBE: &str = "public class AP { public static void main(String[] a) { System.out.println(Runtime.getRuntime().availableProcessors()); } }";

fn java(var: Option<(&str, &str)>, container_support: bool) -> String {
    let dir = berth_integration::artifacts::fresh_dir("java");
    let src = dir.join("AP.java");
    std::fs::write(&src, JAVA_PROBE).unwrap();
    let flag = if container_support {
        "-XX:+UseContainerSupport"
    } else {
        "-XX:-UseContainerSupport"
    };
    out(var, "java", &["-Xshare:off", flag, src.to_str().unwrap()])
}

#[test]
fn host_programs_see_berth_nproc() {
    let n = Some(("BERTH_NPROC", "1"));
    assert!(
        real_cpus() >= 2,
        "this test needs a host with at least 2 CPUs"
    );
    assert_eq!(out(n, "nproc", &[]), "1");
    assert_eq!(out(n, "getconf", &["_NPROCESSORS_ONLN"]), "1");
    assert_eq!(
        out(
            n,
            "/usr/bin/python3",
            &[
                "-c",
                "import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))"
            ]
        ),
        "1 1"
    );
    assert_eq!(
        out(n, binary("berth-print-cpus").to_str().unwrap(), &[]),
        "1"
    );
    assert_eq!(java(n, true), "1", "Java 17 with container support");
    assert_eq!(java(n, false), "1", "Java 17 with -XX:-UseContainerSupport");
    let probe = out(n, glibc_probe().to_str().unwrap(), &[]);
    let real = real_cpus().to_string();
    assert_eq!(
        probe,
        format!("1 1 1 {real}"),
        "ONLN, get_nprocs, affinity trimmed; CONF stays real"
    );
    // By design CONF (and so `nproc --all`) stays the host's: see the library docs.
    assert_eq!(out(n, "nproc", &["--all"]), real);
}

#[test]
fn without_a_count_everything_is_real() {
    let real = real_cpus().to_string();
    assert_eq!(out(None, "nproc", &[]), real);
    assert_eq!(out(None, "getconf", &["_NPROCESSORS_ONLN"]), real);
    assert_eq!(
        out(
            None,
            "/usr/bin/python3",
            &[
                "-c",
                "import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))"
            ]
        ),
        format!("{real} {real}")
    );
    assert_eq!(
        out(None, binary("berth-print-cpus").to_str().unwrap(), &[]),
        real
    );
    assert_eq!(java(None, false), real);
    assert_eq!(
        out(None, glibc_probe().to_str().unwrap(), &[]),
        format!("{real} {real} {real} {real}")
    );
}

#[test]
fn compatibility_variables_and_fractions() {
    assert_eq!(out(Some(("LIBSYSCONFCPUS", "1")), "nproc", &[]), "1");
    assert_eq!(out(Some(("CONTAINER_CORE_LIMIT", "1")), "nproc", &[]), "1");
    assert_eq!(
        out(Some(("BERTH_NPROC", "0.3")), "nproc", &[]),
        "1",
        "a fraction rounds up"
    );
    let real = real_cpus();
    assert_eq!(
        out(Some(("BERTH_NPROC", "1.5")), "nproc", &[]),
        2.min(real).to_string()
    );
    assert_eq!(
        out(Some(("BERTH_NPROC", "64")), "nproc", &[]),
        real.to_string(),
        "never more than the real count"
    );
}

#[test]
fn bad_values_pass_through_and_never_crash() {
    let real = real_cpus().to_string();
    for v in [
        "0",
        "-3",
        "abc",
        "1e9",
        "",
        " ",
        "99999999999999999999",
        "1.2.3",
        "0x2",
    ] {
        assert_eq!(
            out(Some(("BERTH_NPROC", v)), "nproc", &[]),
            real,
            "BERTH_NPROC={v:?}"
        );
        assert_eq!(
            out(
                Some(("BERTH_NPROC", v)),
                "/usr/bin/python3",
                &["-c", "import os; print(os.cpu_count())"]
            ),
            real,
            "{v:?}"
        );
    }
    // The opt-in warning goes to stderr only.
    let r = with(Some(("BERTH_NPROC", "abc")), "nproc", &[]);
    assert!(r.stderr.is_empty());
    let mut c = command("nproc");
    c.env("LD_PRELOAD", preload_library())
        .env("BERTH_NPROC", "abc")
        .env("BERTH_NPROC_WARN", "1");
    let r = try_run(&mut c);
    assert!(
        r.ok() && r.stderr.contains("libberth_cpus"),
        "warning expected: {:?}",
        r.stderr
    );
    assert_eq!(r.stdout.trim(), real);
}

#[test]
fn musl_programs_see_berth_nproc() {
    let probe = musl_probe().to_str().unwrap().to_string();
    let real = real_cpus().to_string();
    assert_eq!(
        out(Some(("BERTH_NPROC", "1")), &probe, &[]),
        format!("1 1 1 {real}")
    );
    assert_eq!(
        out(None, &probe, &[]),
        format!("{real} {real} {real} {real}")
    );
}

#[test]
fn imports_are_pinned_for_old_glibc_and_musl() {
    let dump = sh("objdump", ["-T".as_ref(), preload_library().as_os_str()]);
    let mut imports = Vec::new();
    for line in dump.lines().filter(|l| l.contains("*UND*")) {
        let name = line.split_whitespace().last().unwrap_or("").to_string();
        if let Some(v) = line.split_whitespace().find(|w| w.starts_with("(GLIBC_")) {
            let v = v
                .trim_matches(|c| c == '(' || c == ')')
                .trim_start_matches("GLIBC_");
            let parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            assert!(
                parts[0] == 2 && parts.get(1).copied().unwrap_or(0) <= 17,
                "{name} needs GLIBC_{v} (> 2.17)"
            );
        }
        imports.push(name);
    }
    let allowed = [
        "dlsym",
        "open",
        "read",
        "mmap",
        "close",
        "abort",
        "getenv",
        "getpid",
        "write",
        "strlen",
        "__cxa_finalize",
        "__gmon_start__",
        "_ITM_deregisterTMCloneTable",
        "_ITM_registerTMCloneTable",
    ];
    for i in &imports {
        assert!(
            allowed.contains(&i.as_str()),
            "unexpected import {i} (musl may lack it)"
        );
    }
}

fn import(rootfs: &std::path::Path) -> String {
    let name = format!("berth/{}:test", unique());
    let r = docker().run(&["import", tar_rootfs(rootfs).to_str().unwrap(), &name]);
    assert!(r.ok(), "docker import: {}", r.stderr);
    name
}

#[test]
fn containers_with_cpus_1_see_one_cpu_on_glibc_and_musl() {
    let _g = berth_integration::berth::cpu_lock();
    let glibc = import(&glibc_rootfs(true));
    // The last line: the loader ran the library's initialiser (a library
    // mounted noexec cannot be mapped, and the loader only warns).
    let r = docker().run_berth(&["--cpus", "1"], &glibc, &["sh", "-c", "/usr/bin/nproc; getconf _NPROCESSORS_ONLN; berth-print-cpus; print-cpus-glibc; echo \"$BERTH_NPROC $GOMAXPROCS\"; LD_DEBUG=libs /usr/bin/nproc 2>&1 | grep -c 'calling init: /usr/lib/berth/libberth_cpus.so'"]);
    assert!(r.ok(), "glibc container: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let want = ["1", "1", "1", &format!("1 1 1 {}", real_cpus()), "1 1", "1"];
    assert_eq!(
        lines, want,
        "nproc, getconf, Rust, C probe, BERTH_NPROC+GOMAXPROCS, the library loaded; stderr: {}",
        r.stderr
    );
    let musl = import(&musl_rootfs());
    let r = docker().run_berth(
        &["--cpus", "1"],
        &musl,
        &[
            "sh",
            "-c",
            "print-cpus-musl; env -u LD_PRELOAD print-cpus-musl",
        ],
    );
    assert!(r.ok(), "musl container: {}", r.stderr);
    // musl derives CONF from the affinity mask too, so in a container pinned
    // to one CPU its native CONF is 1 as well: compare with the native run.
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    let native_conf = lines[1].split_whitespace().last().unwrap();
    assert_eq!(
        lines[0],
        format!("1 1 1 {native_conf}"),
        "with the library: {}",
        r.stdout
    );
    // Without a limit nothing is injected.
    let r = docker().run_berth(
        &[],
        &glibc,
        &["sh", "-c", "/usr/bin/nproc; echo \"[$LD_PRELOAD]\""],
    );
    assert!(r.ok(), "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [real_cpus().to_string().as_str(), "[]"]
    );
    // A glibc image without libdl.so.2 gets no library (it could not load),
    // but glibc itself reads the synthetic /sys/devices/system/cpu/online.
    let bare = import(&glibc_rootfs(false));
    let r = docker().run_berth(
        &["--cpus", "1"],
        &bare,
        &[
            "sh",
            "-c",
            "getconf _NPROCESSORS_ONLN; echo \"[$LD_PRELOAD]\"",
        ],
    );
    assert!(r.ok() && r.stderr.is_empty(), "{}", r.stderr);
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["1", "[]"]);
    let _ = docker().run(&["rmi", &glibc, &musl, &bare]);
}

/// The affinity CPUs a preloaded Python 3.11 reports, with `env` set.
fn affinity_with(env: &[(&str, &str)]) -> String {
    let mut c = command("/usr/bin/python3.11");
    c.args([
        "-c",
        "import os; print(sorted(os.sched_getaffinity(0)), os.cpu_count())",
    ])
    .env("LD_PRELOAD", preload_library())
    .env_remove("BERTH_NPROC");
    for (k, v) in env {
        c.env(k, v);
    }
    let r = try_run(&mut c);
    assert!(r.ok(), "python: {}", r.stderr);
    r.stdout.trim().to_string()
}

#[test]
fn the_count_file_wins_follows_rewrites_and_spreads_the_mask() {
    let real = real_cpus();
    if real < 2 {
        eprintln!("skipped: the spread needs at least 2 CPUs");
        return;
    }
    let dir = berth_integration::artifacts::fresh_dir("cpuview");
    let view = berth_runtime::cpuview::CpuView::at(dir.join("v"));
    view.write(1, 0).unwrap();
    let file = view.file(berth_runtime::cpuview::COUNT_FILE);
    let f = file.to_str().unwrap();
    // The file's count wins over the variable it was started with.
    let at0 = affinity_with(&[("BERTH_NPROC", "2"), ("BERTH_NPROC_FILE", f)]);
    assert!(at0.ends_with(" 1"), "{at0}");
    // Another offset keeps another CPU of the same mask.
    view.write(1, 1).unwrap();
    let at1 = affinity_with(&[("BERTH_NPROC", "2"), ("BERTH_NPROC_FILE", f)]);
    assert_ne!(at0, at1, "offsets 0 and 1 keep different CPUs");
    assert!(at1.ends_with(" 1"), "{at1}");
    // A running program sees a rewrite on its next call.
    let mut c = command("/usr/bin/python3.11");
    c.args([
        "-c",
        "import os,sys\nprint(os.cpu_count(), flush=True)\nsys.stdin.readline()\nprint(os.cpu_count(), flush=True)",
    ])
    .env("LD_PRELOAD", preload_library())
    .env("BERTH_NPROC_FILE", f)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::{BufRead, Write};
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "1");
    view.write(2, 1).unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "2", "the running program saw the rewrite");
    child.wait().unwrap();
    // Not a count file: the variable decides.
    std::fs::write(dir.join("junk"), b"0123456789abcdef").unwrap();
    let junk = dir.join("junk");
    let r = affinity_with(&[
        ("BERTH_NPROC", "1"),
        ("BERTH_NPROC_FILE", junk.to_str().unwrap()),
    ]);
    assert!(r.ends_with(" 1"), "{r}");
}
