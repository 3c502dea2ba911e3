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
    let dir = scratch().join("probes");
    std::fs::create_dir_all(&dir).expect("mkdir probes");
    let src = dir.join("print_cpus.c");
    std::fs::write(&src, PROBE_SOURCE).expect("write probe source");
    let bin = dir.join(out);
    sh(
        compiler,
        [
            "-O2".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            src.as_os_str(),
        ],
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
