//! Where the workspace's built binaries and the test run's scratch space are.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cargo profile directory holding the built binaries (`BERTH_BIN_DIR`
/// overrides; otherwise derived from this test executable's location).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("BERTH_BIN_DIR") {
            return PathBuf::from(d);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // Test binaries live in target/<profile>/deps, the others in target/<profile>.
        let dir = exe.parent().expect("exe dir");
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.parent().unwrap_or(dir).to_path_buf()
        } else {
            dir.to_path_buf()
        }
    })
}

/// The path of the workspace binary `name`; panics (saying how to build it) if missing.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build --workspace` first (scripts/test does)",
        p.display()
    );
    p
}

/// This process's scratch directory (created on first use, removed at exit).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(crate::names::process_prefix());
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let d = dir.clone();
        crate::cleanup::at_exit("scratch directory", move || {
            crate::leaks::unmount_below(&d);
            let _ = std::fs::remove_dir_all(&d);
        });
        dir
    })
}

/// A fresh, empty directory under [`scratch`].
pub fn fresh_dir(label: &str) -> PathBuf {
    let d = scratch().join(format!("{label}-{}", crate::names::unique()));
    std::fs::create_dir_all(&d).expect("create dir");
    d
}
