//! Links through rtnetlink: look up, create (macvlan, ifb, veth), rename,
//! bring up, move and delete.

use crate::netlink::{Netlink, NetlinkError};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::os::fd::RawFd;

/// What Berth needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index in its namespace.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its hardware address (empty for links without one).
    pub mac: Vec<u8>,
    /// `IFLA_INFO_KIND` (`macvlan`, `ifb`, `veth`, ...), if any.
    pub kind: Option<String>,
    /// The macvlan mode, for macvlan links.
    pub macvlan_mode: Option<MacvlanMode>,
    /// The parent link index (`IFLA_LINK`), if any.
    pub parent: Option<u32>,
    /// True when administratively up.
    pub up: bool,
    /// `IFLA_IFALIAS`, if set.
    pub alias: Option<String>,
    /// The interface group (`IFLA_GROUP`; 0 is the default group).
    pub group: u32,
}

/// A macvlan mode, as the config spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// `bridge`: siblings on one parent talk directly (the default).
    Bridge,
    /// `private`: siblings cannot talk to each other.
    Private,
    /// `vepa`: all traffic goes out through the parent.
    Vepa,
    /// `passthru`: one macvlan takes the whole parent.
    Passthru,
}

impl MacvlanMode {
    /// Parses `bridge`, `private`, `vepa` or `passthru` (empty means bridge).
    pub fn parse(s: &str) -> Option<MacvlanMode> {
        Some(match s {
            "" | "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => return None,
        })
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }

    fn to_netlink(self) -> MacVlanMode {
        match self {
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        }
    }

    fn from_netlink(m: MacVlanMode) -> Option<MacvlanMode> {
        Some(match m {
            MacVlanMode::Bridge => MacvlanMode::Bridge,
            MacVlanMode::Private => MacvlanMode::Private,
            MacVlanMode::Vepa => MacvlanMode::Vepa,
            MacVlanMode::Passthrough => MacvlanMode::Passthru,
            _ => return None,
        })
    }
}

impl Link {
    fn from_message(m: LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            mac: Vec::new(),
            kind: None,
            macvlan_mode: None,
            parent: None,
            up: m.header.flags.contains(LinkFlags::Up),
            alias: None,
            group: 0,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(v) => l.mtu = v,
                LinkAttribute::Address(a) => l.mac = a,
                LinkAttribute::Link(p) => l.parent = Some(p),
                LinkAttribute::IfAlias(a) => l.alias = Some(a),
                LinkAttribute::Group(g) => l.group = g,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(d)) => {
                                for x in d {
                                    if let InfoMacVlan::Mode(m) = x {
                                        l.macvlan_mode = MacvlanMode::from_netlink(m);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// Formats a hardware address as lowercase colon-separated hex.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated) into 6 bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Looks a link up by name; `None` when there is none.
pub fn by_name(nl: &mut Netlink, name: &str) -> Result<Option<Link>, NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.get(
        || format!("look up link {name}"),
        RouteNetlinkMessage::GetLink(m),
    ) {
        Ok(Some(RouteNetlinkMessage::NewLink(m))) => Ok(Some(Link::from_message(m))),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks a link up by index; `None` when there is none.
pub fn by_index(nl: &mut Netlink, index: u32) -> Result<Option<Link>, NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match nl.get(
        || format!("look up link #{index}"),
        RouteNetlinkMessage::GetLink(m),
    ) {
        Ok(Some(RouteNetlinkMessage::NewLink(m))) => Ok(Some(Link::from_message(m))),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every link in the namespace.
pub fn list(nl: &mut Netlink) -> Result<Vec<Link>, NetlinkError> {
    Ok(nl
        .dump(
            || "list links".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        })
        .collect())
}

/// What a new macvlan looks like.
#[derive(Debug, Clone)]
pub struct MacvlanSpec<'a> {
    /// Its (temporary) name.
    pub name: &'a str,
    /// The parent's index, in the namespace `nl` talks to.
    pub parent: u32,
    /// The mode.
    pub mode: MacvlanMode,
    /// The MTU; `None` inherits the parent's.
    pub mtu: Option<u32>,
    /// A fixed MAC; `None` lets the kernel choose.
    pub mac: Option<[u8; 6]>,
    /// Creates it straight inside the namespace of this fd.
    pub netns_fd: Option<RawFd>,
}

/// Creates a macvlan link (down).
pub fn add_macvlan(nl: &mut Netlink, spec: &MacvlanSpec<'_>) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes
        .push(LinkAttribute::IfName(spec.name.to_string()));
    m.attributes.push(LinkAttribute::Link(spec.parent));
    if let Some(mtu) = spec.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(fd) = spec.netns_fd {
        m.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
            spec.mode.to_netlink(),
        )])),
    ]));
    nl.request(
        || format!("create macvlan {}", spec.name),
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// What a new veth pair looks like.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// The end that stays where `nl` talks.
    pub name: &'a str,
    /// The other end's name.
    pub peer: &'a str,
    /// The other end is created in the namespace of this fd.
    pub peer_netns_fd: Option<RawFd>,
    /// MTU of both ends; `None` for the default.
    pub mtu: Option<u32>,
    /// The other end's MAC; `None` lets the kernel choose.
    pub peer_mac: Option<[u8; 6]>,
    /// An alias (`IFLA_IFALIAS`) for this end, e.g. who owns it.
    pub alias: Option<&'a str>,
}

/// Creates a veth pair (both ends down).
pub fn add_veth(nl: &mut Netlink, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(spec.peer.to_string()));
    if let Some(mtu) = spec.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(fd) = spec.peer_netns_fd {
        peer.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    let mut m = LinkMessage::default();
    m.attributes
        .push(LinkAttribute::IfName(spec.name.to_string()));
    if let Some(mtu) = spec.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.request(
        || format!("create veth {} / {}", spec.name, spec.peer),
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    // The kernel ignores IFLA_IFALIAS when it creates a link: set it after.
    if let Some(a) = spec.alias {
        let Some(l) = by_name(nl, spec.name)? else {
            return Ok(());
        };
        set(
            nl,
            l.index,
            || format!("set the alias of {}", spec.name),
            |m| m.attributes.push(LinkAttribute::IfAlias(a.to_string())),
        )?;
    }
    Ok(())
}

/// Creates an ifb link (down) named `name`, with `alias` (who it serves:
/// its hashed name alone does not tell an operator).
pub fn add_ifb(nl: &mut Netlink, name: &str, alias: &str) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    nl.request(
        || format!("create ifb {name}"),
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    // The kernel ignores IFLA_IFALIAS when it creates a link: set it after.
    let Some(l) = by_name(nl, name)? else {
        return Ok(());
    };
    set(
        nl,
        l.index,
        || format!("set the alias of {name}"),
        |m| m.attributes.push(LinkAttribute::IfAlias(alias.to_string())),
    )
}

fn set(
    nl: &mut Netlink,
    index: u32,
    what: impl FnOnce() -> String,
    f: impl FnOnce(&mut LinkMessage),
) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    f(&mut m);
    nl.request(what, RouteNetlinkMessage::SetLink(m), 0)
}

/// Renames link `index` (it must be down).
pub fn rename(nl: &mut Netlink, index: u32, name: &str) -> Result<(), NetlinkError> {
    set(
        nl,
        index,
        || format!("rename link #{index} to {name}"),
        |m| m.attributes.push(LinkAttribute::IfName(name.to_string())),
    )
}

/// Brings link `index` up.
pub fn set_up(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    set(
        nl,
        index,
        || format!("bring link #{index} up"),
        |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        },
    )
}

/// Puts link `index` in interface group `group`.
pub fn set_group(nl: &mut Netlink, index: u32, group: u32) -> Result<(), NetlinkError> {
    set(
        nl,
        index,
        || format!("put link #{index} in group {group}"),
        |m| m.attributes.push(LinkAttribute::Group(group)),
    )
}

/// Deletes every link of interface group `group` in one request, so the
/// kernel waits for them to unregister once rather than once per link.
pub fn delete_group(nl: &mut Netlink, group: u32) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::Group(group));
    match nl.request(
        || format!("delete the links of group {group}"),
        RouteNetlinkMessage::DelLink(m),
        0,
    ) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// Deletes link `index`; a link already gone is not an error.
pub fn delete(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match nl.request(
        || format!("delete link #{index}"),
        RouteNetlinkMessage::DelLink(m),
        0,
    ) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// Deletes the link called `name`, if there is one; true when one was deleted.
pub fn delete_by_name(nl: &mut Netlink, name: &str) -> Result<bool, NetlinkError> {
    match by_name(nl, name)? {
        Some(l) => delete(nl, l.index).map(|_| true),
        None => Ok(false),
    }
}

/// The link name `<prefix><8 hex of key>` a plugin creates the link for
/// `key` (an interface name) under before renaming it: the same for every
/// call, so a DEL or GC after an ADD killed before the rename finds it.
pub fn temp_name_for(prefix: &str, key: &str) -> String {
    format!("{prefix}{:08x}", crate::qos::fnv(key))
}

/// A fresh random link name `<prefix><8 hex>` for creating a link before it
/// gets its final name.
pub fn temp_name(prefix: &str) -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        b = t.to_le_bytes();
    }
    format!("{prefix}{:08x}", u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_bad_ones_are_refused() {
        let m = parse_mac("0A:58:0a:01:02:03").unwrap();
        assert_eq!(format_mac(&m), "0a:58:0a:01:02:03");
        for bad in [
            "",
            "0a:58:0a:01:02",
            "0a:58:0a:01:02:03:04",
            "zz:58:0a:01:02:03",
            "0a5:8:0a:01:02:03",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert!(temp_name("bmv").starts_with("bmv") && temp_name("bmv").len() == 11);
        assert_ne!(temp_name("x"), temp_name("x"));
        assert_eq!(MacvlanMode::parse(""), Some(MacvlanMode::Bridge));
        assert_eq!(
            MacvlanMode::parse("passthru").map(MacvlanMode::as_str),
            Some("passthru")
        );
        assert_eq!(MacvlanMode::parse("Bridge"), None);
    }
}
