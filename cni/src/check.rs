//! CHECK helpers shared by the plugins: finding the interface in
//! `prevResult`, and comparing the container's link with it.

use crate::error::LinkError;
use crate::ipcfg::{self, Cidr};
use crate::link::Link;
use crate::netlink::Netlink;
use crate::types::{CniResult, ConfError, NetConf, ResultError};

/// A CHECK difference (plugin code 101).
pub fn mismatch(msg: String) -> LinkError {
    LinkError::Mismatch(msg)
}

/// CHECK's `prevResult`, which it needs.
pub fn prev_result(conf: &NetConf) -> Result<CniResult, crate::Error> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| ConfError::Missing("prevResult".into()))?;
    Ok(CniResult::from_json(prev)?)
}

/// The index and MAC of `ifname` (a container-side interface) in `prev`.
pub fn prev_interface(prev: &CniResult, ifname: &str) -> Result<(usize, String), ConfError> {
    prev.interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .map(|i| (i, prev.interfaces[i].mac.clone()))
        .ok_or_else(|| {
            ConfError::invalid(
                "prevResult",
                format!("has no interface {ifname} in a sandbox"),
            )
        })
}

/// Compares link `l` (in the netns `nl` talks to) with `prev`: the MAC it
/// reported, the configured MTU, the addresses of interface `ours`, and,
/// with `routes`, every route of `prev`.
pub fn link_matches(
    nl: &mut Netlink,
    l: &Link,
    want_mac: &str,
    mtu: Option<u32>,
    prev: &CniResult,
    ours: usize,
    routes: bool,
) -> Result<(), LinkError> {
    let ifname = &l.name;
    if !want_mac.is_empty() && !l.mac_string().eq_ignore_ascii_case(want_mac) {
        return Err(mismatch(format!(
            "{ifname} has MAC {}, prevResult says {want_mac}",
            l.mac_string()
        )));
    }
    if let Some(mtu) = mtu {
        if l.mtu != mtu {
            return Err(mismatch(format!(
                "{ifname} has MTU {}, configured {mtu}",
                l.mtu
            )));
        }
    }
    let have = ipcfg::addresses(nl, l.index)?;
    for ip in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|i| i == ours))
    {
        let want = Cidr::parse(&ip.address).ok_or_else(|| ResultError::NotCidr {
            what: "prevResult address",
            value: ip.address.clone(),
        })?;
        if !have.contains(&want) {
            return Err(mismatch(format!("{ifname} lacks address {want}")));
        }
    }
    if routes {
        let table = ipcfg::routes(nl)?;
        for r in &prev.routes {
            let dst = Cidr::parse(&r.dst).map(|d| d.network());
            if !table.iter().any(|x| Some(x.dst) == dst) {
                return Err(mismatch(format!("route to {} is missing", r.dst)));
            }
        }
    }
    Ok(())
}
