//! Addresses and routes through rtnetlink, and configuring an interface from
//! a CNI result (what Go's `ipam.ConfigureIface` does, in two steps so the
//! addresses can be in place before the link comes up).

use crate::error::LinkError;
use crate::netlink::{Netlink, NetlinkError};
use crate::types::{CniResult, ResultError};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};

/// An address with its prefix length, e.g. `10.1.0.5/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`; `None` when malformed or the prefix is too long.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & m).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn family(a: &IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Adds `cidr` to link `index` (with the IPv4 broadcast address, as `ip` does).
pub fn add_address(nl: &mut Netlink, index: u32, cidr: Cidr) -> Result<(), NetlinkError> {
    let mut m = AddressMessage::default();
    m.header.family = family(&cidr.addr);
    m.header.prefix_len = cidr.prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(cidr.addr));
    m.attributes.push(AddressAttribute::Address(cidr.addr));
    if let IpAddr::V4(a) = cidr.addr {
        if cidr.prefix < 31 {
            let host = u32::MAX >> cidr.prefix;
            m.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                    u32::from(a) | host,
                )));
        }
    }
    nl.request(
        || format!("add address {cidr} to link #{index}"),
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The addresses on link `index`.
pub fn addresses(nl: &mut Netlink, index: u32) -> Result<Vec<Cidr>, NetlinkError> {
    let mut out = Vec::new();
    for m in nl.dump(
        || "list addresses".into(),
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )? {
        let RouteNetlinkMessage::NewAddress(m) = m else {
            continue;
        };
        if m.header.index != index {
            continue;
        }
        for a in &m.attributes {
            if let AddressAttribute::Address(addr) = a {
                out.push(Cidr {
                    addr: *addr,
                    prefix: m.header.prefix_len,
                });
            }
        }
    }
    Ok(out)
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination (`0.0.0.0/0` for the default route).
    pub dst: Cidr,
    /// Gateway, if any.
    pub gw: Option<IpAddr>,
    /// Output link index, if any.
    pub oif: Option<u32>,
}

/// Adds a route to `dst` via `gw` (or on-link when `None`) out of link `index`.
pub fn add_route(
    nl: &mut Netlink,
    index: u32,
    dst: Cidr,
    gw: Option<IpAddr>,
) -> Result<(), NetlinkError> {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst.addr);
    m.header.destination_prefix_length = dst.prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = if gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    if dst.prefix > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                dst.network().addr,
            )));
    }
    if let Some(g) = gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    nl.request(
        || match gw {
            Some(g) => format!("add route {dst} via {g} on link #{index}"),
            None => format!("add route {dst} on link #{index}"),
        },
        RouteNetlinkMessage::NewRoute(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// The routes of the main table for both families.
pub fn routes(nl: &mut Netlink) -> Result<Vec<RouteInfo>, NetlinkError> {
    let mut out = Vec::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = fam;
        for m in nl.dump(|| "list routes".into(), RouteNetlinkMessage::GetRoute(q))? {
            let RouteNetlinkMessage::NewRoute(m) = m else {
                continue;
            };
            let mut table = u32::from(m.header.table);
            let mut dst = None;
            let mut gw = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_ip(d),
                    RouteAttribute::Gateway(g) => gw = route_ip(g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || m.header.kind != RouteType::Unicast
            {
                continue;
            }
            let unspecified = if fam == AddressFamily::Inet {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            };
            out.push(RouteInfo {
                dst: Cidr {
                    addr: dst.unwrap_or(unspecified),
                    prefix: m.header.destination_prefix_length,
                },
                gw,
                oif,
            });
        }
    }
    Ok(out)
}

/// The link of the IPv4 (else IPv6) default route, if there is one.
pub fn default_route_link(nl: &mut Netlink) -> Result<Option<u32>, NetlinkError> {
    let rs = routes(nl)?;
    Ok(rs.iter().filter(|r| r.dst.prefix == 0).find_map(|r| r.oif))
}

/// Adds the result's addresses for interface `ifindex_in_result` to link `index`.
pub fn add_addresses(
    nl: &mut Netlink,
    index: u32,
    ifindex_in_result: usize,
    result: &CniResult,
) -> Result<(), LinkError> {
    for ip in result
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == ifindex_in_result))
    {
        let cidr = Cidr::parse(&ip.address).ok_or_else(|| ResultError::NotCidr {
            what: "IPAM result address",
            value: ip.address.clone(),
        })?;
        add_address(nl, index, cidr)?;
    }
    Ok(())
}

/// Adds the result's routes out of link `index` (which must be up), through
/// the same-family gateway of interface `ifindex_in_result` when a route
/// names none, as Go's `ipam.ConfigureIface` does.
pub fn add_routes(
    nl: &mut Netlink,
    index: u32,
    ifindex_in_result: usize,
    result: &CniResult,
) -> Result<(), LinkError> {
    let gateways: Vec<IpAddr> = result
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == ifindex_in_result))
        .filter_map(|ip| ip.gateway.as_deref().and_then(|g| g.parse().ok()))
        .collect();
    for r in &result.routes {
        let dst = Cidr::parse(&r.dst).ok_or_else(|| ResultError::NotCidr {
            what: "IPAM result route",
            value: r.dst.clone(),
        })?;
        let gw: Option<IpAddr> = match r.gw.as_deref() {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| ResultError::BadGateway(g.to_string()))?,
            ),
            None => gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == dst.addr.is_ipv4()),
        };
        add_route(nl, index, dst, gw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.2.3/16").unwrap();
        assert_eq!(c.network().to_string(), "10.1.0.0/16");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().network().prefix, 0);
        assert_eq!(
            Cidr::parse("fd00::5/64").unwrap().network().to_string(),
            "fd00::/64"
        );
        for bad in ["10.1.2.3", "10.1.2.3/33", "x/8", "10.1.2.3/-1", "/"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
