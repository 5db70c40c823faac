//! At most one log line per second for refusals that come in floods (overload, a hostile or
//! misconfigured client): the metrics count every refusal, and each line says how many were not
//! logged since the one before.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// One refusal site's budget of one line per second.
pub(crate) struct LogThrottle {
    /// Second (since the process's first throttled line, plus one) of the last line logged.
    last_s: AtomicU64,
    /// Refusals not logged since that line.
    skipped: AtomicU64,
}

impl LogThrottle {
    pub(crate) const fn new() -> Self {
        Self { last_s: AtomicU64::new(0), skipped: AtomicU64::new(0) }
    }

    /// `Some(refusals skipped since the last line)` when this one should be logged now.
    pub(crate) fn admit(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        self.admit_at(Instant::now().saturating_duration_since(epoch).as_secs() + 1)
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let last = self.last_s.load(Relaxed);
        if second > last && self.last_s.compare_exchange(last, second, Relaxed, Relaxed).is_ok() {
            return Some(self.skipped.swap(0, Relaxed));
        }
        self.skipped.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn one_line_per_second_with_the_count_of_the_rest() {
        let t = LogThrottle::new();
        assert_eq!(t.admit_at(1), Some(0));
        assert_eq!((t.admit_at(1), t.admit_at(1), t.admit_at(1)), (None, None, None));
        assert_eq!(t.admit_at(2), Some(3));
        assert_eq!(t.admit_at(2), None);
        assert_eq!(t.admit_at(9), Some(1));
        assert!(LogThrottle::new().admit().is_some(), "the first refusal is logged");
    }
}
