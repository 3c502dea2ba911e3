//! In-memory queues (between a reader and its formatter, and between the
//! inputs and the router): bounded by bytes, and never blocking a producer:
//! when one is full the item is handed back, to be dropped and counted.

use crate::record::Record;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What an item weighs in memory.
pub trait Weighed {
    /// Bytes it occupies.
    fn size(&self) -> u64;
}

impl Weighed for Record {
    fn size(&self) -> u64 {
        Record::size(self)
    }
}

impl Weighed for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64 + 32
    }
}

/// A byte-bounded multi-producer queue.
pub struct MemQueue<T = Record> {
    inner: Mutex<(VecDeque<T>, u64)>,
    ready: Condvar,
    cap: u64,
}

impl<T: Weighed> MemQueue<T> {
    /// A queue holding at most `cap` bytes of records.
    pub fn new(cap: u64) -> MemQueue<T> {
        MemQueue {
            inner: Mutex::new((VecDeque::new(), 0)),
            ready: Condvar::new(),
            cap,
        }
    }

    /// Appends `r`, or gives it back when the queue is full.
    pub fn try_push(&self, r: T) -> Result<(), T> {
        let size = r.size();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 + size > self.cap {
            return Err(r);
        }
        g.1 += size;
        g.0.push_back(r);
        drop(g);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes up to `max` records, waiting up to `wait` for the first.
    pub fn pop_batch(&self, max: usize, wait: Duration) -> Vec<T> {
        let out = self.take_batch(max, wait);
        self.release(out.iter().map(Weighed::size).sum());
        out
    }

    /// Takes up to `max` records like [`MemQueue::pop_batch`], but their
    /// bytes stay counted against the cap until [`MemQueue::release`]: the
    /// consumer holds them in memory, and inputs must not fill their room.
    pub fn take_batch(&self, max: usize, wait: Duration) -> Vec<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.is_empty() && !wait.is_zero() {
            g = self
                .ready
                .wait_timeout(g, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let n = g.0.len().min(max);
        g.0.drain(..n).collect()
    }

    /// Frees the room of records taken with [`MemQueue::take_batch`].
    pub fn release(&self, bytes: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = g.1.saturating_sub(bytes);
    }

    /// Records and bytes queued now.
    pub fn depth(&self) -> (usize, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.0.len(), g.1)
    }

    /// Wakes a waiting consumer (e.g. at shutdown).
    pub fn wake(&self) {
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Record {
        Record {
            topic: "t".into(),
            key: None,
            payload: vec![b'x'; n],
        }
    }

    #[test]
    fn bounded_by_bytes_and_fifo() {
        let q: MemQueue = MemQueue::new(300);
        assert!(q.try_push(rec(100)).is_ok());
        assert!(q.try_push(rec(100)).is_err(), "165+165 > 300");
        let b = q.pop_batch(10, Duration::ZERO);
        assert_eq!(b.len(), 1);
        assert_eq!(q.depth(), (0, 0));
        assert!(q.pop_batch(10, Duration::from_millis(1)).is_empty());
    }

    #[test]
    fn taken_records_keep_their_room_until_released() {
        let q: MemQueue = MemQueue::new(300);
        assert!(q.try_push(rec(100)).is_ok());
        let b = q.take_batch(10, Duration::ZERO);
        assert_eq!(b.len(), 1);
        assert!(
            q.try_push(rec(100)).is_err(),
            "the taken record still counts"
        );
        q.release(b[0].size());
        assert!(q.try_push(rec(100)).is_ok());
    }
}
