//! Realistic-looking random identifiers (`event_…`, `item_…`, `CA…`, UUIDs) without a `rand`
//! dependency. Not cryptographic: they only need to be distinct within a test run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Distinguishes generators created in the same nanosecond.
static SEEDS: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// A xorshift64* generator of identifier strings.
#[derive(Debug, Clone)]
pub(crate) struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator seeded from the clock and a process-wide counter.
    pub(crate) fn new() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let bump = SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Self::from_seed(nanos ^ bump)
    }

    /// A deterministic generator (for ids derived from a known value).
    pub(crate) fn from_seed(seed: u64) -> Self {
        // xorshift must not start at 0.
        Self { state: seed | 1 }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `prefix` followed by `len` base-62 characters, like OpenAI's `event_…` / `item_…` ids.
    pub(crate) fn base62(&mut self, prefix: &str, len: usize) -> String {
        let mut s = String::with_capacity(prefix.len() + len);
        s.push_str(prefix);
        for _ in 0..len {
            s.push(char::from(ALPHABET[(self.next_u64() % 62) as usize]));
        }
        s
    }

    /// `prefix` followed by 32 lowercase hex digits, like Twilio's `CA…` / `MZ…` SIDs.
    pub(crate) fn hex_sid(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// A version-4-shaped UUID, like SignalWire's ids.
    pub(crate) fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0x0FFF,
            0x8000 | ((b >> 48) & 0x3FFF),
            b & 0xFFFF_FFFF_FFFF
        )
    }
}

/// A fresh Twilio-style SID: `prefix` (`CA`, `MZ`, `AC`) plus 32 hex digits.
pub fn twilio_sid(prefix: &str) -> String {
    IdGen::new().hex_sid(prefix)
}

/// A fresh UUID in SignalWire's style.
pub fn uuid() -> String {
    IdGen::new().uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_expected_shapes() {
        let mut g = IdGen::from_seed(42);
        let e = g.base62("event_", 20);
        assert_eq!(e.len(), 26);
        assert!(e.starts_with("event_"));
        assert_eq!(g.hex_sid("CA").len(), 34);
        let u = g.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(twilio_sid("MZ"), twilio_sid("MZ"));
    }
}
