//! Hot reload: the YAML file is watched (`notify`); a valid new version is
//! put in force without losing queued records, an invalid one is logged and
//! the old configuration stays.

use crate::config::{Config, Overrides};
use crate::router::Shared;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads `path` again, with `overrides`, and applies it when valid; returns
/// whether it did.
pub fn reload_now(shared: &Shared, path: &Path, overrides: &Overrides) -> bool {
    match Config::load(path).and_then(|c| overrides.apply(c)) {
        Ok(c) if c == *shared.cfg() => false,
        Ok(c) => {
            shared.reload(c);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration change refused; keeping the old one");
            false
        }
    }
}

/// Watches `path` (through its directory, so editors that replace the file
/// are seen) until the process ends. The watcher is returned to keep alive.
pub fn watch(
    shared: Arc<Shared>,
    path: PathBuf,
    overrides: Overrides,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name().map(|n| n.to_os_string());
    let target = path.clone();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if ev.kind.is_access() {
            return;
        }
        if ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            // Let a writer finish.
            std::thread::sleep(std::time::Duration::from_millis(50));
            reload_now(&shared, &target, &overrides);
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}
