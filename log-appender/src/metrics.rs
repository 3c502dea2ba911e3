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
    /// Dead letters dropped because the dead-letter file was full or unwritable.
    pub dropped_dead_letter: AtomicU64,
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

/// Serves `GET /metrics` on `listen` until the process ends.
pub fn serve(listen: &str, m: std::sync::Arc<Metrics>) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(listen)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let n = conn.read(&mut req).unwrap_or(0);
                let ok = req[..n].starts_with(b"GET /metrics");
                let (status, body) = if ok {
                    ("200 OK", m.prometheus())
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}
