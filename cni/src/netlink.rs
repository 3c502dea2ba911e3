//! A blocking rtnetlink client over `netlink-sys` and the message types of
//! `netlink-packet-route`.
//!
//! A socket belongs to the network namespace of the thread that opened it, so
//! a [`Netlink`] opened inside [`crate::netns::run_in`] keeps talking to that
//! namespace.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// A failed netlink request: what was asked, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct NetlinkError {
    /// The operation, e.g. `create macvlan bmv1a2b3c4d`.
    pub what: String,
    /// The kernel's errno (or a socket error).
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    /// The errno, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True for ENOENT, ENODEV, ESRCH or EADDRNOTAVAIL: the object is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    /// True for EEXIST.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

impl crate::error::Failure for NetlinkError {
    /// An I/O failure (code 5).
    fn code(&self) -> crate::Code {
        crate::Code::Io
    }

    /// The operation; the kernel's answer goes in the details.
    fn message(&self) -> String {
        self.what.clone()
    }

    fn details(&self) -> Option<String> {
        Some(self.source.to_string())
    }
}

/// A blocking `NETLINK_ROUTE` socket in the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let err = |source| NetlinkError {
            what: "open a netlink socket".into(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        // Ask for extended acks: the kernel then says which attribute it refused.
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends `msg` with `flags` (plus REQUEST and ACK) and waits for the ack.
    pub fn request(
        &mut self,
        what: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(|_| ())
            .map_err(|source| NetlinkError {
                what: what(),
                source,
            })
    }

    /// Sends a dump request and collects every message of the answer.
    pub fn dump(
        &mut self,
        what: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
            .map_err(|source| NetlinkError {
                what: what(),
                source,
            })
    }

    /// Sends a request that answers with one message (a GET without DUMP).
    pub fn get(
        &mut self,
        what: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST)
            .map(|v| v.into_iter().next())
            .map_err(|source| NetlinkError {
                what: what(),
                source,
            })
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                off += (len + 3) & !3;
                if len == 0 {
                    break;
                }
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !dump && !ack {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
