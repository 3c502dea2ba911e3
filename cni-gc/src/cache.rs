//! libcni's result cache: `<cache dir>/results/<network>-<container>-<ifname>`,
//! JSON of kind `cniCacheV1` with `containerId`, `ifName` and `networkName`.
//! The engine writes one after each successful ADD and removes it at DEL.

use crate::GcError;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The network's name.
    pub network: String,
    /// `CNI_CONTAINERID` of the ADD (the pod sandbox's ID under CRI).
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// How long ago it was written.
    pub age: Duration,
}

/// Every attachment cached under `cache_dir` (unreadable entries are logged
/// and skipped). A missing `results` directory is an empty cache.
pub fn read(cache_dir: &Path) -> Result<Vec<Cached>, GcError> {
    let dir = cache_dir.join("results");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(GcError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let parsed = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
        let v = match parsed {
            Ok(v) => v,
            Err(why) => {
                tracing::warn!(entry = %p.display(), %why, "skipping an unreadable cache entry");
                continue;
            }
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(network), Some(container_id), Some(ifname)) =
            (field("networkName"), field("containerId"), field("ifName"))
        else {
            tracing::warn!(entry = %p.display(), "skipping a cache entry without networkName, containerId and ifName");
            continue;
        };
        let age = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        out.push(Cached {
            network,
            container_id,
            ifname,
            age,
        });
    }
    out.sort_by(|a, b| {
        (&a.network, &a.container_id, &a.ifname).cmp(&(&b.network, &b.container_id, &b.ifname))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_and_junk_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), vec![]);
        let r = d.path().join("results");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(
            r.join("net1-abc-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"abc","ifName":"eth0","networkName":"net1","result":{}}"#,
        )
        .unwrap();
        std::fs::write(r.join("junk"), "not json").unwrap();
        std::fs::write(r.join("partial"), r#"{"containerId":"x"}"#).unwrap();
        let got = read(d.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].network.as_str(),
                got[0].container_id.as_str(),
                got[0].ifname.as_str()
            ),
            ("net1", "abc", "eth0")
        );
        assert!(got[0].age < Duration::from_secs(60));
    }
}
