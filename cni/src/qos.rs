//! Bandwidth shaping inside the container's network namespace, for links
//! that have no host-side peer to shape (macvlan) or where that is simpler.
//!
//! * Egress (from the container): a tbf as the root qdisc of the interface.
//! * Ingress (to the container): an ifb link in the same namespace; the
//!   interface's ingress qdisc redirects every packet to it with u32 +
//!   mirred, and a tbf on the ifb's egress shapes them.
//!
//! Rates and bursts are in bits, as in the CNI `bandwidth` capability.

use crate::check::mismatch;
use crate::error::LinkError;
use crate::link;
use crate::netlink::Netlink;
use crate::tc::{self, Tbf};
use crate::types::{keys, ConfError};
use serde::Deserialize;
use serde_json::Value;

/// Queue latency allowed behind the bucket, as the reference bandwidth
/// plugin uses: the tbf limit is `rate × 25 ms + burst`.
const LATENCY_MS: u64 = 25;

/// One direction: rate and burst in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Bits per second.
    pub rate: u64,
    /// Bucket size in bits.
    pub burst: u64,
}

impl Shape {
    /// The token bucket for this shape.
    pub fn tbf(&self) -> Tbf {
        let rate = self.rate / 8;
        let burst = u32::try_from(self.burst / 8).unwrap_or(u32::MAX);
        let queued = rate.saturating_mul(LATENCY_MS) / 1000;
        Tbf {
            rate,
            burst,
            limit: u32::try_from(queued.saturating_add(u64::from(burst))).unwrap_or(u32::MAX),
        }
    }
}

/// Shaping for both directions; `None` leaves that direction alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// Traffic to the container.
    pub ingress: Option<Shape>,
    /// Traffic from the container.
    pub egress: Option<Shape>,
}

/// The default burst when only a rate is given: 10 ms at the rate, and at
/// least 64 KiB so one TSO/GSO super-packet fits in the bucket.
pub fn default_burst(rate_bits: u64) -> u64 {
    (rate_bits / 100).max(64 * 1024 * 8)
}

/// The `bandwidth` capability's keys, in bits (absent or 0: not set).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BandwidthKeys {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

impl Bandwidth {
    /// True when neither direction is shaped.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// Parses `{ingressRate, ingressBurst, egressRate, egressBurst}` found at
    /// `at` (named in errors). A burst without a rate is refused; a rate
    /// without a burst gets [`default_burst`]; a burst that cannot hold one
    /// frame of `mtu` bytes is refused, since tbf would drop every packet.
    pub fn parse(v: &Value, at: &str, mtu: u32) -> Result<Bandwidth, ConfError> {
        let k: BandwidthKeys = keys(v, at)?;
        let dir = |name: &str, rate: Option<u64>, burst: Option<u64>| {
            let key = |what: &str| format!("{at}.{name}{what}");
            match (rate.unwrap_or(0), burst.unwrap_or(0)) {
                (0, 0) => Ok(None),
                (0, _) => Err(ConfError::invalid(
                    key("Burst"),
                    format!("is set but {} is not", key("Rate")),
                )),
                (r, _) if r < 8 => Err(ConfError::invalid(
                    key("Rate"),
                    format!("{r} is below one byte per second"),
                )),
                (r, b) => {
                    let burst = if b == 0 { default_burst(r) } else { b };
                    let frame_bits = (u64::from(mtu) + 14) * 8;
                    if burst < frame_bits {
                        return Err(ConfError::invalid(
                            key("Burst"),
                            format!(
                                "{burst} bits is smaller than one {mtu}-byte frame ({frame_bits} bits): every packet would be dropped"
                            ),
                        ));
                    }
                    if burst / 8 > u64::from(u32::MAX) {
                        return Err(ConfError::invalid(
                            key("Burst"),
                            format!("{burst} bits is over 4 GiB"),
                        ));
                    }
                    Ok(Some(Shape { rate: r, burst }))
                }
            }
        };
        Ok(Bandwidth {
            ingress: dir("ingress", k.ingress_rate, k.ingress_burst)?,
            egress: dir("egress", k.egress_rate, k.egress_burst)?,
        })
    }
}

pub(crate) fn fnv(s: &str) -> u32 {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// The ifb link that shapes traffic to interface `ifname` (in its netns).
pub fn ifb_name(ifname: &str) -> String {
    format!("ifb{:08x}", fnv(ifname))
}

/// The interface group that holds `ifname` and its ifb, so both can be
/// deleted in one request (never 0, the default group).
pub fn group_of(ifname: &str) -> u32 {
    fnv(ifname) | 0x4000_0000
}

/// Deletes `ifname` and its ifb. When the two are alone in their group,
/// one group delete does it (the kernel then waits for one unregister
/// instead of two, ~20 ms less here); otherwise they go one by one. Call
/// inside the netns; links already gone are fine.
pub fn delete_with_ifb(nl: &mut Netlink, ifname: &str) -> Result<(), LinkError> {
    let ifb = ifb_name(ifname);
    let group = group_of(ifname);
    let members: Vec<String> = link::list(nl)?
        .into_iter()
        .filter(|l| l.group == group)
        .map(|l| l.name)
        .collect();
    let ours = |n: &String| *n == ifname || *n == ifb;
    if members.iter().any(|n| n == ifname) && members.iter().all(ours) {
        return Ok(link::delete_group(nl, group)?);
    }
    link::delete_by_name(nl, &ifb)?;
    link::delete_by_name(nl, ifname)?;
    Ok(())
}

/// Applies `bw` to link `index` named `ifname`. Call inside its netns.
pub fn apply(nl: &mut Netlink, index: u32, ifname: &str, bw: &Bandwidth) -> Result<(), LinkError> {
    if let Some(s) = bw.egress {
        tc::add_root_tbf(nl, index, &s.tbf())?;
    }
    if let Some(s) = bw.ingress {
        let name = ifb_name(ifname);
        link::add_ifb(nl, &name, &format!("berth ingress of {ifname}"))?;
        let ifb =
            link::by_name(nl, &name)?.ok_or_else(|| LinkError::Vanished(format!("ifb {name}")))?;
        link::set_up(nl, ifb.index)?;
        for i in [index, ifb.index] {
            link::set_group(nl, i, group_of(ifname))?;
        }
        tc::add_root_tbf(nl, ifb.index, &s.tbf())?;
        tc::add_ingress(nl, index)?;
        tc::add_ingress_redirect(nl, index, ifb.index)?;
    }
    Ok(())
}

/// Removes what [`apply`] made: the ifb and both qdiscs. Things already
/// gone are fine. Call inside the netns.
pub fn remove(nl: &mut Netlink, ifname: &str) -> Result<(), LinkError> {
    link::delete_by_name(nl, &ifb_name(ifname))?;
    if let Some(l) = link::by_name(nl, ifname)? {
        tc::delete_qdisc(nl, l.index, tc::ROOT)?;
        tc::delete_qdisc(nl, l.index, tc::INGRESS)?;
    }
    Ok(())
}

fn check_tbf(nl: &mut Netlink, index: u32, what: &str, want: &Shape) -> Result<(), LinkError> {
    let qs = tc::qdiscs(nl, index)?;
    let Some(root) = qs.iter().find(|q| q.parent == tc::ROOT) else {
        return Err(mismatch(format!("{what}: no root qdisc")));
    };
    let Some((rate, burst)) = root.tbf else {
        return Err(mismatch(format!(
            "{what}: root qdisc is {}, not tbf",
            root.kind
        )));
    };
    let t = want.tbf();
    if rate != t.rate {
        return Err(mismatch(format!(
            "{what}: tbf rate is {} bit/s, configured {}",
            rate * 8,
            want.rate
        )));
    }
    // The kernel keeps the bucket as a time: allow rounding.
    let diff = burst.abs_diff(u64::from(t.burst));
    if diff > u64::from(t.burst) / 100 + 64 {
        return Err(mismatch(format!(
            "{what}: tbf burst is {} bits, configured {}",
            burst * 8,
            want.burst
        )));
    }
    Ok(())
}

/// Verifies that `bw` is in place on link `index` named `ifname` (and that
/// no shaping is there when `bw` is empty). Call inside the netns.
pub fn verify(nl: &mut Netlink, index: u32, ifname: &str, bw: &Bandwidth) -> Result<(), LinkError> {
    match &bw.egress {
        Some(s) => check_tbf(nl, index, &format!("egress shaping on {ifname}"), s)?,
        None => {
            if let Some(q) = tc::qdiscs(nl, index)?
                .iter()
                .find(|q| q.parent == tc::ROOT && q.kind == "tbf")
            {
                return Err(mismatch(format!(
                    "{ifname} has a tbf ({:?}) but no egress bandwidth is configured",
                    q.tbf
                )));
            }
        }
    }
    let ifb = ifb_name(ifname);
    match &bw.ingress {
        Some(s) => {
            let l = link::by_name(nl, &ifb)?.ok_or_else(|| {
                mismatch(format!("ingress shaping on {ifname}: ifb {ifb} is missing"))
            })?;
            if !l.up {
                return Err(mismatch(format!("ingress shaping: ifb {ifb} is down")));
            }
            check_tbf(
                nl,
                l.index,
                &format!("ingress shaping on {ifname} ({ifb})"),
                s,
            )?;
            let has_ingress = tc::qdiscs(nl, index)?
                .iter()
                .any(|q| q.parent == tc::INGRESS);
            if !has_ingress {
                return Err(mismatch(format!("{ifname} has no ingress qdisc")));
            }
            if tc::ingress_filters(nl, index)? == 0 {
                return Err(mismatch(format!(
                    "{ifname}: no filter redirects ingress to {ifb}"
                )));
            }
        }
        None => {
            if link::by_name(nl, &ifb)?.is_some() {
                return Err(mismatch(format!(
                    "ifb {ifb} exists but no ingress bandwidth is configured"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Code, Failure};
    use serde_json::json;

    #[test]
    fn parse_rules() {
        let b = Bandwidth::parse(
            &json!({"ingressRate": 50_000_000, "ingressBurst": 1_000_000, "egressRate": 8_000_000}),
            "bandwidth",
            1500,
        )
        .unwrap();
        assert_eq!(
            b.ingress,
            Some(Shape {
                rate: 50_000_000,
                burst: 1_000_000
            })
        );
        assert_eq!(b.egress.unwrap().burst, 64 * 1024 * 8);
        assert_eq!(default_burst(10_000_000_000), 100_000_000);
        let e = Bandwidth::parse(
            &json!({"egressBurst": 100000}),
            "runtimeConfig.bandwidth",
            1500,
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidConfig);
        assert!(
            e.to_string().contains("runtimeConfig.bandwidth.egressRate"),
            "{e}"
        );
        let e = Bandwidth::parse(
            &json!({"egressRate": 1000000, "egressBurst": 800}),
            "bandwidth",
            1500,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bandwidth.egressBurst"), "{e}");
        let e = Bandwidth::parse(&json!({"ingressRate": "fast"}), "bandwidth", 1500).unwrap_err();
        assert!(e.to_string().starts_with("bandwidth.ingressRate: "), "{e}");
        let e = Bandwidth::parse(&json!({"egressRate": -5}), "runtimeConfig.bandwidth", 1500)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("runtimeConfig.bandwidth.egressRate: "),
            "{e}"
        );
        let e = Bandwidth::parse(&json!([1]), "bandwidth", 1500).unwrap_err();
        assert!(e.to_string().starts_with("bandwidth: "), "{e}");
        assert!(Bandwidth::parse(&json!({}), "bandwidth", 1500)
            .unwrap()
            .is_empty());
        let t = Shape {
            rate: 80_000_000,
            burst: 800_000,
        }
        .tbf();
        assert_eq!((t.rate, t.burst, t.limit), (10_000_000, 100_000, 350_000));
        assert_eq!(ifb_name("eth0"), ifb_name("eth0"));
        assert_ne!(ifb_name("eth0"), ifb_name("net1"));
        assert!(ifb_name("a-long-ifname15").len() <= 15);
        assert_ne!(group_of("eth0"), 0);
        assert_ne!(group_of("eth0"), group_of("net1"));
    }
}
