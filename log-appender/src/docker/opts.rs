//! `--log-opt`s of the `berth` log driver. Every one is checked at
//! `StartLogging`, so a bad one fails `docker run` with its name.

use crate::config::{Mode, Overrides, MIN_RING_BYTES};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The options this driver takes.
pub const KNOWN: &[&str] = &["config", "topic", "partition-key", "delivery", "ring-size"];

/// Options dockerd itself takes for every driver (and also passes on):
/// `mode=non-blocking` puts dockerd's own ring buffer in front of the
/// plugin, which drops lines silently when full; the plugin never blocks
/// dockerd, so leave it `blocking`.
pub const DOCKERS: &[&str] = &["mode", "max-buffer-size"];

/// What the options of one container say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOpts {
    /// `config`: the YAML file (in the plugin's view, under `/etc/berth`).
    pub config: Option<PathBuf>,
    /// `topic`, `partition-key`, `delivery` (the file's `mode`).
    pub overrides: Overrides,
    /// `ring-size`.
    pub ring_bytes: Option<u64>,
}

/// A refused option, named.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("log-opt {name}: {msg}")]
pub struct OptError {
    /// The option.
    pub name: String,
    /// What is wrong.
    pub msg: String,
}

fn bad(name: &str, msg: impl Into<String>) -> OptError {
    OptError {
        name: name.to_string(),
        msg: msg.into(),
    }
}

/// `10m`, `512k`, `1g` or bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last()? {
        (i, 'k') => (&t[..i], 1u64 << 10),
        (i, 'm') => (&t[..i], 1 << 20),
        (i, 'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses Docker's `Config` map of one container.
pub fn parse(opts: &BTreeMap<String, String>) -> Result<LogOpts, OptError> {
    let mut o = LogOpts::default();
    for (k, v) in opts {
        match k.as_str() {
            "config" => {
                let p = PathBuf::from(v);
                if !p.is_absolute() {
                    return Err(bad(k, format!("{v:?} is not an absolute path")));
                }
                o.config = Some(p);
            }
            "topic" => {
                if v.is_empty() {
                    return Err(bad(k, "must not be empty"));
                }
                o.overrides.topic = Some(v.clone());
            }
            "partition-key" => o.overrides.partition_key = Some(v.clone()),
            "delivery" => o.overrides.mode = Some(v.parse::<Mode>().map_err(|m| bad(k, m))?),
            k if DOCKERS.contains(&k) => {}
            "ring-size" => match parse_size(v) {
                Some(n) if n >= MIN_RING_BYTES => o.ring_bytes = Some(n),
                _ => {
                    return Err(bad(
                        k,
                        format!("{v:?} is not a size of at least 64k (e.g. 512k, 20m)"),
                    ))
                }
            },
            _ => {
                return Err(bad(
                    k,
                    format!(
                        "unknown to the berth log driver (it takes {})",
                        KNOWN.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> Result<LogOpts, OptError> {
        parse(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn options_parse_and_each_refusal_names_its_option() {
        let o = p(&[
            ("topic", "t-{container_name}"),
            ("delivery", "disk-first"),
            ("mode", "blocking"),
            ("ring-size", "20m"),
            ("config", "/etc/berth/a.yaml"),
        ])
        .unwrap();
        assert_eq!(o.overrides.mode, Some(Mode::DiskFirst));
        assert_eq!(o.ring_bytes, Some(20 << 20));
        assert_eq!(o.config, Some(PathBuf::from("/etc/berth/a.yaml")));
        for (kv, name) in [
            (("max-size", "10m"), "max-size"),
            (("delivery", "fast"), "delivery"),
            (("ring-size", "1k"), "ring-size"),
            (("ring-size", "lots"), "ring-size"),
            (("config", "rel.yaml"), "config"),
            (("topic", ""), "topic"),
        ] {
            let e = p(&[kv]).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().starts_with(&format!("log-opt {name}: ")));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("100000"), Some(100000));
        assert_eq!(parse_size("99999999999g"), None);
        assert_eq!(parse_size(""), None);
    }
}
