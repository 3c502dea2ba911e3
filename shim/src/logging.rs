//! Diagnostics the way runc writes them, so Docker, containerd and conmon can
//! show them: one line per event to `--log` (stderr without it), either
//! logrus text (`time="…" level=error msg="…"`) or, with `--log-format json`,
//! `{"level":"error","msg":"…","time":"…"}`.

use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// runc's `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// logrus text lines.
    Text,
    /// one JSON object per line.
    Json,
}

struct RuncLayer {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.extra
                .insert(field.name().to_string(), Value::String(value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.extra.insert(
                field.name().to_string(),
                Value::String(format!("{value:?}")),
            );
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.extra
            .insert(field.name().to_string(), Value::from(value));
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Formats one log line (without the newline) in runc's style.
pub fn format_line(
    format: Format,
    level: &str,
    msg: &str,
    extra: &Map<String, Value>,
    time: &str,
) -> String {
    match format {
        Format::Json => {
            let mut o = Map::new();
            o.insert("level".into(), Value::String(level.into()));
            o.insert("msg".into(), Value::String(msg.into()));
            o.insert("time".into(), Value::String(time.into()));
            for (k, v) in extra {
                o.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Value::Object(o).to_string()
        }
        Format::Text => {
            let mut s = format!("time={time:?} level={level} msg={msg:?}");
            for (k, v) in extra {
                match v {
                    Value::String(t) => {
                        let _ = write!(s, " {k}={t:?}");
                    }
                    other => {
                        let _ = write!(s, " {k}={other}");
                    }
                }
            }
            s
        }
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = event.metadata().level();
        if *level > self.max {
            return;
        }
        // libcontainer narrates at info and warns of what runc passes over
        // in silence (absent cgroup controllers, ambient capabilities):
        // only its errors are shown unless --debug.
        if self.max < Level::DEBUG && *level > Level::ERROR && is_library(event.metadata().target())
        {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let mut line = format_line(self.format, level_name(level), &f.msg, &f.extra, &time);
        line.push('\n');
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
}

/// True for events of the container libraries under the built-in backend.
fn is_library(target: &str) -> bool {
    ["libcontainer", "libcgroups"]
        .iter()
        .any(|l| target == *l || target.starts_with(&format!("{l}::")))
}

/// Installs the global subscriber: to `log` (appended) or stderr, in
/// `format`. Levels: everything to debug with `debug`; else info to a log
/// file, and only warnings and errors on stderr, which runc leaves quiet.
/// Returns whether the destination is a file (then fatal errors also go to
/// stderr, as runc does).
pub fn init(log: Option<&Path>, format: Format, debug: bool) -> bool {
    let (out, to_file): (Box<dyn Write + Send>, bool) = match log {
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => (Box::new(f), true),
            Err(e) => {
                eprintln!("berth: cannot open log file {}: {e}", p.display());
                (Box::new(std::io::stderr()), false)
            }
        },
        None => (Box::new(std::io::stderr()), false),
    };
    let layer = RuncLayer {
        out: Mutex::new(out),
        format,
        max: if debug {
            Level::DEBUG
        } else if to_file {
            Level::INFO
        } else {
            Level::WARN
        },
    };
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    to_file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_runc_fields() {
        let line = format_line(
            Format::Json,
            "error",
            "berth: boom \"x\"",
            &Map::new(),
            "2026-01-01T00:00:00Z",
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "berth: boom \"x\"");
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn text_lines_are_logrus_style() {
        let mut extra = Map::new();
        extra.insert("key".into(), Value::String("net.core.somaxconn".into()));
        let line = format_line(Format::Text, "info", "hello", &extra, "T");
        assert_eq!(
            line,
            "time=\"T\" level=info msg=\"hello\" key=\"net.core.somaxconn\""
        );
    }
}
