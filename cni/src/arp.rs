//! Announcing a new address: `arp_notify` and a gratuitous ARP, so
//! neighbours replace stale entries for a reused IP at once.

use std::io;
use std::net::Ipv4Addr;

/// Sets `net.ipv4.conf.<ifname>.arp_notify = 1` in the calling thread's
/// network namespace (the kernel then announces on link-up and address
/// changes too).
pub fn set_arp_notify(ifname: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), b"1")
}

/// Broadcasts one gratuitous ARP request (sender = target = `ip`) from link
/// `index` with hardware address `mac`, in the calling thread's namespace.
pub fn gratuitous(index: u32, mac: &[u8], ip: Ipv4Addr) -> io::Result<()> {
    let Ok(mac6) = <[u8; 6]>::try_from(mac) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an Ethernet address",
        ));
    };
    const ETH_P_ARP: u16 = 0x0806;
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pkt = Vec::with_capacity(28);
    pkt.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    pkt.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    pkt.extend_from_slice(&[6, 4]);
    pkt.extend_from_slice(&1u16.to_be_bytes()); // request
    pkt.extend_from_slice(&mac6);
    pkt.extend_from_slice(&ip.octets());
    pkt.extend_from_slice(&[0xff; 6]);
    pkt.extend_from_slice(&ip.octets());
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ARP.to_be();
    sa.sll_ifindex = index as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: pkt and sa outlive the call; sizes are theirs.
    let n = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(err);
    }
    Ok(())
}
