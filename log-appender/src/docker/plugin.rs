//! The plugin process: Docker's plugin API (HTTP with JSON bodies) on a unix
//! socket, one [`Logger`] per FIFO dockerd hands over, the containers it
//! logs kept in `docker.state_dir` so that a restarted plugin takes them up
//! again, and `docker logs` answered from each container's ring.

use super::entry::{encode, LogEntry};
use super::logger::{active_path, Ctx, Info, Logger};
use super::ring::Reader;
use crate::config::{self, Config, ConfigError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The plugin's socket in its root (`interface.socket` of config.json).
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/berth.sock";

/// How long loggers keep delivering when the plugin is stopped (dockerd
/// kills a plugin that has not exited 10 s after SIGTERM... and the rest
/// is kept in the spill anyway).
const HALT_GRACE: Duration = Duration::from_secs(5);

/// Why the plugin cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin's configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The socket.
    #[error("cannot listen on {path}: {msg}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// The state directory.
    #[error("cannot create {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handling.
    #[error("cannot catch SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
}

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The socket to serve.
    pub socket: PathBuf,
    /// The plugin's configuration file (missing: the defaults).
    pub config: PathBuf,
}

/// The plugin's state.
struct Plugin {
    ctx: Ctx,
    /// Loggers by the FIFO path dockerd named.
    loggers: Mutex<BTreeMap<String, Logger>>,
    stopping: AtomicBool,
    /// One watcher for every configuration file in use, and the
    /// directories it watches.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    watched: Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// A StartLogging request.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Start {
    file: String,
    info: Info,
}

/// A ReadLogs request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Read {
    info: Info,
    config: ReadConfig,
}

/// moby's `logger.ReadConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReadConfig {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    tail: Option<i64>,
    #[serde(default)]
    follow: bool,
}

/// Go's time as nanoseconds since the epoch; the zero time (and anything
/// unreadable) is None. RFC 3339 with `Z` or a `±hh:mm` offset.
fn go_time(s: &Option<String>) -> Option<i64> {
    let s = s.as_deref()?;
    if s.starts_with("0001-01-01") {
        return None;
    }
    let (base, offset_secs) = match s.len().checked_sub(6).map(|i| (&s[..i], &s[i..])) {
        Some((b, o)) if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let h: i64 = o[1..3].parse().ok()?;
            let m: i64 = o[4..6].parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&base).ok()?;
    let ns = t.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i64;
    Some(ns - offset_secs * 1_000_000_000)
}

/// Runs the plugin until SIGTERM or SIGINT.
pub fn run(o: Options, explicit_config: bool) -> Result<(), PluginError> {
    let cfg = Config::load_or_default(&o.config, explicit_config)?;
    let ctx = Ctx {
        config_path: o.config.clone(),
        state_dir: cfg.docker.state_dir.clone(),
    };
    for d in [ctx.state_dir.join("active"), ctx.state_dir.join("ring")] {
        std::fs::create_dir_all(&d).map_err(|source| PluginError::State { path: d, source })?;
    }
    // SAFETY: setting SIGPIPE's disposition to ignore (a `docker logs`
    // client going away is a write error, not a death).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .map_err(PluginError::Signals)?;
    let plugin = Arc::new(Plugin {
        ctx,
        loggers: Mutex::new(BTreeMap::new()),
        stopping: AtomicBool::new(false),
        watcher: Mutex::new(None),
        watched: Mutex::new(Default::default()),
    });
    plugin.start_watching();
    plugin.take_up_again();
    if let Some(d) = o.socket.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::remove_file(&o.socket);
    let server =
        Arc::new(
            tiny_http::Server::http_unix(&o.socket).map_err(|e| PluginError::Listen {
                path: o.socket.clone(),
                msg: e.to_string(),
            })?,
        );
    tracing::info!(socket = %o.socket.display(), config = %o.config.display(), state = %plugin.ctx.state_dir.display(), "the berth Docker logging plugin is serving");
    {
        let server = server.clone();
        let plugin = plugin.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping");
                plugin.stopping.store(true, Relaxed);
                server.unblock();
            }
        });
    }
    {
        let plugin = plugin.clone();
        std::thread::spawn(move || loop {
            plugin.collect_rings();
            std::thread::sleep(Duration::from_secs(3600));
        });
    }
    for req in server.incoming_requests() {
        let plugin = plugin.clone();
        let _ = std::thread::Builder::new()
            .name("request".into())
            .spawn(move || plugin.handle(req));
    }
    plugin.halt_all();
    let _ = std::fs::remove_file(&o.socket);
    Ok(())
}

/// Reads a request's JSON body (an empty body is `null`).
fn body(req: &mut tiny_http::Request) -> Result<Value, String> {
    let mut b = Vec::new();
    std::io::Read::read_to_end(req.as_reader(), &mut b).map_err(|e| e.to_string())?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&b).map_err(|e| format!("the request body is not JSON: {e}"))
}

fn respond(req: tiny_http::Request, code: u16, v: &Value) {
    let h = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/vnd.docker.plugins.v1+json"[..],
    )
    .expect("a valid header");
    let _ = req.respond(
        tiny_http::Response::from_data(v.to_string())
            .with_status_code(code)
            .with_header(h),
    );
}

impl Plugin {
    /// Starts the watcher: a changed file is reloaded, with each logger's
    /// options, by every logger that uses it.
    fn start_watching(self: &Arc<Self>) {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !ev.kind.is_access() {
                    for p in ev.paths {
                        let _ = tx.send(p);
                    }
                }
            }
        });
        match w {
            Ok(w) => *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch configuration files; no hot reload");
                return;
            }
        }
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            while let Ok(p) = rx.recv() {
                // Let a writer finish, and take a burst of events once.
                std::thread::sleep(Duration::from_millis(50));
                let mut changed = std::collections::BTreeSet::from([p]);
                changed.extend(rx.try_iter());
                let Some(plugin) = me.upgrade() else { return };
                let loggers = plugin.loggers.lock().unwrap_or_else(|e| e.into_inner());
                for l in loggers.values().filter(|l| changed.contains(&l.config)) {
                    if crate::reload::reload_now(&l.shared, &l.config, &l.overrides) {
                        tracing::info!(container = %l.info.name(), config = %l.config.display(), "configuration reloaded");
                    }
                }
            }
        });
    }

    /// Watches the directory of `file` (once).
    fn watch(&self, file: &Path) {
        use notify::Watcher;
        let Some(dir) = file.parent() else { return };
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.contains(dir) {
            return;
        }
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            match w.watch(dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.to_path_buf());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; no hot reload of files there")
                }
            }
        }
    }

    fn handle(&self, mut req: tiny_http::Request) {
        let url = req.url().to_string();
        let b = match body(&mut req) {
            Ok(b) => b,
            Err(e) => return respond(req, 400, &json!({ "Err": e })),
        };
        let r = match url.as_str() {
            "/Plugin.Activate" => Ok(json!({ "Implements": ["LogDriver"] })),
            "/LogDriver.Capabilities" => Ok(json!({ "Cap": { "ReadLogs": true } })),
            "/LogDriver.StartLogging" => self.start(b).map(|()| json!({ "Err": "" })),
            "/LogDriver.StopLogging" => {
                self.stop(&b["File"]);
                Ok(json!({ "Err": "" }))
            }
            "/LogDriver.ReadLogs" => return self.read_logs(req, b),
            _ => return respond(req, 404, &json!({ "Err": format!("no endpoint {url}") })),
        };
        match r {
            Ok(v) => respond(req, 200, &v),
            Err(e) => {
                tracing::warn!(endpoint = %url, error = %e, "refused");
                respond(req, 200, &json!({ "Err": e }))
            }
        }
    }

    fn start(&self, b: Value) -> Result<(), String> {
        let s: Start = serde_json::from_value(b).map_err(|e| format!("bad StartLogging: {e}"))?;
        if self.stopping.load(Relaxed) {
            return Err("the berth logging plugin is stopping".into());
        }
        let logger =
            Logger::start(&self.ctx, &s.file, s.info.clone()).map_err(|e| e.to_string())?;
        self.watch(&logger.config);
        // Kept until StopLogging, for a restarted plugin.
        let state = active_path(&self.ctx, &s.file);
        if let Err(e) = write_atomic(&state, &serde_json::to_vec(&s).unwrap_or_default()) {
            tracing::warn!(path = %state.display(), error = %e, "cannot record the container; a restarted plugin will not take it up again");
        }
        let mut l = self.loggers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = l.insert(s.file, logger) {
            old.stop();
        }
        Ok(())
    }

    fn stop(&self, file: &Value) {
        let Some(file) = file.as_str() else { return };
        let _ = std::fs::remove_file(active_path(&self.ctx, file));
        let gone = self
            .loggers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(file);
        match gone {
            Some(l) => {
                let m = &l.shared.metrics;
                tracing::info!(
                    container = %l.info.name(),
                    received = m.received.load(Relaxed),
                    ring_dropped_reads = l.ring_dropped.load(Relaxed),
                    "stopped logging"
                );
                l.stop();
            }
            None => tracing::debug!(file, "StopLogging for a FIFO not logged"),
        }
    }

    /// Takes up the containers a previous plugin was logging, whose FIFO
    /// dockerd still has.
    fn take_up_again(&self) {
        let dir = self.ctx.state_dir.join("active");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let s: Option<Start> = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(s) = s else {
                let _ = std::fs::remove_file(&p);
                continue;
            };
            if !self.ctx.fifo(&s.file).exists() {
                tracing::info!(container = %s.info.name(), "its log FIFO is gone (the container stopped while the plugin was away)");
                let _ = std::fs::remove_file(&p);
                continue;
            }
            match Logger::start(&self.ctx, &s.file, s.info.clone()) {
                Ok(mut l) => {
                    l.taken_up = true;
                    tracing::info!(container = %s.info.name(), "taken up again after a restart");
                    self.watch(&l.config);
                    self.loggers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(s.file, l);
                }
                Err(e) => {
                    tracing::error!(container = %s.info.name(), error = %e, "cannot take up this container's logs again")
                }
            }
        }
    }

    /// Stops every logger, keeping their state for the next plugin.
    fn halt_all(&self) {
        let mut loggers =
            std::mem::take(&mut *self.loggers.lock().unwrap_or_else(|e| e.into_inner()));
        for l in loggers.values() {
            l.halt(HALT_GRACE);
        }
        for l in loggers.values_mut() {
            l.join();
        }
        tracing::info!(
            loggers = loggers.len(),
            "stopped; the containers are taken up again at the next start"
        );
    }

    fn active(&self, id: &str) -> bool {
        self.loggers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|l| l.info.container_id == id)
    }

    /// Removes the rings of containers not logged for `docker.ring_keep_days`,
    /// and drops a logger taken up after a restart that got nothing for as
    /// long: its container stopped while no plugin ran, and dockerd, whose
    /// StopLogging failed then, never closes that FIFO or tells.
    fn collect_rings(&self) {
        let keep = Config::load_or_default(&self.ctx.config_path, false)
            .map(|c| c.docker.ring_keep_days)
            .unwrap_or(config::Docker::default().ring_keep_days);
        let old = |id: &str| {
            std::fs::metadata(self.ctx.ring_dir(id).join("current"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(keep * 86400))
        };
        let stale: Vec<Logger> = {
            let mut loggers = self.loggers.lock().unwrap_or_else(|e| e.into_inner());
            let files: Vec<String> = loggers
                .iter()
                .filter(|(_, l)| {
                    l.taken_up
                        && l.shared.metrics.received.load(Relaxed) == 0
                        && old(&l.info.container_id)
                })
                .map(|(f, _)| f.clone())
                .collect();
            files
                .iter()
                .filter_map(|f| {
                    let _ = std::fs::remove_file(active_path(&self.ctx, f));
                    loggers.remove(f)
                })
                .collect()
        };
        for l in stale {
            tracing::info!(container = %l.info.name(), days = keep, "dropping a logger taken up after a restart that got nothing for days");
            l.halt(Duration::ZERO);
        }
        let Ok(entries) = std::fs::read_dir(self.ctx.state_dir.join("ring")) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if old(&id) && !self.active(&id) {
                tracing::info!(container = %id, days = keep, "removing the docker logs ring of a container not logged for days");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// `docker logs`: the container's ring, filtered, as framed entries;
    /// with `follow`, new entries as they are written, until the container
    /// stops or the client goes away.
    fn read_logs(&self, req: tiny_http::Request, b: Value) {
        let r: Read = match serde_json::from_value(b) {
            Ok(r) => r,
            Err(e) => return respond(req, 400, &json!({ "Err": format!("bad ReadLogs: {e}") })),
        };
        if !r.info.valid_id() {
            return respond(req, 400, &json!({ "Err": "no container ID" }));
        }
        let since = go_time(&r.config.since);
        let until = go_time(&r.config.until);
        let mut reader = Reader::open(&self.ctx.ring_dir(&r.info.container_id));
        let mut w = req.into_writer();
        if w
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-json-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_err()
        {
            return;
        }
        if self
            .stream_entries(&mut w, r, &mut reader, since, until)
            .is_ok()
        {
            // The last chunk: the end of the answer.
            let _ = w.write_all(b"0\r\n\r\n");
        }
        let _ = w.flush();
    }

    fn stream_entries(
        &self,
        w: &mut Box<dyn Write + Send>,
        r: Read,
        reader: &mut Reader,
        since: Option<i64>,
        until: Option<i64>,
    ) -> std::io::Result<()> {
        let keep = |e: &LogEntry| {
            since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
        };
        let mut first = Vec::new();
        if let Err(e) = reader.poll(&mut first) {
            tracing::warn!(error = %e, "cannot read the docker logs ring");
        }
        first.retain(keep);
        if let Some(t) = r.config.tail.filter(|t| *t >= 0) {
            let t = t as usize;
            if first.len() > t {
                first.drain(..first.len() - t);
            }
        }
        send(w, &first)?;
        if !r.config.follow {
            return Ok(());
        }
        let id = r.info.container_id.clone();
        let mut quiet_since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let mut more = Vec::new();
            reader.poll(&mut more)?;
            let ended = until.is_some_and(|u| now_nanos() > u);
            more.retain(keep);
            if !more.is_empty() {
                quiet_since = Instant::now();
                send(w, &more)?;
            }
            // The container stopped (and its last lines were sent), or the
            // plugin is stopping.
            let gone = !self.active(&id) && quiet_since.elapsed() > Duration::from_millis(300);
            if ended || gone || self.stopping.load(Relaxed) {
                return Ok(());
            }
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Writes entries as `docker logs` wants them, in one HTTP chunk, flushed
/// (`-f` shows each line as it comes): a whole line ends with its newline
/// (dockerd adds none).
fn send(w: &mut impl Write, entries: &[LogEntry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut out = Vec::new();
    for e in entries {
        let mut e = e.clone();
        if !e.partial {
            e.line.push(b'\n');
        }
        encode(&e, &mut out);
    }
    write!(w, "{:x}\r\n", out.len())?;
    w.write_all(&out)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// Writes `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_times_parse_with_any_offset_and_the_zero_time_is_none() {
        let z = go_time(&Some("2026-12-04T08:00:00.5Z".into())).unwrap();
        let plus = go_time(&Some("2026-12-04T09:00:00.5+01:00".into())).unwrap();
        let minus = go_time(&Some("2026-12-04T03:30:00.5-04:30".into())).unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, minus);
        assert_eq!(go_time(&Some("0001-01-01T00:00:00Z".into())), None);
        assert_eq!(go_time(&None), None);
        assert_eq!(go_time(&Some("yesterday".into())), None);
    }
}
