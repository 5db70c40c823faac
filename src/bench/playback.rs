//! The provider's playback queue, reduced to counters: what the bridge sent is "played" at
//! 20 ms per tick (silence when nothing is queued), a `mark` is echoed once everything received
//! before it has played (at once if nothing is queued), and `clear` drops the queue and echoes
//! every pending mark (reference §1.4–1.5). No audio bytes are kept: the harness only needs
//! positions.

use std::collections::VecDeque;

/// Playback state of one call; `M` is whatever is echoed for a mark (the prebuilt echo
/// message in the harness, a name in tests).
#[derive(Debug)]
pub(crate) struct Playback<M> {
    /// Bytes ever received.
    received: u64,
    /// Bytes ever played or dropped by `clear`; never more than `received`.
    consumed: u64,
    /// Pending marks with the byte position (of `received`) they wait for, in order.
    marks: VecDeque<(u64, M)>,
}

impl<M> Default for Playback<M> {
    fn default() -> Self {
        Self { received: 0, consumed: 0, marks: VecDeque::with_capacity(8) }
    }
}

impl<M> Playback<M> {
    /// Bytes queued and not yet played.
    pub(crate) fn queued(&self) -> u64 {
        self.received - self.consumed
    }

    /// Marks waiting for their audio to play.
    #[cfg(test)]
    pub(crate) fn pending_marks(&self) -> usize {
        self.marks.len()
    }

    /// Queues `bytes` of received audio.
    pub(crate) fn push_audio(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    /// Places a mark after everything received so far. Returns it back if it is due at once
    /// (nothing queued and no earlier mark pending).
    pub(crate) fn push_mark(&mut self, mark: M) -> Option<M> {
        if self.queued() == 0 && self.marks.is_empty() {
            return Some(mark);
        }
        self.marks.push_back((self.received, mark));
        None
    }

    /// One tick: plays up to `frame_bytes` and appends the marks now due to `due`, in order.
    /// Returns the bytes played (less than `frame_bytes` means silence filled the rest).
    pub(crate) fn play(&mut self, frame_bytes: usize, due: &mut Vec<M>) -> u64 {
        let n = self.queued().min(frame_bytes as u64);
        self.consumed += n;
        while self.marks.front().is_some_and(|(at, _)| *at <= self.consumed) {
            if let Some((_, m)) = self.marks.pop_front() {
                due.push(m);
            }
        }
        n
    }

    /// Drops the queue; appends every pending mark to `flushed` and returns the bytes dropped.
    pub(crate) fn clear(&mut self, flushed: &mut Vec<M>) -> u64 {
        let dropped = self.queued();
        self.consumed = self.received;
        flushed.extend(self.marks.drain(..).map(|(_, m)| m));
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_echoed_once_their_audio_has_played() {
        let mut p = Playback::default();
        let mut due = Vec::new();
        assert_eq!(p.push_mark("early"), Some("early"), "nothing queued: echo at once");
        p.push_audio(300);
        assert_eq!(p.push_mark("a"), None);
        p.push_audio(100);
        assert_eq!(p.push_mark("b"), None);
        assert_eq!(p.play(160, &mut due), 160);
        assert!(due.is_empty());
        assert_eq!(p.play(160, &mut due), 160);
        assert_eq!(due, ["a"], "a's 300 bytes have played");
        assert_eq!(p.play(160, &mut due), 80, "the rest of the tick is silence");
        assert_eq!(due, ["a", "b"]);
        assert_eq!(p.queued(), 0);
        assert_eq!(p.play(160, &mut due), 0, "silence");
        assert_eq!(p.push_mark("late"), Some("late"));
    }

    #[test]
    fn a_mark_behind_a_pending_mark_waits_even_when_nothing_is_queued_after_it() {
        let mut p = Playback::default();
        let mut due = Vec::new();
        p.push_audio(160);
        assert_eq!(p.push_mark("a"), None);
        assert_eq!(p.push_mark("b"), None, "a is still pending, so b waits behind it");
        assert_eq!(p.pending_marks(), 2);
        p.play(160, &mut due);
        assert_eq!(due, ["a", "b"]);
    }

    #[test]
    fn clear_drops_the_queue_and_flushes_every_pending_mark() {
        let mut p = Playback::default();
        let (mut due, mut flushed) = (Vec::new(), Vec::new());
        p.push_audio(500);
        p.push_mark("m1");
        p.push_audio(500);
        p.push_mark("m2");
        p.play(200, &mut due);
        assert_eq!(p.clear(&mut flushed), 800);
        assert_eq!(flushed, ["m1", "m2"]);
        assert!(due.is_empty());
        assert_eq!(p.queued(), 0);
        // After the clear, positions continue from the new end.
        p.push_audio(100);
        assert_eq!(p.push_mark("m3"), None);
        p.play(60, &mut due);
        assert!(due.is_empty());
        p.play(60, &mut due);
        assert_eq!(due, ["m3"]);
    }
}
