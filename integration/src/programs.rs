//! Test programs for the CPU-count preload library: the C probe built with
//! glibc's gcc and with musl-gcc, and rootfs images that carry them.

use crate::artifacts::{binary, scratch};
use crate::cmd::sh;
use crate::images::{dynamic_rootfs, populate_busybox};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The C probe's source (prints ONLN, get_nprocs, affinity count, CONF).
pub const PROBE_SOURCE: &str = include_str!("../fixtures/print_cpus.c");

fn compile(compiler: &str, out: &str) -> PathBuf {
    compile_with(compiler, &[], out)
}

fn compile_with(compiler: &str, flags: &[&str], out: &str) -> PathBuf {
    let dir = scratch().join("probes");
    std::fs::create_dir_all(&dir).expect("mkdir probes");
    let src = dir.join("print_cpus.c");
    std::fs::write(&src, PROBE_SOURCE).expect("write probe source");
    let bin = dir.join(out);
    sh(
        compiler,
        ["-O2".as_ref()]
            .into_iter()
            .chain(flags.iter().map(|f| f.as_ref()))
            .chain(["-o".as_ref(), bin.as_os_str(), src.as_os_str()]),
    );
    bin
}

/// The probe linked dynamically against glibc.
pub fn glibc_probe() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("gcc", "print-cpus-glibc"))
}

/// The probe linked dynamically against musl (musl-gcc, from musl-tools).
pub fn musl_probe() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("musl-gcc", "print-cpus-musl"))
}

/// musl's dynamic loader on the host.
pub const MUSL_LOADER: &str = "/lib/ld-musl-x86_64.so.1";

/// A glibc rootfs: busybox, plus `nproc`, `getconf`, the glibc probe and
/// `berth-print-cpus` with every library they need, and `libdl.so.2` as
/// every glibc package ships it (with `libdl: false`, an image that lacks it).
pub fn glibc_rootfs(libdl: bool) -> PathBuf {
    let rust = binary("berth-print-cpus");
    let root = dynamic_rootfs(&[
        Path::new("/usr/bin/nproc"),
        Path::new("/usr/bin/getconf"),
        glibc_probe(),
        &rust,
    ]);
    if libdl {
        let host = Path::new("/lib/x86_64-linux-gnu/libdl.so.2");
        let dst = root.join("lib/x86_64-linux-gnu/libdl.so.2");
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(host, &dst).expect("copy libdl.so.2");
    }
    root
}

/// A musl rootfs: busybox, musl's loader and the musl probe.
pub fn musl_rootfs() -> PathBuf {
    let root = crate::artifacts::fresh_dir("musl-rootfs");
    populate_busybox(&root);
    std::fs::create_dir_all(root.join("lib")).expect("mkdir lib");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir usr/bin");
    std::fs::copy(MUSL_LOADER, root.join("lib/ld-musl-x86_64.so.1"))
        .expect("copy musl loader (is musl installed?)");
    std::fs::copy(musl_probe(), root.join("usr/bin/print-cpus-musl")).expect("copy musl probe");
    root
}

/// Tars `rootfs` for `docker import`.
pub fn tar_rootfs(rootfs: &Path) -> PathBuf {
    let tar = rootfs.with_extension("tar");
    sh(
        "tar",
        [
            "-C".as_ref(),
            rootfs.as_os_str(),
            "-cf".as_ref(),
            tar.as_os_str(),
            ".".as_ref(),
        ],
    );
    tar
}

/// The conformance matrix's script (one `row value` line per row).
pub const MATRIX_SCRIPT: &str = include_str!("../fixtures/cpu_matrix.sh");

/// A rootfs for the conformance matrix: the glibc rootfs, musl's loader,
/// the C probe static and dynamic on glibc and musl, the Go probe built by
/// Debian's Go, the Java probe's class in `/probes`, and the matrix script
/// at `/matrix.sh`. Java, Python and Node come from the host through
/// read-only binds: [`matrix_binds`].
pub fn matrix_rootfs() -> PathBuf {
    let root = glibc_rootfs(true);
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(root.join("lib")).expect("mkdir lib");
    std::fs::copy(MUSL_LOADER, root.join("lib/ld-musl-x86_64.so.1")).expect("copy musl loader");
    for (compiler, flags, name) in [
        ("musl-gcc", &[][..], "print-cpus-musl"),
        ("musl-gcc", &["-static"][..], "print-cpus-musl-static"),
        ("gcc", &["-static"][..], "print-cpus-glibc-static"),
    ] {
        let p = compile_with(compiler, flags, name);
        std::fs::copy(&p, bin.join(name)).expect("copy probe");
    }
    // Go: a static binary (no cgo), as Go services ship.
    let dir = scratch().join("probes");
    let go_src = dir.join("cpus.go");
    std::fs::write(&go_src, include_str!("../fixtures/cpus.go")).expect("write cpus.go");
    let go_bin = bin.join("cpus-go119");
    let mut go = crate::cmd::command("go");
    go.args(["build", "-o"])
        .arg(&go_bin)
        .arg(&go_src)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache"))
        .env("HOME", &dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off");
    let r = crate::cmd::try_run(&mut go);
    assert!(r.ok(), "go build: {}", r.stderr);
    // And by Debian 13's Go 1.24 (unpacked into the cache).
    let goroot = trixie_dir("go").join("usr/lib/go-1.24");
    let mut go = crate::cmd::command(goroot.join("bin/go"));
    go.args(["build", "-o"])
        .arg(bin.join("cpus-go124"))
        .arg(&go_src)
        .env("GOROOT", &goroot)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache-1.24"))
        .env("HOME", &dir)
        .env("GO111MODULE", "off");
    let r = crate::cmd::try_run(&mut go);
    assert!(r.ok(), "go 1.24 build: {}", r.stderr);
    // Java: compiled here, run by the host's JVM through the binds.
    let probes = root.join("probes");
    std::fs::create_dir_all(&probes).expect("mkdir probes");
    let java_src = dir.join("Cpus.java");
    std::fs::write(&java_src, include_str!("../fixtures/Cpus.java")).expect("write Cpus.java");
    sh(
        "javac",
        ["-d".as_ref(), probes.as_os_str(), java_src.as_os_str()],
    );
    std::fs::write(root.join("matrix.sh"), MATRIX_SCRIPT).expect("write matrix.sh");
    root
}

/// `docker run -v` flags that bring the host's JDK 17, Python 3.11 and Node
/// into the matrix rootfs, read-only.
pub fn matrix_binds() -> Vec<String> {
    let java_home = which("java")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .expect("the JDK's home");
    let node = which("node")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .expect("node (Debian's nodejs)");
    let mut v = Vec::new();
    for (src, dst) in [
        (
            "/usr/lib/x86_64-linux-gnu".into(),
            "/usr/lib/x86_64-linux-gnu".into(),
        ),
        (java_home.clone(), java_home),
        ("/etc/java-17-openjdk".into(), "/etc/java-17-openjdk".into()),
        ("/usr/lib/python3.11".into(), "/usr/lib/python3.11".into()),
        ("/usr/bin/python3.11".into(), "/usr/bin/python3".into()),
        (node, "/usr/bin/node".into()),
        (trixie_dir("python313"), "/opt/py313".into()),
    ] {
        let (src, dst): (PathBuf, PathBuf) = (src, dst);
        v.push(format!("{}:{}:ro", src.display(), dst.display()));
    }
    v
}

/// `name` looked up on PATH.
fn which(name: &str) -> Option<PathBuf> {
    crate::deps::require(name);
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A directory of Debian 13 packages that `scripts/install-test-deps`
/// unpacked into the test cache (`scripts/fetch-trixie NAME ...`).
pub fn trixie_dir(name: &str) -> PathBuf {
    let cache = std::env::var_os("BERTH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-test"));
    let dir = cache.join("trixie").join(name);
    assert!(
        dir.join(".done").is_file(),
        "{} is missing: scripts/install-test-deps unpacks it (scripts/fetch-trixie)",
        dir.display()
    );
    dir
}
