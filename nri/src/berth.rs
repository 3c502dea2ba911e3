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
use berth_runtime::cpus::{EngineMoves, PoolMove};
use berth_runtime::records::Records;
use berth_runtime::rewrite;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;

/// The handler's state: the configuration, loaded once.
pub struct Berth {
    cfg: RuntimeConfig,
    runc_root: PathBuf,
    /// Containers whose resize the runtime has not confirmed applied.
    pending: HashSet<String>,
    /// Whether the runtime applies an adjustment's sysctls (NRI 0.11).
    sysctl: bool,
}

impl Berth {
    /// A handler with `cfg` for containers whose runc state is under `runc_root`.
    pub fn new(cfg: RuntimeConfig, runc_root: PathBuf) -> Berth {
        Berth {
            cfg,
            runc_root,
            pending: HashSet::new(),
            sysctl: false,
        }
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
        let (namespaces, sysctl) = c.linux.as_ref().map_or((Vec::new(), None), |l| {
            let ns = l
                .namespaces
                .iter()
                .map(|n| json!({"type": n.r#type, "path": n.path}))
                .collect();
            (ns, Some(&l.sysctl))
        });
        json!({
            "ociVersion": "1.0.2",
            "process": {"env": c.env},
            "mounts": [],
            "linux": {"resources": {"cpu": res}, "namespaces": namespaces, "sysctl": sysctl},
            "annotations": c.annotations,
        })
    }

    /// Plans `c`'s CPUs in the ledger and records it; with `inject`, also
    /// the CPU-count injection (a new container only: a running one cannot
    /// get mounts or variables). Returns the spec before and after, and the
    /// updates that move this engine's shared containers onto the new pool.
    fn plan(&self, c: &proto::Container, inject: bool) -> Result<Planned, String> {
        let id = c.id.as_str();
        let root = self.runc_root.as_path();
        let mut allocator = cpus::HostAllocator::new(&self.cfg, Some(root), id)
            .map_err(|e| e.to_string())?
            .collecting();
        // No incremental GC: the plugin hears of every container that goes,
        // GCs the whole ledger at Synchronize, and when a request does not fit.
        allocator.gc_budget = 0;
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
        // The sysctl policy first, as in the runtime: a refusal plans nothing.
        if inject {
            if self.sysctl {
                rewrite::sysctl::apply(&mut spec, &ctx).map_err(|e| format!("berth: {e}"))?;
            } else if let Some(p) = c.annotations.get(rewrite::sysctl::POLICY_ANNOTATION) {
                tracing::warn!(container = id, policy = %p, "sysctl policy not applied: the runtime cannot set sysctls through NRI");
            }
        }
        let planned = rewrite::cpu::apply(&mut spec, &ctx)
            .map_err(|e| format!("berth: {e}"))?
            .is_some();
        let injected = if inject {
            rewrite::preload::apply(&mut spec, &ctx).map_err(|e| {
                // The container will not exist: its CPUs go back now. The
                // moves collected were never applied, so the shared
                // containers' cgroups are on the pool as before: their
                // views, counted for the moves, are counted again from them.
                let _ = self.release(id);
                for m in allocator.take_moves() {
                    let view = berth_runtime::cpuview::CpuView::of(&self.cfg, Some(root), m.id());
                    let _ = view.refresh_from_cgroup(&m.cgroup, m.id());
                }
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
        berth_runtime::debug_stop::at("create:recorded");
        tracing::info!(container = id, name = %c.name, planned, nproc = ?injected.as_ref().map(|v| v["nproc"].clone()), "container planned");
        Ok(Planned {
            before,
            after: spec,
            moves: updates(allocator.take_moves()),
        })
    }

    fn create(&mut self, c: &proto::Container) -> Result<proto::CreateContainerResponse, String> {
        let p = self.plan(c, true)?;
        Ok(proto::CreateContainerResponse {
            adjust: Some(adjustment(&p.before, &p.after)),
            update: p.moves,
        })
    }

    /// Plans a running container the ledger does not know (created while
    /// the plugin was down); returns the updates that move it onto its CPUs
    /// and the shared containers onto the new pool.
    fn adopt(&mut self, c: &proto::Container) -> Vec<proto::ContainerUpdate> {
        match self.plan(c, false) {
            Ok(p) => {
                let mut out = p.moves;
                if let Some(resources) = adjustment(&p.before, &p.after)
                    .linux
                    .and_then(|l| l.resources)
                {
                    tracing::info!(container = %c.id, "adopted a container created while the plugin was away");
                    out.push(update_of(&c.id, resources));
                }
                out
            }
            Err(e) => {
                tracing::warn!(container = %c.id, "cannot adopt a running container: {e}");
                Vec::new()
            }
        }
    }

    /// Frees `id`'s CPUs; returns the updates that grow this engine's
    /// shared containers onto the freed CPUs.
    fn release(&self, id: &str) -> Result<Vec<proto::ContainerUpdate>, String> {
        let root = self.runc_root.as_path();
        let mut moves = EngineMoves::for_root(Some(root));
        cpus::ops::release(&self.cfg, Some(root), id, &mut moves).map_err(|e| e.to_string())?;
        Ok(updates(moves.moves))
    }

    /// A container that stopped or went: its resize is forgotten and its
    /// CPUs freed (a failure is left to GC); the updates of the shared
    /// containers that grow back.
    fn let_go(&mut self, id: &str) -> Vec<proto::ContainerUpdate> {
        self.pending.remove(id);
        self.release(id).unwrap_or_else(|e| {
            tracing::warn!(
                container = id,
                "cannot release the CPU allocation (GC will): {e}"
            );
            Vec::new()
        })
    }

    /// Re-plans a container the plugin planned for its new CPU limit (an
    /// in-place resize): the update it gets instead, and the moves of the
    /// shared containers. The allocation it had stays held until the
    /// runtime says it applied the update (PostUpdateContainer).
    fn resize(
        &mut self,
        c: &proto::Container,
        cpu: &proto::LinuxCpu,
    ) -> Result<Vec<proto::ContainerUpdate>, String> {
        let root = self.runc_root.as_path();
        if !cpus::ops::has_entry(&self.cfg, Some(root), &c.id) {
            return Ok(Vec::new());
        }
        let mut moves = EngineMoves::for_root(Some(root));
        if self.pending.remove(&c.id) {
            // Its last update was never applied (no PostUpdateContainer).
            cpus::ops::finish_update(&self.cfg, Some(root), &c.id, false, &mut moves)
                .map_err(|e| format!("berth: {e}"))?;
        }
        let mut res = json!({"cpu": {
            "quota": cpu.quota.as_ref().map_or(-1, |q| q.value),
            "period": cpu.period.as_ref().map_or(100_000, |p| p.value),
        }});
        if !cpus::ops::begin_update(&self.cfg, Some(root), &c.id, &mut res, &mut moves)
            .map_err(|e| format!("berth: {e}"))?
        {
            return Ok(updates(moves.moves));
        }
        self.pending.insert(c.id.clone());
        let planned = &res["cpu"];
        let mut lc = cpu.clone();
        lc.cpus = planned["cpus"].as_str().unwrap_or_default().to_string();
        lc.mems = planned["mems"].as_str().unwrap_or_default().to_string();
        if let Some(value) = planned["shares"].as_u64() {
            lc.shares = Some(proto::OptionalUInt64 { value });
        }
        tracing::info!(container = %c.id, cpus = %lc.cpus, "resized: CPUs re-planned");
        let mut out = updates(moves.moves);
        out.push(update_of(&c.id, proto::LinuxResources { cpu: Some(lc) }));
        Ok(out)
    }
}

/// What planning a container gives: its spec before and after the stages,
/// and the updates of other containers.
struct Planned {
    before: Value,
    after: Value,
    moves: Vec<proto::ContainerUpdate>,
}

/// An update of container `id`'s CPU resources (a failure to apply it
/// fails nothing else: the ledger settles from the cgroup).
fn update_of(id: &str, resources: proto::LinuxResources) -> proto::ContainerUpdate {
    proto::ContainerUpdate {
        container_id: id.to_string(),
        linux: Some(proto::LinuxContainerUpdate {
            resources: Some(resources),
        }),
        ignore_failure: true,
    }
}

/// Shared containers' moves onto a new pool, as NRI updates.
fn updates(moves: Vec<PoolMove>) -> Vec<proto::ContainerUpdate> {
    moves
        .into_iter()
        .map(|m| {
            let cpu = proto::LinuxCpu {
                cpus: m.cpus.clone(),
                ..Default::default()
            };
            update_of(m.id(), proto::LinuxResources { cpu: Some(cpu) })
        })
        .collect()
}

/// What the stages changed, as NRI's adjustment: the cpuset, mems and
/// shares, the sysctls and variables added or changed, and the mounts added.
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
    let had = &before["linux"]["sysctl"];
    let sysctl = after["linux"]["sysctl"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| had.get(k.as_str()) != Some(*v))
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    proto::ContainerAdjustment {
        mounts,
        env,
        linux: Some(proto::LinuxContainerAdjustment {
            resources: Some(proto::LinuxResources { cpu: Some(lc) }),
            sysctl,
        }),
    }
}

impl crate::plugin::Handler for Berth {
    fn events(&self) -> Vec<u32> {
        use crate::proto::event::*;
        vec![
            CREATE_CONTAINER,
            UPDATE_CONTAINER,
            POST_UPDATE_CONTAINER,
            STOP_CONTAINER,
            REMOVE_CONTAINER,
        ]
    }

    fn configure(&mut self, runtime: &proto::ConfigureRequest) -> Result<(), String> {
        if !runtime.config.trim().is_empty() {
            // The plugin's NRI configuration is a runtime.toml: it replaces
            // the one loaded at start (containerd starts pre-registered
            // plugins without Berth's environment).
            self.cfg = RuntimeConfig::parse(
                &runtime.config,
                std::path::Path::new("the NRI plugin configuration"),
            )
            .map_err(|e| format!("berth-nri: {e}"))?;
            tracing::info!("configuration taken from the runtime's plugin configuration");
        }
        self.sysctl = proto::takes_sysctl(runtime);
        if self.sysctl {
            tracing::info!(
                "the sysctl policy is applied through NRI (the runtime takes sysctl adjustments)"
            );
        } else {
            tracing::warn!(runtime = %runtime.runtime_name, version = %runtime.runtime_version, "the sysctl policy is not applied: this runtime's NRI has no sysctl adjustment (NRI 0.11, containerd 2.2.1, added it); run berth-runtime as the runtime handler for pods that need it");
        }
        Ok(())
    }

    fn synchronize(
        &mut self,
        req: proto::SynchronizeRequest,
    ) -> Result<proto::SynchronizeResponse, String> {
        // Allocations of containers runc no longer has go back (the ledger's
        // GC checks each against runc's state).
        let root = self.runc_root.clone();
        let mut moves = EngineMoves::for_root(Some(&root));
        let freed = match cpus::ops::status(&self.cfg, true, &mut moves) {
            Ok(s) => s["gc_freed"].clone(),
            Err(e) => {
                tracing::warn!("cannot reconcile the CPU ledger: {e}");
                Value::Null
            }
        };
        // Shared containers off the pool (an update lost with the plugin, or
        // a cgroup changed behind the runtime's back) are pushed back.
        let drifted = cpus::ops::push_pool(&self.cfg, &mut moves).unwrap_or_else(|e| {
            tracing::warn!("cannot check the shared containers' cpusets: {e}");
            0
        });
        // A resize in flight when the plugin went away: applied or not,
        // the cgroup says (the ledger settles it at its next transaction).
        self.pending.clear();
        let mut update = updates(moves.moves);
        // Containers created while the plugin was away are planned now and
        // moved onto their CPUs (they keep the environment they started with).
        let (mut adopted, mut reapplied) = (0, 0);
        // The ledger read once for the whole pass (adoptions add only
        // containers the pass has already looked at).
        let planned = cpus::ops::allocations(&self.cfg, Some(&root));
        for c in &req.containers {
            let live = matches!(c.state, 1..=3);
            if !live {
                continue;
            }
            let Some(a) = planned.get(&c.id) else {
                let u = self.adopt(c);
                adopted += usize::from(u.iter().any(|u| u.container_id == c.id));
                update.extend(u);
                continue;
            };
            if let Some((cpus, mems)) = cpus::ops::unapplied(&self.cfg, Some(&root), &c.id, a) {
                // Planned, but the answer never reached containerd (the plugin
                // died first, and containerd went on without it).
                tracing::warn!(container = %c.id, cpus, "planned CPUs were never applied: applying them now");
                let cpu = proto::LinuxCpu {
                    cpus,
                    mems,
                    ..Default::default()
                };
                update.push(update_of(&c.id, proto::LinuxResources { cpu: Some(cpu) }));
                reapplied += 1;
            }
        }
        // One update per container: the last pool it was moved to.
        let mut seen = HashSet::new();
        update.reverse();
        update.retain(|u| seen.insert(u.container_id.clone()));
        update.reverse();
        tracing::info!(containers = req.containers.len(), adopted, reapplied, drifted, updates = update.len(), freed = %freed, "synchronized with the runtime");
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

    fn update_container(
        &mut self,
        req: proto::UpdateContainerRequest,
    ) -> Result<proto::UpdateContainerResponse, String> {
        let (Some(c), Some(cpu)) = (req.container, req.linux_resources.and_then(|r| r.cpu)) else {
            return Ok(proto::UpdateContainerResponse::default());
        };
        if cpu.quota.is_none() {
            return Ok(proto::UpdateContainerResponse::default());
        }
        let update = self
            .resize(&c, &cpu)
            .inspect_err(|e| tracing::warn!(container = %c.id, "resize refused: {e}"))?;
        Ok(proto::UpdateContainerResponse { update })
    }

    fn post_update_container(&mut self, c: proto::Container) -> Vec<proto::ContainerUpdate> {
        if !self.pending.remove(&c.id) {
            return Vec::new();
        }
        // Applied: the CPUs it had until now are free (a shrink grows the pool).
        let root = self.runc_root.as_path();
        let mut moves = EngineMoves::for_root(Some(root));
        if let Err(e) = cpus::ops::finish_update(&self.cfg, Some(root), &c.id, true, &mut moves) {
            tracing::warn!(container = %c.id, "cannot settle the resize in the CPU ledger: {e}");
        }
        // Its count follows (the library reads the view's count file).
        let cgroup = Records::new(&self.cfg, Some(root))
            .record(&c.id)
            .and_then(|r| r.cgroup);
        if let Some(cg) = cgroup {
            let view = berth_runtime::cpuview::CpuView::of(&self.cfg, Some(root), &c.id);
            if let Err(e) = view.refresh_from_cgroup(&cg, &c.id) {
                tracing::warn!(container = %c.id, "cannot update the CPU view: {e}");
            }
        }
        updates(moves.moves)
    }

    fn stop_container(
        &mut self,
        req: proto::ContainerRequest,
    ) -> Result<proto::StopContainerResponse, String> {
        // A stopped container holds no CPUs: the pool grows back now, by the
        // runtime's update of the shared containers.
        let Some(c) = req.container else {
            return Ok(proto::StopContainerResponse::default());
        };
        Ok(proto::StopContainerResponse {
            update: self.let_go(&c.id),
        })
    }

    fn remove_container(&mut self, c: proto::Container) -> Vec<proto::ContainerUpdate> {
        // Normally released at StopContainer already: then nothing moves.
        let update = self.let_go(&c.id);
        berth_runtime::cpuview::CpuView::of(&self.cfg, Some(&self.runc_root), &c.id).remove();
        update
    }
}
