//! A bundle: its directory and its `config.json`, read once per process.

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An OCI bundle as `create` and `run` get it.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The directory, canonical (marks and records name it so).
    pub dir: PathBuf,
    /// `config.json` as raw JSON (unknown fields survive a rewrite).
    pub spec: Value,
}

impl Bundle {
    /// Reads the bundle in `given`, else the current directory (as runc).
    pub fn load(given: Option<&Path>) -> Result<Bundle> {
        let dir = match given {
            Some(b) => b.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io("current directory", e))?,
        };
        let dir = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = crate::rewrite::config_path(&dir);
        let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let spec: Value = serde_json::from_slice(&raw).map_err(|e| Error::Spec {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if !spec.is_object() {
            return Err(Error::Spec {
                path,
                message: "the document is not a JSON object".into(),
            });
        }
        Ok(Bundle { dir, spec })
    }

    /// The value of annotation `key`, if it is a string.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        crate::spec::annotation(&self.spec, key)
    }

    /// `linux.cgroupsPath` as the engine gave it.
    pub fn cgroups_path(&self) -> Option<&str> {
        self.spec
            .pointer("/linux/cgroupsPath")
            .and_then(Value::as_str)
    }

    /// The root filesystem, absolute.
    pub fn rootfs(&self) -> Option<PathBuf> {
        crate::spec::rootfs(&self.spec, &self.dir)
    }

    /// Runs the rewrite stages over the spec and writes `config.json` back
    /// atomically; returns the applied record. `cpus` is the host's CPU
    /// allocator (None skips the split); `place_cgroup` is set when the
    /// backend's pipeline places the cgroup (the built-in one's);
    /// `container` (root, id) is where the CPU view files go.
    /// On error neither the file nor `self.spec` changes.
    pub fn rewrite(
        &mut self,
        config: &RuntimeConfig,
        cpus: Option<&dyn crate::cpus::Allocator>,
        place_cgroup: Option<crate::rewrite::Placement<'_>>,
        container: Option<(Option<&Path>, &str)>,
    ) -> Result<Value> {
        let marks = crate::marks::Marks::open(&config.state_dir)?;
        let mut spec = self.spec.clone();
        let record = crate::rewrite::rewrite_spec(
            &mut spec,
            &crate::rewrite::Context {
                bundle: &self.dir,
                config,
                cpus,
                marks: Some(&marks),
                place_cgroup,
                container,
            },
        )?;
        let path = crate::rewrite::config_path(&self.dir);
        let mut out = serde_json::to_vec(&spec).map_err(|e| Error::Spec {
            path: path.clone(),
            message: e.to_string(),
        })?;
        out.push(b'\n');
        crate::atomic::write_file(&path, &out, 0o644, crate::atomic::Durability::Durable)?;
        self.spec = spec;
        Ok(record)
    }
}
