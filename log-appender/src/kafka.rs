//! The sink: where the router sends records. [`Sink`] is the interface
//! (send, purge, flush, with delivery reports coming back as [`Event`]s: an
//! acknowledgement, or a failure carrying the record so it goes back to the
//! spill); [`Rdkafka`] makes the real one, a librdkafka producer through
//! `rdkafka`. The model test (`tests/model.rs`) drives the router through a
//! fake with injected faults.

use crate::config::{Acks, Config};
use crate::deadletter::Reason;
use crate::metrics::Metrics;
use crate::record::Record;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// Where a record sent to Kafka came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Straight from the memory queue.
    Memory,
    /// Record `idx` of spill segment `seg`.
    Spill(u64, u32),
    /// A dead letter on its way to `kafka.dead_letter_topic`.
    DeadLetter(Reason),
}

/// The opaque carried with each message.
#[derive(Debug)]
pub struct Token {
    /// Its origin.
    pub from: From,
    /// The router's sequence number (failures are re-spilled in this order,
    /// whatever order librdkafka reports them in).
    pub seq: u64,
    /// Its payload size.
    pub bytes: usize,
}

/// What librdkafka reports back.
#[derive(Debug)]
pub enum Event {
    /// Kafka acknowledged it.
    Acked(Token),
    /// It failed (after `message.timeout.ms`, or purged); here it is, with
    /// the reason retrying cannot help when that is so.
    Failed(Token, Record, String, Option<Reason>),
    /// Every broker is down.
    AllBrokersDown,
    /// The producer hit a fatal error (e.g. an idempotence sequence lost by
    /// a restarted broker) and must be replaced.
    Fatal(String),
}

/// The producer context: forwards reports to the router.
pub struct Ctx {
    tx: Sender<Event>,
    metrics: Arc<Metrics>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        // librdkafka repeats connection failures many times a second while
        // a broker is down; the router logs the outage once.
        tracing::debug!(?level, fac, "librdkafka: {msg}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.fetch_add(1, Relaxed);
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                let _ = self.tx.send(Event::AllBrokersDown);
                tracing::debug!(%error, reason, "kafka client error");
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::debug!(%error, reason, "kafka client error");
            }
            Some(RDKafkaErrorCode::Fatal) => {
                let _ = self.tx.send(Event::Fatal(reason.to_string()));
                tracing::error!(%error, reason, "kafka client error");
            }
            _ => tracing::warn!(%error, reason, "kafka client error"),
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, r: &DeliveryResult<'_>, t: Box<Token>) {
        let ev = match r {
            Ok(_) => Event::Acked(*t),
            Err((e, m)) => {
                self.metrics.kafka_errors.fetch_add(1, Relaxed);
                Event::Failed(
                    *t,
                    Record {
                        topic: m.topic().to_string(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    },
                    e.to_string(),
                    e.rdkafka_error_code().and_then(permanent),
                )
            }
        };
        let _ = self.tx.send(ev);
    }
}

/// Where the router sends records. Every record handed over by
/// [`Sink::send`] is reported exactly once on the connector's channel, as
/// [`Event::Acked`] or [`Event::Failed`].
pub trait Sink: Send {
    /// Takes `r` for delivery, or gives it back.
    fn send(&self, r: Record, from: From, seq: u64) -> Result<(), Refusal>;
    /// Fails everything queued or in flight at once (reported as failures),
    /// so it goes back to the spill in order instead of waiting for the
    /// timeout.
    fn purge(&self);
    /// Waits up to `t` for what it holds to be delivered.
    fn flush(&self, t: Duration);
}

/// Makes sinks: at start, to replace a stuck one, and for new settings.
pub trait Connector: Send {
    /// A new sink for `cfg` that reports to `tx`.
    fn connect(&mut self, cfg: &Config, tx: Sender<Event>) -> Result<Box<dyn Sink>, KafkaError>;
}

/// The real connector: librdkafka producers.
pub struct Rdkafka {
    /// Where client errors are counted.
    pub metrics: Arc<Metrics>,
}

impl Connector for Rdkafka {
    fn connect(&mut self, cfg: &Config, tx: Sender<Event>) -> Result<Box<dyn Sink>, KafkaError> {
        let p: ThreadedProducer<Ctx> = client_config(cfg).create_with_context(Ctx {
            tx,
            metrics: self.metrics.clone(),
        })?;
        Ok(Box::new(p))
    }
}

/// The librdkafka settings `cfg` asks for.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.join(","))
        .set("compression.codec", k.compression.as_str())
        .set("linger.ms", k.linger_ms.to_string())
        .set("batch.size", k.batch_bytes.to_string())
        .set("message.timeout.ms", k.message_timeout_ms.to_string())
        .set("message.max.bytes", k.message_max_bytes.to_string())
        // A topic the broker does not have fails as unknown (dead-lettered)
        // before the message times out (retried): half the timeout.
        .set(
            "topic.metadata.propagation.max.ms",
            (k.message_timeout_ms / 2).clamp(1, 30_000).to_string(),
        )
        // librdkafka's own queue counts against the memory cap: half of it.
        .set(
            "queue.buffering.max.kbytes",
            (cfg.memory_max_bytes / 2 / 1024).max(1024).to_string(),
        )
        .set("queue.buffering.max.messages", "200000")
        .set(
            "max.in.flight.requests.per.connection",
            k.max_in_flight.to_string(),
        );
    match k.acks {
        // Idempotence keeps per-partition order across retries.
        Acks::All => c.set("acks", "all").set("enable.idempotence", "true"),
        // Without idempotence, only one request in flight keeps the order.
        Acks::Leader => c
            .set("acks", "1")
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1"),
    };
    c
}

/// The errors that retrying the same record can never fix; None for the
/// retriable ones (broker down, timeouts, leader changes, a purge).
pub fn permanent(code: RDKafkaErrorCode) -> Option<Reason> {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Some(Reason::TooLarge)
        }
        C::InvalidTopic => Some(Reason::InvalidTopic),
        C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition => {
            Some(Reason::UnknownTopic)
        }
        C::TopicAuthorizationFailed | C::InvalidRecord | C::BadMessage => Some(Reason::Refused),
        _ => None,
    }
}

/// Why librdkafka did not take a record.
#[derive(Debug)]
pub enum Refusal {
    /// Its queue is full: try again later.
    Full(Record),
    /// It can never take this record.
    Permanent(Record, Reason),
}

impl Sink for ThreadedProducer<Ctx> {
    fn send(&self, r: Record, from: From, seq: u64) -> Result<(), Refusal> {
        let t = Box::new(Token {
            from,
            seq,
            bytes: r.payload.len(),
        });
        let mut br = BaseRecord::with_opaque_to(&r.topic, t).payload(&r.payload);
        if let Some(k) = &r.key {
            br = br.key(k);
        }
        match ThreadedProducer::send(self, br) {
            Ok(()) => Ok(()),
            Err((e, _)) => {
                tracing::debug!(error = %e, "librdkafka refused a record");
                match e.rdkafka_error_code().and_then(permanent) {
                    Some(reason) => Err(Refusal::Permanent(r, reason)),
                    None => Err(Refusal::Full(r)),
                }
            }
        }
    }

    fn purge(&self) {
        Producer::purge(self, PurgeConfig::default().queue().inflight());
    }

    fn flush(&self, t: Duration) {
        let _ = Producer::flush(self, t);
    }
}
