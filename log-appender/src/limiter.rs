//! The rate limit towards Kafka: token buckets in lines/s and bytes/s, each
//! holding one second's worth.

use std::time::Instant;

/// Two token buckets; a rate of 0 is unlimited.
#[derive(Debug, Clone)]
pub struct Limiter {
    lines_rate: f64,
    bytes_rate: f64,
    lines: f64,
    bytes: f64,
    at: Instant,
}

impl Limiter {
    /// Buckets for `lines_per_sec` and `bytes_per_sec`, full.
    pub fn new(lines_per_sec: u64, bytes_per_sec: u64) -> Limiter {
        Limiter {
            lines_rate: lines_per_sec as f64,
            bytes_rate: bytes_per_sec as f64,
            lines: lines_per_sec as f64,
            bytes: bytes_per_sec as f64,
            at: Instant::now(),
        }
    }

    /// Changes the rates (hot reload), keeping the current fill.
    pub fn set(&mut self, lines_per_sec: u64, bytes_per_sec: u64) {
        self.refill();
        self.lines_rate = lines_per_sec as f64;
        self.bytes_rate = bytes_per_sec as f64;
        self.lines = self.lines.min(self.lines_rate);
        self.bytes = self.bytes.min(self.bytes_rate);
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.lines = (self.lines + dt * self.lines_rate).min(self.lines_rate);
        self.bytes = (self.bytes + dt * self.bytes_rate).min(self.bytes_rate);
    }

    /// Takes one line of `bytes` if both buckets allow it.
    pub fn try_take(&mut self, bytes: usize) -> bool {
        self.refill();
        let line_ok = self.lines_rate == 0.0 || self.lines >= 1.0;
        let byte_ok =
            self.bytes_rate == 0.0 || self.bytes >= bytes as f64 || self.bytes >= self.bytes_rate;
        if !(line_ok && byte_ok) {
            return false;
        }
        if self.lines_rate > 0.0 {
            self.lines -= 1.0;
        }
        if self.bytes_rate > 0.0 {
            self.bytes -= bytes as f64;
        }
        true
    }

    /// Gives back what [`Limiter::try_take`] took for a line that was not
    /// sent after all.
    pub fn refund(&mut self, bytes: usize) {
        if self.lines_rate > 0.0 {
            self.lines = (self.lines + 1.0).min(self.lines_rate);
        }
        if self.bytes_rate > 0.0 {
            self.bytes = (self.bytes + bytes as f64).min(self.bytes_rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_second() {
        let mut l = Limiter::new(100, 0);
        let took = (0..1000).filter(|_| l.try_take(10)).count();
        assert!((100..=102).contains(&took), "{took}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let more = (0..1000).filter(|_| l.try_take(10)).count();
        assert!((8..=13).contains(&more), "{more}");
        let mut u = Limiter::new(0, 0);
        assert!((0..10_000).all(|_| u.try_take(1000)));
    }
}
