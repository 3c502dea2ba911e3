//! A container's `docker logs` ring: its entries as dockerd framed them, in
//! two files of half the ring's size each (`current`, `previous`). When
//! `current` is full it becomes `previous` (the older half is dropped) and
//! a new `current` starts. Readers follow a rotation by inode.

use super::entry::{Frames, LogEntry};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";

/// The writing end (one per container, in the plugin).
#[derive(Debug)]
pub struct Ring {
    dir: PathBuf,
    half: u64,
    cur: File,
    len: u64,
}

/// The length of the whole frames at the start of `b`.
fn whole_frames(b: &[u8]) -> usize {
    let mut at = 0;
    while let Some(len) = b.get(at..at + 4) {
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if n > super::entry::MAX_FRAME || b.len() < at + 4 + n {
            break;
        }
        at += 4 + n;
    }
    at
}

impl Ring {
    /// Opens (or creates) the ring in `dir` holding about `bytes`. A torn
    /// last frame (a crash mid-write) is cut off.
    pub fn open(dir: &Path, bytes: u64) -> std::io::Result<Ring> {
        std::fs::create_dir_all(dir)?;
        let mut cur = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(CURRENT))?;
        let mut b = Vec::new();
        cur.read_to_end(&mut b)?;
        let whole = whole_frames(&b);
        if whole < b.len() {
            tracing::warn!(dir = %dir.display(), torn = b.len() - whole, "cutting a torn entry off the docker logs ring");
            cur.set_len(whole as u64)?;
        }
        cur.seek(SeekFrom::End(0))?;
        Ok(Ring {
            dir: dir.to_path_buf(),
            half: (bytes / 2).max(1),
            cur,
            len: whole as u64,
        })
    }

    /// Appends whole frames.
    pub fn append(&mut self, frames: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + frames.len() as u64 > self.half {
            std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            self.cur = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(self.dir.join(CURRENT))?;
            self.len = 0;
        }
        self.cur.write_all(frames)?;
        self.len += frames.len() as u64;
        Ok(())
    }
}

/// A reader of a ring, from its oldest entry on; [`Reader::poll`] returns
/// what was written since the last call.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// Files still to read, oldest first; the last one is followed.
    files: Vec<File>,
    frames: Frames,
}

impl Reader {
    /// Opens the ring in `dir` (a missing ring reads as empty until it exists).
    pub fn open(dir: &Path) -> Reader {
        let mut r = Reader {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            frames: Frames::default(),
        };
        // A rotation between the two opens would skip a half: open again.
        for _ in 0..5 {
            let prev = File::open(dir.join(PREVIOUS)).ok();
            let prev_ino = prev
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.ino());
            let cur = File::open(dir.join(CURRENT)).ok();
            let now_ino = std::fs::metadata(dir.join(PREVIOUS)).ok().map(|m| m.ino());
            if prev_ino == now_ino {
                r.files = prev.into_iter().chain(cur).collect();
                break;
            }
        }
        r
    }

    /// The entries written since the last call (all of them on the first).
    pub fn poll(&mut self, out: &mut Vec<LogEntry>) -> std::io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if self.files.is_empty() {
                match File::open(self.dir.join(CURRENT)) {
                    Ok(f) => self.files.push(f),
                    Err(_) => return Ok(()),
                }
            }
            loop {
                let n = self.files[0].read(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.frames.push(&buf[..n]);
                while let Some((e, _)) = self
                    .frames
                    .next_entry()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    out.push(e);
                }
            }
            if self.files.len() > 1 {
                // An older file read to its end: the next one goes on.
                self.files.remove(0);
                self.frames = Frames::default();
                continue;
            }
            // The followed file was rotated away: it is complete; go on with
            // the new `current`.
            let here = self.files[0].metadata()?.ino();
            match std::fs::metadata(self.dir.join(CURRENT)) {
                Ok(m) if m.ino() != here => {
                    self.files.clear();
                    self.frames = Frames::default();
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::encode;
    use super::*;

    fn frame(i: usize) -> Vec<u8> {
        let mut b = Vec::new();
        encode(
            &LogEntry {
                source: "stdout".into(),
                time_nano: i as i64,
                line: format!("line {i:06} {}", "x".repeat(80)).into_bytes(),
                ..Default::default()
            },
            &mut b,
        );
        b
    }

    fn nums(v: &[LogEntry]) -> Vec<i64> {
        v.iter().map(|e| e.time_nano).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_half_to_whole_and_a_follower_misses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = Ring::open(d.path(), 64 << 10).unwrap();
        let mut follower = Reader::open(d.path());
        let mut followed = Vec::new();
        for i in 0..5000 {
            ring.append(&frame(i)).unwrap();
            if i % 37 == 0 {
                follower.poll(&mut followed).unwrap();
            }
        }
        follower.poll(&mut followed).unwrap();
        assert_eq!(nums(&followed), (0..5000).collect::<Vec<_>>());
        let mut all = Vec::new();
        Reader::open(d.path()).poll(&mut all).unwrap();
        let n = nums(&all);
        assert_eq!(*n.last().unwrap(), 4999);
        // Contiguous, bounded, and at least half the ring.
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1));
        let bytes = all.len() * frame(0).len();
        assert!((32 << 10..=64 << 10).contains(&bytes), "{bytes}");
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_on_open() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = Ring::open(d.path(), 1 << 20).unwrap();
        ring.append(&frame(1)).unwrap();
        ring.append(&frame(2)[..10]).unwrap();
        drop(ring);
        let mut ring = Ring::open(d.path(), 1 << 20).unwrap();
        ring.append(&frame(3)).unwrap();
        let mut all = Vec::new();
        Reader::open(d.path()).poll(&mut all).unwrap();
        assert_eq!(nums(&all), vec![1, 3]);
    }
}
