//! A Kafka-protocol broker on 127.0.0.1 (`tansu`, built from crates.io into a
//! cache directory by `scripts/install-test-deps`), plus a small producer and
//! consumer on the `rdkafka` crate with its bundled librdkafka.

use crate::artifacts::fresh_dir;
use crate::cmd::{run, Ran};
use crate::process::{wait_until, Daemon};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the broker binary is: `BERTH_TANSU`, else the test cache's copy.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TANSU") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("BERTH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-test"));
    cache.join("tansu-0.6.0/bin/tansu")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One broker process for one test, on its own port; stopped on drop.
#[derive(Debug)]
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    storage: String,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Broker {
    /// Starts a broker whose data lives in memory (lost on restart).
    pub fn start() -> Broker {
        Self::start_with("memory://tansu/".to_string())
    }

    /// Starts a broker whose data lives in SQLite, so it survives a restart.
    pub fn start_persistent() -> Broker {
        // Relative to the broker's working directory, which stays the same
        // across restarts (tansu mis-joins absolute sqlite paths).
        Self::start_with("sqlite://tansu.db".to_string())
    }

    fn start_with(storage: String) -> Broker {
        let bin = tansu_binary();
        assert!(
            bin.is_file(),
            "{} missing: run scripts/install-test-deps (it builds tansu)",
            bin.display()
        );
        let mut b = Broker {
            port: free_port(),
            storage,
            dir: fresh_dir("broker"),
            daemon: None,
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = self.dir.join("tansu.log");
        let mut d = Daemon::spawn(
            "tansu",
            Command::new(tansu_binary())
                .current_dir(&self.dir)
                .arg("broker")
                .arg("--listener-url")
                .arg(&url)
                .arg("--advertised-listener-url")
                .arg(&url)
                .arg("--storage-engine")
                .arg(&self.storage),
            &log,
        );
        let port = self.port;
        let up = wait_until(Duration::from_secs(20), || {
            d.assert_alive(&log);
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "broker did not listen on {port}; see {}", log.display());
        self.daemon = Some(d);
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker logged (its current run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    /// The broker's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map(|d| d.pid()).unwrap_or(0)
    }

    /// Creates `topic` with `partitions` partitions (the broker does not auto-create).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Ran {
        let r = crate::cmd::try_run(
            Command::new(tansu_binary())
                .args([
                    "topic",
                    "create",
                    topic,
                    "--partitions",
                    &partitions.to_string(),
                    "--broker",
                ])
                .arg(format!("tcp://127.0.0.1:{}", self.port)),
        );
        assert!(r.ok(), "creating topic {topic}: {}{}", r.stdout, r.stderr);
        r
    }

    /// Simulates an outage: SIGKILL (SIGTERM makes it answer errors that
    /// librdkafka treats as permanent).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(5));
        }
    }
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition it was in.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
}

/// Produces `records` (key, value) to `topic` and waits until all are acknowledged.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .create()
        .expect("create producer");
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(&k).payload(&v);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce to {topic}: {e}"
                    );
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush producer");
    assert_eq!(producer.in_flight_count(), 0, "records left unacknowledged");
}

/// Reads `topic` from the beginning of every partition until `want` records
/// arrived or `timeout` passed; returns them per partition in offset order.
pub fn consume(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{}-reader", crate::names::unique()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("add partition");
        }
    }
    assert!(tpl.count() > 0, "topic {topic} has no partitions");
    consumer.assign(&tpl).expect("assign partitions");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => eprintln!("harness: consumer: {e}"),
            None => {}
        }
    }
    out
}

/// Runs the broker's CLI with `args` (e.g. to list topics); panics on failure.
pub fn tansu(args: &[&str]) -> String {
    run(Command::new(tansu_binary()).args(args))
}
