//! Outbound agent audio: the 20 ms frame ring, pacing under a lead cap, marks, and the
//! **playback ledger** of what the caller has actually heard.
//!
//! Every agent item's audio is queued in provider format and sent as exact frames while the
//! unconfirmed lead stays under `max_lead_ms`. A mark named `"{generation}:{seq}"` follows every
//! `mark_interval_ms` of audio, every item end, and every pause in sending, so each sent frame is
//! eventually confirmed. The provider echoes a mark once the audio before it has played
//! (telephony-media-streams reference §1.5); a `clear` bumps the generation so marks flushed by
//! it are recognised as stale instead of as played.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::pool::StringPool;

use crate::core::audio::AudioFormat;
use crate::core::audio::frames::FrameRing;

/// One agent audio item (one `item_id` of a response).
#[derive(Debug)]
pub struct ItemAudio {
    pub item_id: String,
    pub response_id: String,
    pub content_index: u32,
    /// Model audio received for the item (ms, in the model's format).
    pub received_ms: u64,
    /// Model audio received (bytes), to derive `received_ms` without rounding drift.
    pub received_bytes: usize,
    /// Real (unpadded) audio sent to the provider (ms).
    pub sent_ms: u64,
    /// Audio the provider confirmed played through marks (ms).
    pub played_ms: u64,
    /// `response.output_audio.done` arrived: no more audio will come for it.
    pub audio_done: bool,
    /// Truncated by a barge-in, or finished playing: no longer tracked.
    pub finished: bool,
    /// A frame of it has gone out (its turn has started).
    pub started: bool,
}

/// Bytes of one item waiting in the ring. Items are padded to whole frames at their end, so a
/// frame never holds two items.
#[derive(Debug)]
struct Queued {
    item: usize,
    real_bytes: usize,
    total_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct PendingMark {
    seq: u64,
    item: usize,
    item_sent_ms: u64,
    total_sent_ms: u64,
    item_last: bool,
}

/// What pacing produced for the provider, in order.
#[derive(Debug, PartialEq)]
pub enum Send {
    /// One exact 20 ms frame of provider-format audio, base64-encoded.
    Frame {
        /// Index into [`Playback::items`].
        item: usize,
        /// The item's first frame: its agent turn starts now.
        first_of_item: bool,
        /// The frame's audio, base64-encoded.
        payload_b64: String,
    },
    /// A mark to send right after the frames before it.
    Mark {
        /// `"{generation}:{seq}"`.
        name: String,
    },
}

/// What a mark echo meant.
#[derive(Debug, PartialEq)]
pub enum MarkOutcome {
    /// Confirmed played up to here; `finished` lists items that are now completely played.
    Played {
        /// Indexes into [`Playback::items`].
        finished: Vec<usize>,
    },
    /// From an earlier generation: flushed by a clear, not played.
    Stale,
    /// Not a mark we sent (or already confirmed).
    Unknown,
}

/// The outbound side of one call.
#[derive(Debug)]
pub struct Playback {
    format: AudioFormat,
    frame_ms: u64,
    max_lead_ms: u64,
    mark_interval_ms: u64,
    ring: FrameRing,
    queued: VecDeque<Queued>,
    /// Every agent audio item of the call, in arrival order; never shrinks, so indexes stay valid.
    pub items: Vec<ItemAudio>,
    marks: VecDeque<PendingMark>,
    generation: u32,
    next_seq: u64,
    sent_total_ms: u64,
    confirmed_total_ms: u64,
    since_mark_ms: u64,
    /// Scratch for the frame being sent, reused so pacing does not allocate per frame.
    frame: Vec<u8>,
}

impl Playback {
    /// `format` is the provider's; `max_buffered_ms` bounds the ring (oldest audio is dropped
    /// beyond it, and counted by the caller from [`Playback::push`]'s return value).
    pub fn new(format: AudioFormat, max_lead_ms: u32, mark_interval_ms: u32, max_buffered_ms: u32) -> Self {
        let frame_bytes = format.frame_bytes();
        Self {
            format,
            frame_ms: u64::from(crate::core::audio::FRAME_MS),
            max_lead_ms: u64::from(max_lead_ms),
            mark_interval_ms: u64::from(mark_interval_ms),
            ring: FrameRing::new(frame_bytes, format.bytes_for_ms(max_buffered_ms)),
            queued: VecDeque::new(),
            items: Vec::new(),
            marks: VecDeque::new(),
            generation: 0,
            next_seq: 0,
            sent_total_ms: 0,
            confirmed_total_ms: 0,
            since_mark_ms: 0,
            frame: Vec::with_capacity(frame_bytes),
        }
    }

    /// Index of the item, registering it (and closing the previous item's last frame) if new.
    pub fn item(&mut self, item_id: &str, response_id: &str, content_index: u32) -> usize {
        if let Some(i) = self.items.iter().rposition(|it| it.item_id == item_id) {
            return i;
        }
        self.pad_tail();
        self.items.push(ItemAudio {
            item_id: item_id.to_owned(),
            response_id: response_id.to_owned(),
            content_index,
            received_ms: 0,
            received_bytes: 0,
            sent_ms: 0,
            played_ms: 0,
            audio_done: false,
            finished: false,
            started: false,
        });
        self.items.len() - 1
    }

    /// Queues provider-format audio for `item`; `model_bytes` is how much model audio it came
    /// from and `model_format` its format. Returns bytes dropped by the ring's bound.
    pub fn push(
        &mut self,
        item: usize,
        audio: &[u8],
        model_bytes: usize,
        model_format: AudioFormat,
    ) -> usize {
        let Some(it) = self.items.get_mut(item) else { return audio.len() };
        it.received_bytes += model_bytes;
        it.received_ms = model_format.duration_ms(it.received_bytes);
        let dropped = self.ring.push(audio);
        match self.queued.back_mut() {
            Some(q) if q.item == item => {
                q.real_bytes += audio.len();
                q.total_bytes += audio.len();
            }
            _ => self.queued.push_back(Queued { item, real_bytes: audio.len(), total_bytes: audio.len() }),
        }
        self.forget_front(dropped);
        dropped
    }

    /// The model finished the item's audio: pad its last partial frame so it can go out, and
    /// make the item's last mark the one that closes it. Returns `true` when everything sent
    /// of it was already confirmed played, so it is finished now.
    pub fn audio_done(&mut self, item: usize) -> bool {
        let Some(it) = self.items.get_mut(item) else { return false };
        it.audio_done = true;
        self.pad_tail();
        let queued = self.queued.iter().any(|q| q.item == item);
        if queued || self.since_mark_ms > 0 {
            // Still to send, or sent but unmarked: pacing or `mark_now` closes it.
            return false;
        }
        if let Some(m) = self.marks.iter_mut().rev().find(|m| m.item == item) {
            m.item_last = true;
            return false;
        }
        let it = &mut self.items[item];
        if it.started && !it.finished {
            it.finished = true;
            return true;
        }
        false
    }

    /// Pads the ring's last partial frame with silence, so it can be sent.
    pub fn pad_tail(&mut self) {
        let fb = self.ring.frame_bytes();
        let partial = self.ring.len_bytes() % fb;
        if partial == 0 {
            return;
        }
        let pad = fb - partial;
        let silence = [self.format.silence_byte(); 64];
        let mut left = pad;
        while left > 0 {
            let n = left.min(silence.len());
            let dropped = self.ring.push(&silence[..n]);
            self.forget_front(dropped);
            left -= n;
        }
        if let Some(q) = self.queued.back_mut() {
            q.total_bytes += pad;
        }
    }

    /// Accounts for bytes the ring dropped from its front when over its bound.
    fn forget_front(&mut self, mut dropped: usize) {
        while dropped > 0 {
            let Some(q) = self.queued.front_mut() else { break };
            let n = dropped.min(q.total_bytes);
            q.total_bytes -= n;
            q.real_bytes = q.real_bytes.saturating_sub(n);
            dropped -= n;
            if q.total_bytes == 0 {
                self.queued.pop_front();
            }
        }
    }

    /// Unconfirmed agent audio at the provider (ms).
    pub fn lead_ms(&self) -> u64 {
        self.sent_total_ms - self.confirmed_total_ms
    }

    /// Audio is queued here or unconfirmed at the provider.
    pub fn is_playing(&self) -> bool {
        self.lead_ms() > 0 || !self.ring.is_empty()
    }

    /// Sends frames while the lead stays under the cap, with marks as described in the module
    /// docs, appending to `out`; payloads and mark names are written into strings from `pool`.
    pub fn pump(&mut self, out: &mut Vec<Send>, pool: &mut StringPool) {
        use base64::Engine as _;
        let fb = self.ring.frame_bytes();
        while self.lead_ms() + self.frame_ms <= self.max_lead_ms && self.ring.len_bytes() >= fb {
            let Some(q) = self.queued.front_mut() else { break };
            let item = q.item;
            let real = q.real_bytes.min(fb);
            q.real_bytes -= real;
            q.total_bytes = q.total_bytes.saturating_sub(fb);
            let drained = q.total_bytes == 0;
            if drained {
                self.queued.pop_front();
            }
            // The ring running dry mid-item is not the item's end: more audio may follow.
            let item_last = drained && self.items.get(item).is_some_and(|it| it.audio_done);
            self.frame.clear();
            if !self.ring.pop_frame(&mut self.frame) {
                break;
            }
            let it = &mut self.items[item];
            let first_of_item = !it.started;
            it.started = true;
            it.sent_ms += self.format.duration_ms(real);
            self.sent_total_ms += self.frame_ms;
            self.since_mark_ms += self.frame_ms;
            let mut payload_b64 = pool.take();
            base64::engine::general_purpose::STANDARD.encode_string(&self.frame, &mut payload_b64);
            out.push(Send::Frame { item, first_of_item, payload_b64 });
            if item_last || self.since_mark_ms >= self.mark_interval_ms {
                out.push(self.mark(item, item_last, pool));
            }
        }
        // Blocked by the cap with nothing left to confirm: mark what went out so it can be.
        let blocked = self.ring.len_bytes() >= fb;
        if blocked && self.marks.is_empty() && self.since_mark_ms > 0 {
            if let Some(item) = self.last_sent_item() {
                out.push(self.mark(item, false, pool));
            }
        }
    }

    /// Marks whatever went out since the last mark (end of an item or response: make it
    /// confirmable). The mark closes the item when its audio is done and nothing is queued.
    pub fn mark_now(&mut self, out: &mut Vec<Send>, pool: &mut StringPool) {
        if self.since_mark_ms > 0 {
            if let Some(item) = self.last_sent_item() {
                let last = self.items[item].audio_done && !self.queued.iter().any(|q| q.item == item);
                out.push(self.mark(item, last, pool));
            }
        }
    }

    fn last_sent_item(&self) -> Option<usize> {
        self.items.iter().rposition(|it| it.started)
    }

    fn mark(&mut self, item: usize, item_last: bool, pool: &mut StringPool) -> Send {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.since_mark_ms = 0;
        let item_sent_ms = self.items.get(item).map_or(0, |it| it.sent_ms);
        self.marks.push_back(PendingMark {
            seq,
            item,
            item_sent_ms,
            total_sent_ms: self.sent_total_ms,
            item_last,
        });
        let mut name = pool.take();
        let _ = write!(name, "{}:{}", self.generation, seq);
        Send::Mark { name }
    }

    /// A mark came back from the provider.
    pub fn mark_echoed(&mut self, name: &str) -> MarkOutcome {
        let Some((generation, seq)) = parse_mark(name) else { return MarkOutcome::Unknown };
        if generation != self.generation {
            return MarkOutcome::Stale;
        }
        if !self.marks.iter().any(|m| m.seq == seq) {
            return MarkOutcome::Unknown;
        }
        let mut finished = Vec::new();
        while let Some(m) = self.marks.front().copied() {
            if m.seq > seq {
                break;
            }
            self.marks.pop_front();
            self.confirmed_total_ms = self.confirmed_total_ms.max(m.total_sent_ms);
            if let Some(it) = self.items.get_mut(m.item) {
                it.played_ms = it.played_ms.max(m.item_sent_ms);
                if m.item_last && it.audio_done && !it.finished {
                    it.finished = true;
                    finished.push(m.item);
                }
            }
        }
        MarkOutcome::Played { finished }
    }

    /// Barge-in: forgets everything queued or unconfirmed and starts a new mark generation.
    /// Returns the items that were still playing (not finished), each now marked finished, with
    /// the audio confirmed played for each (ms, never more than was received).
    pub fn clear(&mut self) -> Vec<(usize, u64)> {
        let mut cut = Vec::new();
        for (i, it) in self.items.iter_mut().enumerate() {
            if !it.finished {
                it.finished = true;
                cut.push((i, it.played_ms.min(it.received_ms)));
            }
        }
        self.ring.clear();
        self.queued.clear();
        self.marks.clear();
        self.generation = self.generation.wrapping_add(1);
        self.confirmed_total_ms = self.sent_total_ms;
        self.since_mark_ms = 0;
        cut
    }
}

/// Parses `"{generation}:{seq}"`.
fn parse_mark(name: &str) -> Option<(u32, u64)> {
    let (g, s) = name.split_once(':')?;
    Some((g.parse().ok()?, s.parse().ok()?))
}
