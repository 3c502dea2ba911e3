//! `events`: the container's statistics and OOM kills as runc's event
//! stream (`{"type":…, "id":…, "data":…}`, one JSON object per line).

use super::{Context, Error, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::ContainerStatus;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The OOM kills counted so far in a v1 memory cgroup (`memory.oom_control`).
fn oom_kills(cgroup: &str) -> Option<u64> {
    let p = PathBuf::from("/sys/fs/cgroup/memory")
        .join(cgroup.trim_start_matches('/'))
        .join("memory.oom_control");
    let text = std::fs::read_to_string(p).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// `events [--stats] [--interval D] ID`: with `--stats` one stats event;
/// otherwise a stats event every interval (default 5s) and an `oom` event
/// for each OOM kill, until the container stops.
pub fn events(ctx: &Context, id: &str, interval: Option<&str>, once: bool) -> Result<()> {
    let every = match interval {
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| Error::Usage(format!("--interval {s:?}: {e}")))?,
        None => Duration::from_secs(5),
    };
    if every.is_zero() {
        return Err(Error::Usage("--interval must be above zero".into()));
    }
    let (cg, m) = super::cgroup_manager(&ctx.load(id)?)?;
    let cg = cg.to_string_lossy().into_owned();
    let stats = || -> Result<String> {
        let s = m.stats().map_err(|e| Error::Cgroup(e.to_string()))?;
        Ok(json!({"type": "stats", "id": id, "data": s}).to_string())
    };
    if once {
        println!("{}", stats()?);
        return Ok(());
    }
    let mut ooms = oom_kills(&cg).unwrap_or(0);
    let tick = Duration::from_millis(200).min(every);
    let mut waited = Duration::ZERO;
    loop {
        if let Some(n) = oom_kills(&cg) {
            if n > ooms {
                println!("{}", json!({"type": "oom", "id": id}));
                ooms = n;
            }
        }
        if waited >= every {
            println!("{}", stats()?);
            waited = Duration::ZERO;
        }
        let alive = ctx
            .load(id)
            .map(|c| c.status() != ContainerStatus::Stopped)
            .unwrap_or(false);
        if !alive {
            return Ok(());
        }
        std::thread::sleep(tick);
        waited += tick;
    }
}
