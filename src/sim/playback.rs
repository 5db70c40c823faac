//! The provider's outbound playback queue, as Twilio documents it (reference §1.4–1.5):
//! audio plays in arrival order; a `mark` is echoed once everything queued before it has
//! played (at once if nothing is queued); `clear` drops the queue and echoes every pending mark.

use std::collections::VecDeque;

/// Queued outbound audio (bytes in the stream's format) and the marks placed in it.
#[derive(Debug, Default)]
pub(crate) struct PlaybackQueue {
    audio: VecDeque<u8>,
    /// Bytes ever queued; a mark's position is this value when it arrived.
    queued_total: u64,
    /// Bytes ever played or dropped.
    consumed_total: u64,
    /// Pending marks with their positions, in arrival (and so position) order.
    marks: VecDeque<(String, u64)>,
}

impl PlaybackQueue {
    /// Bytes waiting to play.
    pub(crate) fn len(&self) -> usize {
        self.audio.len()
    }

    /// Whether no audio is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.audio.is_empty()
    }

    /// Appends received audio.
    pub(crate) fn push_audio(&mut self, bytes: &[u8]) {
        self.audio.extend(bytes);
        self.queued_total += bytes.len() as u64;
    }

    /// Places a mark at the end of the queue. Returns it back if it is due at once (nothing
    /// queued before it).
    pub(crate) fn push_mark(&mut self, name: String) -> Option<String> {
        if self.audio.is_empty() && self.marks.is_empty() {
            return Some(name);
        }
        self.marks.push_back((name, self.queued_total));
        None
    }

    /// Plays up to `max` bytes (rounded down to a multiple of `align`) into `out` and appends
    /// the marks that are now due to `due`. Returns the bytes played.
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
        self.consumed_total += n as u64;
        while self.marks.front().is_some_and(|(_, at)| *at <= self.consumed_total) {
            if let Some((name, _)) = self.marks.pop_front() {
                due.push(name);
            }
        }
        n
    }

    /// Drops all queued audio; returns the bytes dropped and appends every pending mark to
    /// `flushed`.
    pub(crate) fn clear(&mut self, flushed: &mut Vec<String>) -> usize {
        let dropped = self.audio.len();
        self.audio.clear();
        self.consumed_total = self.queued_total;
        flushed.extend(self.marks.drain(..).map(|(name, _)| name));
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
}
