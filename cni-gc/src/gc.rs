//! GC on every plugin of every conflist, as libcni's `GCNetworkList` does
//! it: each plugin in turn, given its own configuration with the list's
//! `name` and `cni.dev/valid-attachments`. GC is a CNI 1.1 verb: a plugin
//! that speaks 1.1.0 is asked with `cniVersion` 1.1.0 whatever the list's
//! version (an engine that takes only 1.0.0 results, as containerd 1.6,
//! still gets GC); one that does not is skipped.

use crate::cache::Cached;
use crate::cri::{Netns, Sandbox};
use crate::GcError;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One network configuration file.
#[derive(Debug, Clone)]
pub struct Network {
    /// The file.
    pub file: PathBuf,
    /// Its `name`.
    pub name: String,
    /// Its `cniVersion` (the engine's; GC is asked in 1.1.0).
    pub version: String,
    /// Its plugins' configurations.
    pub plugins: Vec<Value>,
}

/// The network configurations in `dir`, in the order engines load them
/// (by file name): `.conflist` files, and `.conf`/`.json` single-plugin ones.
/// Unreadable ones are logged and skipped.
pub fn networks(dir: &Path) -> Result<Vec<Network>, GcError> {
    let rd = std::fs::read_dir(dir).map_err(|source| GcError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let v: Value = match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(why) => {
                tracing::warn!(file = %file.display(), %why, "skipping an unreadable network configuration");
                continue;
            }
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(version)) = (text("name"), text("cniVersion")) else {
            tracing::warn!(file = %file.display(), "skipping a network configuration without name and cniVersion");
            continue;
        };
        let plugins = match v.get("plugins").and_then(Value::as_array) {
            Some(p) => p.clone(),
            None if v.get("type").is_some() => vec![v.clone()],
            None => {
                tracing::warn!(file = %file.display(), "skipping a network configuration without plugins or type");
                continue;
            }
        };
        out.push(Network {
            file,
            name,
            version,
            plugins,
        });
    }
    Ok(out)
}

/// Refuses to go on when a live sandbox with its own network namespace has
/// no cached attachment at all: the cache is not the engine's (a wrong
/// `--cache-dir`), and every attachment would look stale.
pub fn check_mapped(
    sandboxes: &[Sandbox],
    cached: &[Cached],
    cache_dir: &Path,
) -> Result<(), GcError> {
    let cached_ids: BTreeSet<&str> = cached.iter().map(|c| c.container_id.as_str()).collect();
    for s in sandboxes {
        if s.network_alive()
            && matches!(s.netns, Netns::Path(_))
            && !cached_ids.contains(s.id.as_str())
        {
            return Err(GcError::Unmapped(format!(
                "live sandbox {} has its own network namespace but no attachment cached under {}/results (is --cache-dir the engine's?)",
                s.id,
                cache_dir.display()
            )));
        }
    }
    Ok(())
}

/// The attachments of `network` GC must keep: those of sandboxes whose
/// network is alive, and any cached less than `grace` ago.
pub fn valid_for(
    network: &str,
    sandboxes: &[Sandbox],
    cached: &[Cached],
    grace: Duration,
) -> Vec<(String, String)> {
    let live: BTreeSet<&str> = sandboxes
        .iter()
        .filter(|s| s.network_alive())
        .map(|s| s.id.as_str())
        .collect();
    cached
        .iter()
        .filter(|c| c.network == network)
        .filter(|c| live.contains(c.container_id.as_str()) || c.age < grace)
        .map(|c| (c.container_id.clone(), c.ifname.clone()))
        .collect()
}

/// What GC did for one plugin of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The network.
    pub network: String,
    /// The plugin's `type` (empty: the whole list).
    pub plugin: String,
    /// Ok(what it did) or Err(why it failed).
    pub result: Result<String, String>,
}

fn find(plugin: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    if plugin.contains('/') || plugin.is_empty() {
        return None;
    }
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
}

fn exec(bin: &Path, command: &str, bin_dirs: &[PathBuf], stdin: &Value) -> Result<String, String> {
    let path = std::env::join_paths(bin_dirs).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", path)
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_NETNS")
        .env_remove("CNI_IFNAME")
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        let msg = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v.get("msg").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(stdout);
        Err(format!("{} ({})", msg, out.status))
    }
}

/// The plugin directories, and what each plugin said of CNI 1.1 (asked
/// once per run, however many networks use it).
pub struct Plugins {
    dirs: Vec<PathBuf>,
    speaks: std::collections::HashMap<PathBuf, bool>,
}

impl Plugins {
    /// The plugins in `dirs`.
    pub fn new(dirs: Vec<PathBuf>) -> Plugins {
        Plugins {
            dirs,
            speaks: Default::default(),
        }
    }

    /// Whether `bin` says it speaks CNI 1.1.0.
    fn speaks_1_1(&mut self, bin: &Path) -> bool {
        if let Some(&s) = self.speaks.get(bin) {
            return s;
        }
        let s = exec(bin, "VERSION", &self.dirs, &json!({"cniVersion": "1.1.0"}))
            .ok()
            .and_then(|o| serde_json::from_str::<Value>(&o).ok())
            .and_then(|v| v.get("supportedVersions").cloned())
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| a.iter().any(|x| x == "1.1.0"));
        self.speaks.insert(bin.to_path_buf(), s);
        s
    }
}

/// Runs GC on `net`'s plugins with `valid` (dry: says what it would do).
pub fn collect(
    net: &Network,
    valid: &[(String, String)],
    plugins: &mut Plugins,
    dry: bool,
) -> Vec<Outcome> {
    let outcome = |plugin: &str, result| Outcome {
        network: net.name.clone(),
        plugin: plugin.to_string(),
        result,
    };
    let attachments: Vec<Value> = valid
        .iter()
        .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
        .collect();
    let mut out = Vec::new();
    for p in &net.plugins {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some(bin) = find(ty, &plugins.dirs) else {
            out.push(outcome(
                ty,
                Err(format!("plugin {ty:?} is not in {:?}", plugins.dirs)),
            ));
            continue;
        };
        if !plugins.speaks_1_1(&bin) {
            out.push(outcome(
                ty,
                Ok("skipped: the plugin predates CNI 1.1".into()),
            ));
            continue;
        }
        if dry {
            out.push(outcome(
                ty,
                Ok(format!("would keep {} attachments", valid.len())),
            ));
            continue;
        }
        let mut conf = p.clone();
        if let Some(o) = conf.as_object_mut() {
            o.insert("name".into(), json!(net.name));
            o.insert("cniVersion".into(), json!("1.1.0"));
            o.insert("cni.dev/valid-attachments".into(), json!(attachments));
        }
        let r = exec(&bin, "GC", &plugins.dirs, &conf)
            .map(|_| format!("kept {} attachments", valid.len()));
        out.push(outcome(ty, r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(net: &str, id: &str, age: u64) -> Cached {
        Cached {
            network: net.into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            age: Duration::from_secs(age),
        }
    }

    fn sandbox(id: &str, ready: bool, netns: Netns) -> Sandbox {
        Sandbox {
            id: id.into(),
            ready,
            netns,
        }
    }

    #[test]
    fn valid_attachments_are_the_live_sandboxes_and_the_young() {
        let here = Netns::Path("/proc/self/ns/net".into());
        let s = vec![
            sandbox("live", true, here.clone()),
            sandbox("stopped", false, here.clone()),
            sandbox("nsgone", true, Netns::Path("/nonexistent".into())),
        ];
        let c = vec![
            cached("n1", "live", 600),
            cached("n1", "stopped", 600),
            cached("n1", "nsgone", 600),
            cached("n1", "unknown-old", 600),
            cached("n1", "unknown-new", 5),
            cached("n2", "live", 600),
        ];
        let v = valid_for("n1", &s, &c, Duration::from_secs(60));
        assert_eq!(
            v,
            vec![
                ("live".to_string(), "eth0".to_string()),
                ("unknown-new".to_string(), "eth0".to_string())
            ]
        );
        assert!(check_mapped(&s, &c, Path::new("/var/lib/cni")).is_ok());
        assert!(check_mapped(&s, &[], Path::new("/wrong")).is_err());
        // Host-network sandboxes have no attachments to find.
        assert!(check_mapped(&[sandbox("h", true, Netns::Host)], &[], Path::new("/x")).is_ok());
    }

    #[test]
    fn versions_and_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.1.0","name":"a","plugins":[{"type":"x"},{"type":"y"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"z"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("30-c.conflist"), "junk").unwrap();
        std::fs::write(d.path().join("README"), "x").unwrap();
        let n = networks(d.path()).unwrap();
        assert_eq!(
            n.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(n[0].plugins.len(), 2);
        assert_eq!(n[1].plugins[0]["type"], "z");
        let mut plugins = Plugins::new(vec![d.path().to_path_buf()]);
        let missing = collect(&n[0], &[], &mut plugins, false);
        assert!(missing.iter().all(|o| o.result.is_err()));
    }
}
