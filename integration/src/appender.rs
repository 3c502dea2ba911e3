//! Running `berth-log-appender` in tests: a config file and spill directory
//! of its own, lines written to its stdin, its counters read from its
//! metrics listener or its last log line.

use crate::artifacts::{binary, fresh_dir};
use crate::broker::{consume, Record};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A config file for one test (rewritable for hot-reload tests).
#[derive(Debug, Clone)]
pub struct AppenderConfig {
    /// The YAML file.
    pub path: PathBuf,
    /// The spill root it names.
    pub spill_dir: PathBuf,
}

impl AppenderConfig {
    /// Writes `yaml` with `spill.dir` set to a fresh directory (unless `yaml`
    /// already has a `spill:` section).
    pub fn new(yaml: &str) -> AppenderConfig {
        let dir = fresh_dir("appender");
        let spill_dir = dir.join("spill");
        let c = AppenderConfig {
            path: dir.join("log-appender.yaml"),
            spill_dir,
        };
        c.write(yaml);
        c
    }

    /// Replaces the file's contents atomically (`spill.dir` added as in `new`).
    pub fn write(&self, yaml: &str) {
        let text = if yaml.contains("spill:") {
            yaml.replace("SPILL_DIR", &self.spill_dir.display().to_string())
        } else {
            format!("{yaml}\nspill:\n  dir: {}\n", self.spill_dir.display())
        };
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("rename config");
    }
}

/// A running `berth-log-appender --stdin`; killed (by pid) when dropped.
pub struct Appender {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Metrics listener address, when configured.
    pub metrics: Option<String>,
    stderr_log: PathBuf,
}

impl Appender {
    /// Starts `--stdin --name NAME` with `cfg` and extra environment.
    pub fn start(cfg: &AppenderConfig, name: &str, env: &[(&str, &str)]) -> Appender {
        let log = cfg.path.with_extension(format!("{name}.log"));
        let metrics = std::fs::read_to_string(&cfg.path).ok().and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("listen:")
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        });
        let mut c = Command::new(binary("berth-log-appender"));
        c.arg("--config")
            .arg(&cfg.path)
            .args(["--stdin", "--name", name, "--drain-seconds", "90"])
            .env("BERTH_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start berth-log-appender");
        let stdin = child.stdin.take();
        Appender {
            child: Some(child),
            stdin,
            metrics,
            stderr_log: log,
        }
    }

    /// Writes one line.
    pub fn line(&mut self, l: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(l.as_bytes()).expect("write line");
        s.write_all(b"\n").expect("write newline");
    }

    /// Closes stdin and waits (up to `t`) for the appender to deliver and exit.
    pub fn finish(&mut self, t: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return st.success();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stdin = None;
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The counters of its final `done` line (`received`, `sent`, ...).
    pub fn final_counts(&self) -> BTreeMap<String, u64> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(" done "))
            .unwrap_or_default()
            .to_string();
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// Scrapes `/metrics`; `name{labels} value` lines as a map.
    pub fn scrape(&self) -> BTreeMap<String, u64> {
        let Some(addr) = &self.metrics else {
            return BTreeMap::new();
        };
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return BTreeMap::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| {
                Some((
                    k.trim_start_matches("berth_log_appender_").to_string(),
                    v.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What arrived for lines `"{prefix}-{seq}"`: missing sequence numbers,
/// duplicates, and whether first arrivals were in order per partition key.
#[derive(Debug, Default)]
pub struct Arrival {
    /// Sequence numbers below `n` that never arrived.
    pub missing: Vec<u64>,
    /// Records that arrived more than once.
    pub duplicates: usize,
    /// First arrivals out of order (per key).
    pub out_of_order: Vec<(u64, u64)>,
    /// The envelopes, parsed.
    pub envelopes: Vec<serde_json::Value>,
}

/// Consumes `topic` until `n` distinct lines of `prefix` arrived (or `t`
/// passed) and checks them.
pub fn arrivals(bootstrap: &str, topic: &str, prefix: &str, n: u64, t: Duration) -> Arrival {
    let deadline = Instant::now() + t;
    loop {
        // consume() reads every partition from the beginning.
        let recs = consume(bootstrap, topic, usize::MAX, Duration::from_secs(3));
        let a = check(&recs, prefix, n);
        if a.missing.is_empty() || Instant::now() >= deadline {
            return a;
        }
    }
}

fn check(recs: &[Record], prefix: &str, n: u64) -> Arrival {
    let mut a = Arrival::default();
    let mut seen = HashSet::new();
    let mut last: BTreeMap<(Option<Vec<u8>>, i32), u64> = BTreeMap::new();
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    sorted.dedup_by_key(|r| (r.partition, r.offset));
    for r in &sorted {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
        let line = v["line"].as_str().unwrap_or_default().to_string();
        // "{prefix}-{seq}", possibly followed by padding after a space.
        let Some(seq) = line
            .strip_prefix(&format!("{prefix}-"))
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if !seen.insert(seq) {
            a.duplicates += 1;
            continue;
        }
        let k = (r.key.clone(), r.partition);
        if let Some(prev) = last.insert(k, seq) {
            if prev > seq {
                a.out_of_order.push((prev, seq));
            }
        }
        a.envelopes.push(v);
    }
    a.missing = (0..n).filter(|i| !seen.contains(i)).collect();
    a
}
