//! The host's CPU topology, from `/sys/devices/system/cpu` and
//! `/sys/devices/system/node`: online CPUs, their SMT siblings (a "core"),
//! packages and NUMA nodes. Synthetic topologies serve tests and benchmarks.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One online logical CPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cpu {
    /// Its id (as in `cpuset.cpus`).
    pub id: u32,
    /// The physical core it belongs to (an index into [`Topology::cores`]).
    pub core: usize,
    /// Its package (socket).
    pub package: u32,
    /// Its NUMA node.
    pub node: u32,
    /// Its last-level cache group: the lowest CPU id sharing its L3 (or, where
    /// sysfs shows no L3, its package's first CPU).
    #[serde(default)]
    pub llc: u32,
}

/// The online CPUs, grouped into cores (SMT siblings) and NUMA nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    /// Online CPUs by id.
    pub cpus: BTreeMap<u32, Cpu>,
    /// Each core's logical CPUs, ascending.
    pub cores: Vec<Vec<u32>>,
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_list(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if b < a || b - a > 65_536 {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Formats CPU ids as a kernel list (`0-3,8`).
pub fn format_list(ids: impl IntoIterator<Item = u32>) -> String {
    let mut v: Vec<u32> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Topology {
    /// The host's topology, from a cache under `state_dir` while the online
    /// CPU list is unchanged: reading sysfs costs three files per CPU, which
    /// on a host with hundreds of CPUs would dominate every create.
    pub fn cached(state_dir: &Path) -> Result<Topology> {
        let online = read_trim(Path::new("/sys/devices/system/cpu/online")).unwrap_or_default();
        let cache = state_dir.join("cpus").join("topology-v2.json");
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Cached {
            online: String,
            topology: Topology,
        }
        if let Some(c) = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
        {
            if c.online == online {
                return Ok(c.topology);
            }
        }
        let topology = Topology::from_sysfs(Path::new("/sys"))?;
        if let Ok(bytes) = serde_json::to_vec(&Cached {
            online,
            topology: topology.clone(),
        }) {
            let _ = std::fs::create_dir_all(state_dir.join("cpus"));
            let _ =
                crate::atomic::write_file(&cache, &bytes, 0o644, crate::atomic::Durability::Atomic);
        }
        Ok(topology)
    }

    /// Reads the topology under `sys` (normally `/sys`).
    pub fn from_sysfs(sys: &Path) -> Result<Topology> {
        let cpu_dir = sys.join("devices/system/cpu");
        let online_path = cpu_dir.join("online");
        let online = read_trim(&online_path)
            .and_then(|s| parse_list(&s))
            .ok_or_else(|| Error::Config {
                path: online_path.clone(),
                message: "cannot read the online CPU list".into(),
            })?;
        let mut node_of = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(sys.join("devices/system/node")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(n) = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                for c in read_trim(&e.path().join("cpulist"))
                    .and_then(|s| parse_list(&s))
                    .unwrap_or_default()
                {
                    node_of.insert(c, n);
                }
            }
        }
        let mut cores: Vec<Vec<u32>> = Vec::new();
        let mut core_index: BTreeMap<Vec<u32>, usize> = BTreeMap::new();
        let mut cpus = BTreeMap::new();
        for id in online {
            let t = cpu_dir.join(format!("cpu{id}/topology"));
            let siblings: Vec<u32> = read_trim(&t.join("thread_siblings_list"))
                .and_then(|s| parse_list(&s))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec![id]);
            let package = read_trim(&t.join("physical_package_id"))
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u32;
            let core = *core_index.entry(siblings.clone()).or_insert_with(|| {
                cores.push(Vec::new());
                cores.len() - 1
            });
            cores[core].push(id);
            let llc = read_trim(&cpu_dir.join(format!("cpu{id}/cache/index3/shared_cpu_list")))
                .and_then(|s| parse_list(&s))
                .and_then(|l| l.first().copied());
            cpus.insert(
                id,
                Cpu {
                    id,
                    core,
                    package,
                    node: node_of.get(&id).copied().unwrap_or(0),
                    llc: llc.unwrap_or(u32::MAX - package),
                },
            );
        }
        Ok(Topology { cpus, cores })
    }

    /// A synthetic topology: `nodes` NUMA nodes (one package and one L3 each),
    /// each with `cores_per_node` cores of `smt` threads. CPU ids are numbered
    /// as Linux does on x86: first thread of every core, then the second threads.
    pub fn synthetic(nodes: u32, cores_per_node: u32, smt: u32) -> Topology {
        Self::synthetic_llc(nodes, cores_per_node, smt, cores_per_node)
    }

    /// [`Topology::synthetic`] with an L3 shared by every `cores_per_llc` cores.
    pub fn synthetic_llc(
        nodes: u32,
        cores_per_node: u32,
        smt: u32,
        cores_per_llc: u32,
    ) -> Topology {
        let cores_per_llc = cores_per_llc.max(1);
        let total_cores = nodes * cores_per_node;
        let mut cpus = BTreeMap::new();
        let mut cores = vec![Vec::new(); total_cores as usize];
        for t in 0..smt {
            for c in 0..total_cores {
                let id = t * total_cores + c;
                let node = c / cores_per_node;
                cores[c as usize].push(id);
                cpus.insert(
                    id,
                    Cpu {
                        id,
                        core: c as usize,
                        package: node,
                        node,
                        llc: (c / cores_per_llc) * cores_per_llc,
                    },
                );
            }
        }
        Topology { cpus, cores }
    }

    /// The NUMA nodes present, ascending.
    pub fn nodes(&self) -> Vec<u32> {
        let mut n: Vec<u32> = self.cpus.values().map(|c| c.node).collect();
        n.sort_unstable();
        n.dedup();
        n
    }

    /// The SMT siblings of `cpu` (itself included).
    pub fn siblings(&self, cpu: u32) -> &[u32] {
        self.cpus
            .get(&cpu)
            .and_then(|c| self.cores.get(c.core))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        assert_eq!(
            parse_list("0-3,8,10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(format_list([11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(format_list([]), "");
    }

    #[test]
    fn synthetic_smt_numbering() {
        let t = Topology::synthetic(2, 2, 2);
        assert_eq!(t.cpus.len(), 8);
        assert_eq!(t.siblings(0), &[0, 4]);
        assert_eq!(t.cpus[&2].node, 1);
        assert_eq!(t.nodes(), vec![0, 1]);
    }

    #[test]
    fn the_cache_returns_what_sysfs_says() {
        let d = tempfile::tempdir().unwrap();
        let a = Topology::cached(d.path()).unwrap();
        assert!(d.path().join("cpus/topology-v2.json").is_file());
        let b = Topology::cached(d.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Topology::from_sysfs(Path::new("/sys")).unwrap());
    }

    #[test]
    fn this_host_has_a_topology() {
        let t = Topology::from_sysfs(Path::new("/sys")).unwrap();
        assert!(!t.cpus.is_empty());
        assert!(t.cores.iter().all(|c| !c.is_empty()));
    }
}
