//! Cutting a byte stream into lines of at most `lines.max_bytes`, without
//! ever holding more than that in memory: a longer line is split into parts
//! (at a UTF-8 boundary) or truncated, per `lines.overflow`.

use crate::config::Overflow;
use crate::record::Cut;
use std::io::Read;

/// Reads `r` to its end, calling `emit(line, cut)` for every line (without
/// its newline). A final line without a newline is emitted too.
pub fn split<R: Read>(
    mut r: R,
    max: usize,
    overflow: Overflow,
    mut emit: impl FnMut(&[u8], Cut),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cur: Vec<u8> = Vec::with_capacity(max.min(4096));
    let mut part: u32 = 0;
    let mut skipping = false;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let (chunk, ended) = match nl {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if ended { &rest[chunk.len() + 1..] } else { &[] };
            if !skipping {
                cur.extend_from_slice(chunk);
            }
            while !skipping && cur.len() > max {
                match overflow {
                    Overflow::Split => {
                        let mut at = max;
                        // Do not cut a UTF-8 sequence in two.
                        while at > max - 3 && at < cur.len() && (cur[at] & 0xC0) == 0x80 {
                            at -= 1;
                        }
                        emit(
                            &cur[..at],
                            Cut::Part {
                                n: part,
                                last: false,
                            },
                        );
                        part += 1;
                        cur.drain(..at);
                    }
                    Overflow::Truncate => {
                        emit(&cur[..max], Cut::Truncated);
                        cur.clear();
                        skipping = true;
                    }
                }
            }
            if ended {
                if !skipping {
                    emit(&cur, last_cut(part));
                }
                cur.clear();
                part = 0;
                skipping = false;
            }
        }
    }
    if !cur.is_empty() && !skipping {
        emit(&cur, last_cut(part));
    }
    Ok(())
}

/// How the end of a line is marked: whole, or the last of its parts.
fn last_cut(part: u32) -> Cut {
    if part > 0 {
        Cut::Part {
            n: part,
            last: true,
        }
    } else {
        Cut::Whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max: usize, o: Overflow) -> Vec<(String, Cut)> {
        let mut out = Vec::new();
        // A reader that hands out 3 bytes at a time, to cross boundaries.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(3).min(b.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        split(Slow(input), max, o, |l, c| {
            out.push((String::from_utf8_lossy(l).into_owned(), c))
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_parts_and_truncation() {
        let v = run(b"a\nbb\n\nlast", 4, Overflow::Split);
        let lines: Vec<&str> = v.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(lines, ["a", "bb", "", "last"]);
        let v = run(b"0123456789\nx\n", 4, Overflow::Split);
        assert_eq!(v[0], ("0123".into(), Cut::Part { n: 0, last: false }));
        assert_eq!(v[2], ("89".into(), Cut::Part { n: 2, last: true }));
        assert_eq!(v[3], ("x".into(), Cut::Whole));
        let v = run(b"0123456789\nx\n", 4, Overflow::Truncate);
        assert_eq!(
            v,
            vec![("0123".into(), Cut::Truncated), ("x".into(), Cut::Whole)]
        );
        // A 2-byte character straddling the limit moves to the next part.
        let v = run("abcé\n".as_bytes(), 4, Overflow::Split);
        assert_eq!(v[0].0, "abc");
        assert_eq!(v[1].0, "é");
    }
}
