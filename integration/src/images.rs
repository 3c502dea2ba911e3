//! Root filesystems, OCI bundles and importable images built from Debian's
//! busybox-static (and, for the preload tests, dynamically linked programs).

use crate::artifacts::{fresh_dir, scratch};
use crate::cmd::{command, run, sh};
use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

/// The static busybox the images are made of (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The image reference every engine imports the busybox rootfs as.
pub const BUSYBOX_IMAGE: &str = "docker.io/berth/busybox:test";

fn write_etc(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    std::fs::write(root.join("etc/hostname"), "berth\n").expect("hostname");
}

/// Fills `root` with busybox and a symlink per applet, plus the usual empty dirs.
pub fn populate_busybox(root: &Path) {
    for d in [
        "bin", "dev", "proc", "sys", "tmp", "root", "run", "var", "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} (is busybox-static installed?): {e}"));
    for applet in sh(BUSYBOX, ["--list"]).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let link = root.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).expect("applet symlink");
        }
    }
    write_etc(root);
}

/// A shared, read-only-by-convention busybox rootfs for this process.
pub fn busybox_rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch().join("busybox-rootfs");
        populate_busybox(&root);
        root
    })
}

/// A tarball of the busybox rootfs, as `docker import` and `podman import` take it.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let tar = scratch().join("busybox-rootfs.tar");
        sh(
            "tar",
            [
                "-C".as_ref(),
                busybox_rootfs().as_os_str(),
                "-cf".as_ref(),
                tar.as_os_str(),
                ".".as_ref(),
            ],
        );
        tar
    })
}

fn sha256_file(p: &Path) -> String {
    let out = sh("sha256sum", [p]);
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

fn put_blob(layout: &Path, bytes_path: &Path) -> (String, u64) {
    let digest = sha256_file(bytes_path);
    let size = std::fs::metadata(bytes_path).expect("blob size").len();
    let dst = layout.join("blobs/sha256").join(&digest);
    std::fs::copy(bytes_path, &dst).expect("copy blob");
    (format!("sha256:{digest}"), size)
}

fn put_json_blob(layout: &Path, v: &Value) -> (String, u64) {
    let tmp = layout.join("tmp.json");
    std::fs::write(&tmp, serde_json::to_vec(v).expect("json")).expect("write json");
    let r = put_blob(layout, &tmp);
    std::fs::remove_file(&tmp).expect("rm tmp");
    r
}

/// Writes an OCI image-layout archive of `rootfs_tar` named `reference`
/// (for `ctr image import` and `podman load`) and returns its path.
pub fn oci_archive(rootfs_tar: &Path, reference: &str, cmd: &[&str]) -> PathBuf {
    let layout = fresh_dir("oci-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir blobs");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let (layer, layer_size) = put_blob(&layout, rootfs_tar);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config_digest, config_size) = put_json_blob(&layout, &config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put_json_blob(&layout, &manifest);
    let tag = reference.rsplit(':').next().unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
    let archive = layout.with_extension("tar");
    sh(
        "tar",
        [
            "-C".as_ref(),
            layout.as_os_str(),
            "-cf".as_ref(),
            archive.as_os_str(),
            ".".as_ref(),
        ],
    );
    archive
}

/// An OCI bundle directory: a private copy of the busybox rootfs and the
/// `config.json` of `runc spec`, running `args` without a terminal.
pub fn busybox_bundle(args: &[&str]) -> PathBuf {
    let bundle = fresh_dir("bundle");
    let rootfs = bundle.join("rootfs");
    run(command("cp").arg("-a").arg(busybox_rootfs()).arg(&rootfs));
    sh(
        "runc",
        ["spec".as_ref(), "--bundle".as_ref(), bundle.as_os_str()],
    );
    edit_config(&bundle, |c| {
        c["process"]["args"] = json!(args);
        c["process"]["terminal"] = json!(false);
    });
    bundle
}

/// Reads, edits and writes back `<bundle>/config.json`.
pub fn edit_config(bundle: &Path, edit: impl FnOnce(&mut Value)) {
    let path = bundle.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).expect("read config.json"))
        .expect("parse config.json");
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write config.json");
}

/// The shared libraries `program` needs, from `ldd` (the loader included).
pub fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let out = sh("ldd", [program]);
    let mut libs = Vec::new();
    for line in out.lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

/// A busybox rootfs plus dynamically linked `programs` (installed under
/// `/usr/bin` by file name) and every library they need at its host path.
pub fn dynamic_rootfs(programs: &[&Path]) -> PathBuf {
    let root = fresh_dir("dyn-rootfs");
    populate_busybox(&root);
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir usr/bin");
    for prog in programs {
        let name = prog.file_name().expect("program file name");
        std::fs::copy(prog, root.join("usr/bin").join(name)).expect("copy program");
        for lib in shared_libraries(prog) {
            let dst = root.join(lib.strip_prefix("/").expect("absolute"));
            std::fs::create_dir_all(dst.parent().expect("lib dir")).expect("mkdir lib dir");
            std::fs::copy(&lib, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
        }
    }
    // Debian's loader lives under /lib64 via a /lib64 -> usr/lib64 style link on
    // merged-/usr hosts; ldd already printed the canonical loader path copied above.
    root
}
