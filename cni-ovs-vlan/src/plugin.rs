//! The OVS VLAN verbs.

use crate::conf::{EgressShaping, OvsConf};
use crate::error::OvsError as Error;
use crate::ovsdb::Client;
use crate::port::{self, Found, Owner};
use berth_cni::attachments::{locked, Access, LedgerError};
use berth_cni::check::{self, mismatch};
use berth_cni::env::{Command as Verb, Env, EnvError};
use berth_cni::error::LinkError;
use berth_cni::link::{self, VethSpec};
use berth_cni::logging::HostSettings;
use berth_cni::netlink::Netlink;
use berth_cni::netns::NetnsError;
use berth_cni::qos::{self, Bandwidth};
use berth_cni::setup;
use berth_cni::share::kernel::{self, Feed};
use berth_cni::share::{Entry, Resolved};
use berth_cni::skel::Plugin;
use berth_cni::types::{CniResult, ConfError, Interface, NetConf};
use berth_cni::{ipam, netns, tc, Failure};
use std::fs::File;
use std::os::fd::AsRawFd;

/// `berth-ovs-vlan`.
pub struct OvsVlan;

/// The host end of the veth for an attachment: `bov` + 12 hex of a stable
/// hash of container ID and interface, so DEL finds it with no state.
pub fn host_name(container_id: &str, ifname: &str) -> String {
    format!(
        "bov{:012x}",
        fnv1a(container_id.bytes().chain([b'/']).chain(ifname.bytes())) & 0xffff_ffff_ffff
    )
}

/// True for a name [`host_name`] makes.
fn is_host_name(name: &str) -> bool {
    name.len() == 15 && name.starts_with("bov") && name[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The kernel sets no alias at creation, so a veth is unaliased between
/// its creation and its alias. ADDs hold this lock shared over that window
/// and GC holds it alone, so an unaliased host end GC sees is an ADD's that
/// was killed there.
fn veth_lock(access: Access) -> Result<File, LedgerError> {
    let dir = HostSettings::from_env().state_dir();
    let path = dir.join("berth-ovs-vlan.veths.lock");
    std::fs::create_dir_all(&dir)
        .and_then(|()| locked(&path, access))
        .map_err(|source| LedgerError {
            what: format!("lock {}", path.display()),
            source,
        })
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How the alias names the network: as is up to 64 bytes, else `~` and a
/// hash of the name, so the alias stays within the kernel's 255 bytes
/// (IFALIASZ) however long the network's name.
fn alias_network(network: &str) -> String {
    if network.len() <= 64 {
        network.to_string()
    } else {
        format!("~{:016x}", fnv1a(network.bytes()))
    }
}

/// The start of the aliases of network `network`'s host ends (GC's match).
fn alias_prefix(network: &str) -> String {
    format!("berth-ovs-vlan network={} ", alias_network(network))
}

/// The alias on the host end, so GC can find veths whose port never made
/// it; a container ID too long for the rest is hashed too.
fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    let id = if container_id.len() <= 128 {
        container_id.to_string()
    } else {
        format!("~{:016x}", fnv1a(container_id.bytes()))
    };
    format!("{}container={id} ifname={ifname}", alias_prefix(network))
}

/// Removes what an attachment left on the host: its ports (with QoS rows)
/// and the host end of its veth.
fn remove_attachment(db: &mut Client, ports: &[Found], host: &str) -> Result<(), Error> {
    port::remove(db, ports)?;
    let mut nl = Netlink::open()?;
    for n in ports.iter().map(|p| p.name.as_str()).chain([host]) {
        link::delete_by_name(&mut nl, n)?;
    }
    Ok(())
}

struct Rollback<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    c: &'a OvsConf,
    host: String,
    ipam: bool,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ids = [
            (port::CONTAINER, self.env.container_id.clone()),
            (port::IFNAME, self.env.ifname.clone()),
        ];
        match Client::connect(&self.c.socket, self.c.timeout) {
            Ok(mut db) => {
                let found = port::find(&mut db, &ids).unwrap_or_default();
                if let Err(e) = remove_attachment(&mut db, &found, &self.host) {
                    tracing::warn!(error = %e, "rollback: cannot remove the port");
                }
            }
            Err(e) => tracing::warn!(error = %e, "rollback: OVSDB unreachable"),
        }
        if let Ok(mut nl) = Netlink::open() {
            let _ = link::delete_by_name(&mut nl, &self.host);
        }
        if self.ipam {
            if let Some(t) = &self.c.common.ipam_type {
                if let Err(e) = ipam::del(t, self.env, &self.conf.bytes()) {
                    tracing::warn!(error = %e, "rollback: IPAM DEL failed");
                }
            }
        }
        tracing::info!("rolled back the partial ADD");
    }
}

/// ovs-vswitchd's control socket: `vswitchd_socket_file`, else beside a
/// unix OVSDB socket, `ovs-vswitchd.<pid>.ctl` (the pid from
/// `ovs-vswitchd.pid`, as OVS's packages run it) or `ovs-vswitchd.ctl`.
/// None when OVSDB is reached over TCP (vswitchd is then elsewhere) with no
/// `vswitchd_socket_file`; Err when none of those exists.
pub fn vswitchd_control(c: &OvsConf) -> Option<Result<std::path::PathBuf, String>> {
    if let Some(p) = &c.vswitchd_socket {
        return Some(Ok(p.into()));
    }
    let (unix, db) = crate::ovsdb::parse_target(&c.socket)?;
    if !unix {
        return None;
    }
    let dir = std::path::Path::new(&db).parent()?.to_path_buf();
    let by_pid = std::fs::read_to_string(dir.join("ovs-vswitchd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .map(|pid| dir.join(format!("ovs-vswitchd.{pid}.ctl")));
    let found = by_pid
        .into_iter()
        .chain([dir.join("ovs-vswitchd.ctl")])
        .find(|p| p.exists());
    Some(found.ok_or_else(|| {
        format!(
            "ovs-vswitchd is not running: no control socket in {}",
            dir.display()
        )
    }))
}

/// OVSDB at `socket`; unreachable is "try again later".
fn connect(socket: &str, timeout: std::time::Duration) -> Result<Client, Error> {
    Client::connect(socket, timeout).map_err(|e| Error::at(socket, e))
}

/// Whether OVSDB has bridge `name`.
fn bridge_exists(db: &mut Client, name: &str) -> Result<bool, Error> {
    let rows = db.select(
        "Bridge",
        serde_json::json!([["name", "==", name]]),
        &["name"],
    )?;
    Ok(!rows.is_empty())
}

/// The plugin's name in its bandwidth books.
const PLUGIN: &str = "berth-ovs-vlan";

/// The uplink and what `bandwidthShare` grants on it, if the network has one.
fn share_plan(c: &OvsConf) -> Result<Option<(link::Link, Resolved)>, Error> {
    let (Some(s), Some(u)) = (&c.share, &c.uplink) else {
        return Ok(None);
    };
    let up = link::by_name(&mut Netlink::open()?, u)?.ok_or_else(|| Error::NoUplink(u.clone()))?;
    let r = s.resolve(&up.name, kernel::speed(&up))?;
    Ok(Some((up, r)))
}

fn bandwidth(c: &OvsConf) -> Result<Bandwidth, ConfError> {
    match &c.common.bandwidth {
        Some((v, key)) => Bandwidth::parse(v, key, c.mtu.unwrap_or(1500)),
        None => Ok(Bandwidth::default()),
    }
}

impl Plugin for OvsVlan {
    type Error = Error;

    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, Error> {
        let netns = env.netns()?;
        let c = OvsConf::parse(conf, env)?;
        let bw = bandwidth(&c)?;
        let share = share_plan(&c)?;
        let ns_file = File::open(netns).map_err(|source| NetnsError::Open {
            path: netns.into(),
            source,
        })?;
        let mut db = connect(&c.socket, c.timeout)?;
        if !bridge_exists(&mut db, &c.bridge)? {
            return Err(Error::NoBridge(c.bridge.clone()));
        }
        let host = host_name(&env.container_id, &env.ifname);
        // A previous ADD of this attachment that was killed: start clean.
        let ids = [
            (port::CONTAINER, env.container_id.clone()),
            (port::IFNAME, env.ifname.clone()),
        ];
        let stale = port::find(&mut db, &ids)?;
        remove_attachment(&mut db, &stale, &host)?;

        let mut nl = Netlink::open()?;
        let al = alias(&conf.name, &env.container_id, &env.ifname);
        let window = veth_lock(Access::Shared)?;
        link::add_veth(
            &mut nl,
            &VethSpec {
                name: &host,
                peer: &env.ifname,
                peer_netns_fd: Some(ns_file.as_raw_fd()),
                mtu: c.mtu,
                peer_mac: c.common.mac,
                alias: Some(&al),
            },
        )
        .map_err(|e| {
            if e.is_exists() {
                Error::from(EnvError::IfnameTaken(env.ifname.clone()))
            } else {
                Error::from(e)
            }
        })?;
        drop(window);
        let mut rb = Rollback {
            env,
            conf,
            c: &c,
            host: host.clone(),
            ipam: false,
            armed: true,
        };
        let hl = link::by_name(&mut nl, &host)?
            .ok_or_else(|| LinkError::Vanished(format!("veth {host}")))?;
        link::set_up(&mut nl, hl.index)?;
        let owner = Owner {
            container_id: &env.container_id,
            ifname: &env.ifname,
            netns: &netns.display().to_string(),
            network: &conf.name,
        };
        port::add(&mut db, &c, &host, &owner, bw.ingress, bw.egress)?;
        if bw.ingress.is_some()
            && !tc::qdiscs(&mut nl, hl.index)?
                .iter()
                .any(|q| q.parent == tc::ROOT && q.kind == "htb")
        {
            return Err(Error::NoHtb(host));
        }
        if c.egress_shaping == EgressShaping::Police && bw.egress.is_some() {
            let applied = tc::qdiscs(&mut nl, hl.index)?
                .iter()
                .any(|q| q.parent == tc::INGRESS)
                && tc::ingress_filters(&mut nl, hl.index)? > 0;
            if !applied {
                return Err(Error::NoPolicing(host));
            }
        }

        rb.ipam = c.common.ipam_type.is_some();
        let mut result = c.common.addresses(env, conf, 1)?;
        let ifname = env.ifname.clone();
        let egress_tbf = Bandwidth {
            ingress: None,
            egress: bw.egress.filter(|_| c.egress_shaping == EgressShaping::Tbf),
        };
        let res = &result;
        let (mac, mtu) = netns::run_in(netns, move || -> Result<(Vec<u8>, u32), Error> {
            let mut nl = Netlink::open()?;
            let l = link::by_name(&mut nl, &ifname)?
                .ok_or_else(|| Error::NotInNetns(ifname.clone()))?;
            setup::finish(&mut nl, l.index, &ifname, 1, res, &egress_tbf)?;
            Ok((l.mac, l.mtu))
        })??;
        if let Some((up, r)) = &share {
            let m: [u8; 6] = mac.as_slice().try_into().unwrap_or_default();
            let e = Entry::new(PLUGIN, &conf.name, env, netns, m, Some(host.clone()));
            let e = kernel::open(up, Feed::PortEgress)?.admit(e, r)?;
            tracing::info!(uplink = %up.name, minor = e.minor, egress = ?e.egress, ingress = ?e.ingress, priority = e.priority, "bandwidth share granted");
        }
        let mac = link::format_mac(&mac);
        rb.armed = false;
        result.interfaces = vec![
            Interface {
                name: host.clone(),
                mac: hl.mac_string(),
                mtu: Some(hl.mtu),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac,
                mtu: Some(mtu),
                sandbox: Some(netns.display().to_string()),
            },
        ];
        result.dns = c.common.dns.clone();
        tracing::info!(bridge = %c.bridge, port = %host, vlan = ?c.vlan, trunk = ?c.trunk, ?bw, "attached to OVS");
        Ok(result)
    }

    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        // Only where OVSDB is and ipam.type matter: a key edited since ADD,
        // or an ADD that failed validation, must not stop the cleanup.
        let c = crate::conf::DelConf::parse(conf);
        let ipam_result = match conf.ipam_type() {
            Some(t) => ipam::del(t, env, &conf.bytes()),
            None => Ok(()),
        };
        let host = host_name(&env.container_id, &env.ifname);
        let mut db = connect(&c.socket, c.timeout)?;
        let ids = [
            (port::CONTAINER, env.container_id.clone()),
            (port::IFNAME, env.ifname.clone()),
        ];
        let found = port::find(&mut db, &ids)?;
        remove_attachment(&mut db, &found, &host)?;
        if let Some(u) = &c.share_uplink {
            match link::by_name(&mut Netlink::open()?, u)? {
                Some(up) => kernel::open(&up, Feed::PortEgress)?.release(
                    PLUGIN,
                    &conf.name,
                    &env.container_id,
                    &env.ifname,
                )?,
                None => {
                    tracing::warn!(uplink = %u, "uplink is gone; its bandwidth shares went with it")
                }
            }
        }
        Ok(ipam_result?)
    }

    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let netns = env.netns()?;
        let prev = check::prev_result(conf)?;
        let c = OvsConf::parse(conf, env)?;
        let bw = bandwidth(&c)?;
        if let Some(t) = &c.common.ipam_type {
            let plugin = ipam::find_plugin(t, &env.path)?;
            ipam::exec_negotiated(&plugin, Verb::Check, env, &conf.bytes())?;
        }
        let mut db = connect(&c.socket, c.timeout)?;
        let ids = [
            (port::CONTAINER, env.container_id.clone()),
            (port::IFNAME, env.ifname.clone()),
        ];
        let found = port::find(&mut db, &ids)?;
        let p = match found.as_slice() {
            [p] => p.clone(),
            [] => return Err(mismatch("no OVS port carries this attachment".into()).into()),
            _ => {
                return Err(
                    mismatch("more than one OVS port carries this attachment".into()).into(),
                )
            }
        };
        let want_trunks: Vec<i64> = c.trunk.iter().map(|v| i64::from(*v)).collect();
        if p.tag != c.vlan.map(i64::from) || p.trunks != want_trunks {
            return Err(mismatch(format!(
                "port {} has tag {:?} and trunks {:?}, configured vlan {:?} and trunk {:?}",
                p.name, p.tag, p.trunks, c.vlan, c.trunk
            ))
            .into());
        }
        let bridge_has = db.select(
            "Bridge",
            serde_json::json!([
                ["name", "==", c.bridge],
                ["ports", "includes", crate::ovsdb::uuid(&p.port)]
            ]),
            &["name"],
        )?;
        if bridge_has.is_empty() {
            return Err(mismatch(format!("port {} is not on bridge {}", p.name, c.bridge)).into());
        }
        if bw.ingress.is_some() != p.qos.is_some() {
            return Err(mismatch(format!(
                "port {} QoS is {}, ingress bandwidth is {}",
                p.name,
                if p.qos.is_some() { "set" } else { "missing" },
                if bw.ingress.is_some() {
                    "configured"
                } else {
                    "not configured"
                }
            ))
            .into());
        }
        let mut nl = Netlink::open()?;
        let hl = link::by_name(&mut nl, &p.name)?
            .ok_or_else(|| mismatch(format!("host veth {} is missing", p.name)))?;
        if bw.ingress.is_some()
            && !tc::qdiscs(&mut nl, hl.index)?
                .iter()
                .any(|q| q.parent == tc::ROOT && q.kind == "htb")
        {
            return Err(mismatch(format!("no linux-htb qdisc on {}", p.name)).into());
        }
        let ifname = env.ifname.clone();
        let (ours, want_mac) = check::prev_interface(&prev, &ifname)?;
        if let Some((up, r)) = share_plan(&c)? {
            let m = link::parse_mac(&want_mac).unwrap_or_default();
            let key = Entry::new(PLUGIN, &conf.name, env, netns, m, Some(p.name.clone()));
            kernel::open(&up, Feed::PortEgress)?.verify(&key, &r)?;
        }
        let egress_tbf = Bandwidth {
            ingress: None,
            egress: bw.egress.filter(|_| c.egress_shaping == EgressShaping::Tbf),
        };
        netns::run_in(netns, move || -> Result<(), LinkError> {
            let mut nl = Netlink::open()?;
            let l = link::by_name(&mut nl, &ifname)?
                .ok_or_else(|| mismatch(format!("{ifname} is not in the container's netns")))?;
            if l.kind.as_deref() != Some("veth") {
                return Err(mismatch(format!("{ifname} is not a veth")));
            }
            check::link_matches(&mut nl, &l, &want_mac, c.mtu, &prev, ours, false)?;
            qos::verify(&mut nl, l.index, &ifname, &egress_tbf)
        })??;
        Ok(())
    }

    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let c = OvsConf::parse(conf, env)?;
        let unavailable = |e: Error| {
            Error::NotAvailable(match e.details() {
                Some(d) => format!("{}: {d}", e.message()),
                None => e.message(),
            })
        };
        let mut db = connect(&c.socket, c.timeout).map_err(unavailable)?;
        if !bridge_exists(&mut db, &c.bridge).map_err(unavailable)? {
            return Err(unavailable(Error::NoBridge(c.bridge.clone())));
        }
        // OVSDB takes a port that ovs-vswitchd, not answering, never adds.
        match vswitchd_control(&c) {
            None => tracing::debug!(
                "OVSDB over TCP and no vswitchd_socket_file: ovs-vswitchd not checked"
            ),
            Some(Err(e)) => return Err(Error::NotAvailable(e)),
            Some(Ok(ctl)) => {
                let target = format!("unix:{}", ctl.display());
                Client::connect(&target, c.timeout)
                    .and_then(|mut v| v.unixctl("version"))
                    .map_err(|e| {
                        Error::NotAvailable(format!(
                            "ovs-vswitchd does not answer on {}: {e}",
                            ctl.display()
                        ))
                    })?;
            }
        }
        if let Some(t) = &c.common.ipam_type {
            ipam::passthrough_11(t, Verb::Status, env, &conf.bytes())?;
        }
        Ok(())
    }

    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let c = OvsConf::parse(conf, env)?;
        let valid = conf.valid_attachments()?;
        let mut db = connect(&c.socket, c.timeout)?;
        let ours = port::find(&mut db, &[(port::NETWORK, conf.name.clone())])?;
        let stale: Vec<Found> = ours
            .into_iter()
            .filter(|p| !valid.contains(&p.owner))
            .collect();
        for p in &stale {
            tracing::info!(port = %p.name, container = %p.owner.0, ifname = %p.owner.1, "GC: removing a port not in the valid list");
        }
        port::remove(&mut db, &stale)?;
        // Veths whose ADD died before its port was written, found by alias;
        // and those whose ADD died before the alias (of any network: no ADD
        // is in that window while GC holds the lock).
        let mut nl = Netlink::open()?;
        let prefix = alias_prefix(&conf.name);
        let keep: Vec<String> = valid.iter().map(|(id, ifn)| host_name(id, ifn)).collect();
        let _window = veth_lock(Access::Exclusive)?;
        for l in link::list(&mut nl)? {
            let ours = l.alias.as_deref().is_some_and(|a| a.starts_with(&prefix));
            let unaliased =
                l.alias.is_none() && is_host_name(&l.name) && l.kind.as_deref() == Some("veth");
            if (ours && !keep.contains(&l.name)) || unaliased {
                tracing::info!(veth = %l.name, "GC: removing a veth not in the valid list");
                link::delete(&mut nl, l.index)?;
            }
        }
        match share_plan(&c) {
            Ok(Some((up, _))) => {
                kernel::open(&up, Feed::PortEgress)?.gc(PLUGIN, &conf.name, &valid)?
            }
            Ok(None) => {}
            // The uplink is gone, and its trees with it; its book goes at
            // the next ADD's reconcile.
            Err(e) => tracing::warn!(error = %e, "GC: bandwidth shares not collected"),
        }
        let n = port::remove_orphan_qos(&mut db, &conf.name)?;
        if n > 0 {
            tracing::info!(rows = n, "GC: removed orphaned QoS rows");
        }
        if let Some(t) = &c.common.ipam_type {
            ipam::passthrough_11(t, Verb::Gc, env, &conf.bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{alias, host_name, is_host_name};

    #[test]
    fn aliases_fit_the_kernel_however_long_the_names() {
        let a = alias(&"n".repeat(200), &"c".repeat(64), "eth0");
        assert!(a.len() < 256, "{} bytes", a.len());
        assert!(alias(&"n".repeat(1000), &"c".repeat(1000), "eth0123456789ab").len() < 256);
        assert_eq!(
            alias("net1", "abc", "eth0"),
            "berth-ovs-vlan network=net1 container=abc ifname=eth0"
        );
        assert_ne!(
            alias(&"n".repeat(200), "c", "eth0"),
            alias(&"m".repeat(200), "c", "eth0")
        );
    }

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_name("abc", "eth0");
        assert_eq!(a, host_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_name("abc", "eth1"));
        assert_ne!(host_name("ab", "ceth0"), host_name("abc", "eth0"));
        assert!(is_host_name(&a));
        assert!(!is_host_name("bov12345678901z") && !is_host_name("eth0"));
    }
}
