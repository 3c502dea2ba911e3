//! [`Tree`] on the kernel: the link's root HTB, an ifb with the ingress
//! HTB, and what feeds that ifb, through rtnetlink in the caller's netns.

use super::{Dir, Entry, Held, Share, ShareError, Tree, FIRST_MINOR, HOST_MINOR, ROOT_MINOR};
use crate::htb::{self, ClassSpec, CLSACT_EGRESS, FEED_PRIO};
use crate::link::{self, Link};
use crate::netlink::Netlink;
use crate::{netns, tc};
use std::collections::BTreeMap;

/// Root qdiscs a link has before anyone configures it: replacing them
/// takes nothing from anyone.
const DEFAULT_ROOTS: &[&str] = &["noqueue", "pfifo_fast", "mq", "fq_codel", "pfifo", "fq"];

/// How traffic to the containers reaches the ingress tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Everything arriving on the link (macvlan: tc ingress runs before
    /// macvlan's handler).
    LinkIngress,
    /// What leaves each attachment's host-side port (OVS), set per entry.
    PortEgress,
}

/// The trees of one link in the caller's netns.
pub struct KernelTree {
    nl: Netlink,
    link: Link,
    ifb: String,
    feed: Feed,
}

/// The ifb that carries the ingress tree of link `name`.
pub fn ifb_name(name: &str) -> String {
    format!("bsi{:08x}", crate::qos::fnv(name))
}

/// The link's speed in bits/s, if it reports one (a veth does not).
pub fn speed(link: &Link) -> Option<u64> {
    let dir = std::path::Path::new("/sys/class/net").join(&link.name);
    let index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if index != link.index {
        return None;
    }
    let mbit: i64 = std::fs::read_to_string(dir.join("speed"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    u64::try_from(mbit)
        .ok()
        .filter(|m| *m > 0)
        .map(|m| m * 1_000_000)
}

/// Locks and opens the shares of `link` (in the caller's netns), in the
/// state directory of `/etc/berth/cni.toml`.
pub fn open(link: &Link, feed: Feed) -> Result<Share<KernelTree>, ShareError> {
    let state = crate::logging::HostSettings::from_env().state_dir();
    Share::open(&state, &link.name, KernelTree::new(link.clone(), feed)?)
}

/// Opens the shares of the link named `name` for an admin tool, with the
/// feed its grants use (ports: OVS; none: the link's ingress).
pub fn open_by_name(name: &str) -> Result<Share<KernelTree>, ShareError> {
    let mut nl = Netlink::open()?;
    let l = link::by_name(&mut nl, name)?
        .ok_or_else(|| ShareError::NoGrant(format!("there is no link {name:?} here")))?;
    // The feed never changes for a link: read the book, then lock it.
    let state = crate::logging::HostSettings::from_env().state_dir();
    let feed = if super::grants(&state, name)?
        .iter()
        .any(|e| e.port.is_some())
    {
        Feed::PortEgress
    } else {
        Feed::LinkIngress
    };
    open(&l, feed)
}

impl KernelTree {
    /// The trees of `link`, fed as `feed`.
    pub fn new(link: Link, feed: Feed) -> Result<KernelTree, ShareError> {
        Ok(KernelTree {
            nl: Netlink::open()?,
            ifb: ifb_name(&link.name),
            link,
            feed,
        })
    }

    /// True when the link's ingress has the filter that feeds the ifb.
    fn link_fed(&mut self) -> Result<bool, ShareError> {
        Ok(htb::filters_at(&mut self.nl, self.link.index, 0xffff_0000, FEED_PRIO)? > 0)
    }

    fn ifb(&mut self) -> Result<Option<Link>, ShareError> {
        Ok(link::by_name(&mut self.nl, &self.ifb)?)
    }

    /// Makes link `index`'s root qdisc `be00:` unless it already is; a
    /// qdisc someone configured is refused.
    fn own_root(&mut self, index: u32, name: &str) -> Result<(), ShareError> {
        let qs = tc::qdiscs(&mut self.nl, index)?;
        match qs.iter().find(|q| q.parent == tc::ROOT) {
            Some(q) if q.kind == "htb" && q.handle >> 16 == htb::MAJOR => return Ok(()),
            Some(q) if q.handle != 0 && !DEFAULT_ROOTS.contains(&q.kind.as_str()) => {
                return Err(ShareError::Foreign {
                    link: name.to_string(),
                    kind: q.kind.clone(),
                    handle: q.handle >> 16,
                })
            }
            _ => {}
        }
        Ok(htb::add_root(&mut self.nl, index, HOST_MINOR)?)
    }

    fn root_classes(&mut self, index: u32, link: u64, host: u64) -> Result<(), ShareError> {
        let root = ClassSpec {
            rate: link / 8,
            ceil: link / 8,
            prio: 0,
        };
        htb::set_class(&mut self.nl, index, htb::handle(0), ROOT_MINOR, &root)?;
        let host = ClassSpec {
            rate: host / 8,
            ceil: link / 8,
            prio: 0,
        };
        htb::set_class(
            &mut self.nl,
            index,
            htb::handle(ROOT_MINOR),
            HOST_MINOR,
            &host,
        )?;
        Ok(())
    }

    /// True when the link's root qdisc is the share's HTB.
    fn own_qdisc(&mut self) -> Result<bool, ShareError> {
        Ok(tc::qdiscs(&mut self.nl, self.link.index)?
            .iter()
            .any(|q| q.parent == tc::ROOT && q.kind == "htb" && q.handle >> 16 == htb::MAJOR))
    }

    fn port_index(&mut self, port: &str) -> Result<Option<u32>, ShareError> {
        Ok(link::by_name(&mut self.nl, port)?.map(|l| l.index))
    }
}

impl Tree for KernelTree {
    fn ensure_root(&mut self, link: Dir<u64>, host: Dir<u64>) -> Result<(), ShareError> {
        let (index, name) = (self.link.index, self.link.name.clone());
        self.own_root(index, &name)?;
        self.root_classes(index, link.egress, host.egress)?;
        let ifb = match self.ifb()? {
            Some(l) => l,
            None => {
                let alias = format!("berth-share ingress of {name}");
                link::add_ifb(&mut self.nl, &self.ifb, &alias)?;
                self.ifb()?
                    .ok_or_else(|| crate::error::LinkError::Vanished(format!("ifb {}", self.ifb)))?
            }
        };
        if !ifb.up {
            link::set_up(&mut self.nl, ifb.index)?;
        }
        let ifb_label = self.ifb.clone();
        self.own_root(ifb.index, &ifb_label)?;
        self.root_classes(ifb.index, link.ingress, host.ingress)?;
        if self.feed == Feed::LinkIngress && !self.link_fed()? {
            match tc::add_ingress(&mut self.nl, index) {
                Err(e) if e.is_exists() => {}
                r => r?,
            }
            tc::add_redirect(&mut self.nl, index, 0xffff_0000, FEED_PRIO, ifb.index)?;
        }
        Ok(())
    }

    fn root(&mut self) -> Result<Option<Dir<u64>>, ShareError> {
        let rate = |cs: Vec<(u16, ClassSpec)>| {
            cs.into_iter()
                .find(|(m, _)| *m == ROOT_MINOR)
                .map(|(_, c)| c.rate * 8)
        };
        let egress = rate(htb::classes(&mut self.nl, self.link.index)?);
        let Some(ifb) = self.ifb()? else {
            return Ok(None);
        };
        let ingress = rate(htb::classes(&mut self.nl, ifb.index)?);
        let fed = self.feed == Feed::PortEgress || self.link_fed()?;
        Ok(match (egress, ingress, fed) {
            (Some(egress), Some(ingress), true) => Some(Dir { egress, ingress }),
            _ => None,
        })
    }

    fn held(&mut self) -> Result<BTreeMap<u16, Held>, ShareError> {
        let mut out: BTreeMap<u16, Held> = BTreeMap::new();
        let index = self.link.index;
        for (m, c) in htb::classes(&mut self.nl, index)? {
            if m >= FIRST_MINOR {
                out.entry(m).or_default().egress = Some(c);
            }
        }
        let egress_filters = htb::filters(&mut self.nl, index)?;
        let (ingress_filters, ingress_classes) = match self.ifb()? {
            Some(ifb) => (
                htb::filters(&mut self.nl, ifb.index)?,
                htb::classes(&mut self.nl, ifb.index)?,
            ),
            None => Default::default(),
        };
        for (m, c) in ingress_classes {
            if m >= FIRST_MINOR {
                out.entry(m).or_default().ingress = Some(c);
            }
        }
        for m in egress_filters.iter().chain(&ingress_filters) {
            if *m >= FIRST_MINOR {
                out.entry(*m).or_default();
            }
        }
        for (m, h) in out.iter_mut() {
            h.filters = egress_filters.contains(m) && ingress_filters.contains(m);
        }
        Ok(out)
    }

    fn apply(&mut self, e: &Entry) -> Result<(), ShareError> {
        let specs = e.specs();
        let ifb = self
            .ifb()?
            .ok_or_else(|| crate::error::LinkError::Vanished(format!("ifb {}", self.ifb)))?;
        let parent = htb::handle(ROOT_MINOR);
        htb::set_class(
            &mut self.nl,
            self.link.index,
            parent,
            e.minor,
            &specs.egress,
        )?;
        htb::set_mac_filter(&mut self.nl, self.link.index, e.minor, &e.mac, false)?;
        htb::set_class(&mut self.nl, ifb.index, parent, e.minor, &specs.ingress)?;
        htb::set_mac_filter(&mut self.nl, ifb.index, e.minor, &e.mac, true)?;
        if let Some(port) = &e.port {
            let p = self
                .port_index(port)?
                .ok_or_else(|| crate::error::LinkError::Vanished(format!("port {port}")))?;
            htb::add_clsact(&mut self.nl, p)?;
            if htb::filters_at(&mut self.nl, p, CLSACT_EGRESS, FEED_PRIO)? == 0 {
                tc::add_redirect(&mut self.nl, p, CLSACT_EGRESS, FEED_PRIO, ifb.index)?;
            }
        }
        Ok(())
    }

    fn remove(&mut self, minor: u16, port: Option<&str>) -> Result<(), ShareError> {
        if let Some(port) = port {
            if let Some(p) = self.port_index(port)? {
                htb::delete_filters_at(&mut self.nl, p, CLSACT_EGRESS, FEED_PRIO)?;
            }
        }
        let index = self.link.index;
        htb::delete_filter(&mut self.nl, index, minor)?;
        htb::delete_class(&mut self.nl, index, minor)?;
        if let Some(ifb) = self.ifb()? {
            htb::delete_filter(&mut self.nl, ifb.index, minor)?;
            htb::delete_class(&mut self.nl, ifb.index, minor)?;
        }
        Ok(())
    }

    fn dismantle(&mut self) -> Result<(), ShareError> {
        let index = self.link.index;
        if self.own_qdisc()? {
            tc::delete_qdisc(&mut self.nl, index, tc::ROOT)?;
        }
        if self.feed == Feed::LinkIngress {
            htb::delete_filters_at(&mut self.nl, index, 0xffff_0000, FEED_PRIO)?;
            if tc::ingress_filters(&mut self.nl, index)? == 0 {
                tc::delete_qdisc(&mut self.nl, index, tc::INGRESS)?;
            }
        }
        link::delete_by_name(&mut self.nl, &self.ifb)?;
        tracing::info!(link = %self.link.name, "no bandwidth share left: removed the trees");
        Ok(())
    }

    fn leftover(&mut self) -> Result<bool, ShareError> {
        let qdisc = self.own_qdisc()?;
        let feed = self.feed == Feed::LinkIngress && self.link_fed()?;
        Ok(qdisc || feed || self.ifb()?.is_some())
    }

    fn alive(&mut self, e: &Entry) -> bool {
        if !e.netns_is_ours() {
            return false;
        }
        let (ifname, mac) = (e.ifname.clone(), e.mac);
        let r = netns::run_in(&e.netns, move || -> Result<bool, ShareError> {
            let mut nl = Netlink::open()?;
            Ok(link::by_name(&mut nl, &ifname)?.is_some_and(|l| l.mac == mac))
        });
        // Unsure is alive: a guarantee is never freed on a failed look.
        !matches!(r, Ok(Ok(false)))
    }
}
