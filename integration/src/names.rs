//! Run-unique names for everything a test creates on the host.
//!
//! A run id (`BERTH_TEST_RUN`, set by `scripts/test`, or derived from the pid)
//! gives the prefix `bt<run>`; each process adds two characters and each name a
//! counter, so interface names stay within the kernel's 15 characters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn base36(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// The run id: 4 lowercase base-36 characters shared by every process of one test run.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| match std::env::var("BERTH_TEST_RUN") {
        Ok(v) if v.len() == 4 && v.bytes().all(|b| ALPHABET.contains(&b)) => v,
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            base36(t ^ u64::from(std::process::id()), 4)
        }
    })
}

/// The prefix every host object of this run carries: `bt` plus the run id.
pub fn run_prefix() -> String {
    format!("bt{}", run_id())
}

/// The prefix of this process: the run prefix plus two pid-derived characters.
pub fn process_prefix() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| {
        format!(
            "{}{}",
            run_prefix(),
            base36(u64::from(std::process::id()), 2)
        )
    })
}

/// A fresh name (at most 12 characters) for an interface, namespace or container.
pub fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}{}", process_prefix(), base36(u64::from(n), 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_prefixed() {
        let a = unique();
        let b = unique();
        assert_ne!(a, b);
        assert!(a.starts_with(&run_prefix()));
        // Room for a one-character suffix within IFNAMSIZ-1.
        assert!(a.len() <= 13, "{a}");
    }
}
