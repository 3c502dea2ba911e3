//! Announcing a new address. With `arp_notify` set, the kernel broadcasts a
//! gratuitous ARP for every address of a link when it comes up (and when its
//! MAC changes), so neighbours replace stale entries for a reused IP at once.
//! Configure the addresses before bringing the link up.

use std::io;

/// Sets `net.ipv4.conf.<ifname>.arp_notify = 1` in the calling thread's
/// network namespace (the kernel then announces on link-up and address
/// changes too).
pub fn set_arp_notify(ifname: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), b"1")
}
