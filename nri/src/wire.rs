//! The two framings NRI stacks on its unix socket: the connection
//! multiplexer (`pkg/net/multiplex`: a 4-byte connection id and a 4-byte
//! length, big-endian, then the payload) and, inside each logical
//! connection, ttrpc (a 10-byte header: length, stream id, type, flags;
//! then a protobuf `Request` or `Response`).
//!
//! Written by hand rather than with the `ttrpc` crate: that crate wants a
//! real socket per channel, and NRI carries two channels over one socket.
//! Only unary calls are needed, which is all of ttrpc's framing there is.

use std::collections::HashMap;
use std::io::{Read, Write};

/// The logical connection the runtime calls the plugin on.
pub const PLUGIN_CONN: u32 = 1;
/// The logical connection the plugin calls the runtime on.
pub const RUNTIME_CONN: u32 = 2;
/// Largest frame accepted (ttrpc's 4 MiB message limit plus its header).
pub const MAX_FRAME: usize = 4 << 20;

/// ttrpc message types.
pub const TYPE_REQUEST: u8 = 1;
/// A response.
pub const TYPE_RESPONSE: u8 = 2;

/// Errors of the wire layer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("NRI socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame or message was malformed.
    #[error("NRI protocol: {0}")]
    Protocol(String),
    /// A protobuf message did not decode.
    #[error("NRI message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Reads one multiplexer frame: (connection id, payload).
pub fn read_frame(r: &mut impl Read) -> Result<(u32, Vec<u8>), WireError> {
    let mut hdr = [0u8; 8];
    r.read_exact(&mut hdr)?;
    let id = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::Protocol(format!("a frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok((id, buf))
}

/// Writes one multiplexer frame.
pub fn write_frame(w: &mut impl Write, id: u32, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() > MAX_FRAME {
        return Err(WireError::Protocol(format!(
            "a frame of {} bytes",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    w.write_all(&out)?;
    Ok(())
}

/// One ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The stream (call) it belongs to.
    pub stream: u32,
    /// [`TYPE_REQUEST`] or [`TYPE_RESPONSE`].
    pub kind: u8,
    /// The protobuf body.
    pub body: Vec<u8>,
}

impl Message {
    /// The message as bytes on its logical connection.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.body.len());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.push(self.kind);
        out.push(0);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reassembles ttrpc messages from the frames of each logical connection
/// (a message may span frames, a frame may hold several).
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: HashMap<u32, Vec<u8>>,
}

impl Reassembler {
    /// Adds a frame's payload for `conn`; returns the messages it completed.
    pub fn push(&mut self, conn: u32, data: &[u8]) -> Result<Vec<Message>, WireError> {
        let buf = self.pending.entry(conn).or_default();
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if buf.len() < 10 {
                break;
            }
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > MAX_FRAME {
                return Err(WireError::Protocol(format!(
                    "a ttrpc message of {len} bytes"
                )));
            }
            if buf.len() < 10 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let kind = buf[8];
            let body = buf[10..10 + len].to_vec();
            buf.drain(..10 + len);
            out.push(Message { stream, kind, body });
        }
        Ok(out)
    }
}

/// ttrpc's request envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
}

/// ttrpc's response envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Writes a call of `service`'s `method` with `payload` (the encoded
/// request message) as stream `stream` on logical connection `conn`.
pub fn write_request(
    w: &mut impl Write,
    conn: u32,
    stream: u32,
    service: &str,
    method: &str,
    payload: Vec<u8>,
) -> Result<(), WireError> {
    let req = Request {
        service: service.into(),
        method: method.into(),
        payload,
        timeout_nano: 0,
    };
    write_message(w, conn, stream, TYPE_REQUEST, &req)
}

/// Writes `resp` as the answer on stream `stream` of logical connection `conn`.
pub fn write_response(
    w: &mut impl Write,
    conn: u32,
    stream: u32,
    resp: &Response,
) -> Result<(), WireError> {
    write_message(w, conn, stream, TYPE_RESPONSE, resp)
}

fn write_message(
    w: &mut impl Write,
    conn: u32,
    stream: u32,
    kind: u8,
    body: &impl prost::Message,
) -> Result<(), WireError> {
    let m = Message {
        stream,
        kind,
        body: body.encode_to_vec(),
    };
    write_frame(w, conn, &m.encode())
}

/// gRPC's UNKNOWN status code, for a handler's error.
pub const CODE_UNKNOWN: i32 = 2;
/// gRPC's UNIMPLEMENTED status code.
pub const CODE_UNIMPLEMENTED: i32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_messages_reassemble_across_them() {
        let m1 = Message {
            stream: 1,
            kind: TYPE_REQUEST,
            body: vec![7; 30],
        };
        let m2 = Message {
            stream: 3,
            kind: TYPE_RESPONSE,
            body: vec![],
        };
        let mut bytes = m1.encode();
        bytes.extend(m2.encode());
        // Split the two messages over three frames at odd places.
        let mut wire = Vec::new();
        for chunk in [&bytes[..5], &bytes[5..33], &bytes[33..]] {
            write_frame(&mut wire, PLUGIN_CONN, chunk).unwrap();
        }
        let mut r = std::io::Cursor::new(wire);
        let mut re = Reassembler::default();
        let mut got = Vec::new();
        for _ in 0..3 {
            let (conn, data) = read_frame(&mut r).unwrap();
            assert_eq!(conn, PLUGIN_CONN);
            got.extend(re.push(conn, &data).unwrap());
        }
        assert_eq!(got, vec![m1, m2]);
    }

    #[test]
    fn oversized_lengths_are_refused_not_allocated() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&1u32.to_be_bytes());
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_frame(&mut std::io::Cursor::new(wire)),
            Err(WireError::Protocol(_))
        ));
        let mut re = Reassembler::default();
        let mut m = u32::MAX.to_be_bytes().to_vec();
        m.extend_from_slice(&[0; 6]);
        assert!(re.push(1, &m).is_err());
    }
}
