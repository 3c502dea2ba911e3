//! A model test of spill + router + sink, after Vector's disk-buffer model
//! tests: the real router and the real spill (in a temporary directory)
//! against a fake sink whose faults proptest chooses: sends refused,
//! deliveries failed, reports reordered, the broker down, poison records,
//! restarts with a torn spill tail, reloads, small memory and disk caps.
//!
//! The properties, checked after every case:
//! * nothing is delivered that was not written;
//! * every written line is delivered, dead-lettered or counted as dropped,
//!   and the three add up to what was written, exactly;
//! * a poison record is never delivered, and is dead-lettered unless it
//!   was counted as dropped;
//! * per source, first deliveries come in the order the lines were written;
//! * the memory queue and the spill stay within their caps;
//! * after a crash (kill -9), every record that was whole in the spill's
//!   files at that instant is delivered; lines in memory may be lost, so
//!   then written >= delivered + dead-lettered + dropped.

use berth_log_appender::config::{Config, Mode, WhenFull};
use berth_log_appender::deadletter::{self, Reason};
use berth_log_appender::kafka::{Connector, Event, From, Refusal, Sink, Token};
use berth_log_appender::record::Record;
use berth_log_appender::router::{self, Shared, Tuning};
use berth_log_appender::spill::Spill;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The topic the fake broker never accepts.
const POISON: &str = "no-such-topic";

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// `n` lines from source `src`; with `poison`, one of them goes to the
    /// topic the broker refuses for good.
    Write { src: u8, n: u16, poison: bool },
    /// The broker goes down: every delivery fails.
    Down,
    /// The broker is back.
    Up,
    /// The next delivery round fails (from its first record on, as a
    /// dropped connection fails everything behind it).
    FailRound,
    /// The next `n` sends are refused (librdkafka's queue is full).
    Refuse(u8),
    /// Reports come back in reverse order, or in order.
    Reorder(bool),
    /// The process stops and starts again on the same spill; with `torn`, a
    /// crash left half a frame at the end of the last segment.
    Restart { torn: bool },
    /// kill -9: all that is left is the spill's files as they are at this
    /// instant (a frame being written may be torn); memory is lost.
    Crash,
    /// A reload: the mode, the rate limit, and (when `new_producer`) a
    /// Kafka setting that makes the router build a new sink.
    Reload {
        disk_first: bool,
        lines_per_sec: u16,
        new_producer: bool,
    },
    /// Time passes.
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, 1u16..300, proptest::bool::weighted(0.2))
            .prop_map(|(src, n, poison)| Op::Write { src, n, poison }),
        1 => Just(Op::Down),
        2 => Just(Op::Up),
        2 => Just(Op::FailRound),
        1 => (1u8..50).prop_map(Op::Refuse),
        1 => any::<bool>().prop_map(Op::Reorder),
        1 => any::<bool>().prop_map(|torn| Op::Restart { torn }),
        1 => Just(Op::Crash),
        1 => (any::<bool>(), prop_oneof![Just(0u16), 200u16..5000], any::<bool>())
            .prop_map(|(disk_first, lines_per_sec, new_producer)| Op::Reload {
                disk_first,
                lines_per_sec,
                new_producer,
            }),
        2 => (1u8..30).prop_map(Op::Wait),
    ]
}

/// What one case is run with.
#[derive(Debug, Clone)]
struct Case {
    ops: Vec<Op>,
    /// The spill budget: small ones make the disk fill.
    spill_max: u64,
    /// The memory queue's cap.
    memory_max: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(op(), 1..40),
        prop_oneof![Just(64u64 << 20), 4_000u64..40_000],
        prop_oneof![Just(64u64 << 20), 2_000u64..20_000],
    )
        .prop_map(|(ops, spill_max, memory_max)| Case {
            ops,
            spill_max,
            memory_max,
        })
}

/// A record waiting for its delivery report.
struct Pending {
    sink: u64,
    token: Token,
    record: Record,
    tx: Sender<Event>,
}

/// The fake broker every fake sink talks to.
#[derive(Default)]
struct Broker {
    down: bool,
    fail_rounds: u32,
    refuse: u32,
    reverse: bool,
    pending: Vec<Pending>,
    /// A sink that had a failure fails everything it holds or is given
    /// until it is purged or replaced. librdkafka fails queued records in
    /// order (the oldest time out first) and the router purges the rest at
    /// the first failure; a broker that returns in the moment between the
    /// two could take younger records ahead of failed ones, which is the
    /// limit of the order guarantee (README).
    broken: BTreeSet<u64>,
    /// What the broker appended, in order: (topic, payload).
    log: Vec<(String, String)>,
    next_sink: u64,
}

type BrokerRef = Arc<Mutex<Broker>>;

struct FakeSink {
    id: u64,
    broker: BrokerRef,
    tx: Sender<Event>,
}

impl Sink for FakeSink {
    fn send(&self, record: Record, from: From, seq: u64) -> Result<(), Refusal> {
        let mut b = self.broker.lock().unwrap();
        if b.refuse > 0 {
            b.refuse -= 1;
            return Err(Refusal::Full(record));
        }
        let token = Token {
            from,
            seq,
            bytes: record.payload.len(),
        };
        b.pending.push(Pending {
            sink: self.id,
            token,
            record,
            tx: self.tx.clone(),
        });
        Ok(())
    }

    fn purge(&self) {
        let mut b = self.broker.lock().unwrap();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut b.pending)
            .into_iter()
            .partition(|p| p.sink == self.id);
        b.pending = rest;
        b.broken.remove(&self.id);
        drop(b);
        for p in mine {
            let _ =
                p.tx.send(Event::Failed(p.token, p.record, "purged".into(), None));
        }
    }

    fn flush(&self, t: Duration) {
        let end = Instant::now() + t;
        while Instant::now() < end {
            if !self
                .broker
                .lock()
                .unwrap()
                .pending
                .iter()
                .any(|p| p.sink == self.id)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct FakeConnector(BrokerRef);

impl Connector for FakeConnector {
    fn connect(
        &mut self,
        _cfg: &Config,
        tx: Sender<Event>,
    ) -> Result<Box<dyn Sink>, rdkafka::error::KafkaError> {
        let mut b = self.0.lock().unwrap();
        b.next_sink += 1;
        Ok(Box::new(FakeSink {
            id: b.next_sink,
            broker: self.0.clone(),
            tx,
        }))
    }
}

/// One delivery round: everything pending is appended, or failed.
fn deliver(broker: &BrokerRef) {
    let mut b = broker.lock().unwrap();
    if b.pending.is_empty() {
        return;
    }
    let round = std::mem::take(&mut b.pending);
    let fail_round = b.fail_rounds > 0;
    if fail_round {
        b.fail_rounds -= 1;
    }
    let mut reports = Vec::new();
    for p in round {
        let ev = if p.record.topic == POISON {
            Event::Failed(
                p.token,
                p.record,
                "unknown topic".into(),
                Some(Reason::UnknownTopic),
            )
        } else if b.down || fail_round || b.broken.contains(&p.sink) {
            b.broken.insert(p.sink);
            Event::Failed(p.token, p.record, "connection lost".into(), None)
        } else {
            b.log.push((
                p.record.topic.clone(),
                String::from_utf8(p.record.payload.clone()).unwrap(),
            ));
            Event::Acked(p.token)
        };
        reports.push((p.tx, ev));
    }
    if b.reverse {
        reports.reverse();
    }
    drop(b);
    for (tx, ev) in reports {
        let _ = tx.send(ev);
    }
}

fn config(c: &Case, dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.spill.dir = dir.to_path_buf();
    cfg.spill.max_bytes = c.spill_max;
    cfg.spill.segment_bytes = 2_000;
    cfg.spill.when_full = WhenFull::DropNewest;
    cfg.memory_max_bytes = c.memory_max;
    cfg.kafka.message_timeout_ms = 200;
    cfg
}

/// A running router.
struct Running {
    shared: Arc<Shared>,
    thread: std::thread::JoinHandle<()>,
}

fn start(cfg: Config, dir: &Path, broker: &BrokerRef, metrics_from: Option<&Shared>) -> Running {
    let shared = Shared::new(cfg.clone());
    if let Some(old) = metrics_from {
        // The counters of the whole case, across restarts.
        let m = &shared.metrics;
        let o = &old.metrics;
        for (a, b) in [
            (&m.dropped_memory_full, &o.dropped_memory_full),
            (&m.dropped_spill_full, &o.dropped_spill_full),
            (&m.dropped_spill_evicted, &o.dropped_spill_evicted),
            (&m.dropped_corrupt, &o.dropped_corrupt),
            (&m.dropped_dead_letter, &o.dropped_dead_letter),
        ] {
            a.store(b.load(Relaxed), Relaxed);
        }
    }
    shared.inputs_open.store(1, Relaxed);
    let (spill, _) = Spill::open(
        &dir.join("src"),
        cfg.spill.max_bytes,
        cfg.spill.segment_bytes,
        cfg.spill.when_full,
    )
    .unwrap();
    let s = shared.clone();
    let connector = Box::new(FakeConnector(broker.clone()));
    let tuning = Tuning {
        probe_every: Duration::from_millis(5),
        probes_before_new_producer: 5,
    };
    let thread = std::thread::spawn(move || {
        router::run_with(s, spill, Duration::from_secs(60), connector, tuning).unwrap();
    });
    Running { shared, thread }
}

/// Samples the caps while the case runs.
fn within_caps(r: &Running, c: &Case, worst: &mut (u64, u64)) {
    let (_, mem) = r.shared.queue.depth();
    let disk = r.shared.metrics.spill_bytes.load(Relaxed);
    worst.0 = worst.0.max(mem);
    worst.1 = worst.1.max(disk);
    assert!(
        mem <= c.memory_max,
        "memory queue {mem} over its cap {}",
        c.memory_max
    );
    assert!(
        disk <= c.spill_max,
        "spill {disk} over its cap {}",
        c.spill_max
    );
}

/// The whole records in a segment's bytes, up to the first torn frame.
fn whole_records(b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap());
        let Some(body) = b.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        if let Some(r) = Record::decode(body) {
            out.push((r.topic, String::from_utf8_lossy(&r.payload).into_owned()));
        }
        at += 8 + len;
    }
    out
}

/// The dead-letter file's records.
fn dead_letters(dir: &Path) -> Vec<Record> {
    deadletter::read(&dir.join("src").join(deadletter::FILE_NAME))
        .map(|v| v.into_iter().map(|(_, r)| r).collect())
        .unwrap_or_default()
}

fn run_case(c: &Case) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let broker: BrokerRef = Arc::default();
    let ticker_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (b, stop) = (broker.clone(), ticker_stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                deliver(&b);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut cfg = config(c, dir);
    let mut r = start(cfg.clone(), dir, &broker, None);
    let mut written: Vec<(String, String)> = Vec::new();
    let mut seq: BTreeMap<u8, u64> = BTreeMap::new();
    let mut worst = (0, 0);
    // Records on disk at a crash: they must all arrive.
    let mut crash_safe: BTreeSet<(String, String)> = BTreeSet::new();
    let mut crashed = false;
    for o in &c.ops {
        match *o {
            Op::Write { src, n, poison } => {
                for i in 0..n {
                    let s = seq.entry(src).or_default();
                    *s += 1;
                    let topic = if poison && i == n / 2 {
                        POISON.to_string()
                    } else {
                        format!("src{src}")
                    };
                    let payload = format!("{src}:{s:08}");
                    let rec = Record {
                        topic: topic.clone(),
                        key: Some(vec![src]),
                        payload: payload.clone().into_bytes(),
                    };
                    written.push((topic, payload));
                    if r.shared.queue.try_push(rec).is_err() {
                        r.shared.metrics.dropped_memory_full.fetch_add(1, Relaxed);
                    }
                }
            }
            Op::Down => broker.lock().unwrap().down = true,
            Op::Up => broker.lock().unwrap().down = false,
            Op::FailRound => broker.lock().unwrap().fail_rounds += 1,
            Op::Refuse(n) => broker.lock().unwrap().refuse += u32::from(n),
            Op::Reorder(v) => broker.lock().unwrap().reverse = v,
            Op::Restart { torn } => {
                // What the inputs read reaches the router before it stops.
                let end = Instant::now() + Duration::from_secs(10);
                while r.shared.queue.depth().0 > 0 && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                r.shared.stop.store(true, Relaxed);
                r.shared.queue.wake();
                r.thread.join().expect("the router does not panic");
                if torn {
                    let last = std::fs::read_dir(dir.join("src"))
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                        .max();
                    if let Some(p) = last {
                        use std::io::Write;
                        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                        // A frame header promising 40 bytes, and 5 of them.
                        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'x', b'y', b'z', b'!', b'?'])
                            .unwrap();
                    }
                }
                let old = r.shared;
                r = start(cfg.clone(), dir, &broker, Some(&old));
            }
            Op::Crash => {
                let segs = |dir: &Path| -> Vec<PathBuf> {
                    std::fs::read_dir(dir.join("src"))
                        .map(|d| {
                            d.flatten()
                                .map(|e| e.path())
                                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let snapshot: Vec<(PathBuf, Vec<u8>)> = segs(dir)
                    .into_iter()
                    .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
                    .collect();
                // The router's orderly end is thrown away with its files.
                r.shared.stop.store(true, Relaxed);
                r.shared.queue.wake();
                r.thread.join().expect("the router does not panic");
                for p in segs(dir) {
                    std::fs::remove_file(p).unwrap();
                }
                for (p, b) in &snapshot {
                    std::fs::write(p, b).unwrap();
                    crash_safe.extend(whole_records(b));
                }
                crashed = true;
                let old = r.shared;
                r = start(cfg.clone(), dir, &broker, Some(&old));
            }
            Op::Reload {
                disk_first,
                lines_per_sec,
                new_producer,
            } => {
                cfg.mode = if disk_first {
                    Mode::DiskFirst
                } else {
                    Mode::KafkaFirst
                };
                cfg.rate_limit.lines_per_sec = u64::from(lines_per_sec);
                if new_producer {
                    cfg.kafka.linger_ms = if cfg.kafka.linger_ms == 5 { 6 } else { 5 };
                }
                r.shared.reload(cfg.clone());
            }
            Op::Wait(ms) => std::thread::sleep(Duration::from_millis(u64::from(ms))),
        }
        within_caps(&r, c, &mut worst);
    }
    // The end: the broker is well, the inputs close, the router drains.
    {
        let mut b = broker.lock().unwrap();
        b.down = false;
        b.fail_rounds = 0;
        b.refuse = 0;
    }
    cfg.rate_limit.lines_per_sec = 0;
    r.shared.reload(cfg.clone());
    r.shared.inputs_open.store(0, Relaxed);
    let end = Instant::now() + Duration::from_secs(60);
    while !r.thread.is_finished() {
        assert!(Instant::now() < end, "the router never drained: {c:?}");
        within_caps(&r, c, &mut worst);
        std::thread::sleep(Duration::from_millis(2));
    }
    r.thread.join().expect("the router does not panic");
    ticker_stop.store(true, Relaxed);
    ticker.join().unwrap();

    let log = broker.lock().unwrap().log.clone();
    let dead = dead_letters(dir);
    let m = &r.shared.metrics;
    let written_set: BTreeSet<&(String, String)> = written.iter().collect();
    let mut first: BTreeSet<(String, String)> = BTreeSet::new();
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    for d in &log {
        assert!(
            written_set.contains(d),
            "delivered but never written: {d:?}"
        );
        assert_ne!(d.0, POISON, "a poison record was delivered");
        if first.insert(d.clone()) {
            let src = d.1.split(':').next().unwrap().to_string();
            if let Some(prev) = last_seen.get(&src) {
                assert!(
                    *prev < d.1,
                    "source {src}: {} was first delivered after {prev}",
                    d.1
                );
            }
            last_seen.insert(src, d.1.clone());
        }
    }
    let dead_set: BTreeSet<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                r.topic.clone(),
                String::from_utf8(r.payload.clone()).unwrap(),
            )
        })
        .collect();
    for d in &dead_set {
        assert_eq!(d.0, POISON, "only poison is dead-lettered: {d:?}");
        assert!(
            written_set.contains(d),
            "dead-lettered but never written: {d:?}"
        );
    }
    let dropped = m.dropped();
    for s in &crash_safe {
        assert!(
            first.contains(s) || dead_set.contains(s),
            "on disk at the crash, never delivered: {s:?}"
        );
    }
    if crashed {
        assert!(
            written.len() as u64 >= first.len() as u64 + dead_set.len() as u64 + dropped,
            "more delivered, dead-lettered and dropped than written"
        );
        return;
    }
    assert_eq!(
        written.len() as u64,
        first.len() as u64 + dead_set.len() as u64 + dropped,
        "written = delivered + dead-lettered + dropped (delivered {}, dead {}, dropped {dropped})",
        first.len(),
        dead_set.len()
    );
    if dropped == 0 {
        let poison = written.iter().filter(|w| w.0 == POISON).count();
        assert_eq!(
            dead_set.len(),
            poison,
            "every poison record is dead-lettered"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("BERTH_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        // Each case is real threads and files: shrinking stays short.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn spill_router_and_sink_lose_nothing_under_any_fault(c in case()) {
        run_case(&c);
    }
}

/// A fault-free stream, and the cases the model found, kept so they stay
/// fixed.
#[test]
fn a_fault_free_stream_arrives_whole_and_in_order() {
    run_case(&Case {
        ops: vec![Op::Write {
            src: 0,
            n: 500,
            poison: false,
        }],
        spill_max: 64 << 20,
        memory_max: 64 << 20,
    });
}

/// Found by the model: a record spilled (librdkafka's queue full) while
/// older ones were in flight was replayed before them when they failed.
#[test]
fn a_record_refused_while_older_ones_fail_keeps_its_place() {
    run_case(&Case {
        ops: vec![
            Op::Write {
                src: 1,
                n: 145,
                poison: false,
            },
            Op::Refuse(47),
            Op::FailRound,
            Op::Write {
                src: 1,
                n: 131,
                poison: false,
            },
            Op::Wait(10),
        ],
        spill_max: 64 << 20,
        memory_max: 64 << 20,
    });
}
