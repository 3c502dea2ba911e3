//! `events`: the container's statistics and OOM kills as runc's event
//! stream (`{"type":…, "id":…, "data":…}`, one JSON object per line).

use super::{Context, Error, Result};
use libcgroups::common::CgroupManager;
use libcgroups::stats::{MemoryData, Stats};
use libcontainer::container::ContainerStatus;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The OOM kills counted so far in the container's memory cgroup: the v1
/// `memory.oom_control`, or the unified tree's `memory.events`.
fn oom_kills(cgroup: &str) -> Option<u64> {
    let rel = cgroup.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(rel)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    let text = std::fs::read_to_string(v1)
        .or_else(|_| std::fs::read_to_string(v2))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// True on the unified (v2-only) hierarchy.
fn unified() -> bool {
    !Path::new("/sys/fs/cgroup/memory").is_dir()
        && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// USER_HZ: the unit of v1 `cpuacct.stat`.
const TICKS_PER_SECOND: u64 = 100;

/// libcgroups' statistics as runc's `events` prints them (runc's
/// `types.Stats`): its field names, and CPU times in nanoseconds (libcgroups
/// gives the v2 files' microseconds and v1 `cpuacct.stat`'s ticks).
pub fn runc_stats(s: &Stats, unified: bool) -> Value {
    let u = &s.cpu.usage;
    let (total, user, kernel, throttled) = if unified {
        (
            u.usage_total.saturating_mul(1000),
            u.usage_user.saturating_mul(1000),
            u.usage_kernel.saturating_mul(1000),
            s.cpu.throttling.throttled_time.saturating_mul(1000),
        )
    } else {
        let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / TICKS_PER_SECOND);
        (
            u.usage_total,
            ns(u.usage_user),
            ns(u.usage_kernel),
            s.cpu.throttling.throttled_time,
        )
    };
    let entry = |m: &MemoryData| json!({"limit": m.limit, "usage": m.usage, "max": m.max_usage, "failcnt": m.fail_count});
    let blkio = |v: &[libcgroups::stats::BlkioDeviceStat]| -> Value {
        v.iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op_type.clone().unwrap_or_default(), "value": e.value}))
            .collect()
    };
    let hugetlb: serde_json::Map<String, Value> = s
        .hugetlb
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                json!({"usage": h.usage, "max": h.max_usage, "failcnt": h.fail_count}),
            )
        })
        .collect();
    let mut cpu = json!({
        "usage": {
            "total": total,
            "percpu": u.per_core_usage_total,
            "percpu_kernel": u.per_core_usage_kernel,
            "percpu_user": u.per_core_usage_user,
            "kernel": kernel,
            "user": user,
        },
        "throttling": {
            "periods": s.cpu.throttling.periods,
            "throttledPeriods": s.cpu.throttling.throttled_periods,
            "throttledTime": throttled,
        },
    });
    let mut memory = json!({
        "cache": s.memory.cache,
        "usage": entry(&s.memory.memory),
        "swap": entry(&s.memory.memswap),
        "kernel": entry(&s.memory.kernel),
        "kernelTCP": entry(&s.memory.kernel_tcp),
        "raw": s.memory.stats,
    });
    let mut io = json!({
        "ioServiceBytesRecursive": blkio(&s.blkio.service_bytes),
        "ioServicedRecursive": blkio(&s.blkio.serviced),
        "ioQueueRecursive": blkio(&s.blkio.queued),
        "ioServiceTimeRecursive": blkio(&s.blkio.service_time),
        "ioWaitTimeRecursive": blkio(&s.blkio.wait_time),
        "ioMergedRecursive": blkio(&s.blkio.merged),
        "ioTimeRecursive": blkio(&s.blkio.time),
        "sectorsRecursive": blkio(&s.blkio.sectors),
    });
    // Pressure exists on the unified hierarchy only.
    if unified {
        cpu["psi"] = json!(s.cpu.psi);
        memory["psi"] = json!(s.memory.psi);
        io["psi"] = json!(s.blkio.psi);
    }
    json!({
        "cpu": cpu,
        "memory": memory,
        "pids": {"current": s.pids.current, "limit": s.pids.limit},
        "blkio": io,
        "hugetlb": hugetlb,
    })
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
        Ok(json!({"type": "stats", "id": id, "data": runc_stats(&s, unified())}).to_string())
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
            // An OOM kill is often what stopped it, after the check above.
            if oom_kills(&cg).is_some_and(|n| n > ooms) {
                println!("{}", json!({"type": "oom", "id": id}));
            }
            return Ok(());
        }
        std::thread::sleep(tick);
        waited += tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// runc's names and units: v2 microseconds and v1 ticks become
    /// nanoseconds; memory entries are `{limit, usage, max, failcnt}`.
    #[test]
    fn stats_come_out_as_runc_prints_them() {
        let mut s = Stats::default();
        s.cpu.usage.usage_total = 444_559;
        s.cpu.usage.usage_user = 212;
        s.cpu.usage.usage_kernel = 232;
        s.cpu.throttling.throttled_time = 7;
        s.memory.memory = MemoryData {
            usage: 397_312,
            max_usage: 1_589_248,
            fail_count: 3,
            limit: 100_663_296,
        };
        let v2 = runc_stats(&s, true);
        assert_eq!(v2["cpu"]["usage"]["total"], 444_559_000u64);
        assert_eq!(v2["cpu"]["usage"]["user"], 212_000);
        assert_eq!(v2["cpu"]["usage"]["kernel"], 232_000);
        assert_eq!(v2["cpu"]["throttling"]["throttledTime"], 7000);
        assert_eq!(
            v2["memory"]["usage"],
            json!({"limit": 100_663_296u64, "usage": 397_312, "max": 1_589_248, "failcnt": 3})
        );
        assert!(v2["cpu"].get("psi").is_some());
        let v1 = runc_stats(&s, false);
        assert_eq!(v1["cpu"]["usage"]["total"], 444_559);
        assert_eq!(v1["cpu"]["usage"]["user"], 2_120_000_000u64);
        assert!(v1["cpu"].get("psi").is_none());
        assert!(v1["cpu"]["usage"].get("usage_total").is_none());
    }
}
