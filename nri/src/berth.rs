//! Berth's NRI handler: the same CPU split, ledger and CPU-count view as
//! `berth-runtime`, reached through NRI's CreateContainer instead of a
//! rewritten `config.json`.
//!
//! A container is keyed in the ledger as `berth-runtime --root <runc root>`
//! would key it (the runc root containerd's shim uses for the namespace),
//! and recorded as a runc container there, so the ledger's GC frees it once
//! runc no longer has it, whoever created it.

use crate::proto;
use berth_runtime::backend::Backend;
use berth_runtime::config::RuntimeConfig;
use berth_runtime::cpus;
use berth_runtime::records::Records;
use berth_runtime::rewrite;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The handler's state: the configuration, loaded once.
pub struct Berth {
    cfg: RuntimeConfig,
    runc_root: PathBuf,
}

impl Berth {
    /// A handler with `cfg` for containers whose runc state is under `runc_root`.
    pub fn new(cfg: RuntimeConfig, runc_root: PathBuf) -> Berth {
        Berth { cfg, runc_root }
    }

    /// The OCI spec fragment the rewrite stages read, from NRI's view.
    fn spec_of(c: &proto::Container) -> Value {
        let cpu = c
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .and_then(|r| r.cpu.as_ref());
        let mut res = serde_json::Map::new();
        if let Some(cpu) = cpu {
            if let Some(q) = &cpu.quota {
                res.insert("quota".into(), json!(q.value));
            }
            if let Some(p) = &cpu.period {
                res.insert("period".into(), json!(p.value));
            }
            if let Some(s) = &cpu.shares {
                res.insert("shares".into(), json!(s.value));
            }
            if !cpu.cpus.is_empty() {
                res.insert("cpus".into(), json!(cpu.cpus));
            }
        }
        json!({
            "ociVersion": "1.0.2",
            "process": {"env": c.env},
            "mounts": [],
            "linux": {"resources": {"cpu": res}},
            "annotations": c.annotations,
        })
    }

    /// Plans `c`'s CPUs in the ledger and records it; with `inject`, also
    /// the CPU-count injection (a new container only: a running one cannot
    /// get mounts or variables). Returns the spec before and after.
    fn plan(&self, c: &proto::Container, inject: bool) -> Result<(Value, Value), String> {
        let id = c.id.as_str();
        let root = self.runc_root.as_path();
        let allocator =
            cpus::HostAllocator::new(&self.cfg, Some(root), id).map_err(|e| e.to_string())?;
        let mut spec = Self::spec_of(c);
        let before = spec.clone();
        let ctx = rewrite::Context {
            bundle: &self.cfg.state_dir,
            config: &self.cfg,
            cpus: self
                .cfg
                .cpus
                .enabled
                .then_some(&allocator as &dyn cpus::Allocator),
            marks: None,
            place_cgroup: None,
            container: Some((Some(root), id)),
        };
        let planned = rewrite::cpu::apply(&mut spec, &ctx)
            .map_err(|e| format!("berth: {e}"))?
            .is_some();
        let injected = if inject {
            rewrite::preload::apply(&mut spec, &ctx).map_err(|e| {
                // The container will not exist: its CPUs go back now.
                let _ = cpus::ops::release(&self.cfg, Some(root), id);
                format!("berth: {e}")
            })?
        } else {
            None
        };
        let cgroup = c
            .linux
            .as_ref()
            .map(|l| l.cgroups_path.clone())
            .filter(|p| !p.is_empty());
        let resolved = cgroup.as_deref().and_then(|p| {
            let systemd = p.contains(".slice:");
            berth_runtime::cgroup_path::resolve(Some(p), id, systemd).ok()
        });
        Records::new(&self.cfg, Some(root))
            .put(
                id,
                &Backend::Exec("runc".into()),
                resolved.as_deref(),
                None,
                planned,
            )
            .map_err(|e| format!("berth: {e}"))?;
        tracing::info!(container = id, name = %c.name, planned, nproc = ?injected.as_ref().map(|v| v["nproc"].clone()), "container planned");
        Ok((before, spec))
    }

    fn create(&mut self, c: &proto::Container) -> Result<proto::CreateContainerResponse, String> {
        let (before, after) = self.plan(c, true)?;
        Ok(proto::CreateContainerResponse {
            adjust: Some(adjustment(&before, &after)),
            update: Vec::new(),
        })
    }

    /// Plans a running container the ledger does not know (created while
    /// the plugin was down); returns the update that moves it onto its CPUs.
    fn adopt(&mut self, c: &proto::Container) -> Option<proto::ContainerUpdate> {
        match self.plan(c, false) {
            Ok((before, after)) => {
                let resources = adjustment(&before, &after).linux?.resources;
                tracing::info!(container = %c.id, "adopted a container created while the plugin was away");
                Some(proto::ContainerUpdate {
                    container_id: c.id.clone(),
                    linux: Some(proto::LinuxContainerUpdate { resources }),
                    ignore_failure: true,
                })
            }
            Err(e) => {
                tracing::warn!(container = %c.id, "cannot adopt a running container: {e}");
                None
            }
        }
    }
}

/// What the stages changed, as NRI's adjustment: the cpuset, mems and
/// shares, the variables added or changed, and the mounts added.
fn adjustment(before: &Value, after: &Value) -> proto::ContainerAdjustment {
    let cpu = &after["linux"]["resources"]["cpu"];
    let was = &before["linux"]["resources"]["cpu"];
    let mut lc = proto::LinuxCpu::default();
    if cpu["cpus"] != was["cpus"] {
        lc.cpus = cpu["cpus"].as_str().unwrap_or_default().to_string();
    }
    if cpu["mems"] != was["mems"] {
        lc.mems = cpu["mems"].as_str().unwrap_or_default().to_string();
    }
    if cpu["shares"] != was["shares"] {
        lc.shares = cpu["shares"]
            .as_u64()
            .map(|value| proto::OptionalUInt64 { value });
    }
    let old_env: Vec<&str> = before["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let env = after["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| !old_env.contains(e))
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| proto::KeyValue {
            key: k.into(),
            value: v.into(),
        })
        .collect();
    let mounts = after["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| proto::Mount {
            destination: m["destination"].as_str().unwrap_or_default().into(),
            r#type: m["type"].as_str().unwrap_or("bind").into(),
            source: m["source"].as_str().unwrap_or_default().into(),
            options: m["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        })
        .collect();
    proto::ContainerAdjustment {
        mounts,
        env,
        linux: Some(proto::LinuxContainerAdjustment {
            resources: Some(proto::LinuxResources { cpu: Some(lc) }),
        }),
    }
}

impl crate::plugin::Handler for Berth {
    fn events(&self) -> Vec<u32> {
        use crate::proto::event::*;
        vec![CREATE_CONTAINER, STOP_CONTAINER, REMOVE_CONTAINER]
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        if config.trim().is_empty() {
            return Ok(());
        }
        // The plugin's NRI configuration is a runtime.toml: it replaces the
        // one loaded at start (containerd starts pre-registered plugins
        // without Berth's environment).
        self.cfg =
            RuntimeConfig::parse(config, std::path::Path::new("the NRI plugin configuration"))
                .map_err(|e| format!("berth-nri: {e}"))?;
        tracing::info!("configuration taken from the runtime's plugin configuration");
        Ok(())
    }

    fn synchronize(
        &mut self,
        req: proto::SynchronizeRequest,
    ) -> Result<proto::SynchronizeResponse, String> {
        // Allocations of containers runc no longer has go back (the ledger's
        // GC checks each against runc's state).
        let freed = match cpus::ops::status(&self.cfg, true) {
            Ok(s) => s["gc_freed"].clone(),
            Err(e) => {
                tracing::warn!("cannot reconcile the CPU ledger: {e}");
                Value::Null
            }
        };
        // Containers created while the plugin was away are planned now and
        // moved onto their CPUs (they keep the environment they started with).
        let root = self.runc_root.clone();
        let mut update = Vec::new();
        for c in &req.containers {
            let live = matches!(c.state, 1..=3);
            if live && !cpus::ops::has_entry(&self.cfg, Some(&root), &c.id) {
                update.extend(self.adopt(c));
            }
        }
        tracing::info!(containers = req.containers.len(), adopted = update.len(), freed = %freed, "synchronized with the runtime");
        Ok(proto::SynchronizeResponse {
            update,
            more: false,
        })
    }

    fn create_container(
        &mut self,
        req: proto::ContainerRequest,
    ) -> Result<proto::CreateContainerResponse, String> {
        let c = req
            .container
            .ok_or("berth-nri: CreateContainer without a container")?;
        self.create(&c)
            .inspect_err(|e| tracing::warn!(container = %c.id, "refused: {e}"))
    }

    fn stop_container(
        &mut self,
        _req: proto::ContainerRequest,
    ) -> Result<proto::StopContainerResponse, String> {
        Ok(proto::StopContainerResponse { update: Vec::new() })
    }

    fn remove_container(&mut self, c: proto::Container) {
        let root = self.runc_root.as_path();
        if let Err(e) = cpus::ops::release(&self.cfg, Some(root), &c.id) {
            tracing::warn!(container = %c.id, "cannot release the CPU allocation (GC will): {e}");
        }
        berth_runtime::cpuview::CpuView::of(&self.cfg, Some(root), &c.id).remove();
    }
}
