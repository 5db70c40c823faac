//! Round-trip bookkeeping: the echo path is a FIFO of bytes, so audio byte offset X comes back
//! as received byte X. The added latency of a received frame is the time the cumulative
//! received byte count first reached the frame's last byte, minus the time the sent frame
//! holding that byte left the harness. Also: loss and histogram summaries.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a histogram keeps apart from the rest (µs): one hour. Larger values saturate.
const HIST_MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 ≤ low, high ≥ 2·low, sigfig ≤ 5): creation cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Records `d` in µs, saturating.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

/// Sent frames of one call, matched against the bytes that come back.
#[derive(Debug)]
pub(crate) struct RoundTrip {
    /// Sent frames not yet fully received: (end offset, exclusive; send time), in order.
    sent: VecDeque<(u64, Instant)>,
    /// Bytes sent.
    sent_bytes: u64,
    /// Bytes received.
    received_bytes: u64,
}

impl Default for RoundTrip {
    fn default() -> Self {
        Self { sent: VecDeque::with_capacity(64), sent_bytes: 0, received_bytes: 0 }
    }
}

impl RoundTrip {
    /// Bytes sent so far.
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Bytes received so far.
    pub(crate) fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// A frame of `bytes` left at `at`.
    pub(crate) fn on_sent(&mut self, bytes: usize, at: Instant) {
        self.sent_bytes += bytes as u64;
        self.sent.push_back((self.sent_bytes, at));
    }

    /// `bytes` came back at `at`. Returns the round trip of the last of them, or `None` if
    /// nothing came back or more came back than was ever sent (e.g. silence the bridge
    /// inserted), which cannot be matched.
    pub(crate) fn on_received(&mut self, bytes: usize, at: Instant) -> Option<Duration> {
        if bytes == 0 {
            return None;
        }
        self.received_bytes += bytes as u64;
        let last = self.received_bytes - 1;
        // Frames that ended before `last` came back earlier (or in this chunk): forget them.
        while self.sent.front().is_some_and(|(end, _)| *end <= last) {
            self.sent.pop_front();
        }
        // The front frame now holds `last`: it starts at or before it, as frames are contiguous.
        let (_, sent_at) = self.sent.front()?;
        Some(at.saturating_duration_since(*sent_at))
    }
}

/// Frames (of `frame_bytes`) sent and never received: (sent − received) in whole frames.
pub(crate) fn lost_frames(sent_bytes: u64, received_bytes: u64, frame_bytes: usize) -> u64 {
    sent_bytes.saturating_sub(received_bytes) / (frame_bytes.max(1) as u64)
}

/// A histogram's summary, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub samples: u64,
    /// Median (µs).
    pub p50_us: u64,
    /// 90th percentile (µs).
    pub p90_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// 99.9th percentile (µs).
    pub p999_us: u64,
    /// Largest sample (µs).
    pub max_us: u64,
    /// Mean (µs).
    pub mean_us: f64,
}

impl Percentiles {
    /// Summarises `h`; all zero when it is empty.
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fifo_offsets_match_sent_frames() {
        let t0 = Instant::now();
        let mut rt = RoundTrip::default();
        rt.on_sent(160, t0);
        rt.on_sent(160, t0 + ms(20));
        rt.on_sent(160, t0 + ms(40));
        // The first frame comes back whole 30 ms after it left.
        assert_eq!(rt.on_received(160, t0 + ms(30)), Some(ms(30)));
        // Half of frame 2: its last byte is in frame 2, sent at 20 ms.
        assert_eq!(rt.on_received(80, t0 + ms(45)), Some(ms(25)));
        // The rest of frame 2 and all of frame 3 at once: timed by frame 3's last byte.
        assert_eq!(rt.on_received(240, t0 + ms(70)), Some(ms(30)));
        assert_eq!((rt.sent_bytes(), rt.received_bytes()), (480, 480));
        // More than was sent cannot be matched.
        assert_eq!(rt.on_received(160, t0 + ms(80)), None);
        assert_eq!(rt.on_received(0, t0 + ms(80)), None);
    }

    #[test]
    fn differently_framed_returns_use_the_frame_holding_their_last_byte() {
        let t0 = Instant::now();
        let mut rt = RoundTrip::default();
        for k in 0..4 {
            rt.on_sent(640, t0 + ms(20 * k));
        }
        // 1000 bytes: the last byte (999) is in frame 1 (640..1280), sent at 20 ms.
        assert_eq!(rt.on_received(1000, t0 + ms(50)), Some(ms(30)));
        // 280 more: byte 1279 is the last of frame 1 still.
        assert_eq!(rt.on_received(280, t0 + ms(55)), Some(ms(35)));
        // One byte more: byte 1280 is the first of frame 2, sent at 40 ms.
        assert_eq!(rt.on_received(1, t0 + ms(60)), Some(ms(20)));
    }

    #[test]
    fn loss_is_counted_in_whole_frames() {
        assert_eq!(lost_frames(1600, 1600, 160), 0);
        assert_eq!(lost_frames(1600, 1400, 160), 1, "200 bytes short: one whole frame");
        assert_eq!(lost_frames(1600, 1200, 160), 2);
        assert_eq!(lost_frames(1600, 2000, 160), 0, "more received than sent is not negative loss");
        assert_eq!(lost_frames(6400, 0, 640), 10);
    }

    #[test]
    fn percentiles_summarise_a_histogram() {
        let mut h = histogram();
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        for v in 1..=1000u64 {
            record(&mut h, Duration::from_micros(v));
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.samples, 1000);
        assert!((499..=501).contains(&p.p50_us), "{p:?}");
        assert!((989..=991).contains(&p.p99_us), "{p:?}");
        assert!((999..=1001).contains(&p.max_us), "{p:?}");
        record(&mut h, Duration::from_secs(100_000));
        assert!(Percentiles::of(&h).max_us >= HIST_MAX_US, "saturates instead of failing");
    }
}
