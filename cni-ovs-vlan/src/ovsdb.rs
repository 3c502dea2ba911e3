//! A minimal OVSDB client (RFC 7047): JSON-RPC over a unix or TCP socket,
//! `transact` only, answering the server's `echo` keep-alives.

use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The database every request goes to.
pub const DB: &str = "Open_vSwitch";

/// An OVSDB failure.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The socket could not be reached.
    #[error("cannot connect to OVSDB at {target}: {source}")]
    Connect {
        /// What was dialled.
        target: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Reading, writing or decoding failed.
    #[error("OVSDB connection: {0}")]
    Io(String),
    /// The server answered with an error.
    #[error("OVSDB refused the transaction: {0}")]
    Refused(String),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// One connection to `ovsdb-server`.
pub struct Client {
    reader: BufReader<Stream>,
    writer: Stream,
    next_id: u64,
}

/// Parses `socket_file`: `unix:/path`, `tcp:host:port` or a bare path.
pub fn parse_target(s: &str) -> Option<(bool, String)> {
    if let Some(p) = s.strip_prefix("unix:") {
        return (!p.is_empty()).then(|| (true, p.to_string()));
    }
    if let Some(a) = s.strip_prefix("tcp:") {
        return a.rsplit_once(':').and_then(|(h, p)| {
            (!h.is_empty() && p.parse::<u16>().is_ok()).then(|| (false, a.to_string()))
        });
    }
    s.starts_with('/').then(|| (true, s.to_string()))
}

impl Client {
    /// Connects to `target` (see [`parse_target`]) with `timeout` on every read.
    pub fn connect(target: &str, timeout: Duration) -> Result<Client, OvsdbError> {
        let err = |source| OvsdbError::Connect {
            target: target.to_string(),
            source,
        };
        let Some((unix, addr)) = parse_target(target) else {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not unix:PATH, tcp:HOST:PORT or an absolute path",
            )));
        };
        let (r, w) = if unix {
            let s = UnixStream::connect(&addr).map_err(err)?;
            s.set_read_timeout(Some(timeout)).map_err(err)?;
            (Stream::Unix(s.try_clone().map_err(err)?), Stream::Unix(s))
        } else {
            let sa = std::net::ToSocketAddrs::to_socket_addrs(&addr)
                .map_err(err)?
                .next()
                .ok_or_else(|| err(std::io::Error::other("no address")))?;
            let s = TcpStream::connect_timeout(&sa, timeout).map_err(err)?;
            s.set_read_timeout(Some(timeout)).map_err(err)?;
            let _ = s.set_nodelay(true);
            (Stream::Tcp(s.try_clone().map_err(err)?), Stream::Tcp(s))
        };
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
        })
    }

    fn send(&mut self, v: &Value) -> Result<(), OvsdbError> {
        let b = serde_json::to_vec(v).map_err(|e| OvsdbError::Io(e.to_string()))?;
        self.writer
            .write_all(&b)
            .map_err(|e| OvsdbError::Io(e.to_string()))
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        loop {
            let mut de = serde_json::Deserializer::from_reader(&mut self.reader);
            let msg = <Value as serde::Deserialize>::deserialize(&mut de)
                .map_err(|e| OvsdbError::Io(format!("reading the reply: {e}")))?;
            if msg.get("method").and_then(Value::as_str) == Some("echo") {
                let reply = json!({"result": msg["params"], "error": null, "id": msg["id"]});
                self.send(&reply)?;
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
                return Err(OvsdbError::Refused(e.to_string()));
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Runs a unixctl `command` (ovs-vswitchd's control socket speaks the
    /// same JSON-RPC) and returns its result.
    pub fn unixctl(&mut self, command: &str) -> Result<Value, OvsdbError> {
        self.call(command, json!([]))
    }

    /// Runs `ops` as one transaction; returns each operation's result. A
    /// failed operation (the transaction is then rolled back) is an error
    /// naming it.
    pub fn transact(&mut self, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!(DB)];
        params.extend(ops.iter().cloned());
        let r = self.call("transact", Value::Array(params))?;
        let results = r.as_array().cloned().unwrap_or_default();
        for (i, res) in results.iter().enumerate() {
            if let Some(e) = res.get("error").filter(|e| !e.is_null()) {
                let op = ops
                    .get(i)
                    .map(|o| format!("{} {}", o["op"], o["table"]))
                    .unwrap_or_else(|| "commit".into());
                return Err(OvsdbError::Refused(format!(
                    "{op}: {e} {}",
                    res.get("details").and_then(Value::as_str).unwrap_or("")
                )));
            }
        }
        Ok(results)
    }

    /// `select` of `columns` from `table` rows matching `where_`.
    pub fn select(
        &mut self,
        table: &str,
        where_: Value,
        columns: &[&str],
    ) -> Result<Vec<Value>, OvsdbError> {
        let r = self.transact(vec![
            json!({"op": "select", "table": table, "where": where_, "columns": columns}),
        ])?;
        Ok(r.first()
            .and_then(|x| x.get("rows"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

/// An OVSDB `["uuid", ...]` value.
pub fn uuid(u: &str) -> Value {
    json!(["uuid", u])
}

/// The string inside an OVSDB `["uuid", ...]` value.
pub fn uuid_of(v: &Value) -> Option<String> {
    match v.as_array()?.as_slice() {
        [t, u] if t == "uuid" => u.as_str().map(str::to_string),
        _ => None,
    }
}

/// An OVSDB map from string pairs.
pub fn map(pairs: &[(&str, String)]) -> Value {
    json!([
        "map",
        pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

/// Looks `key` up in an OVSDB map value.
pub fn map_get<'a>(m: &'a Value, key: &str) -> Option<&'a str> {
    m.get(1)?
        .as_array()?
        .iter()
        .find(|kv| kv.get(0).and_then(Value::as_str) == Some(key))
        .and_then(|kv| kv.get(1))
        .and_then(Value::as_str)
}

/// The members of an OVSDB set value (a single atom is a set of one).
pub fn set_members(v: &Value) -> Vec<Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([t, members]) if t == "set" => members.as_array().cloned().unwrap_or_default(),
        _ => vec![v.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_values() {
        assert_eq!(
            parse_target("unix:/run/ovs/db.sock"),
            Some((true, "/run/ovs/db.sock".into()))
        );
        assert_eq!(parse_target("/run/ovs/db.sock").map(|t| t.0), Some(true));
        assert_eq!(
            parse_target("tcp:127.0.0.1:6640"),
            Some((false, "127.0.0.1:6640".into()))
        );
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::1",
            "relative/db.sock",
            "ssl:1.2.3.4:6640",
        ] {
            assert_eq!(parse_target(bad), None, "{bad}");
        }
        let m = map(&[("a", "1".into()), ("b", "2".into())]);
        assert_eq!(map_get(&m, "b"), Some("2"));
        assert_eq!(map_get(&m, "c"), None);
        assert_eq!(uuid_of(&uuid("x")), Some("x".into()));
        assert_eq!(set_members(&json!(["set", [1, 2]])).len(), 2);
        assert_eq!(set_members(&json!(5)), vec![json!(5)]);
    }
}
