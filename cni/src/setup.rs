//! The last steps of every ADD inside the container's netns, in the order
//! that matters: shaping before the link carries traffic, `arp_notify` and
//! the addresses before link-up (so the kernel's gratuitous ARP announces
//! them; a packet socket of our own would cost an RCU grace period, ~8 ms,
//! when closed), then the routes, which need the link up.

use crate::error::LinkError;
use crate::netlink::Netlink;
use crate::qos::{self, Bandwidth};
use crate::types::CniResult;
use crate::{arp, ipcfg, link};

/// Shapes link `index` (named `ifname`) per `bw`, configures interface
/// `ours` of `result` on it and brings it up. Call inside the netns.
pub fn finish(
    nl: &mut Netlink,
    index: u32,
    ifname: &str,
    ours: usize,
    result: &CniResult,
    bw: &Bandwidth,
) -> Result<(), LinkError> {
    if !bw.is_empty() {
        qos::apply(nl, index, ifname, bw)?;
    }
    // As the reference plugins: only a layer-3 attachment announces.
    if !result.ips.is_empty() {
        if let Err(e) = arp::set_arp_notify(ifname) {
            tracing::warn!(error = %e, "cannot set arp_notify");
        }
    }
    ipcfg::add_addresses(nl, index, ours, result)?;
    link::set_up(nl, index)?;
    ipcfg::add_routes(nl, index, ours, result)
}
