//! Traffic control through rtnetlink: tbf qdiscs (whose attributes
//! `netlink-packet-route` lacks, so they are built here), the ingress qdisc,
//! and a u32 match-all filter with a mirred redirect.

use crate::netlink::{Netlink, NetlinkError};
use netlink_packet_core::{DefaultNla, Nla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `PSCHED_SHIFT`: one scheduler tick is 64 ns.
const PSCHED_SHIFT: u32 = 6;
pub(crate) const ETH_P_ALL: u16 = 0x0003;

/// `struct tc_ratespec` for `rate` bytes/s (saturating at 32 bits: a
/// `*_RATE64` attribute carries more): cell_log, linklayer, overhead,
/// cell_align, mpu, rate. With the link layer set the kernel computes
/// lengths itself and needs no rate table.
pub(crate) fn ratespec(rate: u64) -> [u8; 12] {
    let mut q = [0u8; 12];
    q[1] = TC_LINKLAYER_ETHERNET;
    q[8..].copy_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
    q
}

/// The time to send `bytes` at `rate` bytes/s, in scheduler ticks.
pub(crate) fn ticks(bytes: u64, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    u32::try_from(ns >> PSCHED_SHIFT).unwrap_or(u32::MAX)
}

/// A token bucket: rate and burst in bytes, queue limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u32,
    /// Bytes that may wait in the queue.
    pub limit: u32,
}

impl Tbf {
    /// The `tc_tbf_qopt` struct and attributes inside `TCA_OPTIONS`.
    fn options(&self) -> Vec<TcOption> {
        let buffer = ticks(u64::from(self.burst), self.rate);
        let mut q = Vec::with_capacity(36);
        q.extend_from_slice(&ratespec(self.rate));
        // struct tc_ratespec peakrate: unused.
        q.extend_from_slice(&[0u8; 12]);
        q.extend_from_slice(&self.limit.to_ne_bytes());
        q.extend_from_slice(&buffer.to_ne_bytes());
        q.extend_from_slice(&0u32.to_ne_bytes()); // mtu (for peakrate only)
        let mut v = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, q)),
            TcOption::Other(DefaultNla::new(
                TCA_TBF_BURST,
                self.burst.to_ne_bytes().to_vec(),
            )),
        ];
        if self.rate > u64::from(u32::MAX) {
            v.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        v
    }
}

/// A qdisc as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// The link it is on.
    pub index: u32,
    /// `tbf`, `ingress`, `noqueue`, ...
    pub kind: String,
    /// Its handle.
    pub handle: u32,
    /// Its parent (`0xffffffff` for root, `0xfffffff1` for ingress).
    pub parent: u32,
    /// For tbf: the rate in bytes/s and the burst in bytes.
    pub tbf: Option<(u64, u64)>,
}

/// The root parent handle.
pub const ROOT: u32 = 0xffff_ffff;
/// The ingress parent handle.
pub const INGRESS: u32 = 0xffff_fff1;

pub(crate) fn qdisc_msg(index: u32, handle: u32, parent: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.handle = TcHandle::from(handle);
    m.header.parent = TcHandle::from(parent);
    m
}

/// Replaces the root qdisc of link `index` with a tbf (handle `1:`).
pub fn add_root_tbf(nl: &mut Netlink, index: u32, tbf: &Tbf) -> Result<(), NetlinkError> {
    let mut m = qdisc_msg(index, 0x0001_0000, ROOT);
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(tbf.options()));
    nl.request(
        || {
            format!(
                "add tbf (rate {} B/s, burst {} B) on link #{index}",
                tbf.rate, tbf.burst
            )
        },
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// Adds the ingress qdisc (`ffff:`) to link `index`.
pub fn add_ingress(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    let mut m = qdisc_msg(index, 0xffff_0000, INGRESS);
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    nl.request(
        || format!("add ingress qdisc on link #{index}"),
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// Deletes the qdisc at `parent` (ROOT or INGRESS) of link `index`; none
/// there is not an error.
pub fn delete_qdisc(nl: &mut Netlink, index: u32, parent: u32) -> Result<(), NetlinkError> {
    let handle = if parent == INGRESS { 0xffff_0000 } else { 0 };
    let m = qdisc_msg(index, handle, parent);
    match nl.request(
        || format!("delete qdisc {parent:#x} on link #{index}"),
        RouteNetlinkMessage::DelQueueDiscipline(m),
        0,
    ) {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// On the ingress qdisc of link `index`, redirects every packet to the
/// egress of link `to` (`u32 match u32 0 0 action mirred egress redirect`).
pub fn add_ingress_redirect(nl: &mut Netlink, index: u32, to: u32) -> Result<(), NetlinkError> {
    add_redirect(nl, index, 0xffff_0000, 1, to)
}

/// Under `parent` of link `index`, at priority `prio`, redirects every
/// packet to the egress of link `to` (`u32 match u32 0 0 action mirred
/// egress redirect`).
pub fn add_redirect(
    nl: &mut Netlink,
    index: u32,
    parent: u32,
    prio: u16,
    to: u32,
) -> Result<(), NetlinkError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(parent);
    // info: the priority in the high half, the protocol (big-endian) in the low.
    m.header.info = (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic = TcActionGeneric::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    nl.request(
        || format!("redirect link #{index}'s {parent:#x} to link #{to}"),
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The number of filters attached under the ingress qdisc of link `index`.
pub fn ingress_filters(nl: &mut Netlink, index: u32) -> Result<usize, NetlinkError> {
    let mut q = TcMessage::with_index(index as i32);
    q.header.parent = TcHandle::from(0xffff_0000);
    Ok(nl
        .dump(
            || format!("list ingress filters of link #{index}"),
            RouteNetlinkMessage::GetTrafficFilter(q),
        )?
        .into_iter()
        .filter(|m| matches!(m, RouteNetlinkMessage::NewTrafficFilter(f) if f.header.index == index as i32 && f.attributes.iter().any(|a| matches!(a, TcAttribute::Kind(_)))))
        .count())
}

pub(crate) fn nested(value: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= value.len() {
        let len = usize::from(u16::from_ne_bytes([value[off], value[off + 1]]));
        let kind = u16::from_ne_bytes([value[off + 2], value[off + 3]]) & 0x3fff;
        if len < 4 || off + len > value.len() {
            break;
        }
        out.push((kind, &value[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The nested attributes of a dumped qdisc's or class's `TCA_OPTIONS`, for
/// the kinds `netlink-packet-route` keeps as one opaque attribute.
pub(crate) fn raw_options(options: &[TcOption]) -> Vec<u8> {
    let mut raw = Vec::new();
    for o in options {
        if let TcOption::Other(nla) = o {
            let mut v = vec![0u8; nla.value_len()];
            nla.emit_value(&mut v);
            raw = v;
        }
    }
    raw
}

/// Reads rate (bytes/s) and burst (bytes) out of a dumped tbf's options.
fn parse_tbf(options: &[TcOption]) -> Option<(u64, u64)> {
    let raw = raw_options(options);
    let attrs = nested(&raw);
    let parms = attrs.iter().find(|(k, _)| *k == TCA_TBF_PARMS)?.1;
    let mut rate = u64::from(u32_at(parms, 8)?);
    if let Some((_, v)) = attrs.iter().find(|(k, _)| *k == TCA_TBF_RATE64) {
        rate = u64::from_ne_bytes(v.get(..8)?.try_into().ok()?);
    }
    let buffer_ticks = u64::from(u32_at(parms, 28)?);
    let burst_ns = u128::from(buffer_ticks << PSCHED_SHIFT);
    let burst = (burst_ns * u128::from(rate) / 1_000_000_000) as u64;
    Some((rate, burst))
}

/// Every qdisc on link `index`.
pub fn qdiscs(nl: &mut Netlink, index: u32) -> Result<Vec<Qdisc>, NetlinkError> {
    let mut out = Vec::new();
    for m in nl.dump(
        || format!("list qdiscs of link #{index}"),
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(index as i32)),
    )? {
        let RouteNetlinkMessage::NewQueueDiscipline(m) = m else {
            continue;
        };
        if m.header.index != index as i32 {
            continue;
        }
        let mut kind = String::new();
        let mut tbf = None;
        for a in &m.attributes {
            match a {
                TcAttribute::Kind(k) => kind = k.clone(),
                TcAttribute::Options(o) => tbf = parse_tbf(o),
                _ => {}
            }
        }
        out.push(Qdisc {
            index,
            tbf: if kind == "tbf" { tbf } else { None },
            kind,
            handle: u32::from(m.header.handle),
            parent: u32::from(m.header.parent),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn tbf_options_read_back() {
        let t = Tbf {
            rate: 6_250_000,
            burst: 65_536,
            limit: 221_786,
        };
        let opts = t.options();
        // Emit the options as the kernel's dump would nest them.
        let mut raw = vec![0u8; opts.as_slice().iter().map(|o| o.buffer_len()).sum()];
        let mut off = 0;
        for o in &opts {
            o.emit(&mut raw[off..]);
            off += o.buffer_len();
        }
        let dumped = vec![TcOption::Other(DefaultNla::new(2, raw))];
        let (rate, burst) = parse_tbf(&dumped).unwrap();
        assert_eq!(rate, 6_250_000);
        assert!((burst as i64 - 65_536).abs() < 100, "{burst}");
        let big = Tbf {
            rate: 10_000_000_000,
            burst: 1 << 20,
            limit: 1 << 24,
        };
        assert_eq!(big.options().len(), 3);
    }
}
