//! The macvlan verbs.

use crate::conf::MacvlanConf;
use crate::error::MacvlanError as Error;
use berth_cni::attachments::{Access, Attachment, Ledger, LedgerError};
use berth_cni::check::{self, mismatch};
use berth_cni::env::{Command as Verb, Env, EnvError};
use berth_cni::error::LinkError;
use berth_cni::ipcfg;
use berth_cni::link::{self, Link, MacvlanSpec};
use berth_cni::logging::HostSettings;
use berth_cni::netlink::{Netlink, NetlinkError};
use berth_cni::netns::NetnsError;
use berth_cni::qos::{self, Bandwidth};
use berth_cni::setup;
use berth_cni::share::kernel::{self, Feed};
use berth_cni::share::{Entry, Resolved};
use berth_cni::skel::Plugin;
use berth_cni::types::ConfError;
use berth_cni::types::{CniResult, Interface, NetConf};
use berth_cni::{ipam, netns, Failure};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `berth-macvlan`.
pub struct Macvlan;

/// The plugin's name in its records.
const PLUGIN: &str = "berth-macvlan";

/// The shares on the master of a network with `bandwidthShare`, for DEL,
/// CHECK and GC; `None` when it has none (or it cannot be read: DEL and GC
/// must still clean up, and the next ADD's reconcile frees what is left).
fn shares_of(conf: &NetConf, env: &Env) -> Option<(MacvlanConf, Link)> {
    let c = MacvlanConf::parse(conf, env)
        .inspect_err(
            |e| tracing::warn!(error = %e, "bandwidth shares: the configuration does not parse"),
        )
        .ok()?;
    if c.share.is_none() || c.link_in_container {
        return None;
    }
    let m = Netlink::open()
        .map_err(Error::from)
        .and_then(|mut nl| master(&mut nl, &c))
        .inspect_err(|e| tracing::warn!(error = %e, "bandwidth shares: no master"))
        .ok()?;
    Some((c, m))
}

/// Finds the master (by name, or the default route's link) where `nl` looks.
fn master(nl: &mut Netlink, c: &MacvlanConf) -> Result<Link, Error> {
    match &c.master {
        Some(name) => link::by_name(nl, name)?.ok_or_else(|| Error::NoMaster {
            name: name.clone(),
            in_container: c.link_in_container,
        }),
        None => {
            let idx = ipcfg::default_route_link(nl)?.ok_or(Error::NoDefaultRoute)?;
            link::by_index(nl, idx)?.ok_or(Error::DefaultRouteVanished(idx))
        }
    }
}

/// The name a new link has in the container until it is renamed `ifname`.
fn temp_of(ifname: &str) -> String {
    link::temp_name_for("bmv", ifname)
}

/// Deletes a link left under [`temp_of`] `ifname` in `netns` by a killed
/// ADD; true if there was one.
fn remove_stale_temp(netns: &Path, ifname: &str) -> bool {
    let tmp = temp_of(ifname);
    matches!(
        netns::run_in(netns, move || link::delete_by_name(
            &mut Netlink::open()?,
            &tmp
        )),
        Ok(Ok(true))
    )
}

/// Removes `ifname`, its ifb, and a link a killed ADD left under its
/// temporary name. Call inside the netns.
fn remove_in_netns(nl: &mut Netlink, ifname: &str) -> Result<(), LinkError> {
    qos::delete_with_ifb(nl, ifname)?;
    link::delete_by_name(nl, &temp_of(ifname))?;
    Ok(())
}

/// Everything ADD decided before touching the netns.
struct Plan {
    conf: MacvlanConf,
    master: Link,
    bandwidth: Bandwidth,
    share: Option<Resolved>,
}

/// What `bandwidthShare` grants on `master`: needs the master on the host.
fn resolve_share(c: &MacvlanConf, master: &Link) -> Result<Option<Resolved>, Error> {
    match &c.share {
        None => Ok(None),
        Some(_) if c.link_in_container => Err(ConfError::invalid(
            "bandwidthShare",
            "needs the master in the host's netns: with linkInContainer there is no shared link to divide",
        )
        .into()),
        Some(s) => Ok(Some(s.resolve(&master.name, kernel::speed(master))?)),
    }
}

fn plan(c: MacvlanConf, nl_master: &mut Netlink) -> Result<Plan, Error> {
    let m = master(nl_master, &c)?;
    if let Some(mtu) = c.mtu {
        if mtu > m.mtu {
            return Err(Error::MtuAboveMaster {
                mtu,
                master: m.name.clone(),
                master_mtu: m.mtu,
            });
        }
    }
    let mtu = c.mtu.unwrap_or(m.mtu);
    let bandwidth = match &c.common.bandwidth {
        Some((v, key)) => Bandwidth::parse(v, key, mtu)?,
        None => Bandwidth::default(),
    };
    let share = resolve_share(&c, &m)?;
    Ok(Plan {
        conf: c,
        master: m,
        bandwidth,
        share,
    })
}

/// Undoes a partial ADD when dropped armed: the link in the netns, then the lease.
/// Only what this ADD made is removed: its link is known by index, which a
/// rename keeps, so an interface that already had the name is left alone.
struct Rollback<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    netns: &'a Path,
    ledger: &'a Ledger,
    tmp: String,
    index: Option<u32>,
    ipam: Option<String>,
    armed: bool,
}

/// This network's attachment records (see `berth_cni::attachments`).
fn ledger(conf: &NetConf, access: Access) -> Result<Ledger, LedgerError> {
    Ledger::open(
        &HostSettings::from_env().state_dir(),
        "berth-macvlan",
        &conf.name,
        access,
    )
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (tmp, index, ifname) = (self.tmp.clone(), self.index, self.env.ifname.clone());
        let r = netns::run_in(self.netns, move || -> Result<(), NetlinkError> {
            let mut nl = Netlink::open()?;
            let ours = match index {
                Some(i) => link::by_index(&mut nl, i)?,
                None => link::by_name(&mut nl, &tmp)?,
            };
            if let Some(l) = ours {
                // Renamed already: its ifb (if shaping got that far) is ours too.
                if l.name == ifname {
                    link::delete_by_name(&mut nl, &qos::ifb_name(&ifname))?;
                }
                link::delete(&mut nl, l.index)?;
            }
            Ok(())
        });
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!(?r, "rollback: could not remove the link");
        }
        if let Some(t) = &self.ipam {
            if let Err(e) = ipam::del(t, self.env, &self.conf.bytes()) {
                tracing::warn!(error = %e, "rollback: IPAM DEL failed");
            }
        }
        self.ledger.remove(&self.env.container_id, &self.env.ifname);
        tracing::info!("rolled back the partial ADD");
    }
}

/// The link as it ended up in the container.
struct Attached {
    mac: [u8; 6],
    mtu: u32,
}

fn create_link(p: &Plan, netns: &Path, tmp: &str) -> Result<(), Error> {
    let spec = |fd| MacvlanSpec {
        name: tmp,
        parent: p.master.index,
        mode: p.conf.mode,
        mtu: p.conf.mtu,
        mac: p.conf.common.mac,
        netns_fd: fd,
    };
    let explain = |source: NetlinkError| -> Error {
        let master = p.master.name.clone();
        match source.errno() {
            Some(libc::EADDRINUSE) | Some(libc::EEXIST) if p.conf.common.mac.is_some() => {
                Error::MacInUse { master, source }
            }
            Some(libc::EINVAL) if p.conf.mode == link::MacvlanMode::Passthru => {
                Error::PassthruTaken { master, source }
            }
            _ => source.into(),
        }
    };
    if p.conf.link_in_container {
        netns::run_in(netns, || {
            let mut nl = Netlink::open()?;
            link::add_macvlan(&mut nl, &spec(None)).map_err(explain)
        })?
    } else {
        let f = File::open(netns).map_err(|source| NetnsError::Open {
            path: netns.into(),
            source,
        })?;
        let mut nl = Netlink::open()?;
        link::add_macvlan(&mut nl, &spec(Some(f.as_raw_fd()))).map_err(explain)
    }
}

impl Plugin for Macvlan {
    type Error = Error;

    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, Error> {
        let netns = env.netns()?;
        if !netns::exists(netns) {
            return Err(Error::NoNetns(netns.into()));
        }
        let c = MacvlanConf::parse(conf, env)?;
        let p = if c.link_in_container {
            netns::run_in(netns, || plan(c, &mut Netlink::open()?))??
        } else {
            plan(c, &mut Netlink::open()?)?
        };
        // Recorded before anything exists, so GC finds whatever a lost DEL
        // leaves; held shared until the ADD is done, so GC waits for it.
        let ledger = ledger(conf, Access::Shared)?;
        ledger.record(&Attachment::new(&env.container_id, &env.ifname, netns))?;
        let tmp = temp_of(&env.ifname);
        let mut made = create_link(&p, netns, &tmp);
        if made.is_err() && remove_stale_temp(netns, &env.ifname) {
            // An ADD of this interface was killed before its rename.
            made = create_link(&p, netns, &tmp);
        }
        if let Err(e) = made {
            ledger.remove(&env.container_id, &env.ifname);
            return Err(e);
        }
        let mut rb = Rollback {
            env,
            conf,
            netns,
            ledger: &ledger,
            tmp: tmp.clone(),
            index: None,
            ipam: None,
            armed: true,
        };
        let t = tmp.clone();
        rb.index = netns::run_in(netns, move || -> Result<Option<u32>, NetlinkError> {
            Ok(link::by_name(&mut Netlink::open()?, &t)?.map(|l| l.index))
        })??;
        rb.ipam = p.conf.common.ipam_type.clone();
        let mut result = p.conf.common.addresses(env, conf, 0)?;
        let ifname = env.ifname.clone();
        let bw = p.bandwidth;
        let res = &result;
        let index = rb.index;
        let attached = netns::run_in(netns, move || -> Result<Attached, Error> {
            let mut nl = Netlink::open()?;
            let ours = match index {
                Some(i) => link::by_index(&mut nl, i)?,
                None => link::by_name(&mut nl, &tmp)?,
            };
            let l = ours.ok_or_else(|| Error::LinkLost(tmp.clone()))?;
            if link::by_name(&mut nl, &ifname)?.is_some() {
                return Err(EnvError::IfnameTaken(ifname).into());
            }
            link::rename(&mut nl, l.index, &ifname)?;
            setup::finish(&mut nl, l.index, &ifname, 0, res, &bw)?;
            let l = link::by_index(&mut nl, l.index)?.unwrap_or(l);
            Ok(Attached {
                mac: l.mac.as_slice().try_into().unwrap_or_default(),
                mtu: l.mtu,
            })
        })??;
        if let Some(r) = &p.share {
            let mut s = kernel::open(&p.master, Feed::LinkIngress)?;
            let e = Entry::new(PLUGIN, &conf.name, env, netns, attached.mac, None);
            let e = s.admit(e, r)?;
            tracing::info!(master = %p.master.name, minor = e.minor, egress = ?e.egress, ingress = ?e.ingress, priority = e.priority, "bandwidth share granted");
        }
        rb.armed = false;
        result.interfaces = vec![Interface {
            name: env.ifname.clone(),
            mac: link::format_mac(&attached.mac),
            mtu: Some(attached.mtu),
            sandbox: Some(netns.display().to_string()),
        }];
        result.dns = p.conf.common.dns.clone();
        tracing::info!(master = %p.master.name, mode = p.conf.mode.as_str(), ?bw, "macvlan attached");
        Ok(result)
    }

    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        // Only ipam.type matters: a master or bandwidth that is gone or
        // broken by now must not stop the cleanup.
        let records = ledger(conf, Access::Shared);
        let ipam_result = match conf.ipam_type() {
            Some(t) => ipam::del(t, env, &conf.bytes()),
            None => Ok(()),
        };
        if let Some(ns) = env.netns.as_deref().filter(|n| netns::exists(n)) {
            let ifname = env.ifname.clone();
            let r = netns::run_in(ns, move || -> Result<(), LinkError> {
                remove_in_netns(&mut Netlink::open()?, &ifname)
            });
            match r {
                Ok(r) => r?,
                // The netns vanished between the check and entering it.
                Err(e) => tracing::info!(error = %e, "netns is gone; nothing to remove"),
            }
        }
        if let Some((_, m)) = shares_of(conf, env) {
            kernel::open(&m, Feed::LinkIngress)?.release(
                PLUGIN,
                &conf.name,
                &env.container_id,
                &env.ifname,
            )?;
        }
        if ipam_result.is_ok() {
            match &records {
                Ok(l) => l.remove(&env.container_id, &env.ifname),
                Err(e) => tracing::warn!(error = %e, "attachment records unavailable"),
            }
        }
        Ok(ipam_result?)
    }

    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let netns = env.netns()?;
        let prev = check::prev_result(conf)?;
        let c = MacvlanConf::parse(conf, env)?;
        if let Some(t) = &c.common.ipam_type {
            let plugin = ipam::find_plugin(t, &env.path)?;
            ipam::exec_negotiated(&plugin, Verb::Check, env, &conf.bytes())?;
        }
        let ifname = env.ifname.clone();
        let (ours, want_mac) = check::prev_interface(&prev, &ifname)?;
        let want_mac_s = want_mac.clone();
        netns::run_in(netns, move || -> Result<(), Error> {
            let mut nl = Netlink::open()?;
            let l = link::by_name(&mut nl, &ifname)?
                .ok_or_else(|| mismatch(format!("{ifname} is not in the container's netns")))?;
            if l.kind.as_deref() != Some("macvlan") {
                return Err(mismatch(format!(
                    "{ifname} is a {} link, not macvlan",
                    l.kind.as_deref().unwrap_or("plain")
                ))
                .into());
            }
            if l.macvlan_mode != Some(c.mode) {
                return Err(mismatch(format!(
                    "{ifname} is in macvlan mode {:?}, configured {}",
                    l.macvlan_mode.map(|m| m.as_str()),
                    c.mode.as_str()
                ))
                .into());
            }
            check::link_matches(&mut nl, &l, &want_mac, c.mtu, &prev, ours, true)?;
            let bw = match &c.common.bandwidth {
                Some((v, key)) => Bandwidth::parse(v, key, l.mtu)?,
                None => Bandwidth::default(),
            };
            Ok(qos::verify(&mut nl, l.index, &ifname, &bw)?)
        })??;
        if let Some((c, m)) = shares_of(conf, env) {
            if let Some(r) = resolve_share(&c, &m)? {
                let mac = link::parse_mac(&want_mac_s).unwrap_or_default();
                let key = Entry::new(PLUGIN, &conf.name, env, netns, mac, None);
                kernel::open(&m, Feed::LinkIngress)?.verify(&key, &r)?;
            }
        }
        Ok(())
    }

    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let c = MacvlanConf::parse(conf, env)?;
        if !c.link_in_container {
            let mut nl = Netlink::open()?;
            let m = master(&mut nl, &c).map_err(|e| Error::NotAvailable(e.message()))?;
            if !m.up {
                return Err(Error::NotAvailable(format!(
                    "master {:?} is down: containers attached now would have no network",
                    m.name
                )));
            }
        }
        if let Some(t) = &c.common.ipam_type {
            ipam::passthrough_11(t, Verb::Status, env, &conf.bytes())?;
        }
        Ok(())
    }

    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), Error> {
        let valid = conf.valid_attachments()?;
        // Alone: no ADD of this network is in progress meanwhile.
        let ledger = ledger(conf, Access::Exclusive)?;
        let ipam_gc = match conf.ipam_type() {
            Some(t) => ipam::passthrough_11(t, Verb::Gc, env, &conf.bytes())?,
            None => true,
        };
        for a in ledger.list() {
            if valid.contains(&(a.container_id.clone(), a.ifname.clone())) {
                continue;
            }
            // The link and its ifb live in the netns: gone with it, or
            // removed here while it still exists (and is the same one).
            if a.netns_is_ours() {
                let ifname = a.ifname.clone();
                let r = netns::run_in(&a.netns, move || -> Result<(), LinkError> {
                    remove_in_netns(&mut Netlink::open()?, &ifname)
                });
                if !matches!(r, Ok(Ok(()))) {
                    tracing::warn!(?r, container = %a.container_id, "GC: could not remove the link; kept for the next GC");
                    continue;
                }
            }
            // An IPAM without GC releases the lease by DEL with the stale ID.
            if let (false, Some(t)) = (ipam_gc, conf.ipam_type()) {
                let stale = Env {
                    command: Verb::Del,
                    container_id: a.container_id.clone(),
                    netns: Some(a.netns.clone()),
                    ifname: a.ifname.clone(),
                    args: Default::default(),
                    path: env.path.clone(),
                };
                if let Err(e) = ipam::del(t, &stale, &conf.bytes()) {
                    tracing::warn!(error = %e, container = %a.container_id, "GC: IPAM DEL failed; kept for the next GC");
                    continue;
                }
            }
            ledger.remove(&a.container_id, &a.ifname);
            tracing::info!(container = %a.container_id, ifname = %a.ifname, "GC: collected an attachment not in the valid list");
        }
        if let Some((_, m)) = shares_of(conf, env) {
            kernel::open(&m, Feed::LinkIngress)?.gc(PLUGIN, &conf.name, &valid)?;
        }
        Ok(())
    }
}
