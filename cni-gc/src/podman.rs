//! The containers of podman (its CLI), for hosts where podman runs CNI: a
//! running container is live, with the network namespace podman reports.

use crate::cri::{Netns, Sandbox};
use crate::GcError;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn podman(program: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("podman {}: {e}", args.join(" ")))
}

/// Every container `program` (podman) knows: running ones are ready, each
/// with its network namespace (`NetworkSettings.SandboxKey`; none: the
/// host's or no network).
pub fn containers(program: &Path) -> Result<Vec<Sandbox>, GcError> {
    let err = |why: String| GcError::Engine {
        socket: program.display().to_string(),
        why,
    };
    let listed = podman(program, &["ps", "--all", "--format", "json"]).map_err(err)?;
    let mut out = Vec::new();
    let mut running = Vec::new();
    for c in listed.as_array().into_iter().flatten() {
        let Some(id) = c.get("Id").and_then(Value::as_str) else {
            continue;
        };
        let ready = c.get("State").and_then(Value::as_str) == Some("running");
        if ready {
            running.push(id.to_string());
        }
        out.push(Sandbox {
            id: id.to_string(),
            ready,
            netns: Netns::Unknown,
        });
    }
    if !running.is_empty() {
        let mut args = vec!["inspect", "--format", "json"];
        args.extend(running.iter().map(String::as_str));
        let inspected = podman(program, &args).map_err(err)?;
        for i in inspected.as_array().into_iter().flatten() {
            let id = i.get("Id").and_then(Value::as_str).unwrap_or_default();
            let key = i
                .pointer("/NetworkSettings/SandboxKey")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(s) = out.iter_mut().find(|s| s.id == id) {
                s.netns = if key.is_empty() {
                    Netns::Host
                } else {
                    Netns::Path(key.into())
                };
            }
        }
    }
    Ok(out)
}
