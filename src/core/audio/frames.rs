//! Re-framing ring: arbitrary-size byte chunks in, exact fixed-size frames out.
//!
//! The model sends audio deltas of any length; the telephony side wants exact 20 ms
//! frames (160 bytes μ-law 8 kHz, 640 bytes L16 16 kHz). The ring starts small and grows (by
//! doubling, up to its bound) only when audio arrives faster than it is sent, so an idle or
//! steady call keeps a few KiB rather than its worst case resident.

/// A bounded FIFO of bytes that hands them out in frames of exactly `frame_bytes`.
///
/// Overflow policy: when a push would make the buffered bytes exceed the capacity, the
/// oldest bytes are dropped, in whole frames (a multiple of `frame_bytes`), so the frame
/// grid and L16 sample alignment are preserved. If the pushed chunk alone exceeds the
/// capacity, its own oldest frames are dropped too. Dropping old audio keeps latency
/// bounded when the consumer falls behind.
#[derive(Debug, Clone)]
pub struct FrameRing {
    buf: Vec<u8>,
    /// Most bytes the ring may hold; `buf` grows up to this.
    max: usize,
    /// Index of the oldest buffered byte.
    head: usize,
    /// Buffered bytes.
    len: usize,
    frame_bytes: usize,
}

impl FrameRing {
    /// Creates a ring cutting frames of `frame_bytes` bytes, holding at most `max_bytes`.
    ///
    /// `frame_bytes` is raised to at least 1; `max_bytes` to at least one frame. For L16
    /// pass an even `frame_bytes` so frames stay sample-aligned. Allocates 16 frames (or
    /// `max_bytes` if smaller); grows on demand.
    pub fn new(frame_bytes: usize, max_bytes: usize) -> Self {
        let frame_bytes = frame_bytes.max(1);
        let max = max_bytes.max(frame_bytes);
        let initial = (frame_bytes * Self::INITIAL_FRAMES).min(max);
        Self { buf: vec![0; initial], max, head: 0, len: 0, frame_bytes }
    }

    const INITIAL_FRAMES: usize = 16;

    /// Grows the storage (keeping the bytes in order) so `needed` bytes fit, up to `max`.
    fn grow_for(&mut self, needed: usize) {
        if needed <= self.buf.len() || self.buf.len() >= self.max {
            return;
        }
        let new_len = needed.max(self.buf.len() * 2).min(self.max);
        let mut grown = Vec::with_capacity(new_len);
        let first = self.len.min(self.buf.len() - self.head);
        grown.extend_from_slice(&self.buf[self.head..self.head + first]);
        grown.extend_from_slice(&self.buf[..self.len - first]);
        grown.resize(new_len, 0);
        self.buf = grown;
        self.head = 0;
    }

    /// Appends `bytes`; returns how many bytes were dropped to stay within capacity
    /// (oldest first, in whole frames; see the type's overflow policy).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.grow_for(self.len + bytes.len());
        let capacity = self.buf.len();
        let total = self.len + bytes.len();
        let dropped = if total > capacity {
            (total - capacity).div_ceil(self.frame_bytes) * self.frame_bytes
        } else {
            0
        };
        // Drop from the buffered bytes first, then from the front of the new chunk.
        let from_buffered = dropped.min(self.len);
        self.advance(from_buffered);
        let keep = &bytes[(dropped - from_buffered).min(bytes.len())..];

        let tail = (self.head + self.len) % capacity;
        let first = keep.len().min(capacity - tail);
        self.buf[tail..tail + first].copy_from_slice(&keep[..first]);
        self.buf[..keep.len() - first].copy_from_slice(&keep[first..]);
        self.len += keep.len();
        dropped
    }

    /// Appends exactly one frame to `out` if a whole frame is buffered; returns whether it did.
    pub fn pop_frame(&mut self, out: &mut Vec<u8>) -> bool {
        if self.len < self.frame_bytes {
            return false;
        }
        self.pop_into(self.frame_bytes, out);
        true
    }

    /// Appends one frame to `out` if any bytes are buffered, padding a partial frame with
    /// `pad` (e.g. the format's silence byte) up to `frame_bytes`; returns whether it did.
    /// Drains the ring completely when called until it returns `false`.
    pub fn pop_padded(&mut self, out: &mut Vec<u8>, pad: u8) -> bool {
        if self.len == 0 {
            return false;
        }
        let n = self.len.min(self.frame_bytes);
        self.pop_into(n, out);
        out.resize(out.len() + (self.frame_bytes - n), pad);
        true
    }

    /// Drops everything buffered (e.g. on barge-in); returns the bytes dropped.
    pub fn clear(&mut self) -> usize {
        let dropped = self.len;
        self.head = 0;
        self.len = 0;
        dropped
    }

    /// Bytes currently buffered.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of each frame handed out (bytes).
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Maximum bytes held (bytes).
    pub fn capacity_bytes(&self) -> usize {
        self.max
    }

    /// Moves the oldest `n` (≤ `len`) bytes into `out`.
    fn pop_into(&mut self, n: usize, out: &mut Vec<u8>) {
        let first = n.min(self.buf.len() - self.head);
        out.extend_from_slice(&self.buf[self.head..self.head + first]);
        out.extend_from_slice(&self.buf[..n - first]);
        self.advance(n);
    }

    /// Forgets the oldest `n` (≤ `len`) bytes.
    fn advance(&mut self, n: usize) {
        self.len -= n;
        self.head = if self.len == 0 { 0 } else { (self.head + n) % self.buf.len() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_on_demand_up_to_its_bound() {
        let mut ring = FrameRing::new(160, 160 * 100);
        assert_eq!(ring.buf.len(), 160 * 16, "starts small");
        let chunk: Vec<u8> = (0..=255).cycle().take(160 * 40).collect();
        assert_eq!(ring.push(&chunk), 0);
        assert_eq!(ring.len_bytes(), 160 * 40);
        assert!(ring.buf.len() >= 160 * 40 && ring.buf.len() <= 160 * 100);
        let mut out = Vec::new();
        while ring.pop_frame(&mut out) {}
        assert_eq!(out, chunk, "growth keeps the byte order");
        // Past the bound, the oldest frames go.
        assert_eq!(ring.push(&vec![7u8; 160 * 120]), 160 * 20);
        assert_eq!(ring.len_bytes(), 160 * 100);
    }

    #[test]
    fn cuts_exact_frames() {
        let mut ring = FrameRing::new(4, 64);
        assert_eq!(ring.frame_bytes(), 4);
        assert_eq!(ring.push(&[1, 2, 3]), 0);
        let mut out = Vec::new();
        assert!(!ring.pop_frame(&mut out));
        assert_eq!(ring.push(&[4, 5, 6, 7, 8, 9]), 0);
        assert!(ring.pop_frame(&mut out));
        assert!(ring.pop_frame(&mut out));
        assert!(!ring.pop_frame(&mut out));
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(ring.len_bytes(), 1);
        assert!(ring.pop_padded(&mut out, 0xFF));
        assert_eq!(&out[8..], [9, 0xFF, 0xFF, 0xFF]);
        assert!(ring.is_empty());
        assert!(!ring.pop_padded(&mut out, 0xFF));
    }

    #[test]
    fn pop_padded_returns_whole_frames_unpadded() {
        let mut ring = FrameRing::new(2, 8);
        ring.push(&[1, 2, 3]);
        let mut out = Vec::new();
        assert!(ring.pop_padded(&mut out, 0));
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn overflow_drops_oldest_whole_frames() {
        let mut ring = FrameRing::new(4, 10);
        assert_eq!(ring.push(&[0, 1, 2, 3, 4, 5, 6, 7, 8]), 0);
        // 9 + 3 = 12 > 10: drop one whole frame (4 bytes), keep 8.
        assert_eq!(ring.push(&[9, 10, 11]), 4);
        assert_eq!(ring.len_bytes(), 8);
        let mut out = Vec::new();
        while ring.pop_frame(&mut out) {}
        assert_eq!(out, [4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn chunk_larger_than_capacity_keeps_newest_frames() {
        let mut ring = FrameRing::new(4, 10);
        ring.push(&[100, 101]);
        let chunk: Vec<u8> = (0..20).collect();
        // 22 bytes, capacity 10: drop 12 (3 frames): 2 buffered + 10 of the chunk.
        assert_eq!(ring.push(&chunk), 12);
        let mut out = Vec::new();
        while ring.pop_padded(&mut out, 0) {}
        assert_eq!(out, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0, 0]);
    }

    #[test]
    fn clear_reports_dropped_bytes() {
        let mut ring = FrameRing::new(160, 1600);
        ring.push(&[0xFF; 500]);
        assert_eq!(ring.clear(), 500);
        assert!(ring.is_empty());
        assert_eq!(ring.clear(), 0);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let mut ring = FrameRing::new(0, 0);
        assert_eq!(ring.frame_bytes(), 1);
        assert_eq!(ring.push(&[1, 2, 3]), 2);
        let mut out = Vec::new();
        assert!(ring.pop_frame(&mut out));
        assert_eq!(out, [3]);
        assert_eq!(ring.push(&[]), 0);
    }

    #[test]
    fn popping_does_not_grow_a_reserved_output() {
        let mut ring = FrameRing::new(640, 6400);
        let mut out = Vec::with_capacity(640);
        let cap = out.capacity();
        for _ in 0..100 {
            ring.push(&[7; 333]);
            while ring.pop_frame(&mut out) {
                assert_eq!(out.len(), 640);
                out.clear();
            }
        }
        assert_eq!(out.capacity(), cap);
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(0usize..700, 1..20),
            frame_half in 1usize..400,
            pops_between in 0usize..3,
        ) {
            let frame = frame_half * 2;
            // Large enough never to overflow: everything is kept.
            let mut ring = FrameRing::new(frame, data.len() + frame);
            let mut out = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                i += 1;
                let (a, b) = rest.split_at(n);
                prop_assert_eq!(ring.push(a), 0);
                rest = b;
                for _ in 0..pops_between {
                    let before = out.len();
                    if ring.pop_frame(&mut out) {
                        prop_assert_eq!(out.len() - before, frame);
                    }
                }
            }
            while ring.pop_padded(&mut out, 0xAA) {}
            prop_assert_eq!(out.len(), data.len().div_ceil(frame) * frame);
            prop_assert_eq!(&out[..data.len()], &data[..]);
            prop_assert!(out[data.len()..].iter().all(|&b| b == 0xAA));
        }

        #[test]
        fn overflow_keeps_the_newest_bytes_frame_aligned(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..10),
            max_frames in 1usize..6,
        ) {
            let frame = 16;
            let mut ring = FrameRing::new(frame, max_frames * frame + 5);
            let mut dropped = 0;
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                i += 1;
                let (a, b) = rest.split_at(n);
                dropped += ring.push(a);
                rest = b;
                prop_assert!(ring.len_bytes() <= ring.capacity_bytes());
            }
            prop_assert_eq!(dropped % frame, 0);
            prop_assert_eq!(dropped + ring.len_bytes(), data.len());
            let mut out = Vec::new();
            while ring.pop_padded(&mut out, 0) {}
            prop_assert_eq!(&out[..data.len() - dropped], &data[dropped..]);
        }
    }
}
