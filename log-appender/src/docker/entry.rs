//! Docker's log entries: the protobuf `LogEntry` of moby's
//! `api/types/plugins/logdriver/entry.proto`, each framed by its length as
//! a big-endian u32, on the FIFO dockerd writes and in `ReadLogs` answers.

use prost::Message;

/// One line (or part of one) of a container's output.
#[derive(Clone, PartialEq, Message)]
pub struct LogEntry {
    /// `stdout` or `stderr`.
    #[prost(string, tag = "1")]
    pub source: String,
    /// When dockerd read it, in nanoseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub time_nano: i64,
    /// The bytes, without the newline.
    #[prost(bytes = "vec", tag = "3")]
    pub line: Vec<u8>,
    /// True when the line goes on in the next entry (dockerd cuts lines at
    /// 16 KiB).
    #[prost(bool, tag = "4")]
    pub partial: bool,
    /// Where a partial entry belongs.
    #[prost(message, optional, tag = "5")]
    pub partial_log_metadata: Option<PartialLogEntryMetadata>,
}

/// The place of a partial entry in its line.
#[derive(Clone, PartialEq, Message)]
pub struct PartialLogEntryMetadata {
    /// True on the line's last part.
    #[prost(bool, tag = "1")]
    pub last: bool,
    /// The line's id.
    #[prost(string, tag = "2")]
    pub id: String,
    /// The part's number.
    #[prost(int32, tag = "3")]
    pub ordinal: i32,
}

/// The largest frame dockerd writes or reads (moby's decoder refuses more).
pub const MAX_FRAME: usize = 1_000_000;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length beyond [`MAX_FRAME`]: the stream is not Docker's.
    #[error("a log entry of {0} bytes (at most {MAX_FRAME}): not a Docker log stream")]
    TooLarge(usize),
    /// Bytes that are not a `LogEntry`.
    #[error("a log entry that does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Appends `e`, framed, to `out`.
pub fn encode(e: &LogEntry, out: &mut Vec<u8>) {
    let n = e.encoded_len();
    out.reserve(4 + n);
    out.extend_from_slice(&(n as u32).to_be_bytes());
    // Cannot fail: `out` grows as needed.
    let _ = e.encode(out);
}

/// Cuts whole frames out of bytes that arrive in pieces.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    at: usize,
}

impl Frames {
    /// Adds bytes read.
    pub fn push(&mut self, b: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(b);
    }

    /// The next whole frame (with its length prefix), if one is buffered.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.at..];
        let Some(len) = rest.get(..4) else {
            self.compact();
            return Ok(None);
        };
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if n > MAX_FRAME {
            return Err(FrameError::TooLarge(n));
        }
        if rest.len() < 4 + n {
            self.compact();
            return Ok(None);
        }
        let start = self.at;
        self.at += 4 + n;
        Ok(Some(&self.buf[start..start + 4 + n]))
    }

    /// The next whole entry, decoded, with its frame.
    pub fn next_entry(&mut self) -> Result<Option<(LogEntry, &[u8])>, FrameError> {
        match self.next_raw()? {
            None => Ok(None),
            Some(f) => Ok(Some((LogEntry::decode(&f[4..])?, f))),
        }
    }

    /// Bytes buffered that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }

    fn compact(&mut self) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str, partial: bool) -> LogEntry {
        LogEntry {
            source: "stdout".into(),
            time_nano: 1_700_000_000_123_456_789,
            line: line.as_bytes().to_vec(),
            partial,
            partial_log_metadata: None,
        }
    }

    #[test]
    fn frames_split_anywhere_come_back_whole_and_in_order() {
        let mut wire = Vec::new();
        let sent: Vec<LogEntry> = (0..50)
            .map(|i| entry(&"x".repeat(i * 7), i % 3 == 0))
            .collect();
        for e in &sent {
            encode(e, &mut wire);
        }
        for step in [1, 3, 7, 64, wire.len()] {
            let mut f = Frames::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                f.push(piece);
                while let Some((e, _)) = f.next_entry().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(got, sent, "pieces of {step}");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn a_length_beyond_dockers_limit_is_an_error_not_an_allocation() {
        let mut f = Frames::default();
        f.push(&u32::MAX.to_be_bytes());
        assert!(matches!(f.next_raw(), Err(FrameError::TooLarge(_))));
    }
}
