//! Records Kafka can never take: moved aside so they stop nothing else.
//!
//! A record is *permanently* undeliverable when its topic name is invalid
//! for Kafka, when it is larger than the producer or broker accepts, or when
//! its topic does not exist and the broker will not create it. Retrying such
//! a record at the head of the spill would stop delivery for every record
//! behind it, so it goes to the source's dead-letter file instead
//! (`<spill dir>/<source>/dead-letter`, frames as in the spill: length,
//! CRC32C, then the reason byte and the record), counted by reason; delivery
//! goes on. Retriable failures (broker down, timeouts, leader changes) are
//! not dead-lettered: they wait and are retried in order.

use crate::record::Record;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file name of a source's dead letters in its spill directory.
pub const FILE_NAME: &str = "dead-letter";

/// Kafka's longest topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// Why a record can never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The topic name is not one Kafka accepts.
    InvalidTopic,
    /// Larger than `kafka.message_max_bytes` or the broker's limit.
    TooLarge,
    /// The topic does not exist and the broker does not create it.
    UnknownTopic,
    /// Another error the broker says retrying cannot fix (authorization,
    /// a corrupt or invalid record).
    Refused,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 4] = [
        Reason::InvalidTopic,
        Reason::TooLarge,
        Reason::UnknownTopic,
        Reason::Refused,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidTopic => "invalid_topic",
            Reason::TooLarge => "too_large",
            Reason::UnknownTopic => "unknown_topic",
            Reason::Refused => "refused",
        }
    }

    fn byte(self) -> u8 {
        self as u8
    }

    fn from_byte(b: u8) -> Option<Reason> {
        Reason::ALL.get(usize::from(b)).copied()
    }

    /// Its index in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// True when Kafka accepts `t` as a topic name: 1 to 249 characters of
/// `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TOPIC_LEN
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a record before it is produced or spilled: its topic name, and its
/// size against `max_message_bytes` (the producer's `message.max.bytes`).
pub fn validate(r: &Record, max_message_bytes: u32) -> Result<(), Reason> {
    if !valid_topic(&r.topic) {
        return Err(Reason::InvalidTopic);
    }
    let size = r.payload.len() + r.key.as_ref().map_or(0, Vec::len);
    if size > max_message_bytes as usize {
        return Err(Reason::TooLarge);
    }
    Ok(())
}

/// The record that carries dead letter `r` to `topic`: its envelope with a
/// `dead_letter` object (`reason`, and the `topic` it was meant for), its
/// key. None when it cannot go there: too large, or not a JSON envelope.
pub fn for_topic(
    r: &Record,
    reason: Reason,
    topic: &str,
    max_message_bytes: u32,
) -> Option<Record> {
    if reason == Reason::TooLarge {
        return None;
    }
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&r.payload).ok()?;
    v.insert(
        "dead_letter".into(),
        serde_json::json!({"reason": reason.as_str(), "topic": r.topic}),
    );
    let d = Record {
        topic: topic.to_string(),
        key: r.key.clone(),
        payload: serde_json::to_vec(&v).ok()?,
    };
    validate(&d, max_message_bytes).ok()?;
    Some(d)
}

/// One source's dead-letter file, opened on the first dead letter.
pub struct DeadLetter {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
    max_bytes: u64,
}

impl DeadLetter {
    /// The dead letters of the source whose spill is in `dir`, at most
    /// `max_bytes` of them (what is beyond is counted as dropped).
    pub fn new(dir: &Path, max_bytes: u64) -> DeadLetter {
        let path = dir.join(FILE_NAME);
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        DeadLetter {
            path,
            file: None,
            bytes,
            max_bytes,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `r` with its reason, durably. Err says why it could not be kept.
    pub fn put(&mut self, r: &Record, reason: Reason) -> Result<(), String> {
        let mut body = vec![reason.byte()];
        r.encode(&mut body);
        let frame = crate::spill::frame(&body);
        if self.bytes + frame.len() as u64 > self.max_bytes {
            return Err(format!(
                "the dead-letter file is full ({} bytes, the spill budget)",
                self.bytes
            ));
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&frame)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.bytes += frame.len() as u64;
        Ok(())
    }
}

/// Reads a dead-letter file: each record with its reason (up to the first
/// torn or corrupt frame).
pub fn read(path: &Path) -> std::io::Result<Vec<(Reason, Record)>> {
    let mut f = std::io::BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    while let Ok(Some(body)) = crate::spill::read_frame(&mut f) {
        let Some((&b, rest)) = body.split_first() else {
            break;
        };
        match (Reason::from_byte(b), Record::decode(rest)) {
            (Some(reason), Some(r)) => out.push((reason, r)),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, n: usize) -> Record {
        Record {
            topic: topic.into(),
            key: Some(b"k".to_vec()),
            payload: vec![b'x'; n],
        }
    }

    #[test]
    fn topics_and_sizes_kafka_cannot_take_are_caught_before_producing() {
        assert_eq!(validate(&rec("logs-web_1.a", 10), 100), Ok(()));
        for bad in [
            "",
            ".",
            "..",
            "bad/name",
            "a b",
            "ü",
            &"t".repeat(250),
            &"t".repeat(70_000),
        ] {
            assert_eq!(
                validate(&rec(bad, 10), 100),
                Err(Reason::InvalidTopic),
                "{bad:?}"
            );
        }
        assert_eq!(validate(&rec("logs", 100), 100), Err(Reason::TooLarge));
        assert_eq!(validate(&rec("logs", 99), 100), Ok(()));
    }

    #[test]
    fn dead_letters_are_kept_durably_with_their_reason_and_capped() {
        let d = tempfile::tempdir().unwrap();
        let mut dl = DeadLetter::new(d.path(), 200);
        dl.put(&rec("bad/name", 5), Reason::InvalidTopic).unwrap();
        dl.put(&rec("logs", 7), Reason::TooLarge).unwrap();
        assert!(
            dl.put(&rec("logs", 500), Reason::TooLarge).is_err(),
            "over the cap"
        );
        let got = read(dl.path()).unwrap();
        assert_eq!(
            got,
            vec![
                (Reason::InvalidTopic, rec("bad/name", 5)),
                (Reason::TooLarge, rec("logs", 7))
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dl.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reopened, it appends after what is there.
        let mut again = DeadLetter::new(d.path(), 400);
        again.put(&rec("logs", 1), Reason::UnknownTopic).unwrap();
        assert_eq!(read(again.path()).unwrap().len(), 3);
    }
}
