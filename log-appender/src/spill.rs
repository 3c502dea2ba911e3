//! The disk spill: segment files of framed records (`u32` length, `u32`
//! CRC32C of the body, body), appended in order and replayed in order.
//!
//! * A segment is deleted only once every record in it was read and
//!   acknowledged by Kafka.
//! * After a crash, a torn tail record (short or failing its CRC) is found
//!   on open, counted, and cut off; everything before it is replayed.
//! * Acknowledgements are not persisted: after a restart a segment is
//!   replayed whole, so records acknowledged just before a crash arrive
//!   twice (at-least-once).
//! * One process owns a spill directory (an exclusive `flock` on `.lock`).

use crate::config::WhenFull;
use crate::record::Record;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest record body accepted (a corrupt length must not allocate wildly).
const MAX_BODY: u32 = 64 << 20;

/// Spill failures.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Another process holds the directory.
    #[error("{0} is in use by another berth-log-appender")]
    Locked(PathBuf),
    /// Disk I/O failed.
    #[error("spill {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why an append did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The budget is spent (`drop_newest`), or one record exceeds it.
    Full,
    /// The disk write failed.
    Io(String),
}

struct Seg {
    id: u64,
    path: PathBuf,
    bytes: u64,
    records: u32,
    read: u32,
    read_off: u64,
    offsets: Vec<u64>,
    acked: Vec<bool>,
    acked_n: u32,
}

impl Seg {
    fn done(&self) -> bool {
        self.read == self.records && self.acked_n == self.records
    }
}

/// One source's spill.
pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    when_full: WhenFull,
    segs: VecDeque<Seg>,
    writer: Option<File>,
    reader: Option<(u64, BufReader<File>, u64)>,
    total: u64,
    host: Option<HostCap>,
    _lock: File,
}

/// A byte budget shared by every source's spill under one root directory
/// (`spill.host_max_bytes`). Each spill measures what the others use: every
/// [`HOST_RESCAN_IDLE`], and at most once per [`HOST_RESCAN_NEAR`] while
/// its own appends would go over.
struct HostCap {
    root: PathBuf,
    max: u64,
    /// Bytes of other sources' segments at the last scan.
    others: u64,
    scanned: Option<std::time::Instant>,
}

/// How often a spill well under the host cap looks at the others.
const HOST_RESCAN_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a spill at the host cap looks again (others may have drained).
const HOST_RESCAN_NEAR: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes of the segments of every spill directory under `root` but `mine`.
fn others_usage(root: &Path, mine: &Path) -> u64 {
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut sum = 0;
    for d in dirs.flatten() {
        let p = d.path();
        if p == mine || !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(&p) else {
            continue;
        };
        sum += files
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().ends_with(".seg"))
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
    }
    sum
}

/// What opening found on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Torn or corrupt records cut off.
    pub torn: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SpillError + '_ {
    move |source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// A frame: the body's length and CRC32C (little-endian u32s), then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 8);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Reads one frame at the reader's position: `Ok(None)` at a clean end,
/// `Err(())` for a torn or corrupt frame.
pub(crate) fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, ()> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_BODY {
        return Err(());
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|_| ())?;
    if crc32c::crc32c(&body) != crc {
        return Err(());
    }
    Ok(Some(body))
}

impl Spill {
    /// Opens (creating) the spill in `dir`, scanning what a previous
    /// process left: counts its records and cuts off a torn tail.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        when_full: WhenFull,
    ) -> Result<(Spill, Recovered), SpillError> {
        // Container logs are not for every local user: 0700 directories,
        // 0600 files.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpillError::Locked(dir.to_path_buf()));
        }
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut rec = Recovered::default();
        let mut segs = VecDeque::new();
        let mut total = 0;
        for id in ids {
            let path = seg_path(dir, id);
            let f = File::open(&path).map_err(io(&path))?;
            let len = f.metadata().map_err(io(&path))?.len();
            let mut r = BufReader::new(f);
            let (mut good, mut n) = (0u64, 0u32);
            loop {
                match read_frame(&mut r) {
                    Ok(Some(b)) => {
                        good += 8 + b.len() as u64;
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        rec.torn += 1;
                        tracing::warn!(segment = %path.display(), at = good, "torn or corrupt record: cutting the segment there");
                        break;
                    }
                }
            }
            if good < len {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(good).map_err(io(&path))?;
            }
            if n == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            rec.records += u64::from(n);
            total += good;
            segs.push_back(Seg {
                id,
                path,
                bytes: good,
                records: n,
                read: 0,
                read_off: 0,
                offsets: Vec::new(),
                acked: Vec::new(),
                acked_n: 0,
            });
        }
        Ok((
            Spill {
                dir: dir.to_path_buf(),
                max_bytes,
                segment_bytes,
                when_full,
                segs,
                writer: None,
                reader: None,
                total,
                host: None,
                _lock: lock,
            },
            rec,
        ))
    }

    /// Changes the budget and policy (hot reload).
    pub fn set_limits(&mut self, max_bytes: u64, segment_bytes: u64, when_full: WhenFull) {
        self.max_bytes = max_bytes;
        self.segment_bytes = segment_bytes;
        self.when_full = when_full;
    }

    /// Shares a budget of `max` bytes (0: none) with every other spill
    /// directory beside this one.
    pub fn set_host_cap(&mut self, max: u64) {
        self.host = match (max, self.dir.parent()) {
            (0, _) | (_, None) => None,
            (max, Some(root)) => Some(HostCap {
                root: root.to_path_buf(),
                max,
                others: 0,
                scanned: None,
            }),
        };
    }

    /// What this spill may hold with a `frame_len` record more: its own
    /// budget, or what the host cap leaves it.
    fn budget(&mut self, frame_len: u64) -> u64 {
        let Some(h) = &mut self.host else {
            return self.max_bytes;
        };
        let over = self.total + frame_len + h.others > h.max;
        let every = if over {
            HOST_RESCAN_NEAR
        } else {
            HOST_RESCAN_IDLE
        };
        if h.scanned.is_none_or(|t| t.elapsed() >= every) {
            h.others = others_usage(&h.root, &self.dir);
            h.scanned = Some(std::time::Instant::now());
        }
        self.max_bytes.min(h.max.saturating_sub(h.others))
    }

    /// Appends `r`. With `drop_oldest`, evicts whole oldest segments to make
    /// room; returns how many unacknowledged records were evicted.
    pub fn append(&mut self, r: &Record) -> Result<u64, Refused> {
        let mut body = Vec::with_capacity(r.payload.len() + r.topic.len() + 16);
        r.encode(&mut body);
        let frame_len = 8 + body.len() as u64;
        let mut evicted = 0;
        let budget = self.budget(frame_len);
        while self.total + frame_len > budget {
            match self.when_full {
                WhenFull::DropNewest => return Err(Refused::Full),
                WhenFull::DropOldest => {
                    // Never evict the segment being written.
                    if self.segs.len() < 2 && self.writer.is_some() || self.segs.is_empty() {
                        return Err(Refused::Full);
                    }
                    let s = self.segs.pop_front().expect("non-empty");
                    evicted += u64::from(s.records - s.acked_n);
                    self.total -= s.bytes;
                    if self.reader.as_ref().is_some_and(|(id, _, _)| *id == s.id) {
                        self.reader = None;
                    }
                    let _ = std::fs::remove_file(&s.path);
                    if self.segs.is_empty() {
                        self.writer = None;
                    }
                }
            }
        }
        let roll = match (self.writer.is_some(), self.segs.back()) {
            (true, Some(s)) => s.bytes > 0 && s.bytes + frame_len > self.segment_bytes,
            _ => true,
        };
        if roll {
            let id = self.segs.back().map_or(0, |s| s.id + 1);
            let path = seg_path(&self.dir, id);
            if let Some(w) = self.writer.take() {
                let _ = w.sync_data();
            }
            let f = OpenOptions::new()
                .mode(0o600)
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Refused::Io(e.to_string()))?;
            self.writer = Some(f);
            self.segs.push_back(Seg {
                id,
                path,
                bytes: 0,
                records: 0,
                read: 0,
                read_off: 0,
                offsets: Vec::new(),
                acked: Vec::new(),
                acked_n: 0,
            });
        }
        let frame = frame(&body);
        let w = self.writer.as_mut().expect("writer");
        if let Err(e) = w.write_all(&frame) {
            self.cut_torn_write();
            return Err(Refused::Io(e.to_string()));
        }
        let s = self.segs.back_mut().expect("segment");
        s.bytes += frame_len;
        s.records += 1;
        self.total += frame_len;
        Ok(evicted)
    }

    /// After a failed write (a full disk) that may have left part of a
    /// frame: cuts the segment back to its last whole frame and closes it,
    /// so the next record starts a new segment and no record ever lands
    /// after a torn frame (which replay, and the next start, would stop at).
    fn cut_torn_write(&mut self) {
        let Some(w) = self.writer.take() else {
            return;
        };
        let Some(s) = self.segs.back() else {
            return;
        };
        if let Err(e) = w.set_len(s.bytes) {
            tracing::error!(segment = %s.path.display(), error = %e, "cannot cut a torn write from the spill");
        }
        if s.records == 0 {
            let _ = std::fs::remove_file(&s.path);
            self.segs.pop_back();
        }
    }

    /// Takes every unacknowledged record of `other` (a spill left beside
    /// this one by an appender that found this one locked) onto this one's
    /// tail, in order, then removes `other`'s directory. Returns how many
    /// records moved and how many were lost (corrupt, or refused here). A
    /// crash half-way leaves `other` in place: its records may then be
    /// delivered twice, never lost.
    pub fn adopt(&mut self, mut other: Spill) -> (u64, u64) {
        let (mut moved, mut lost) = (0, 0);
        while let Some(next) = other.next_unread() {
            match next {
                Ok((_, _, rec)) => match self.append(&rec) {
                    Ok(evicted) => {
                        moved += 1;
                        lost += evicted;
                    }
                    Err(_) => lost += 1,
                },
                Err(n) => lost += n,
            }
        }
        self.sync();
        let dir = other.dir.clone();
        drop(other);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an adopted spill directory");
        }
        (moved, lost)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next record to replay: `(segment, index, record)`. Records
    /// already acknowledged (after a rewind) are skipped; a corrupt record
    /// ends its segment and is reported as `Err(count)`.
    pub fn next_unread(&mut self) -> Option<Result<(u64, u32, Record), u64>> {
        loop {
            let i = self.segs.iter().position(|s| s.read < s.records)?;
            let (id, off) = (self.segs[i].id, self.segs[i].read_off);
            let need_open =
                !matches!(&self.reader, Some((rid, _, roff)) if *rid == id && *roff == off);
            if need_open {
                let path = self.segs[i].path.clone();
                let mut f = match File::open(&path) {
                    Ok(f) => f,
                    Err(_) => {
                        let s = &mut self.segs[i];
                        let lost = u64::from(s.records - s.read);
                        s.records = s.read;
                        return Some(Err(lost));
                    }
                };
                let _ = f.seek(SeekFrom::Start(off));
                self.reader = Some((id, BufReader::new(f), off));
            }
            let (_, r, roff) = self.reader.as_mut().expect("reader");
            let s = &mut self.segs[i];
            match read_frame(r) {
                Ok(Some(body)) => {
                    let idx = s.read;
                    let at = *roff;
                    *roff += 8 + body.len() as u64;
                    s.read_off = *roff;
                    s.read += 1;
                    if s.offsets.len() <= idx as usize {
                        s.offsets.push(at);
                        s.acked.push(false);
                    }
                    if s.acked[idx as usize] {
                        continue;
                    }
                    match Record::decode(&body) {
                        Some(rec) => return Some(Ok((id, idx, rec))),
                        None => {
                            s.acked[idx as usize] = true;
                            s.acked_n += 1;
                            return Some(Err(1));
                        }
                    }
                }
                _ => {
                    let lost = u64::from(s.records - s.read);
                    s.records = s.read;
                    self.reader = None;
                    self.collect();
                    return Some(Err(lost));
                }
            }
        }
    }

    /// Kafka acknowledged record `idx` of segment `id`.
    pub fn ack(&mut self, id: u64, idx: u32) {
        if let Some(s) = self.segs.iter_mut().find(|s| s.id == id) {
            if let Some(a) = s.acked.get_mut(idx as usize) {
                if !*a {
                    *a = true;
                    s.acked_n += 1;
                }
            }
        }
        self.collect();
    }

    /// Replays again from record `idx` of segment `id` (after a failed
    /// delivery); acknowledged records on the way are skipped.
    pub fn rewind(&mut self, id: u64, idx: u32) {
        let mut after = false;
        for s in self.segs.iter_mut() {
            if s.id == id {
                if let Some(off) = s.offsets.get(idx as usize) {
                    if idx < s.read {
                        s.read = idx;
                        s.read_off = *off;
                    }
                }
                after = true;
            } else if after && s.read > 0 {
                s.read = 0;
                s.read_off = 0;
            }
        }
        self.reader = None;
    }

    /// Deletes segments that are fully read and acknowledged.
    fn collect(&mut self) {
        while let Some(s) = self.segs.front() {
            if !s.done() {
                break;
            }
            let s = self.segs.pop_front().expect("front");
            if self.segs.is_empty() {
                self.writer = None;
            }
            if self.reader.as_ref().is_some_and(|(id, _, _)| *id == s.id) {
                self.reader = None;
            }
            self.total -= s.bytes;
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// True when nothing waits: every record was read and acknowledged.
    pub fn is_drained(&self) -> bool {
        self.segs.iter().all(Seg::done)
    }

    /// True when records wait to be read (as opposed to only awaiting acks).
    pub fn has_unread(&self) -> bool {
        self.segs.iter().any(|s| s.read < s.records)
    }

    /// Records not yet acknowledged, and bytes on disk.
    pub fn depth(&self) -> (u64, u64) {
        (
            self.segs
                .iter()
                .map(|s| u64::from(s.records - s.acked_n))
                .sum(),
            self.total,
        )
    }

    /// Pushes written data to the disk.
    pub fn sync(&self) {
        if let Some(w) = &self.writer {
            let _ = w.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            topic: "t".into(),
            key: Some(b"k".to_vec()),
            payload: format!("record {i}").into_bytes(),
        }
    }

    fn drain(s: &mut Spill) -> Vec<(u64, u32, Record)> {
        let mut v = Vec::new();
        while let Some(Ok(x)) = s.next_unread() {
            v.push(x);
        }
        v
    }

    #[test]
    fn a_spill_left_beside_is_adopted_in_order_after_ones_own() {
        let d = tempfile::tempdir().unwrap();
        let (mut main, _) =
            Spill::open(&d.path().join("web"), 1 << 20, 4096, WhenFull::DropNewest).unwrap();
        let side_dir = d.path().join("web.1234");
        let (mut side, _) = Spill::open(&side_dir, 1 << 20, 4096, WhenFull::DropNewest).unwrap();
        for i in 0..3 {
            main.append(&rec(i)).unwrap();
        }
        for i in 3..200 {
            side.append(&rec(i)).unwrap();
        }
        side.sync();
        assert_eq!(main.adopt(side), (197, 0));
        assert!(!side_dir.exists());
        let got: Vec<Record> = drain(&mut main).into_iter().map(|(_, _, r)| r).collect();
        assert_eq!(got, (0..200).map(rec).collect::<Vec<_>>());
    }

    #[test]
    fn sources_under_one_root_share_the_host_cap() {
        let d = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            let (mut s, _) =
                Spill::open(&d.path().join(n), 1 << 20, 1024, WhenFull::DropNewest).unwrap();
            s.set_host_cap(3000);
            s
        };
        let (mut a, mut b) = (open("a"), open("b"));
        let mut n = 0;
        while a.append(&rec(n)).is_ok() {
            n += 1;
        }
        let held = a.depth().1;
        assert!(
            (2900..=3000).contains(&held),
            "a alone fills the host cap: {held}"
        );
        assert_eq!(b.append(&rec(0)), Err(Refused::Full), "b sees a's bytes");
        for (seg, idx, _) in drain(&mut a) {
            a.ack(seg, idx);
        }
        assert!(a.depth().1 < 1024, "a drained: {:?}", a.depth());
        // b looks again at most once a second while it is at the cap.
        std::thread::sleep(HOST_RESCAN_NEAR);
        assert!(b.append(&rec(0)).is_ok(), "room again once a drained");
    }

    #[test]
    fn spill_directories_and_segments_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spool").join("web-1");
        let (mut s, _) = Spill::open(&dir, 1 << 20, 4096, WhenFull::DropNewest).unwrap();
        s.append(&rec(1)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        assert_eq!(mode(&seg_path(&dir, 0)), 0o600);
        assert_eq!(mode(&dir.join(".lock")), 0o600);
    }

    #[test]
    fn append_replay_ack_delete_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, r) = Spill::open(d.path(), 1 << 20, 4096, WhenFull::DropNewest).unwrap();
        assert_eq!(r, Recovered::default());
        for i in 0..500 {
            s.append(&rec(i)).unwrap();
        }
        let got = drain(&mut s);
        assert_eq!(got.len(), 500);
        assert!(got.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert_eq!(got[7].2, rec(7));
        // A failure at record 100 rewinds; acknowledged ones are skipped.
        for (id, idx, _) in &got[..100] {
            s.ack(*id, *idx);
        }
        for (id, idx, _) in &got[101..] {
            s.ack(*id, *idx);
        }
        s.rewind(got[100].0, got[100].1);
        let again = drain(&mut s);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].2, rec(100));
        s.ack(again[0].0, again[0].1);
        assert!(s.is_drained());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".lock")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_replayed() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spill::open(d.path(), 1 << 20, 1 << 20, WhenFull::DropNewest).unwrap();
            for i in 0..10 {
                s.append(&rec(i)).unwrap();
            }
        }
        let seg = seg_path(d.path(), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (mut s, r) = Spill::open(d.path(), 1 << 20, 1 << 20, WhenFull::DropNewest).unwrap();
        assert_eq!(
            r,
            Recovered {
                records: 9,
                torn: 1
            }
        );
        let got: Vec<Record> = drain(&mut s).into_iter().map(|x| x.2).collect();
        assert_eq!(got, (0..9).map(rec).collect::<Vec<_>>());
        // Appending continues cleanly after the cut.
        s.append(&rec(99)).unwrap();
        assert_eq!(drain(&mut s)[0].2, rec(99));
        assert!(matches!(
            Spill::open(d.path(), 1, 4096, WhenFull::DropNewest),
            Err(SpillError::Locked(_))
        ));
    }

    #[test]
    fn budgets_drop_newest_or_evict_oldest() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spill::open(d.path(), 200, 100, WhenFull::DropNewest).unwrap();
        let mut ok = 0;
        for i in 0..20 {
            if s.append(&rec(i)).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 0 && ok < 20, "{ok}");
        assert!(s.depth().1 <= 200);
        let d2 = tempfile::tempdir().unwrap();
        let (mut s, _) = Spill::open(d2.path(), 200, 100, WhenFull::DropOldest).unwrap();
        let mut evicted = 0;
        for i in 0..20 {
            evicted += s.append(&rec(i)).unwrap();
        }
        let kept = drain(&mut s).len() as u64;
        assert_eq!(kept + evicted, 20, "every record is either kept or counted");
        assert!(s.depth().1 <= 200);
    }
}
