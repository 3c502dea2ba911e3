//! Counters and gauges, served in Prometheus text format and logged.

use crate::deadletter::Reason;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Every counter of one appender process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Lines read from the inputs.
    pub received: AtomicU64,
    /// Bytes of those lines.
    pub received_bytes: AtomicU64,
    /// Records Kafka acknowledged straight from memory.
    pub sent: AtomicU64,
    /// Bytes Kafka acknowledged (sent and replayed).
    pub sent_bytes: AtomicU64,
    /// Records appended to the spill.
    pub spilled: AtomicU64,
    /// Records Kafka acknowledged from the spill.
    pub replayed: AtomicU64,
    /// Dropped because the memory queue was full.
    pub dropped_memory_full: AtomicU64,
    /// Dropped because the spill budget was spent (`drop_newest`).
    pub dropped_spill_full: AtomicU64,
    /// Dropped with an evicted oldest segment (`drop_oldest`).
    pub dropped_spill_evicted: AtomicU64,
    /// Dropped because a spilled record failed its CRC.
    pub dropped_corrupt: AtomicU64,
    /// Records moved to the dead-letter file, by [`Reason::index`].
    pub dead_lettered: [AtomicU64; 4],
    /// Dead letters Kafka acknowledged on `kafka.dead_letter_topic`.
    pub dead_letter_forwarded: AtomicU64,
    /// Dead letters dropped because the dead-letter file was full or unwritable.
    pub dropped_dead_letter: AtomicU64,
    /// Lines read and discarded by a binary logger that failed (it keeps
    /// reading so its container never blocks or gets SIGPIPE).
    pub dropped_failed: AtomicU64,
    /// Daemon clients closed at once: over `max_connections`, or a hello
    /// line over its cap.
    pub refused_clients: AtomicU64,
    /// Delivery failures and client errors reported by librdkafka.
    pub kafka_errors: AtomicU64,
    /// Records in the memory queue.
    pub memory_records: AtomicU64,
    /// Bytes in the memory queue.
    pub memory_bytes: AtomicU64,
    /// Records waiting in the spill.
    pub spill_records: AtomicU64,
    /// Bytes of spill segments on disk.
    pub spill_bytes: AtomicU64,
    /// Records handed to librdkafka and not yet acknowledged.
    pub inflight: AtomicU64,
}

impl Metrics {
    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.dropped_memory_full.load(Relaxed)
            + self.dropped_spill_full.load(Relaxed)
            + self.dropped_spill_evicted.load(Relaxed)
            + self.dropped_corrupt.load(Relaxed)
            + self.dropped_dead_letter.load(Relaxed)
            + self.dropped_failed.load(Relaxed)
    }

    /// All dead letters.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut c = |name: &str, help: &str, kind: &str, v: &AtomicU64, label: &str| {
            let _ = writeln!(s, "# HELP berth_log_appender_{name} {help}");
            let _ = writeln!(s, "# TYPE berth_log_appender_{name} {kind}");
            let _ = writeln!(s, "berth_log_appender_{name}{label} {}", v.load(Relaxed));
        };
        c(
            "received_total",
            "Lines read from the inputs.",
            "counter",
            &self.received,
            "",
        );
        c(
            "received_bytes_total",
            "Bytes of lines read.",
            "counter",
            &self.received_bytes,
            "",
        );
        c(
            "sent_total",
            "Records acknowledged by Kafka straight from memory.",
            "counter",
            &self.sent,
            "",
        );
        c(
            "sent_bytes_total",
            "Bytes acknowledged by Kafka.",
            "counter",
            &self.sent_bytes,
            "",
        );
        c(
            "spilled_total",
            "Records appended to the disk spill.",
            "counter",
            &self.spilled,
            "",
        );
        c(
            "replayed_total",
            "Records acknowledged by Kafka from the spill.",
            "counter",
            &self.replayed,
            "",
        );
        c(
            "dead_letter_forwarded_total",
            "Dead letters acknowledged on kafka.dead_letter_topic.",
            "counter",
            &self.dead_letter_forwarded,
            "",
        );
        c(
            "refused_clients_total",
            "Daemon clients closed at once: over max_connections, or an overlong hello line.",
            "counter",
            &self.refused_clients,
            "",
        );
        c(
            "kafka_errors_total",
            "Delivery failures and client errors.",
            "counter",
            &self.kafka_errors,
            "",
        );
        c(
            "memory_queue_records",
            "Records in the memory queue.",
            "gauge",
            &self.memory_records,
            "",
        );
        c(
            "memory_queue_bytes",
            "Bytes in the memory queue.",
            "gauge",
            &self.memory_bytes,
            "",
        );
        c(
            "spill_records",
            "Records waiting in the spill.",
            "gauge",
            &self.spill_records,
            "",
        );
        c(
            "spill_bytes",
            "Bytes of spill segments on disk.",
            "gauge",
            &self.spill_bytes,
            "",
        );
        c(
            "inflight_records",
            "Records handed to Kafka, not yet acknowledged.",
            "gauge",
            &self.inflight,
            "",
        );
        let _ = writeln!(
            s,
            "# HELP berth_log_appender_dropped_total Records dropped, by reason."
        );
        let _ = writeln!(s, "# TYPE berth_log_appender_dropped_total counter");
        for (reason, v) in [
            ("memory_full", &self.dropped_memory_full),
            ("spill_full", &self.dropped_spill_full),
            ("spill_evicted", &self.dropped_spill_evicted),
            ("corrupt", &self.dropped_corrupt),
            ("dead_letter_full", &self.dropped_dead_letter),
            ("appender_failed", &self.dropped_failed),
        ] {
            let _ = writeln!(
                s,
                "berth_log_appender_dropped_total{{reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP berth_log_appender_dead_lettered_total Records Kafka can never take, moved to the dead-letter file, by reason."
        );
        let _ = writeln!(s, "# TYPE berth_log_appender_dead_lettered_total counter");
        for r in Reason::ALL {
            let _ = writeln!(
                s,
                "berth_log_appender_dead_lettered_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.dead_lettered[r.index()].load(Relaxed)
            );
        }
        s
    }

    /// One log line with every counter.
    pub fn log(&self) {
        tracing::info!(
            received = self.received.load(Relaxed),
            sent = self.sent.load(Relaxed),
            spilled = self.spilled.load(Relaxed),
            replayed = self.replayed.load(Relaxed),
            dropped_memory_full = self.dropped_memory_full.load(Relaxed),
            dropped_spill_full = self.dropped_spill_full.load(Relaxed),
            dropped_spill_evicted = self.dropped_spill_evicted.load(Relaxed),
            dropped_corrupt = self.dropped_corrupt.load(Relaxed),
            dead_lettered = self.dead_lettered_total(),
            dropped_dead_letter = self.dropped_dead_letter.load(Relaxed),
            refused_clients = self.refused_clients.load(Relaxed),
            kafka_errors = self.kafka_errors.load(Relaxed),
            memory_records = self.memory_records.load(Relaxed),
            spill_records = self.spill_records.load(Relaxed),
            inflight = self.inflight.load(Relaxed),
            "counters"
        );
    }
}

/// `text` (Prometheus exposition) with `label="value"` added to every sample.
pub fn with_label(text: &str, label: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some((name, rest)) = line.split_once('{') {
            let _ = write!(out, "{name}{{{label}=\"{value}\",{rest}");
        } else if let Some((name, v)) = line.split_once(' ') {
            let _ = write!(out, "{name}{{{label}=\"{value}\"}} {v}");
        }
        out.push('\n');
    }
    out
}

/// The textfile of source `file_stem` in `dir`.
pub fn textfile_path(dir: &std::path::Path, file_stem: &str) -> std::path::PathBuf {
    dir.join(format!("berth_log_appender_{file_stem}.prom"))
}

/// Writes `m` for node_exporter's textfile collector to `dir`, as
/// `berth_log_appender_<file_stem>.prom` labelled `source="<source>"`:
/// a temp file, then rename, so a scrape never reads half of it.
pub fn write_textfile(
    m: &Metrics,
    dir: &std::path::Path,
    file_stem: &str,
    source: &str,
) -> std::io::Result<()> {
    let path = textfile_path(dir, file_stem);
    let tmp = dir.join(format!(".berth_log_appender_{file_stem}.prom.tmp"));
    std::fs::write(&tmp, with_label(&m.prometheus(), "source", source))?;
    std::fs::rename(&tmp, &path)
}

/// Serves `GET /metrics` on `listen` until the process ends, with
/// tiny_http: each connection is read on its own worker, so a slow or idle
/// client does not hold up the next scrape.
pub fn serve(listen: &str, m: std::sync::Arc<Metrics>) -> std::io::Result<()> {
    let server = tiny_http::Server::http(listen).map_err(std::io::Error::other)?;
    let content_type =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..])
            .map_err(|()| std::io::Error::other("bad header"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let response = if req.url() == "/metrics" {
                    tiny_http::Response::from_string(m.prometheus())
                        .with_header(content_type.clone())
                } else {
                    tiny_http::Response::from_string("try /metrics\n").with_status_code(404)
                };
                let _ = req.respond(response);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that connects and sends nothing does not hold up a scrape.
    #[test]
    fn an_idle_client_does_not_stall_scraping() {
        use std::io::{Read, Write};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let m = std::sync::Arc::new(Metrics::default());
        m.sent.store(3, Relaxed);
        serve(&addr, m).unwrap();
        let _idle = std::net::TcpStream::connect(&addr).unwrap();
        let t = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("berth_log_appender_sent_total 3"), "{body}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn textfile_samples_carry_their_source() {
        let m = Metrics::default();
        m.received.store(7, Relaxed);
        let text = with_label(&m.prometheus(), "source", "ns-a\"b");
        assert!(
            text.contains("berth_log_appender_received_total{source=\"ns-a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "berth_log_appender_dropped_total{source=\"ns-a\\\"b\",reason=\"spill_full\"} 0\n"
            ),
            "{text}"
        );
        assert!(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.contains("source=")));
        let d = tempfile::tempdir().unwrap();
        write_textfile(&m, d.path(), "web", "web").unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["berth_log_appender_web.prom"]);
    }
}
