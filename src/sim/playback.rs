//! The provider's outbound playback queue, as Twilio documents it (reference §1.4–1.5):
//! audio plays in arrival order; a `mark` is echoed once everything queued before it has
//! played (at once if nothing is queued); `clear` drops the queue and echoes every pending mark.
//!
//! [`Playback`] keeps only positions (the load harness needs no audio bytes);
//! [`PlaybackQueue`] adds the audio itself for the simulated caller, which records what it heard.

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

/// Playback with the audio bytes kept, for a caller that records what it heard.
#[derive(Debug, Default)]
pub(crate) struct PlaybackQueue {
    audio: VecDeque<u8>,
    marks: Playback<String>,
}

impl PlaybackQueue {
    /// Bytes queued and not yet played.
    pub(crate) fn len(&self) -> usize {
        self.audio.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.audio.is_empty()
    }

    /// Queues received audio.
    pub(crate) fn push_audio(&mut self, bytes: &[u8]) {
        self.audio.extend(bytes);
        self.marks.push_audio(bytes.len());
    }

    /// Places a mark after the queued audio; returns it if it is due at once.
    pub(crate) fn push_mark(&mut self, name: String) -> Option<String> {
        self.marks.push_mark(name)
    }

    /// Plays up to `max` bytes, rounded down to a multiple of `align` (whole samples), into
    /// `out`; appends the marks now due to `due`. Returns the bytes played.
    pub(crate) fn play(
        &mut self,
        max: usize,
        align: usize,
        out: &mut Vec<u8>,
        due: &mut Vec<String>,
    ) -> usize {
        let align = align.max(1);
        let n = self.audio.len().min(max) / align * align;
        out.extend(self.audio.drain(..n));
        self.marks.play(n, due);
        n
    }

    /// Drops the queue; appends every pending mark to `flushed` and returns the bytes dropped.
    pub(crate) fn clear(&mut self, flushed: &mut Vec<String>) -> usize {
        let dropped = self.audio.len();
        self.audio.clear();
        self.marks.clear(flushed);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_echoed_after_their_audio_has_played() {
        let mut q = PlaybackQueue::default();
        let (mut out, mut due) = (Vec::new(), Vec::new());
        assert_eq!(q.push_mark("early".into()), Some("early".into()), "nothing queued: echo at once");
        q.push_audio(&[1; 300]);
        assert_eq!(q.push_mark("a".into()), None);
        q.push_audio(&[2; 100]);
        assert_eq!(q.push_mark("b".into()), None);
        assert_eq!(q.play(160, 1, &mut out, &mut due), 160);
        assert!(due.is_empty());
        assert_eq!(q.play(160, 1, &mut out, &mut due), 160);
        assert_eq!(due, ["a"], "a's 300 bytes have played");
        assert_eq!(q.play(160, 1, &mut out, &mut due), 80);
        assert_eq!(due, ["a", "b"]);
        assert_eq!(out.len(), 400);
        assert!(q.is_empty());
        assert_eq!(q.push_mark("late".into()), Some("late".into()));
    }

    #[test]
    fn a_mark_behind_another_pending_mark_waits_even_with_an_empty_queue() {
        let mut q = PlaybackQueue::default();
        let (mut out, mut due) = (Vec::new(), Vec::new());
        q.push_audio(&[0; 10]);
        assert_eq!(q.push_mark("a".into()), None);
        q.play(160, 1, &mut out, &mut due);
        assert_eq!(due, ["a"]);
    }

    #[test]
    fn clear_drops_audio_and_flushes_every_pending_mark() {
        let mut q = PlaybackQueue::default();
        let (mut out, mut due, mut flushed) = (Vec::new(), Vec::new(), Vec::new());
        q.push_audio(&[0; 500]);
        q.push_mark("m1".into());
        q.push_audio(&[0; 500]);
        q.push_mark("m2".into());
        q.play(200, 2, &mut out, &mut due);
        assert_eq!(q.clear(&mut flushed), 800);
        assert_eq!(flushed, ["m1", "m2"]);
        assert!(due.is_empty());
        assert!(q.is_empty());
        // After the clear, new audio and marks work from the new position.
        q.push_audio(&[0; 100]);
        assert_eq!(q.push_mark("m3".into()), None);
        assert_eq!(q.play(99, 2, &mut out, &mut due), 98, "rounded down to whole samples");
        assert!(due.is_empty());
        q.play(160, 2, &mut out, &mut due);
        assert_eq!(due, ["m3"]);
        assert_eq!(q.len(), 0);
    }

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
