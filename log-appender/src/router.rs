//! The router: the one thread that decides where each record goes, after
//! Vector's source → buffer → sink with acknowledgements.
//!
//! * `kafka_first`: records go to Kafka while it is healthy, the rate limit
//!   allows and the spill is empty; otherwise to the spill. Once anything is
//!   spilled, later records follow it into the spill, so per-container order
//!   holds; the spill is replayed in order while Kafka is healthy and under
//!   the limit.
//! * `disk_first`: everything is appended to the spill and shipped from it
//!   at the rate limit.
//! * A record whose delivery failed goes back to the spill; after a failure
//!   the router takes nothing new from memory until every record in flight
//!   is settled, so the failed ones are spilled before anything newer.
//! * For the same reason nothing is spilled while records sent from memory
//!   are in flight: a record that cannot be sent now (the rate limit, a
//!   full librdkafka queue, Kafka unhealthy) waits in memory, still counted
//!   against the memory cap, until they are settled, then goes to the spill
//!   (and the records behind it follow).
//! * A record Kafka can never take (an invalid topic name, too large, an
//!   unknown topic the broker will not create) goes to the dead-letter file
//!   ([`crate::deadletter`]), whether it is caught before producing, refused
//!   by librdkafka or failed in its delivery report; it never holds up the
//!   records behind it, and Kafka's health is not in question.
//! * Inputs never wait for the router: they drop (and count) when the
//!   memory queue is full.

use crate::config::{Config, Mode};
use crate::deadletter::{self, DeadLetter, Reason};
use crate::kafka::{Connector, Event, From, Rdkafka, Refusal, Sink, Token};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::queue::MemQueue;
use crate::record::{self, Record};
use crate::spill::{Refused, Spill};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Timings of the router; [`Tuning::default`] is what the appender runs
/// with (the model test shortens them).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// How often one spilled record probes an unhealthy Kafka.
    pub probe_every: Duration,
    /// Failed probes in a row before the producer is replaced.
    pub probes_before_new_producer: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            probe_every: Duration::from_secs(1),
            probes_before_new_producer: 5,
        }
    }
}

/// How long records from memory wait for room in librdkafka's queue
/// before they go to the spill instead.
const FULL_WAIT: Duration = Duration::from_millis(200);

/// A replay burst handles delivery reports every this many records.
const REPORTS_EVERY: u32 = 256;

/// How many spilled records may be in flight at once.
const REPLAY_WINDOW: u64 = 20_000;

/// State shared by inputs, the router and the reloader.
pub struct Shared {
    /// The configuration in force.
    pub cfg: RwLock<Arc<Config>>,
    /// A new configuration for the router to apply.
    pub reloaded: Mutex<Option<Arc<Config>>>,
    /// The memory queue.
    pub queue: MemQueue,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Inputs still open; the router ends when none are left and all is
    /// delivered (or the drain timeout passed).
    pub inputs_open: AtomicUsize,
    /// Set to stop at once (signals).
    pub stop: AtomicBool,
    /// Set to finish by then: keep reading the inputs and delivering until
    /// all is delivered or this instant, then keep the rest in the spill
    /// (a binary logger's SIGTERM: containerd kills it 12 s later).
    pub finish_by: Mutex<Option<Instant>>,
}

impl Shared {
    /// Shared state for `cfg`.
    pub fn new(cfg: Config) -> Arc<Shared> {
        Arc::new(Shared {
            queue: MemQueue::new(cfg.memory_max_bytes),
            cfg: RwLock::new(Arc::new(cfg)),
            reloaded: Mutex::new(None),
            metrics: Arc::new(Metrics::default()),
            inputs_open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            finish_by: Mutex::new(None),
        })
    }

    /// The configuration in force.
    pub fn cfg(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `c` in force for new records and hands it to the router.
    pub fn reload(&self, c: Config) {
        let c = Arc::new(c);
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = c.clone();
        *self.reloaded.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
}

struct Router {
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    sink: Box<dyn Sink>,
    connector: Box<dyn Connector>,
    tuning: Tuning,
    events: Receiver<Event>,
    tx: std::sync::mpsc::Sender<Event>,
    spill: Spill,
    dead: DeadLetter,
    limiter: Limiter,
    healthy: bool,
    inflight_mem: u64,
    inflight_spill: u64,
    /// Dead letters on their way to `kafka.dead_letter_topic`.
    inflight_dead: u64,
    failed_mem: Vec<(u64, Record)>,
    /// Records taken from the memory queue and not yet routed (their bytes
    /// still count against its cap).
    /// Each with the bytes it was counted as in the queue (a retargeted
    /// record grows, and must free no more than it took).
    held: std::collections::VecDeque<(u64, Record)>,
    /// A record could not be sent from memory (the rate limit, a full
    /// librdkafka queue, Kafka unhealthy) while older ones were in flight:
    /// nothing more is sent from memory, and once those are settled what
    /// waits goes to the spill.
    paused: bool,
    /// Since when librdkafka's queue has been refusing records from memory.
    full_since: Option<Instant>,
    seq: u64,
    rewind: Option<(u64, u32)>,
    last_probe: Instant,
    /// Probes failed in a row since Kafka was last healthy.
    failed_probes: u32,
    /// Replaced producers, kept until their last reports are in.
    retired: Vec<(Box<dyn Sink>, Instant)>,
}

fn kafka_settings_changed(a: &Config, b: &Config) -> bool {
    a.kafka.brokers != b.kafka.brokers
        || a.kafka.compression != b.kafka.compression
        || a.kafka.acks != b.kafka.acks
        || a.kafka.linger_ms != b.kafka.linger_ms
        || a.kafka.batch_bytes != b.kafka.batch_bytes
        || a.kafka.message_timeout_ms != b.kafka.message_timeout_ms
}

impl Router {
    fn spill_one(&mut self, r: &Record) {
        let m = &self.shared.metrics;
        match self.spill.append(r) {
            Ok(evicted) => {
                m.spilled.fetch_add(1, Relaxed);
                m.dropped_spill_evicted.fetch_add(evicted, Relaxed);
            }
            Err(Refused::Full) => {
                m.dropped_spill_full.fetch_add(1, Relaxed);
            }
            Err(Refused::Io(e)) => {
                m.dropped_spill_full.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "cannot write to the spill; record dropped");
            }
        }
    }

    /// Sets aside `r`, which Kafka can never take: to
    /// `kafka.dead_letter_topic` when one is set and it fits, else (or when
    /// that send fails) to the dead-letter file.
    fn dead_letter(&mut self, r: &Record, reason: Reason) {
        if let Some(topic) = &self.cfg.kafka.dead_letter_topic {
            if let Some(d) =
                deadletter::for_topic(r, reason, topic, self.cfg.kafka.message_max_bytes)
            {
                if self.sink.send(d, From::DeadLetter(reason), 0).is_ok() {
                    self.inflight_dead += 1;
                    return;
                }
            }
        }
        self.keep_dead_letter(r, reason);
    }

    /// Counts a dead letter set aside, logging the first of each reason and
    /// every 1000th after (one bad client must not flood the log).
    fn count_dead_letter(&self, topic: &str, reason: Reason, to: &str) {
        let before = self.shared.metrics.dead_lettered[reason.index()].fetch_add(1, Relaxed);
        if before.is_multiple_of(1000) {
            tracing::warn!(
                reason = reason.as_str(),
                topic,
                to,
                count = before + 1,
                "a record Kafka can never take was set aside"
            );
        }
    }

    /// Writes `r` to the dead-letter file.
    fn keep_dead_letter(&mut self, r: &Record, reason: Reason) {
        let m = &self.shared.metrics;
        match self.dead.put(r, reason) {
            Ok(()) => {
                let file = self.dead.path().display().to_string();
                self.count_dead_letter(&r.topic, reason, &file);
            }
            Err(e) => {
                m.dropped_dead_letter.fetch_add(1, Relaxed);
                tracing::error!(reason = reason.as_str(), error = %e, "cannot keep a dead letter; record dropped");
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        let m = self.shared.metrics.clone();
        match ev {
            Event::Acked(Token {
                from: From::DeadLetter(reason),
                ..
            }) => {
                self.inflight_dead -= 1;
                m.dead_letter_forwarded.fetch_add(1, Relaxed);
                let to = self.cfg.kafka.dead_letter_topic.clone().unwrap_or_default();
                self.count_dead_letter("", reason, &to);
            }
            Event::Failed(
                Token {
                    from: From::DeadLetter(reason),
                    ..
                },
                rec,
                why,
                _,
            ) => {
                // Kafka's health is not in question: the file keeps it.
                tracing::debug!(error = %why, "a dead letter could not be sent to its topic");
                self.inflight_dead -= 1;
                self.keep_dead_letter(&rec, reason);
            }
            Event::Acked(t) => {
                m.sent_bytes.fetch_add(t.bytes as u64, Relaxed);
                match t.from {
                    From::Memory => {
                        self.inflight_mem -= 1;
                        m.sent.fetch_add(1, Relaxed);
                    }
                    From::Spill(seg, idx) => {
                        self.inflight_spill -= 1;
                        m.replayed.fetch_add(1, Relaxed);
                        self.spill.ack(seg, idx);
                    }
                    // Handled above.
                    From::DeadLetter(_) => {}
                }
                if !self.healthy {
                    tracing::info!("kafka is healthy again");
                }
                self.healthy = true;
                self.failed_probes = 0;
            }
            Event::Failed(t, rec, why, Some(reason)) => {
                // This record, not Kafka, is the problem: set it aside.
                tracing::debug!(error = %why, "delivery failed for good");
                match t.from {
                    From::Memory => self.inflight_mem -= 1,
                    From::Spill(seg, idx) => {
                        self.inflight_spill -= 1;
                        self.spill.ack(seg, idx);
                    }
                    // Handled above.
                    From::DeadLetter(_) => {}
                }
                self.dead_letter(&rec, reason);
            }
            Event::Failed(t, rec, why, None) => {
                if self.healthy {
                    tracing::warn!(error = %why, "kafka delivery failed; spilling until it recovers");
                    self.sink.purge();
                } else if matches!(t.from, From::Spill(..)) {
                    // A probe failed. A producer whose requests timed out on
                    // a broker that stalled (but never closed the connection)
                    // may never send again: after a few failed probes, start
                    // a fresh producer session.
                    self.failed_probes += 1;
                    if self
                        .failed_probes
                        .is_multiple_of(self.tuning.probes_before_new_producer.max(1))
                    {
                        tracing::warn!(error = %why, probes = self.failed_probes, "kafka still fails; replacing the producer");
                        self.replace_sink();
                    }
                }
                self.healthy = false;
                match t.from {
                    From::Memory => {
                        self.inflight_mem -= 1;
                        self.failed_mem.push((t.seq, rec));
                    }
                    From::Spill(seg, idx) => {
                        self.inflight_spill -= 1;
                        self.rewind = Some(match self.rewind {
                            Some(r) if r <= (seg, idx) => r,
                            _ => (seg, idx),
                        });
                    }
                    // Handled above.
                    From::DeadLetter(_) => {}
                }
            }
            Event::Fatal(why) => {
                tracing::error!(reason = %why, "kafka producer failed fatally; replacing it");
                self.healthy = false;
                self.replace_sink();
            }
            Event::AllBrokersDown => {
                if self.healthy {
                    tracing::warn!("all kafka brokers are down; spilling");
                    // A fresh producer session for when they are back: an
                    // idempotent producer's old sequence state may not have
                    // survived a broker restart.
                    self.replace_sink();
                }
                self.healthy = false;
            }
        }
    }

    /// Spills the records whose delivery failed, in the order they were sent.
    fn spill_failed(&mut self) {
        let mut failed = std::mem::take(&mut self.failed_mem);
        failed.sort_by_key(|(seq, _)| *seq);
        for (_, rec) in failed {
            self.spill_one(&rec);
        }
    }

    /// Purges the producer (what it held comes back as failures and is
    /// spilled in order) and starts a new one.
    fn replace_sink(&mut self) {
        match self.connector.connect(&self.cfg, self.tx.clone()) {
            Ok(s) => {
                let old = std::mem::replace(&mut self.sink, s);
                old.purge();
                self.retired.push((old, Instant::now()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new kafka producer");
                self.sink.purge();
            }
        }
    }

    fn apply_reload(&mut self) {
        let Some(c) = self
            .shared
            .reloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        self.limiter
            .set(c.rate_limit.lines_per_sec, c.rate_limit.bytes_per_sec);
        self.spill
            .set_limits(c.spill.max_bytes, c.spill.segment_bytes, c.spill.when_full);
        self.spill.set_host_cap(c.spill.host_max_bytes);
        if kafka_settings_changed(&self.cfg, &c) {
            match self.connector.connect(&c, self.tx.clone()) {
                Ok(s) => {
                    let old = std::mem::replace(&mut self.sink, s);
                    // What the old producer holds is delivered or reported
                    // failed (and spilled) through the same channel.
                    old.flush(Duration::from_millis(u64::from(
                        self.cfg.kafka.message_timeout_ms,
                    )));
                    tracing::info!("kafka producer rebuilt for the new settings");
                }
                Err(e) => {
                    tracing::error!(error = %e, "new kafka settings refused; keeping the old producer")
                }
            }
        }
        self.cfg = c;
        tracing::info!("configuration reloaded");
    }

    /// Routes the held records, in order, until one must wait.
    fn route(&mut self) {
        // Their room in the memory queue is freed once, at the end.
        let mut routed = 0;
        while let Some((size, r)) = self.held.pop_front() {
            let r = record::retarget(&self.cfg, r);
            // A record waiting for a topic (no configuration yet) is kept.
            let waiting = r.topic.is_empty() && self.cfg.kafka.topic.is_empty();
            let valid = if waiting {
                Ok(())
            } else {
                deadletter::validate(&r, self.cfg.kafka.message_max_bytes)
            };
            if let Err(reason) = valid {
                self.dead_letter(&r, reason);
            } else if self.cfg.mode == Mode::KafkaFirst
                && self.healthy
                && !self.paused
                && self.failed_mem.is_empty()
                && self.spill.is_drained()
                && self.limiter.try_take(r.payload.len())
            {
                self.seq += 1;
                match self.sink.send(r, From::Memory, self.seq) {
                    Ok(()) => {
                        self.inflight_mem += 1;
                        self.full_since = None;
                    }
                    // librdkafka's queue drains as acknowledgements come:
                    // try again shortly; if it stays full, spill once what
                    // is in flight is settled.
                    Err(Refusal::Full(r)) if self.inflight_mem > 0 => {
                        self.limiter.refund(r.payload.len());
                        let since = *self.full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FULL_WAIT {
                            self.paused = true;
                        }
                        self.held.push_front((size, r));
                        break;
                    }
                    Err(Refusal::Full(r)) => {
                        self.spill_one(&r);
                        self.paused = false;
                    }
                    Err(Refusal::Permanent(r, reason)) => self.dead_letter(&r, reason),
                }
            } else if self.inflight_mem > 0 {
                // Spilled now, it would be replayed before older records
                // still in flight, should they fail: wait for them.
                self.paused = true;
                self.held.push_front((size, r));
                break;
            } else {
                // From here on the spill keeps the order.
                self.spill_one(&r);
                self.paused = false;
                self.full_since = None;
            }
            routed += size;
        }
        if routed > 0 {
            self.shared.queue.release(routed);
        }
    }

    /// Sends spilled records while allowed; returns true when the rate
    /// limit or a full librdkafka queue stopped it (the loop then waits
    /// instead of spinning).
    fn replay(&mut self) -> bool {
        if self.rewind.is_some() || !self.failed_mem.is_empty() || self.cfg.mode == Mode::SpillOnly
        {
            return false;
        }
        let window = if self.healthy {
            REPLAY_WINDOW
        } else if self.last_probe.elapsed() >= self.tuning.probe_every && self.inflight_spill == 0 {
            // One probe a second finds out when Kafka is back.
            self.last_probe = Instant::now();
            1
        } else {
            return false;
        };
        let mut sent = 0u32;
        while self.inflight_spill < window && self.spill.has_unread() {
            // A long burst looks at the reports now and then: after a
            // failure, sending more (which a returning broker might take
            // ahead of the failed records) only widens the gap.
            sent += 1;
            if sent.is_multiple_of(REPORTS_EVERY) {
                while let Ok(ev) = self.events.try_recv() {
                    self.handle(ev);
                }
                if !self.healthy || self.rewind.is_some() {
                    return false;
                }
            }
            match self.spill.next_unread() {
                Some(Ok((seg, idx, rec))) => {
                    let rec = record::retarget(&self.cfg, rec);
                    // Spilled before a limit changed, or by an older version.
                    if let Err(reason) =
                        deadletter::validate(&rec, self.cfg.kafka.message_max_bytes)
                    {
                        self.dead_letter(&rec, reason);
                        self.spill.ack(seg, idx);
                        continue;
                    }
                    if !self.limiter.try_take(rec.payload.len()) {
                        // Over the limit: read it again next time.
                        self.spill.rewind(seg, idx);
                        return true;
                    }
                    match self.sink.send(rec, From::Spill(seg, idx), 0) {
                        Ok(()) => self.inflight_spill += 1,
                        Err(Refusal::Full(_)) => {
                            self.spill.rewind(seg, idx);
                            return true;
                        }
                        Err(Refusal::Permanent(rec, reason)) => {
                            self.dead_letter(&rec, reason);
                            self.spill.ack(seg, idx);
                        }
                    }
                }
                Some(Err(lost)) => {
                    self.shared.metrics.dropped_corrupt.fetch_add(lost, Relaxed);
                }
                None => return false,
            }
        }
        false
    }

    fn gauges(&self) {
        let m = &self.shared.metrics;
        let (n, b) = self.shared.queue.depth();
        m.memory_records
            .store((n + self.held.len()) as u64, Relaxed);
        m.memory_bytes.store(b, Relaxed);
        let (sn, sb) = self.spill.depth();
        m.spill_records.store(sn, Relaxed);
        m.spill_bytes.store(sb, Relaxed);
        m.inflight
            .store(self.inflight_mem + self.inflight_spill, Relaxed);
    }
}

/// Runs the router with librdkafka producers until the inputs are closed
/// and everything is delivered, or `drain` has passed since they closed
/// (what is left stays in the spill for the next start), or `shared.stop`
/// is set.
pub fn run(
    shared: Arc<Shared>,
    spill: Spill,
    drain: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    let metrics = shared.metrics.clone();
    run_with(
        shared,
        spill,
        drain,
        Box::new(Rdkafka { metrics }),
        Tuning::default(),
    )
}

/// [`run`] with the sinks `connector` makes.
pub fn run_with(
    shared: Arc<Shared>,
    spill: Spill,
    drain: Duration,
    mut connector: Box<dyn Connector>,
    tuning: Tuning,
) -> Result<(), rdkafka::error::KafkaError> {
    let cfg = shared.cfg();
    let (tx, events) = channel();
    let sink = connector.connect(&cfg, tx.clone())?;
    // Dead letters may take as much room as the spill itself.
    let dead = DeadLetter::new(spill.dir(), cfg.spill.max_bytes);
    let mut r = Router {
        dead,
        limiter: Limiter::new(cfg.rate_limit.lines_per_sec, cfg.rate_limit.bytes_per_sec),
        shared: shared.clone(),
        cfg,
        sink,
        connector,
        tuning,
        events,
        tx,
        spill,
        healthy: true,
        inflight_mem: 0,
        inflight_spill: 0,
        inflight_dead: 0,
        failed_mem: Vec::new(),
        held: std::collections::VecDeque::new(),
        paused: false,
        full_since: None,
        seq: 0,
        rewind: None,
        last_probe: Instant::now(),
        failed_probes: 0,
        retired: Vec::new(),
    };
    let mut last_sync = Instant::now();
    let mut last_log = Instant::now();
    let mut closed_at: Option<Instant> = None;
    let mut throttled = false;
    loop {
        r.apply_reload();
        while let Ok(ev) = r.events.try_recv() {
            r.handle(ev);
        }
        if !r.failed_mem.is_empty() && r.inflight_mem == 0 {
            r.spill_failed();
        }
        if r.inflight_spill == 0 {
            if let Some((seg, idx)) = r.rewind.take() {
                r.spill.rewind(seg, idx);
            }
        }
        // After a failure, settle what is in flight before taking anything newer.
        let hold = !r.healthy && r.inflight_mem > 0;
        if !hold {
            r.route();
        }
        if !hold && r.held.is_empty() {
            let busy = r.spill.has_unread() && r.healthy && !throttled;
            let wait = if busy {
                Duration::ZERO
            } else {
                Duration::from_millis(5)
            };
            r.held = r
                .shared
                .queue
                .take_batch(4096, wait)
                .into_iter()
                .map(|rec| (rec.size(), rec))
                .collect();
            r.route();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        throttled = r.replay();
        r.retired
            .retain(|(_, at)| at.elapsed() < Duration::from_secs(10));
        r.gauges();
        if last_sync.elapsed() >= Duration::from_secs(1) {
            r.spill.sync();
            last_sync = Instant::now();
        }
        let every = r.cfg.metrics.log_interval_secs;
        if every > 0 && last_log.elapsed() >= Duration::from_secs(every) {
            r.shared.metrics.log();
            last_log = Instant::now();
        }
        if r.shared.stop.load(Relaxed) {
            break;
        }
        let finish_by = *r.shared.finish_by.lock().unwrap_or_else(|e| e.into_inner());
        if finish_by.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                spilled = r.spill.depth().0,
                "asked to stop and the grace time is up; what is left stays in the spill"
            );
            break;
        }
        let inputs_done = r.shared.inputs_open.load(Relaxed) == 0 && r.shared.queue.depth().0 == 0;
        if inputs_done {
            let at = *closed_at.get_or_insert_with(Instant::now);
            let settled = r.inflight_mem == 0
                && r.inflight_spill == 0
                && r.inflight_dead == 0
                && r.failed_mem.is_empty()
                && r.held.is_empty();
            // spill_only keeps what it spilled for a later start.
            if settled && (r.spill.is_drained() || r.cfg.mode == Mode::SpillOnly) {
                break;
            }
            if at.elapsed() >= drain {
                tracing::warn!(
                    spilled = r.spill.depth().0,
                    "inputs closed and the drain time is up; what is left stays in the spill"
                );
                break;
            }
        }
    }
    // Anything still in librdkafka gets one last chance, then is spilled.
    r.sink.flush(Duration::from_secs(2));
    r.sink.purge();
    let deadline = Instant::now() + Duration::from_secs(2);
    while (r.inflight_mem > 0 || r.inflight_spill > 0 || r.inflight_dead > 0)
        && Instant::now() < deadline
    {
        match r.events.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => r.handle(ev),
            Err(_) => continue,
        }
    }
    r.spill_failed();
    // What was read and not yet routed is kept for the next start.
    while let Some((size, rec)) = r.held.pop_front() {
        r.spill_one(&rec);
        r.shared.queue.release(size);
    }
    r.spill.sync();
    r.gauges();
    r.shared.metrics.log();
    Ok(())
}
