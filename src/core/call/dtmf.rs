//! Caller key presses, batched for the model.
//!
//! Providers send one `dtmf` event per key (telephony-media-streams reference: Twilio §1,
//! SignalWire §2.2). A caller typing an account number presses several keys in a row, so the
//! digits are collected until no key came for the inter-digit gap ([`super::CallParams::dtmf_gap`])
//! or `#` (the usual "done" key) is pressed, then go to the model as one user message.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Most keys in one batch; the batch is sent when it is full.
pub const MAX_BATCH: usize = 32;

/// Key presses not yet sent to the model.
#[derive(Debug, Default)]
pub(super) struct DtmfBatch {
    digits: String,
    /// When the batch is sent unless another key comes first.
    deadline: Option<Instant>,
}

impl DtmfBatch {
    /// Adds a key pressed at `now`. `#` or a full batch makes it due at once, otherwise it is due
    /// `gap` after this key.
    pub fn push(&mut self, digit: char, now: Instant, gap: Duration) {
        self.digits.push(digit);
        let flush_now = digit == '#' || self.digits.chars().count() >= MAX_BATCH;
        self.deadline = Some(if flush_now { now } else { super::later(now, gap) });
    }

    /// When the batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The batch as the model's user message, if it is due at `now`:
    /// `"[caller pressed keys: 1 2 3 #]"` (one key per word so each is read as a key).
    pub fn take_due(&mut self, now: Instant) -> Option<(String, usize)> {
        if self.deadline.is_none_or(|d| now < d) {
            return None;
        }
        self.deadline = None;
        let count = self.digits.chars().count();
        let mut text = String::with_capacity(24 + 2 * count);
        text.push_str("[caller pressed keys:");
        for d in self.digits.chars() {
            let _ = write!(text, " {d}");
        }
        text.push(']');
        self.digits.clear();
        Some((text, count))
    }

    /// Drops any keys not sent (the call is ending).
    pub fn clear(&mut self) {
        self.digits.clear();
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(1500);

    #[test]
    fn keys_batch_until_the_gap() {
        let t0 = crate::test_epoch();
        let mut b = DtmfBatch::default();
        b.push('1', t0, GAP);
        b.push('2', t0 + Duration::from_millis(400), GAP);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(1900)));
        assert_eq!(b.take_due(t0 + Duration::from_millis(1899)), None);
        let (text, n) = b.take_due(t0 + Duration::from_millis(1900)).unwrap();
        assert_eq!((text.as_str(), n), ("[caller pressed keys: 1 2]", 2));
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn hash_and_a_full_batch_flush_at_once() {
        let t0 = crate::test_epoch();
        let mut b = DtmfBatch::default();
        b.push('9', t0, GAP);
        b.push('#', t0, GAP);
        assert_eq!(b.take_due(t0).unwrap().0, "[caller pressed keys: 9 #]");
        for _ in 0..MAX_BATCH {
            b.push('5', t0, GAP);
        }
        assert_eq!(b.take_due(t0).unwrap().1, MAX_BATCH);
    }
}
