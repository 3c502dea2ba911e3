//! `ps`: the container's processes, as runc lists them.

use super::{Context, Error, Result};
use libcgroups::common::CgroupManager;

/// The pids in container `id`'s cgroup.
pub fn pids(ctx: &Context, id: &str) -> Result<Vec<i32>> {
    let (_, m) = super::cgroup_manager(&ctx.load(id)?)?;
    let mut pids: Vec<i32> = m
        .get_all_pids()
        .map_err(|e| Error::Cgroup(e.to_string()))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Keeps the header and the rows of `ps` output whose PID column is in `pids`.
fn filter(ps_out: &str, pids: &[i32]) -> Result<String> {
    let mut lines = ps_out.lines();
    let head = lines.next().unwrap_or_default();
    let col = head
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::Usage("ps output has no PID column".into()))?;
    let mut out = format!("{head}\n");
    for l in lines {
        let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// `ps [--format table|json] ID [ps options]` (default options `-ef`).
pub fn ps(ctx: &Context, id: &str, format: Option<&str>, ps_args: &[String]) -> Result<()> {
    let pids = pids(ctx, id)?;
    match format.unwrap_or("table") {
        "json" => {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            Ok(())
        }
        "table" => {
            let args: Vec<&str> = if ps_args.is_empty() {
                vec!["-ef"]
            } else {
                ps_args.iter().map(String::as_str).collect()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| Error::io("cannot run ps", e))?;
            if !out.status.success() {
                return Err(Error::Usage(format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            print!("{}", filter(&String::from_utf8_lossy(&out.stdout), &pids)?);
            Ok(())
        }
        other => Err(Error::Usage(format!(
            "invalid format option {other:?}: table or json"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_rows_are_kept() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:00 ? 00:00:00 sh\n";
        assert_eq!(
            filter(out, &[42]).unwrap(),
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:00 ? 00:00:00 sh\n"
        );
        assert!(filter("USER CMD\n", &[1]).is_err());
    }
}
