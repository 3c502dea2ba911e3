//! `state` and `list` in runc's output format.
//!
//! libcontainer's own state has no `rootfs` and a numeric `creator`; runc
//! prints the root filesystem and the owner's user name, and a `pid` of 0
//! once the container has stopped. The root filesystem comes from Berth's
//! record of the container (written at `create`), else the bundle.

use super::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use libcontainer::container::{Container, ContainerStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// runc's `state` JSON, field for field and in runc's order.
#[derive(Debug, Serialize)]
pub struct RuncState {
    /// The runtime-spec version of the container's state.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// The init process, or 0 once stopped.
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 with nanoseconds as Go prints it.
    pub created: String,
    /// The container's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The user name of the creator (`list`; empty in `state`, as runc).
    pub owner: String,
}

/// runc's name of a status.
fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros.
fn go_time(t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "0001-01-01T00:00:00Z".into();
    };
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((whole, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{digits}Z")
            }
        }
        None => s,
    }
}

/// The root filesystem named by the bundle's config.json, absolute.
fn rootfs_from_bundle(bundle: &Path) -> Option<PathBuf> {
    crate::spec::rootfs(&crate::rewrite::read_config(bundle), bundle)
}

/// The runc-format state of a loaded container. runc names the owner in
/// `list` only; its `state` leaves it empty.
pub fn of(ctx: &Context, c: &Container, with_owner: bool) -> RuncState {
    let st = &c.state;
    let status = c.status();
    let rootfs = ctx
        .records
        .record(c.id())
        .and_then(|r| r.rootfs)
        .or_else(|| rootfs_from_bundle(&st.bundle))
        .unwrap_or_default();
    let owner = st
        .creator
        .filter(|_| with_owner)
        .and_then(|uid| nix::unistd::User::from_uid(uid.into()).ok().flatten())
        .map(|u| u.name)
        .unwrap_or_default();
    RuncState {
        oci_version: crate::SPEC_VERSION.into(),
        id: st.id.clone(),
        pid: match status {
            ContainerStatus::Stopped => 0,
            _ => st.pid.unwrap_or(0),
        },
        status: status_name(status).into(),
        bundle: st.bundle.clone(),
        rootfs,
        created: go_time(st.created),
        annotations: st
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        owner,
    }
}

/// `state ID`: prints the container's state as runc does (indented JSON).
pub fn print(ctx: &Context, id: &str) -> Result<()> {
    let c = ctx.load(id)?;
    let out = serde_json::to_string_pretty(&of(ctx, &c, false)).unwrap_or_default();
    println!("{out}");
    Ok(())
}

/// `list`: every container under the root, as a table, JSON, or ids only.
pub fn list(ctx: &Context, format: Option<&str>, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&ctx.root) {
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            if let Ok(c) = ctx.load(&n) {
                states.push(of(ctx, &c, true));
            }
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format.unwrap_or("table") {
        "json" => println!("{}", serde_json::to_string(&states).unwrap_or_default()),
        "table" => {
            let rows: Vec<[String; 6]> = states
                .iter()
                .map(|s| {
                    [
                        s.id.clone(),
                        s.pid.to_string(),
                        s.status.clone(),
                        s.bundle.display().to_string(),
                        s.created.clone(),
                        s.owner.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], &rows)
            );
        }
        other => {
            return Err(super::Error::Usage(format!(
                "invalid format option {other:?}: table or json"
            )))
        }
    }
    Ok(())
}

/// Columns padded like Go's tabwriter (minwidth 12, padding 1).
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut w = [12usize; N];
    for (i, h) in head.iter().enumerate() {
        w[i] = w[i].max(h.len() + 1);
    }
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len() + 1);
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}", width = w[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_print_as_go_prints_them() {
        let t = Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap();
        assert_eq!(go_time(Some(t)), "2023-11-14T22:13:20.12Z");
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        assert_eq!(go_time(Some(t)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn table_columns_line_up() {
        let t = table(["ID", "PID"], &[["a".to_string(), "1".to_string()]]);
        assert_eq!(t, "ID          PID\na           1\n");
    }
}
