//! Network namespaces and veth pairs with run-unique names, removed on drop.
//! Addresses come only from 10.0.0.0/8 test ranges on these interfaces.

use crate::cmd::{command, sh, try_sh, Ran};
use crate::names::unique;

/// A network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up.
    pub fn new() -> Netns {
        crate::require_root();
        let name = unique();
        sh("ip", ["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its path, as CNI's `CNI_NETNS` takes it.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip -n <ns> args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        sh("ip", v)
    }

    /// Runs `program args...` inside the namespace and returns what happened.
    pub fn exec(&self, program: &str, args: &[&str]) -> Ran {
        crate::deps::require(program);
        let mut v = vec!["netns", "exec", &self.name, program];
        v.extend_from_slice(args);
        try_sh("ip", v)
    }

    /// True when `busybox ping` from this namespace reaches `addr` (3 tries).
    pub fn pings(&self, addr: &str) -> bool {
        self.exec("busybox", &["ping", "-c", "1", "-W", "1", addr])
            .ok()
            || self
                .exec("busybox", &["ping", "-c", "2", "-W", "2", addr])
                .ok()
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let r = try_sh("ip", ["netns", "del", &self.name]);
        if !r.ok() {
            eprintln!("harness: cannot delete netns {}: {}", self.name, r.stderr);
        }
    }
}

/// A veth pair whose host end stays in the host namespace; deleted on drop
/// (deleting one end removes both, wherever the peer went).
#[derive(Debug)]
pub struct Veth {
    /// The end that stays on the host.
    pub host: String,
    /// The other end (possibly moved into a namespace).
    pub peer: String,
}

impl Veth {
    /// Creates a pair named `<unique>h` / `<unique>c`, both up on the host.
    pub fn new() -> Veth {
        crate::require_root();
        let base = unique();
        let v = Veth {
            host: format!("{base}h"),
            peer: format!("{base}c"),
        };
        sh(
            "ip",
            [
                "link", "add", &v.host, "type", "veth", "peer", "name", &v.peer,
            ],
        );
        sh("ip", ["link", "set", &v.host, "up"]);
        v
    }

    /// Moves the peer into `ns` under the name `ifname`, up, with `cidr` if given.
    pub fn move_peer(&mut self, ns: &Netns, ifname: &str, cidr: Option<&str>) {
        sh("ip", ["link", "set", &self.peer, "netns", &ns.name]);
        ns.ip(&["link", "set", &self.peer, "name", ifname]);
        self.peer = ifname.to_string();
        ns.ip(&["link", "set", ifname, "up"]);
        if let Some(c) = cidr {
            ns.ip(&["addr", "add", c, "dev", ifname]);
        }
    }
}

impl Default for Veth {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = try_sh("ip", ["link", "del", &self.host]);
    }
}

/// A Linux bridge on the host with no ports, usable as a macvlan parent
/// (this kernel has no dummy links); deleted on drop.
#[derive(Debug)]
pub struct ParentLink {
    /// Its name.
    pub name: String,
}

impl ParentLink {
    /// Creates a fresh parent link, up.
    pub fn new() -> ParentLink {
        crate::require_root();
        let name = format!("{}m", unique());
        sh("ip", ["link", "add", &name, "type", "bridge"]);
        sh("ip", ["link", "set", &name, "up"]);
        ParentLink { name }
    }
}

impl Default for ParentLink {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ParentLink {
    fn drop(&mut self) {
        let _ = try_sh("ip", ["link", "del", &self.name]);
    }
}

/// Runs iperf3 for `secs` seconds from `client` to a one-off server at `addr`
/// in `server` (`reverse`: the server sends); returns the received bits/s.
/// The first second is omitted (slow start); the server is killed by pid.
pub fn iperf(server: &Netns, client: &Netns, addr: &str, reverse: bool, secs: u32) -> f64 {
    use std::process::Stdio;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = (5300 + (std::process::id() % 400) * 8 + n % 8).to_string();
    let mut srv = command("ip")
        .args([
            "netns",
            "exec",
            &server.name,
            "iperf3",
            "-s",
            "-1",
            "-p",
            &port,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    let t = secs.to_string();
    let mut args = vec!["-c", addr, "-p", &port, "-t", &t, "-O", "1", "-J"];
    if reverse {
        args.push("-R");
    }
    let mut out = String::new();
    for _ in 0..20 {
        let r = client.exec("iperf3", &args);
        // iperf3 -J may exit 0 with {"error": ...} while the server starts.
        if r.ok() && !r.stdout.contains("\"error\"") {
            out = r.stdout;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("iperf3 gave no JSON: {out}"));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 gave no rate: {out}"))
}
