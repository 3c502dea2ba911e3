//! Records: the JSON envelope of one line, with its topic and partition key
//! decided when the line is read (under the configuration then in force).

use crate::config::{Config, PartitionKey};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where lines come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// The container ID (or the `--name` of a pipe).
    pub container_id: String,
    /// The container name.
    pub container_name: String,
    /// The containerd namespace, if any.
    pub namespace: String,
    /// This host's name.
    pub host: String,
    /// The container's environment (for `fields_from_env`).
    pub env: BTreeMap<String, String>,
    /// The container's labels (for `fields_from_labels`).
    pub labels: BTreeMap<String, String>,
}

/// One line ready to send: topic, key and the JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Kafka topic.
    pub topic: String,
    /// The partition key.
    pub key: Option<Vec<u8>>,
    /// The JSON envelope.
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes it occupies in memory accounting (payload, key, topic, overhead).
    pub fn size(&self) -> u64 {
        (self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + self.topic.len() + 64) as u64
    }

    /// The spill encoding: topic, key (absent = u32::MAX) and payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        match &self.key {
            Some(k) => {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        out.extend_from_slice(&self.payload);
    }

    /// Reads [`Record::encode`]'s output back.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let tl = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
        let topic = String::from_utf8(b.get(2..2 + tl)?.to_vec()).ok()?;
        let mut at = 2 + tl;
        let kl = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let key = if kl == u32::MAX {
            None
        } else {
            let k = b.get(at..at + kl as usize)?.to_vec();
            at += kl as usize;
            Some(k)
        };
        Some(Record {
            topic,
            key,
            payload: b.get(at..)?.to_vec(),
        })
    }
}

/// How a line was cut to fit `lines.max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Whole.
    Whole,
    /// Part `n` (from 0) of a split line; `last` on the final part.
    Part {
        /// Index.
        n: u32,
        /// True on the final part.
        last: bool,
    },
    /// The first `lines.max_bytes` of a longer line.
    Truncated,
}

/// Now, as RFC 3339 UTC with nanoseconds (humantime's formatter: no time
/// zone database, and no allocation beyond the string).
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Builds the record for one line of `stream` from `origin` under `cfg`.
/// Invalid UTF-8 is replaced with U+FFFD.
pub fn make(cfg: &Config, origin: &Origin, stream: &str, line: &[u8], cut: Cut) -> Record {
    let mut m = Map::new();
    m.insert("ts".into(), Value::String(rfc3339_now()));
    m.insert("container_id".into(), origin.container_id.clone().into());
    m.insert(
        "container_name".into(),
        origin.container_name.clone().into(),
    );
    if !origin.namespace.is_empty() {
        m.insert("namespace".into(), origin.namespace.clone().into());
    }
    m.insert("stream".into(), stream.into());
    m.insert("host".into(), origin.host.clone().into());
    m.insert(
        "line".into(),
        Value::String(String::from_utf8_lossy(line).into_owned()),
    );
    match cut {
        Cut::Whole => {}
        Cut::Part { n, last } => {
            m.insert("part".into(), n.into());
            if !last {
                m.insert("partial".into(), true.into());
            }
        }
        Cut::Truncated => {
            m.insert("truncated".into(), true.into());
        }
    }
    let mut fields = Map::new();
    for f in &cfg.fields_from_env {
        if let Some(v) = origin.env.get(f) {
            fields.insert(f.clone(), v.clone().into());
        }
    }
    for f in &cfg.fields_from_labels {
        if let Some(v) = origin.labels.get(f) {
            fields.insert(f.clone(), v.clone().into());
        }
    }
    let (topic, key) = target(cfg, origin, &fields);
    if !fields.is_empty() {
        m.insert("fields".into(), Value::Object(fields));
    }
    Record {
        topic,
        key,
        payload: serde_json::to_vec(&Value::Object(m)).unwrap_or_default(),
    }
}

/// The topic and partition key of a record from `origin` with `fields`.
fn target(cfg: &Config, origin: &Origin, fields: &Map<String, Value>) -> (String, Option<Vec<u8>>) {
    let key = match cfg.partition_key() {
        PartitionKey::ContainerId => Some(origin.container_id.as_bytes().to_vec()),
        PartitionKey::ContainerName => Some(origin.container_name.as_bytes().to_vec()),
        PartitionKey::Field(f) => fields
            .get(&f)
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec()),
        PartitionKey::None => None,
    };
    let topic = cfg
        .kafka
        .topic
        .replace("{container_name}", &origin.container_name)
        .replace("{container_id}", &origin.container_id)
        .replace("{namespace}", &origin.namespace);
    (topic, key)
}

/// A record made while no topic was known (a binary logger on its
/// fallback configuration, whose topic is empty) gets its topic and key
/// from its envelope under `cfg`; any other record is returned as it is.
pub fn retarget(cfg: &Config, r: Record) -> Record {
    if !r.topic.is_empty() || cfg.kafka.topic.is_empty() {
        return r;
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&r.payload) else {
        return r;
    };
    let text = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let origin = Origin {
        container_id: text("container_id"),
        container_name: text("container_name"),
        namespace: text("namespace"),
        ..Default::default()
    };
    let fields = match m.get("fields") {
        Some(Value::Object(f)) => f.clone(),
        _ => Map::new(),
    };
    let (topic, key) = target(cfg, &origin, &fields);
    Record { topic, key, ..r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_topic_key_and_encoding() {
        let mut cfg = Config::default();
        cfg.kafka.topic = "logs-{container_name}".into();
        cfg.fields_from_env = vec!["APP".into()];
        cfg.kafka.partition_key = "field:APP".into();
        let o = Origin {
            container_id: "abc".into(),
            container_name: "web".into(),
            host: "h1".into(),
            env: [("APP".to_string(), "shop".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let r = make(
            &cfg,
            &o,
            "stderr",
            b"hello \xff",
            Cut::Part { n: 1, last: false },
        );
        assert_eq!(r.topic, "logs-web");
        assert_eq!(r.key.as_deref(), Some(&b"shop"[..]));
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["line"], "hello \u{fffd}");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["fields"]["APP"], "shop");
        assert_eq!(v["partial"], true);
        assert_eq!(v["ts"].as_str().unwrap().len(), 30);
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(Record::decode(&b), Some(r));
        let nokey = Record {
            topic: "t".into(),
            key: None,
            payload: b"x".to_vec(),
        };
        let mut b = Vec::new();
        nokey.encode(&mut b);
        assert_eq!(Record::decode(&b), Some(nokey));
        assert_eq!(Record::decode(&b[..3]), None);
    }

    #[test]
    fn a_record_made_without_a_topic_is_retargeted_from_its_envelope() {
        let o = Origin {
            container_id: "abc".into(),
            container_name: "web".into(),
            namespace: "k8s".into(),
            env: [("APP".to_string(), "shop".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut fallback = Config::fallback();
        fallback.fields_from_env = vec!["APP".into()];
        let r = make(&fallback, &o, "stdout", b"x", Cut::Whole);
        assert_eq!(r.topic, "");
        let mut cfg = Config::default();
        cfg.kafka.topic = "logs-{namespace}-{container_name}".into();
        cfg.kafka.partition_key = "field:APP".into();
        let t = retarget(&cfg, r.clone());
        assert_eq!(t.topic, "logs-k8s-web");
        assert_eq!(t.key.as_deref(), Some(&b"shop"[..]));
        assert_eq!(t.payload, r.payload);
        // Still no topic known: left alone.
        assert_eq!(retarget(&fallback, r.clone()), r);
    }
}
