//! `/etc/berth/log-appender.yaml`: every key, its default, and validation.
//! An invalid file is refused as a whole with the key named; on reload the
//! old configuration then stays in force.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the configuration lives unless `--config` or `BERTH_LOG_APPENDER_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/berth/log-appender.yaml";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// YAML that does not parse or has unknown keys or wrong types.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde_yaml's message (it names the key and line).
        msg: String,
    },
    /// A value out of range.
    #[error("{key}: {msg}")]
    Invalid {
        /// The key, dotted.
        key: &'static str,
        /// What is wrong.
        msg: String,
    },
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Send to Kafka; spill only beyond the rate limit or while Kafka is
    /// unreachable or slow (Noah's "mode 2").
    #[default]
    KafkaFirst,
    /// Append everything to the spill, ship from it at the rate limit ("mode 1").
    DiskFirst,
    /// Append everything to the spill and send nothing. A binary logger
    /// whose configuration cannot be loaded runs so (with the built-in
    /// defaults) until a valid file is in place, rather than exit and leave
    /// its container writing into a broken pipe.
    SpillOnly,
}

/// `kafka.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (the default: cheap and effective on log lines).
    #[default]
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `kafka.acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica (the default; needed for "never lost").
    #[default]
    All,
    /// The leader only.
    Leader,
}

/// `kafka`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic; `{container_name}`, `{container_id}` and `{namespace}` are
    /// replaced per record.
    pub topic: String,
    /// Compression codec.
    pub compression: Compression,
    /// Acknowledgements required.
    pub acks: Acks,
    /// `linger.ms`.
    pub linger_ms: u32,
    /// `batch.size` in bytes.
    pub batch_bytes: u32,
    /// `message.timeout.ms`: a record not acknowledged by then goes back to
    /// the spill.
    pub message_timeout_ms: u32,
    /// The partition key: `container_id`, `container_name`, `field:NAME`
    /// (a `fields_from_env` field) or `none`.
    pub partition_key: String,
    /// The largest record (payload and key) produced, librdkafka's
    /// `message.max.bytes`; a larger one is dead-lettered, not retried. Keep
    /// it at or below the broker's `message.max.bytes`.
    pub message_max_bytes: u32,
    /// Produce requests in flight per broker connection (1 to 5). 1 keeps
    /// per-container order even when a broker persists pipelined batches out
    /// of order as it crashes.
    pub max_in_flight: u32,
    /// A topic dead letters are also sent to (their envelope with a
    /// `dead_letter` object: `reason` and the `topic` it was meant for).
    /// One that cannot be sent there (too large, or the send fails) stays
    /// only in the dead-letter file.
    pub dead_letter_topic: Option<String>,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "logs".into(),
            compression: Compression::default(),
            acks: Acks::default(),
            linger_ms: 5,
            batch_bytes: 1_000_000,
            message_timeout_ms: 30_000,
            partition_key: "container_id".into(),
            message_max_bytes: 1_000_000,
            max_in_flight: 1,
            dead_letter_topic: None,
        }
    }
}

/// `rate_limit`: a token bucket; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Lines per second sent to Kafka.
    pub lines_per_sec: u64,
    /// Bytes per second sent to Kafka.
    pub bytes_per_sec: u64,
}

/// `spill.when_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new records (counted as `spill_full`), keep the oldest.
    #[default]
    DropNewest,
    /// Delete the oldest segment (its records counted as `spill_evicted`).
    DropOldest,
}

/// `spill`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spill {
    /// The directory; each source gets a subdirectory.
    pub dir: PathBuf,
    /// The byte budget of all segments of one source.
    pub max_bytes: u64,
    /// Segment size before rolling to the next.
    pub segment_bytes: u64,
    /// What to do when the budget is spent.
    pub when_full: WhenFull,
    /// The byte budget of every source's spill under `dir` together (0:
    /// none). A source at this cap is full as at its own `max_bytes`.
    pub host_max_bytes: u64,
}

impl Default for Spill {
    fn default() -> Self {
        Spill {
            dir: PathBuf::from("/var/lib/berth/log-appender"),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            when_full: WhenFull::default(),
            host_max_bytes: 0,
        }
    }
}

/// `lines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Split a long line into several records (each with `part`/`parts`).
    #[default]
    Split,
    /// Keep the first `max_bytes` and mark the record `truncated`.
    Truncate,
}

/// `lines`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lines {
    /// Longest line kept in one record.
    pub max_bytes: usize,
    /// What happens beyond it.
    pub overflow: Overflow,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            max_bytes: 16 * 1024,
            overflow: Overflow::Split,
        }
    }
}

/// `metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Serve Prometheus text on `http://LISTEN/metrics` (e.g.
    /// `127.0.0.1:9145`), in the daemon and `--stdin` modes. A binary logger
    /// runs once per container, so it never binds it (use `textfile_dir`).
    pub listen: Option<String>,
    /// Write the counters for node_exporter's textfile collector, in every
    /// mode: `<dir>/berth_log_appender_<source>.prom`, labelled
    /// `source="<source>"`, replaced atomically every 10 s and removed at exit.
    pub textfile_dir: Option<PathBuf>,
    /// Log the counters every this many seconds (0: never).
    pub log_interval_secs: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: None,
            textfile_dir: None,
            log_interval_secs: 60,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `kafka_first` or `disk_first`.
    pub mode: Mode,
    /// Kafka.
    pub kafka: Kafka,
    /// The rate limit towards Kafka.
    pub rate_limit: RateLimit,
    /// The disk spill.
    pub spill: Spill,
    /// `memory.max_bytes`: the in-memory queue's cap.
    pub memory_max_bytes: u64,
    /// Line handling.
    pub lines: Lines,
    /// Container environment variables copied into every record's `fields`.
    pub fields_from_env: Vec<String>,
    /// Container labels copied into every record's `fields` (the Docker
    /// logging plugin; other inputs have no labels).
    pub fields_from_labels: Vec<String>,
    /// Metrics.
    pub metrics: Metrics,
    /// The daemon mode's unix socket.
    pub listen_socket: PathBuf,
    /// The daemon mode's most concurrent clients (each has a thread); more
    /// are closed at once and counted.
    pub max_connections: usize,
    /// Where a daemon client's identity comes from: `peer` (the default) or
    /// `hello`.
    pub identity: Identity,
    /// The Docker logging plugin.
    pub docker: Docker,
}

/// `docker`: the Docker logging plugin (`--docker-plugin`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Docker {
    /// Where the plugin keeps the containers it is logging (to take them
    /// up again after a restart) and each container's `docker logs` ring.
    pub state_dir: PathBuf,
    /// The `docker logs` ring of one container, in bytes (two files of half
    /// this size; the oldest half is dropped as it fills). `--log-opt
    /// ring-size` sets it per container.
    pub ring_bytes: u64,
    /// The ring of a container not logged for this many days is removed
    /// (Docker never tells a plugin that a container was removed).
    pub ring_keep_days: u64,
    /// The niceness (0 to 19) of the plugin's work on each line (records,
    /// Kafka, spill, ring): when CPUs are short, the containers and dockerd
    /// come first, and what the plugin cannot keep up with is dropped and
    /// counted. The FIFO readers keep their priority, so dockerd never
    /// waits on the plugin.
    pub worker_nice: i32,
}

impl Default for Docker {
    fn default() -> Self {
        Docker {
            state_dir: PathBuf::from("/var/lib/berth/log-appender/docker"),
            ring_bytes: 16 << 20,
            ring_keep_days: 7,
            worker_nice: 10,
        }
    }
}

/// `identity`: who a daemon client is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// From the kernel: the connecting process's cgroup names its container
    /// (SO_PEERCRED pid, then `/proc/<pid>/cgroup`). A hello line may add a
    /// name and env only when it names that same container; a client in no
    /// container (a host process) is taken at its hello line.
    #[default]
    Peer,
    /// From the client's hello line, as given: for a socket only trusted
    /// log shippers can reach.
    Hello,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            kafka: Kafka::default(),
            rate_limit: RateLimit::default(),
            spill: Spill::default(),
            memory_max_bytes: 64 << 20,
            lines: Lines::default(),
            fields_from_env: Vec::new(),
            fields_from_labels: Vec::new(),
            metrics: Metrics::default(),
            listen_socket: PathBuf::from("/run/berth/log-appender.sock"),
            max_connections: 1024,
            identity: Identity::default(),
            docker: Docker::default(),
        }
    }
}

impl Config {
    /// What a binary logger runs with when its file cannot be loaded: the
    /// built-in defaults, spilling everything, sending nothing, and no topic.
    pub fn fallback() -> Config {
        let mut c = Config {
            mode: Mode::SpillOnly,
            ..Config::default()
        };
        // No topic is known: records get theirs from their envelope once
        // a valid file is in place (`record::retarget`).
        c.kafka.topic = String::new();
        c
    }
}

/// The smallest `docker logs` ring (`docker.ring_bytes`, `ring-size`).
pub const MIN_RING_BYTES: u64 = 64 << 10;

/// What one source changes in the file it runs with (the Docker plugin's
/// `--log-opt`s). Applied on every reload too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `kafka.topic`.
    pub topic: Option<String>,
    /// `kafka.partition_key`.
    pub partition_key: Option<String>,
    /// `mode`.
    pub mode: Option<Mode>,
}

impl Overrides {
    /// `c` with these changes, validated as a whole.
    pub fn apply(&self, mut c: Config) -> Result<Config, ConfigError> {
        if let Some(t) = &self.topic {
            c.kafka.topic = t.clone();
        }
        if let Some(k) = &self.partition_key {
            c.kafka.partition_key = k.clone();
        }
        if let Some(m) = self.mode {
            c.mode = m;
        }
        c.validate()?;
        Ok(c)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.replace('-', "_").as_str() {
            "kafka_first" => Ok(Mode::KafkaFirst),
            "disk_first" => Ok(Mode::DiskFirst),
            _ => Err(format!("{s:?} is not kafka_first or disk_first")),
        }
    }
}

/// The partition key, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// The container ID.
    ContainerId,
    /// The container name.
    ContainerName,
    /// A field from `fields_from_env` or `fields_from_labels`.
    Field(String),
    /// No key: librdkafka spreads records.
    None,
}

impl Config {
    /// Parses and validates YAML text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let c: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?
        };
        c.validate()?;
        Ok(c)
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Reads and validates `path`; a default file that is missing (not
    /// `explicit`ly named) means the built-in defaults.
    pub fn load_or_default(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        if explicit || path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// The partition key setting.
    pub fn partition_key(&self) -> PartitionKey {
        match self.kafka.partition_key.as_str() {
            "container_id" => PartitionKey::ContainerId,
            "container_name" => PartitionKey::ContainerName,
            "none" => PartitionKey::None,
            f => PartitionKey::Field(f.trim_start_matches("field:").to_string()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, msg: &str| {
            Err(ConfigError::Invalid {
                key,
                msg: msg.to_string(),
            })
        };
        if self.kafka.brokers.is_empty() || self.kafka.brokers.iter().any(|b| !b.contains(':')) {
            return bad("kafka.brokers", "needs at least one host:port");
        }
        if self.kafka.topic.is_empty() {
            return bad("kafka.topic", "must not be empty");
        }
        let k = self.kafka.partition_key.as_str();
        if !(matches!(k, "container_id" | "container_name" | "none") || k.starts_with("field:")) {
            return bad(
                "kafka.partition_key",
                "is container_id, container_name, field:NAME or none",
            );
        }
        if let Some(f) = k.strip_prefix("field:") {
            if !self.fields_from_env.iter().any(|x| x == f)
                && !self.fields_from_labels.iter().any(|x| x == f)
            {
                return bad(
                    "kafka.partition_key",
                    "names a field that neither fields_from_env nor fields_from_labels lists",
                );
            }
        }
        if let Some(t) = &self.kafka.dead_letter_topic {
            if !crate::deadletter::valid_topic(t) {
                return bad(
                    "kafka.dead_letter_topic",
                    "is not a Kafka topic name (1 to 249 of [A-Za-z0-9._-])",
                );
            }
        }
        if !(1..=5).contains(&self.kafka.max_in_flight) {
            return bad(
                "kafka.max_in_flight",
                "must be 1 to 5 (idempotence allows at most 5)",
            );
        }
        if self.kafka.message_timeout_ms < 1000 {
            return bad("kafka.message_timeout_ms", "must be at least 1000");
        }
        if self.lines.max_bytes < 64 {
            return bad("lines.max_bytes", "must be at least 64");
        }
        if self.memory_max_bytes < (self.lines.max_bytes as u64) * 4 {
            return bad("memory_max_bytes", "must hold at least 4 maximal lines");
        }
        if self.spill.segment_bytes < 4096 || self.spill.segment_bytes > self.spill.max_bytes {
            return bad(
                "spill.segment_bytes",
                "must be at least 4096 and at most spill.max_bytes",
            );
        }
        if !self.spill.dir.is_absolute() {
            return bad("spill.dir", "must be an absolute path");
        }
        if !self.docker.state_dir.is_absolute() {
            return bad("docker.state_dir", "must be an absolute path");
        }
        if !(0..=19).contains(&self.docker.worker_nice) {
            return bad("docker.worker_nice", "must be 0 to 19");
        }
        if self.docker.ring_bytes < MIN_RING_BYTES {
            return bad("docker.ring_bytes", "must be at least 65536");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("t.yaml"))
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = parse("").unwrap();
        assert_eq!(c.mode, Mode::KafkaFirst);
        assert_eq!(c.partition_key(), PartitionKey::ContainerId);
        let c = parse("mode: disk_first\nkafka:\n  topic: 'app-{container_name}'\n  compression: zstd\nrate_limit:\n  lines_per_sec: 100\nfields_from_env: [APP]\n").unwrap();
        assert_eq!(c.kafka.compression, Compression::Zstd);
        assert_eq!(c.rate_limit.lines_per_sec, 100);
        for (y, needle) in [
            ("kafka:\n  topc: x\n", "topc"),
            ("mode: fast\n", "mode"),
            ("kafka:\n  compression: brotli\n", "brotli"),
            (
                "kafka:\n  partition_key: field:APP\n",
                "kafka.partition_key",
            ),
            ("kafka:\n  brokers: []\n", "kafka.brokers"),
            ("spill:\n  dir: relative\n", "spill.dir"),
            ("lines:\n  max_bytes: 1\n", "lines.max_bytes"),
            ("rate_limit: 5\n", "rate_limit"),
        ] {
            let e = parse(y).unwrap_err().to_string();
            assert!(e.contains(needle), "{y:?}: {e}");
        }
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let text = include_str!("../../etc/log-appender.yaml");
        let c = Config::parse(text, Path::new("etc/log-appender.yaml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
