//! HTB trees through rtnetlink, for the shared-bandwidth model
//! ([`crate::share`]): the root qdisc `be00:`, its classes, and u32 filters
//! that send one MAC's frames to one class. `netlink-packet-route` has no
//! HTB types, so the option structs are built here as the kernel's
//! `pkt_sched.h` lays them out.

use crate::netlink::{Netlink, NetlinkError};
use crate::tc::{self, nested, qdisc_msg, ratespec, raw_options, ticks, u32_at, ETH_P_ALL};
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;

/// The major number of every handle Berth's trees use (`be00:`).
pub const MAJOR: u32 = 0xbe00;
/// The priority of the MAC filters under `be00:`.
const FILTER_PRIO: u32 = 10;
/// The u32 hash table the kernel makes for the first filter (`800:`).
const U32_TABLE: u32 = 0x800 << 20;

/// The handle `be00:minor`.
pub fn handle(minor: u16) -> u32 {
    (MAJOR << 16) | u32::from(minor)
}

/// One HTB class: rates in bytes/s, priority 0 (first) to 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSpec {
    /// What the class is guaranteed.
    pub rate: u64,
    /// What it may reach by borrowing.
    pub ceil: u64,
    /// Who borrows first and is dequeued first: lower wins.
    pub prio: u8,
}

/// The bucket of a class: one millisecond at its rate, and at least a
/// full frame with room to spare.
fn bucket(rate: u64) -> u64 {
    (rate / 1000).max(1600)
}

/// The quantum of a class: 10 ms at its rate within the kernel's sane
/// range, so classes of one priority share what is spare in proportion to
/// their guarantees.
fn quantum(rate: u64) -> u32 {
    u32::try_from((rate / 100).clamp(3028, 200_000)).unwrap_or(200_000)
}

impl ClassSpec {
    fn options(&self) -> Vec<TcOption> {
        let mut p = Vec::with_capacity(44);
        p.extend_from_slice(&ratespec(self.rate));
        p.extend_from_slice(&ratespec(self.ceil));
        p.extend_from_slice(&ticks(bucket(self.rate), self.rate).to_ne_bytes());
        p.extend_from_slice(&ticks(bucket(self.ceil), self.ceil).to_ne_bytes());
        p.extend_from_slice(&quantum(self.rate).to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes()); // level: the kernel's
        p.extend_from_slice(&u32::from(self.prio).to_ne_bytes());
        let mut v = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, p))];
        for (kind, r) in [(TCA_HTB_RATE64, self.rate), (TCA_HTB_CEIL64, self.ceil)] {
            if r > u64::from(u32::MAX) {
                v.push(TcOption::Other(DefaultNla::new(
                    kind,
                    r.to_ne_bytes().to_vec(),
                )));
            }
        }
        v
    }

    /// Reads a dumped class's options back.
    fn parse(options: &[TcOption]) -> Option<ClassSpec> {
        let raw = raw_options(options);
        let attrs = nested(&raw);
        let parms = attrs.iter().find(|(k, _)| *k == TCA_HTB_PARMS)?.1;
        let wide = |kind: u16, narrow: u32| -> Option<u64> {
            match attrs.iter().find(|(k, _)| *k == kind) {
                Some((_, v)) => Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)),
                None => Some(u64::from(narrow)),
            }
        };
        Some(ClassSpec {
            rate: wide(TCA_HTB_RATE64, u32_at(parms, 8)?)?,
            ceil: wide(TCA_HTB_CEIL64, u32_at(parms, 20)?)?,
            prio: u8::try_from(u32_at(parms, 40)?).ok()?,
        })
    }
}

/// Makes (or replaces) the root qdisc of link `index` an HTB `be00:` whose
/// unclassified traffic goes to class `be00:default`.
pub fn add_root(nl: &mut Netlink, index: u32, default: u16) -> Result<(), NetlinkError> {
    let mut m = qdisc_msg(index, handle(0), tc::ROOT);
    let mut glob = Vec::with_capacity(20);
    for v in [TC_HTB_PROTOVER, 10, u32::from(default), 0, 0] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    m.attributes.push(TcAttribute::Kind("htb".into()));
    m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
        DefaultNla::new(TCA_HTB_INIT, glob),
    )]));
    nl.request(
        || format!("add the htb root qdisc be00: on link #{index}"),
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// Creates class `be00:minor` under `parent` (a handle) on link `index`, or
/// changes it to `spec` when it exists.
pub fn set_class(
    nl: &mut Netlink,
    index: u32,
    parent: u32,
    minor: u16,
    spec: &ClassSpec,
) -> Result<(), NetlinkError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.handle = TcHandle::from(handle(minor));
    m.header.parent = TcHandle::from(parent);
    m.attributes.push(TcAttribute::Kind("htb".into()));
    m.attributes.push(TcAttribute::Options(spec.options()));
    nl.request(
        || {
            format!(
                "set htb class be00:{minor:x} on link #{index} (rate {} B/s, ceil {} B/s, prio {})",
                spec.rate, spec.ceil, spec.prio
            )
        },
        RouteNetlinkMessage::NewTrafficClass(m),
        NLM_F_CREATE,
    )
}

/// Deletes class `be00:minor` of link `index`; one already gone is fine.
pub fn delete_class(nl: &mut Netlink, index: u32, minor: u16) -> Result<(), NetlinkError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.handle = TcHandle::from(handle(minor));
    match nl.request(
        || format!("delete htb class be00:{minor:x} on link #{index}"),
        RouteNetlinkMessage::DelTrafficClass(m),
        0,
    ) {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// The `be00:` classes on link `index`, by minor.
pub fn classes(nl: &mut Netlink, index: u32) -> Result<Vec<(u16, ClassSpec)>, NetlinkError> {
    let mut out = Vec::new();
    for m in nl.dump(
        || format!("list the classes of link #{index}"),
        RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(index as i32)),
    )? {
        let RouteNetlinkMessage::NewTrafficClass(m) = m else {
            continue;
        };
        let h = u32::from(m.header.handle);
        if m.header.index != index as i32 || h >> 16 != MAJOR {
            continue;
        }
        let htb = m
            .attributes
            .iter()
            .any(|a| matches!(a, TcAttribute::Kind(k) if k == "htb"));
        let spec = m.attributes.iter().find_map(|a| match a {
            TcAttribute::Options(o) => ClassSpec::parse(o),
            _ => None,
        });
        if let (true, Some(spec)) = (htb, spec) {
            out.push(((h & 0xffff) as u16, spec));
        }
    }
    Ok(out)
}

/// The handle of the filter for `minor`: node `minor` of table `800:`.
fn filter_handle(minor: u16) -> u32 {
    U32_TABLE | u32::from(minor & 0xfff)
}

/// The two u32 keys matching the 6 bytes at `at` (negative: in the
/// Ethernet header before the network header) against `mac`.
fn mac_keys(mac: &[u8; 6], dst: bool) -> Vec<TcU32Key> {
    let key = |mask: u32, bytes: [u8; 4], off: i32| {
        let mut k = TcU32Key::default();
        k.mask = mask;
        k.val = u32::from_be_bytes(bytes) & mask;
        k.off = off;
        k
    };
    if dst {
        // Destination: bytes -14..-8; the first key covers -16..-12.
        vec![
            key(0x0000_ffff, [0, 0, mac[0], mac[1]], -16),
            key(0xffff_ffff, [mac[2], mac[3], mac[4], mac[5]], -12),
        ]
    } else {
        // Source: bytes -8..-2.
        vec![
            key(0xffff_ffff, [mac[0], mac[1], mac[2], mac[3]], -8),
            key(0xffff_0000, [mac[4], mac[5], 0, 0], -4),
        ]
    }
}

fn filter_msg(index: u32, minor: u16) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(handle(0));
    m.header.handle = TcHandle::from(filter_handle(minor));
    m.header.info = (FILTER_PRIO << 16) | u32::from(ETH_P_ALL.to_be());
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m
}

/// On link `index`'s `be00:` qdisc, sends frames whose source (or, with
/// `dst`, destination) MAC is `mac` to class `be00:minor`. Replaces the
/// filter of `minor` if there is one.
pub fn set_mac_filter(
    nl: &mut Netlink,
    index: u32,
    minor: u16,
    mac: &[u8; 6],
    dst: bool,
) -> Result<(), NetlinkError> {
    let mut m = filter_msg(index, minor);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.keys = mac_keys(mac, dst);
    sel.nkeys = sel.keys.len() as u8;
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(handle(minor)))),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ]));
    nl.request(
        || {
            format!(
                "classify {} {} into be00:{minor:x} on link #{index}",
                if dst { "to" } else { "from" },
                crate::link::format_mac(mac)
            )
        },
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE,
    )
}

/// Deletes the filter of `minor` on link `index`; one already gone is fine.
pub fn delete_filter(nl: &mut Netlink, index: u32, minor: u16) -> Result<(), NetlinkError> {
    match nl.request(
        || format!("delete the filter of be00:{minor:x} on link #{index}"),
        RouteNetlinkMessage::DelTrafficFilter(filter_msg(index, minor)),
        0,
    ) {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// The minors whose filters are on link `index`'s `be00:` qdisc.
pub fn filters(nl: &mut Netlink, index: u32) -> Result<Vec<u16>, NetlinkError> {
    let mut q = TcMessage::with_index(index as i32);
    q.header.parent = TcHandle::from(handle(0));
    let mut out = Vec::new();
    for m in nl.dump(
        || format!("list the filters of link #{index}"),
        RouteNetlinkMessage::GetTrafficFilter(q),
    )? {
        let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
            continue;
        };
        let h = u32::from(f.header.handle);
        if f.header.index == index as i32
            && f.header.info >> 16 == FILTER_PRIO
            && h & 0xfff00000 == U32_TABLE
            && h & 0xfff != 0
        {
            out.push((h & 0xfff) as u16);
        }
    }
    Ok(out)
}

/// The priority of the redirect filters that feed an ifb.
pub const FEED_PRIO: u16 = 0xbe00;
/// The parent of egress filters under a `clsact` qdisc.
pub const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// The filters at `prio` under `parent` of link `index`.
pub fn filters_at(
    nl: &mut Netlink,
    index: u32,
    parent: u32,
    prio: u16,
) -> Result<usize, NetlinkError> {
    let mut q = TcMessage::with_index(index as i32);
    q.header.parent = TcHandle::from(parent);
    Ok(nl
        .dump(
            || format!("list the filters of link #{index} under {parent:#x}"),
            RouteNetlinkMessage::GetTrafficFilter(q),
        )?
        .into_iter()
        .filter(|m| {
            matches!(m, RouteNetlinkMessage::NewTrafficFilter(f)
                if f.header.index == index as i32 && f.header.info >> 16 == u32::from(prio))
        })
        .count())
}

/// Deletes every filter at `prio` under `parent` of link `index`; none
/// there (or no such qdisc or link) is fine.
pub fn delete_filters_at(
    nl: &mut Netlink,
    index: u32,
    parent: u32,
    prio: u16,
) -> Result<(), NetlinkError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(parent);
    m.header.info = (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be());
    match nl.request(
        || format!("delete the filters at priority {prio:#x} of link #{index}"),
        RouteNetlinkMessage::DelTrafficFilter(m),
        0,
    ) {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// Adds a `clsact` qdisc to link `index`; one already there is fine.
pub fn add_clsact(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    let mut m = qdisc_msg(index, 0xffff_0000, tc::INGRESS);
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    match nl.request(
        || format!("add a clsact qdisc on link #{index}"),
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
    ) {
        Err(e) if e.is_exists() => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn class_options_read_back() {
        for spec in [
            ClassSpec {
                rate: 3_750_000,
                ceil: 12_500_000,
                prio: 2,
            },
            ClassSpec {
                rate: 5_000_000_000,
                ceil: 12_500_000_000,
                prio: 7,
            },
        ] {
            let opts = spec.options();
            let mut raw = vec![0u8; opts.as_slice().buffer_len()];
            opts.as_slice().emit(&mut raw);
            let dumped = vec![TcOption::Other(DefaultNla::new(2, raw))];
            assert_eq!(ClassSpec::parse(&dumped), Some(spec));
        }
    }

    #[test]
    fn mac_keys_cover_the_header() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let src = mac_keys(&mac, false);
        assert_eq!((src[0].val, src[0].off), (0x0211_2233, -8));
        assert_eq!(
            (src[1].val, src[1].mask, src[1].off),
            (0x4455_0000, 0xffff_0000, -4)
        );
        let dst = mac_keys(&mac, true);
        assert_eq!(
            (dst[0].val, dst[0].mask, dst[0].off),
            (0x0000_0211, 0xffff, -16)
        );
        assert_eq!((dst[1].val, dst[1].off), (0x2233_4455, -12));
        assert_eq!(filter_handle(0x10), 0x8000_0010);
        assert_eq!(handle(2), 0xbe00_0002);
    }
}
