//! Upstream resilience: the Realtime session is replaced, not the call.
//!
//! # When
//!
//! - **Lost**: the socket in place closed ([`Call::handle_upstream_closed`]) or the API sent a
//!   fatal error a new session can get past (`session_expired`, see
//!   [`ApiError::is_retryable`](crate::core::realtime::ApiError::is_retryable)).
//! - **Recycled**: the session nears the API's maximum length
//!   ([`CallParams::session_cap`](super::CallParams::session_cap); reference
//!   `openai-realtime.md` §1.5: 60 min on OpenAI, 30 min on Azure). From
//!   [`CallParams::recycle_window`](super::CallParams::recycle_window) before the cap the call
//!   waits for a quiet moment (no agent audio playing or owed, caller silent for
//!   [`CallParams::recycle_quiet`](super::CallParams::recycle_quiet), no caller transcription or
//!   tool outstanding); a quarter of the window before the cap it recycles anyway.
//!
//! # How
//!
//! A lost session is reconnected with [`Output::ConnectUpstream`]: the first attempt at once,
//! each later one after an exponential backoff ([`ReconnectPolicy`]); an attempt not answered
//! within [`ReconnectPolicy::attempt_timeout`] counts as failed (a new `ConnectUpstream`
//! replaces it). A recycle is *make-before-break*: `ConnectUpstream` goes out while the old
//! session keeps serving, and the switch happens when the new socket is in place (the shell
//! drops the old one when it installs the new). Either way, once
//! [`Call::handle_upstream_connected`] arrives:
//!
//! 1. `session.update` with the same configuration as the first session;
//! 2. the transcript so far as conversation items, in order (caller turns as `user` messages
//!    with `input_text`, agent turns as `assistant` messages with `output_text`), the most recent
//!    [`ReconnectPolicy::max_restore_chars`] of text; then a `function_call` item for every tool
//!    still running (so its later output has a call to answer), then tool outputs and key
//!    presses that came while no session was there;
//! 3. caller audio the new session has not heard, from a bounded history
//!    ([`ReconnectPolicy::hold_ms`]): what the caller said while disconnected, and, when the
//!    caller was in the middle of a turn nobody answered yet (and the server answers turns
//!    itself), that whole turn again, so the new session transcribes and answers it;
//! 4. `response.create` when the model owed an answer (it was mid-reply, or the caller's
//!    finished turn had no reply yet), after a short system note when a reply was cut
//!    ([`ReconnectPolicy::resume_note`]); not while the caller speaks.
//!
//! Agent audio already received keeps playing while the session is replaced, so the caller
//! hears a gap only when the buffered reply runs out before the new session speaks. The reply
//! that was cut counts as interrupted in the transcript, with the text received so far.
//!
//! # Giving up
//!
//! A non-retryable fatal error (key, account, model, a rejected `session.update`), a rejected
//! connect ([`ConnectFailure::Rejected`]) or [`ReconnectPolicy::max_attempts`] failed attempts
//! end the call politely: agent audio is cleared, a short built-in apology ([`Apology`]) plays
//! through the normal playback path (paced, marked), and once its last mark returns (or its
//! length plus [`CallParams::apology_grace`](super::CallParams::apology_grace) has passed)
//! [`Output::HangUp`] and [`Output::End`] follow.
//!
//! Every replacement is reported on [`Call::poll_upstream_event`] as
//! [`UpstreamEvent::Reconnecting`] with a bounded [`LossReason`] (the metric label).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Bridge, Call, CallEvent, DropReason, EndReason, Output, Phase, ProviderOut, later};
use crate::core::audio::AudioFormat;
use crate::core::audio::transcode::Transcoder;
use crate::core::realtime::{ClientEvent, ModelAudioFormat};

/// The built-in apology: G.711 μ-law, 8 kHz, mono, about 3.9 s, synthesized with espeak-ng
/// (`fixtures/speech/apology.ulaw`, made by `scripts/make-speech-fixtures.sh`). Embedded at
/// compile time, so playing it needs no IO.
pub const APOLOGY_ULAW: &[u8] = include_bytes!("../../../fixtures/speech/apology.ulaw");
/// What [`APOLOGY_ULAW`] says (it goes into the transcript as the agent's last turn).
pub const APOLOGY_TEXT: &str = "Sorry, something went wrong. Please call back later.";
/// Transcript and playback item id of the apology (never a Realtime item).
pub const APOLOGY_ITEM_ID: &str = "local_apology";
/// Playback response id of the apology.
const APOLOGY_RESPONSE_ID: &str = "local";

/// Default for [`ReconnectPolicy::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default for [`ReconnectPolicy::first_backoff`].
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Default for [`ReconnectPolicy::max_backoff`].
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Default for [`ReconnectPolicy::attempt_timeout`].
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default for [`ReconnectPolicy::hold_ms`].
pub const DEFAULT_HOLD_MS: u32 = 8_000;
/// Default for [`ReconnectPolicy::stable_after`].
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);
/// Default for [`ReconnectPolicy::max_restore_chars`].
pub const DEFAULT_MAX_RESTORE_CHARS: usize = 24_000;
/// Default for [`ReconnectPolicy::resume_note`].
pub const DEFAULT_RESUME_NOTE: &str = "(The phone line dropped for a moment while you were speaking, so the \
    caller may have missed the end of your last reply. Finish it briefly, without starting over.)";
/// OpenAI's maximum Realtime session length (reference §1.5); default for
/// [`CallParams::session_cap`](super::CallParams::session_cap).
pub const OPENAI_SESSION_CAP: Duration = Duration::from_secs(60 * 60);
/// Azure OpenAI's maximum Realtime session length (reference §2).
pub const AZURE_SESSION_CAP: Duration = Duration::from_secs(30 * 60);
/// Default for [`CallParams::recycle_window`](super::CallParams::recycle_window).
pub const DEFAULT_RECYCLE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// Default for [`CallParams::recycle_quiet`](super::CallParams::recycle_quiet).
pub const DEFAULT_RECYCLE_QUIET: Duration = Duration::from_millis(600);
/// Default for [`CallParams::apology_grace`](super::CallParams::apology_grace).
pub const DEFAULT_APOLOGY_GRACE: Duration = Duration::from_millis(1_500);
/// Caller audio from before the speech start that `speech_started` reports (its
/// `audio_start_ms`) that a replayed turn begins with (ms): the server VAD's
/// `prefix_padding_ms` (300 ms by default) plus a margin.
pub const REPLAY_LEAD_MS: u32 = 500;
/// [`UpstreamEvent`]s kept for [`Call::poll_upstream_event`]; older ones are dropped.
const EVENTS_KEPT: usize = 32;

/// How a lost session is reconnected.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Connect attempts per outage before giving up (apology, hang-up); default 5. `0` turns
    /// reconnecting off: a lost session ends the call.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further failure; default 100 ms.
    /// (The first attempt goes out at once.)
    pub first_backoff: Duration,
    /// Longest wait between attempts; default 2 s.
    pub max_backoff: Duration,
    /// An attempt with no [`Call::handle_upstream_connected`] within this has failed; default
    /// 3 s (a healthy TLS + WebSocket handshake takes well under a second).
    pub attempt_timeout: Duration,
    /// Caller audio kept for a new session (ms), provider format: what arrives while no session
    /// is there, and the caller's unanswered turn; default 8,000 (64 KB for μ-law, 384 KB for
    /// L16 24 kHz). Older audio is dropped and counted ([`DropReason::PendingOverflow`]).
    /// `0` keeps nothing.
    pub hold_ms: u32,
    /// Most transcript text (characters) replayed into a new session; older turns are left
    /// out. Default 24,000 (about 6,000 tokens of the 32k context, reference §1.5).
    pub max_restore_chars: usize,
    /// System note added before asking the model to go on with a reply the reconnect cut;
    /// `None` = no note.
    pub resume_note: Option<String>,
    /// A restored session lost again within this goes on with the previous outage's attempt
    /// count and backoff instead of starting over, so an upstream that keeps dropping (e.g. on
    /// every reply) ends in the apology after `max_attempts` instead of a reconnect loop;
    /// default 10 s.
    pub stable_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            first_backoff: DEFAULT_FIRST_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            hold_ms: DEFAULT_HOLD_MS,
            max_restore_chars: DEFAULT_MAX_RESTORE_CHARS,
            resume_note: Some(DEFAULT_RESUME_NOTE.to_owned()),
            stable_after: DEFAULT_STABLE_AFTER,
        }
    }
}

impl ReconnectPolicy {
    /// The wait after `failed` failed attempts (1-based): `first_backoff × 2^(failed − 1)`, at
    /// most `max_backoff`.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Local audio played before hanging up when the model cannot be reached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Apology {
    /// G.711 μ-law, 8 kHz, mono; transcoded for other provider formats.
    pub ulaw: &'static [u8],
    /// What it says, for the transcript.
    pub text: &'static str,
}

impl Apology {
    /// [`APOLOGY_ULAW`] / [`APOLOGY_TEXT`].
    pub const BUILTIN: Apology = Apology { ulaw: APOLOGY_ULAW, text: APOLOGY_TEXT };

    /// Length of the clip.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(AudioFormat::PCMU_8K.duration_ms(self.ulaw.len()))
    }
}

impl std::fmt::Debug for Apology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apology").field("ulaw_bytes", &self.ulaw.len()).field("text", &self.text).finish()
    }
}

/// Why a session is being replaced: the `reason` label of
/// `callbridge_upstream_reconnects_total` (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The socket closed or failed without a fatal error first.
    Closed,
    /// The API ended the session with `session_expired` (the cap came before a recycle).
    SessionExpired,
    /// Recycled before [`CallParams::session_cap`](super::CallParams::session_cap).
    SessionCap,
}

impl LossReason {
    /// Stable label: `closed`, `error_session_expired`, `session_cap`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::SessionExpired => "error_session_expired",
            Self::SessionCap => "session_cap",
        }
    }
}

/// How a connect attempt failed ([`Call::handle_upstream_connect_failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Network, TLS, timeout, 5xx: another attempt may work.
    Transient,
    /// The server refused us for good (HTTP 401/403/404 at the handshake: key, permission,
    /// model): no more attempts.
    Rejected,
}

/// A change of the Realtime link, for logs and metrics ([`Call::poll_upstream_event`]).
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    /// The session is being replaced: one per reconnect (count it by `reason`).
    Reconnecting {
        /// Why.
        reason: LossReason,
    },
    /// A connect attempt failed or timed out; another follows unless [`UpstreamEvent::GaveUp`]
    /// comes next.
    AttemptFailed {
        /// Which attempt (1-based).
        attempt: u32,
        /// No answer within [`ReconnectPolicy::attempt_timeout`].
        timed_out: bool,
    },
    /// The new session is configured and the conversation restored.
    Restored {
        /// Why it was replaced.
        reason: LossReason,
        /// Connect attempts it took.
        attempts: u32,
        /// From losing the old session to configuring the new one (ms); 0 for a recycle.
        outage_ms: u64,
        /// Conversation items sent to restore the context (turns, tool calls, outputs, note).
        restored_items: u32,
        /// Caller audio sent again or late to the new session (ms).
        replayed_ms: u64,
    },
    /// The model cannot be reached: the apology plays and the call hangs up.
    GaveUp {
        /// Connect attempts made (0 for a non-retryable error).
        attempts: u32,
    },
}

/// The Realtime link of a live call.
#[derive(Debug)]
pub(super) enum Link {
    /// A configured session, opened at `since`; `carried` connect attempts it took (they count
    /// against the next outage if it comes within [`ReconnectPolicy::stable_after`]).
    Up { since: Instant, recycle: Recycle, carried: u32 },
    /// No session: reconnecting.
    Down(Box<Outage>),
    /// The model is unreachable: the apology plays, then the call ends with `reason`.
    Failing { reason: EndReason, deadline: Instant, item: Option<usize> },
}

impl Link {
    pub(super) fn up(now: Instant) -> Self {
        Link::Up { since: now, recycle: Recycle::Idle, carried: 0 }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self, Link::Up { .. })
    }

    /// Sends a conversation event for the model: now while up, after the reconnect while down,
    /// never once giving up.
    pub(super) fn send(&mut self, out: &mut VecDeque<Output>, ev: ClientEvent) {
        match self {
            Link::Up { .. } => out.push_back(Output::Realtime(ev)),
            Link::Down(o) => o.deferred.push(ev),
            Link::Failing { .. } => {}
        }
    }
}

/// Recycling of a session that is still up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recycle {
    /// Not started.
    Idle,
    /// `ConnectUpstream` went out; the old session serves until the new one is in place.
    Connecting { attempts: u32, deadline: Instant },
    /// An attempt failed; the next one goes out at `until`.
    Backoff { attempts: u32, until: Instant },
    /// Every attempt failed: the session runs until the API ends it (then it is lost).
    Off,
}

/// A session lost and not yet replaced.
#[derive(Debug)]
pub(super) struct Outage {
    reason: LossReason,
    since: Instant,
    /// Connect attempts made.
    attempts: u32,
    step: Step,
    resume: Resume,
    /// Tool outputs and key presses for the model that came while no session was there.
    deferred: Vec<ClientEvent>,
    /// The old socket may still be open (the session was given up after an `error`): its close
    /// is still to come and is not a failed attempt.
    old_socket_open: bool,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Backoff { until: Instant },
    Connecting { deadline: Instant },
}

/// What the next session needs to pick up where the old one stopped.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// Caller audio from this history position (bytes) on goes to the new session.
    from: u64,
    /// The model owed an answer: `response.create` after restoring.
    answer: bool,
    /// A reply was cut: the resume note goes before that `response.create`.
    note: bool,
    /// Tool calls still running (as `function_call` items).
    calls: Vec<ClientEvent>,
    /// Agent items left out of the restored conversation: a reply cut while the caller's turn
    /// it answered is replayed (the new session answers that turn afresh).
    skip: Vec<String>,
}

/// Caller audio kept while a session is up and no caller turn may have to be replayed (ms):
/// `speech_started` points back into it ([`REPLAY_LEAD_MS`] before the VAD's
/// `audio_start_ms`, which trails the event by the VAD's padding and detection time).
pub(super) const LIVE_TAIL_MS: u32 = 1_500;

/// The caller's recent audio in provider format, so a new session can hear what the old one
/// did not: a byte ring of at most `cap` bytes plus the stream position of its end.
///
/// The ring grows with what is needed (first to the tail, then doubling up to `cap`, so
/// recording allocates a few times per call, not per frame): while the session is up only
/// [`LIVE_TAIL_MS`] and an open caller turn are kept ([`keep_from`](Self::keep_from)), so a
/// call costs 12 KB here for μ-law rather than the whole `hold_ms` (64 KB) it may need during
/// an outage.
#[derive(Debug)]
pub(super) struct CallerHistory {
    ring: VecDeque<u8>,
    cap: usize,
    /// [`LIVE_TAIL_MS`] in bytes (at most `cap`).
    tail: usize,
    /// Sample size (1 for G.711, 2 for L16), so dropping from the front keeps samples whole.
    align: usize,
    /// Bytes recorded since the stream started; the ring holds `[end − len, end)`.
    end: u64,
}

impl CallerHistory {
    /// Keeps up to `hold_ms` of `format`.
    pub(super) fn new(format: AudioFormat, hold_ms: u32) -> Self {
        let cap = format.bytes_for_ms(hold_ms);
        let tail = format.bytes_for_ms(LIVE_TAIL_MS).min(cap);
        Self { ring: VecDeque::new(), cap, tail, align: format.bytes_per_sample().max(1), end: 0 }
    }

    /// Drops what lies before stream position `from`, keeping at least the last
    /// [`LIVE_TAIL_MS`] (whole samples).
    pub(super) fn keep_from(&mut self, from: u64) {
        let from = from.min(self.end.saturating_sub(self.tail as u64));
        let drop = usize::try_from(from.saturating_sub(self.start())).unwrap_or(usize::MAX);
        let drop = drop / self.align * self.align;
        self.ring.drain(..drop.min(self.ring.len()));
    }

    /// Gives back the memory a long turn or an outage took, once only the tail is kept.
    pub(super) fn shrink(&mut self) {
        if self.ring.capacity() > 2 * self.tail && self.ring.len() <= self.tail {
            self.ring.shrink_to(self.tail);
        }
    }

    /// Records caller audio (the oldest is dropped beyond the bound).
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        if self.cap == 0 {
            return;
        }
        let bytes = if bytes.len() > self.cap { &bytes[bytes.len() - self.cap..] } else { bytes };
        let over = (self.ring.len() + bytes.len()).saturating_sub(self.cap);
        if over > 0 {
            let drop = over.div_ceil(self.align) * self.align;
            self.ring.drain(..drop.min(self.ring.len()));
        }
        let needed = self.ring.len() + bytes.len();
        if needed > self.ring.capacity() {
            let grown = match self.ring.capacity() {
                0 => self.tail + 2 * bytes.len(),
                c => c * 2,
            };
            self.ring.reserve_exact(grown.min(self.cap).max(needed) - self.ring.len());
        }
        self.ring.extend(bytes.iter().copied());
    }

    /// Stream position of the oldest byte kept.
    pub(super) fn start(&self) -> u64 {
        self.end - self.ring.len() as u64
    }

    /// Stream position after the newest byte.
    pub(super) fn end(&self) -> u64 {
        self.end
    }

    /// The kept audio from stream position `from` (clamped to what is kept) to the end.
    fn since(&mut self, from: u64) -> &[u8] {
        let skip = usize::try_from(from.saturating_sub(self.start())).unwrap_or(usize::MAX);
        let all = self.ring.make_contiguous();
        &all[skip.min(all.len())..]
    }
}

/// What a timer or input asks of the link (decided under a borrow, carried out after it).
enum Due {
    Attempt,
    AttemptFailed { timed_out: bool },
    StartRecycle,
    RecycleFailed,
    FinishApology,
}

impl Call {
    /// Queues an upstream event (the oldest is dropped beyond [`EVENTS_KEPT`]).
    fn upstream_event(&mut self, e: UpstreamEvent) {
        if self.upstream_events.len() == EVENTS_KEPT {
            self.upstream_events.pop_front();
        }
        self.upstream_events.push_back(e);
    }

    /// The next change of the Realtime link, or `None`. Drain it after [`Call::poll_output`];
    /// count [`UpstreamEvent::Reconnecting`] by reason
    /// (`callbridge_upstream_reconnects_total{reason}`). At most 32 are kept.
    pub fn poll_upstream_event(&mut self) -> Option<UpstreamEvent> {
        self.upstream_events.pop_front()
    }

    /// Sessions replaced so far (each [`UpstreamEvent::Reconnecting`]).
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// A connect attempt ([`Output::ConnectUpstream`]) failed. Before the first session this
    /// ends the call ([`EndReason::UpstreamConnectFailed`]); while reconnecting the next
    /// attempt follows after the backoff, or the call gives up; while recycling, the old session
    /// keeps serving and the recycle is retried.
    pub fn handle_upstream_connect_failed(&mut self, now: Instant, failure: ConnectFailure) {
        match &self.phase {
            Phase::Connecting { .. } => self.end(now, EndReason::UpstreamConnectFailed),
            Phase::Live { link: Link::Up { recycle: Recycle::Connecting { .. }, .. }, .. } => {
                self.recycle_failed(now, failure == ConnectFailure::Rejected, false);
            }
            Phase::Live { link: Link::Down(o), .. } if matches!(o.step, Step::Connecting { .. }) => {
                self.attempt_failed(now, failure == ConnectFailure::Rejected, false);
            }
            _ => {}
        }
        self.service(now);
    }

    /// The socket in place is gone (closed, or a retryable fatal error): keep the call, replace
    /// the session. A recycle connect already in flight counts as the first attempt.
    pub(super) fn upstream_lost(&mut self, now: Instant, reason: LossReason) {
        let stable_after = self.params.reconnect.stable_after;
        let Phase::Live { link, .. } = &self.phase else { return };
        let Link::Up { since, recycle, carried } = link else { return };
        let (in_flight, announced) = match *recycle {
            Recycle::Connecting { attempts, deadline } => (Some((attempts, deadline)), true),
            Recycle::Backoff { .. } => (None, true),
            Recycle::Idle | Recycle::Off => (None, false),
        };
        // Lost again soon after a reconnect: the earlier attempts still count.
        let carried = if now < later(*since, stable_after) { *carried } else { 0 };
        let (held_ms, deferred) = self.take_queued_model_events();
        let Some(mut resume) = self.detach(now) else { return };
        if let Some(b) = self.bridge() {
            // Appends queued but never written go again too.
            let back = b.provider_format.bytes_for_ms(u32::try_from(held_ms).unwrap_or(u32::MAX)) as u64;
            resume.from = resume.from.min(b.history.end().saturating_sub(back));
        }
        let backoff = self.params.reconnect.backoff(carried);
        let (attempts, step) = match in_flight {
            Some((attempts, deadline)) => (attempts, Step::Connecting { deadline }),
            None if carried == 0 => (0, Step::Backoff { until: now }),
            None => (carried, Step::Backoff { until: later(now, backoff) }),
        };
        let old_socket_open = reason != LossReason::Closed;
        let outage = Outage { reason, since: now, attempts, step, resume, deferred, old_socket_open };
        if let Phase::Live { link, .. } = &mut self.phase {
            *link = Link::Down(Box::new(outage));
        }
        if !announced {
            self.reconnects += 1;
            self.upstream_event(UpstreamEvent::Reconnecting { reason });
        }
        let max = self.params.reconnect.max_attempts;
        if in_flight.is_none() && (carried == 0 || carried >= max) {
            self.next_attempt(now);
        }
    }

    /// Moves Realtime events still queued for the old socket out of the output queue (the shell
    /// reports a failed write while draining it): appends are dropped (the history has their
    /// audio; returns their length in ms), tool outputs and key presses are kept for the next
    /// session, and everything tied to the old session (truncates, cancels, `response.create`)
    /// is dropped.
    fn take_queued_model_events(&mut self) -> (u64, Vec<ClientEvent>) {
        let mut deferred = Vec::new();
        if !self.out.iter().any(|o| matches!(o, Output::Realtime(_))) {
            return (0, deferred);
        }
        let model_format = self.bridge().map_or(AudioFormat::PCMU_8K, |b| b.model_format);
        let mut held_ms = 0;
        let mut kept = VecDeque::with_capacity(self.out.len());
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }) => {
                    held_ms += model_format.duration_ms(audio_b64.len() / 4 * 3);
                    self.pool.put(audio_b64);
                }
                Output::Realtime(
                    ev @ (ClientEvent::FunctionCallOutput { .. }
                    | ClientEvent::UserText { .. }
                    | ClientEvent::FunctionCall { .. }),
                ) => deferred.push(ev),
                Output::Realtime(_) => {}
                other => kept.push_back(other),
            }
        }
        self.out = kept;
        (held_ms, deferred)
    }

    /// Closes the books on the session in place (live and up): the reply in flight is cut (its
    /// audio plays out, its turn counts as interrupted), caller turns whose transcription will
    /// never come are settled, per-session response state is reset, and what the next session
    /// needs is returned.
    fn detach(&mut self, now: Instant) -> Option<Resume> {
        let at = self.ms_since_start(now);
        let server_turns = self.server_creates_responses();
        let replay_on = self.params.reconnect.hold_ms > 0;
        let has_note = self.params.reconnect.resume_note.is_some();
        let Self { phase, transcript, .. } = self;
        let Phase::Live { bridge: b, link: Link::Up { .. } } = phase else { return None };
        let b: &mut Bridge = b;

        // The reply in flight: no more audio will come for it.
        let mut cut_reply = false;
        let mut cut_ids = Vec::new();
        for i in b.old_items..b.playback.items.len() {
            let it = &b.playback.items[i];
            if it.audio_done || it.finished {
                continue;
            }
            cut_reply |= !b.gate.is_aside(&it.response_id);
            cut_ids.push(it.item_id.clone());
            if let Some(t) = b.transcoder.as_mut() {
                b.scratch.clear();
                t.flush_to_provider(&mut b.scratch);
                let model_format = b.model_format;
                b.playback.push(i, &b.scratch, 0, model_format);
            }
            b.playback.audio_done(i);
        }
        for id in &cut_ids {
            transcript.agent_finished(id, at, true);
        }

        let unanswered = b.awaiting_first_audio.is_some();
        let turn_pending = b.caller_item.as_deref().is_some_and(|id| transcript.is_pending_caller(id));
        // The caller's latest turn is heard again when the new session would otherwise miss
        // it: they are speaking, or their finished turn was never transcribed and nothing of
        // the answer has finished (the reply to it, if any, was just cut: it starts afresh).
        let replay = server_turns
            && replay_on
            && b.turn_from.is_some()
            && (b.caller_speaking || (turn_pending && (unanswered || cut_reply)));
        let answer = !replay && b.tools.running() == 0 && (cut_reply || b.gate.answering() || unanswered);
        let skip = if replay { cut_ids.clone() } else { Vec::new() };
        let from = match (replay, b.turn_from) {
            (true, Some(from)) => from,
            _ => b.history.end(),
        };
        if replay {
            if let Some(id) = &b.caller_item {
                // The new session transcribes the turn again, under a new item id.
                transcript.forget_pending_caller(id);
            }
        }
        // Transcriptions still owed by the old session will not come.
        transcript.settle_pending_callers();

        let calls = b.tools.running_calls();
        b.gate.new_session();
        b.active_response = None;
        b.awaiting_first_audio = None;
        b.caller_speaking = false;
        b.caller_item = None;
        b.turn_from = None;
        b.old_items = b.playback.items.len();
        let note = answer && cut_reply && has_note;
        self.pump_and_mark(now);
        self.emit_final_turns();
        Some(Resume { from, answer, note, calls, skip })
    }

    /// The shell reported a close while reconnecting: the old socket's late close (once, after
    /// an error-triggered loss), or the connect attempt in flight failed. A close while waiting
    /// out a backoff is ignored.
    pub(super) fn closed_while_down(&mut self, now: Instant) {
        let Phase::Live { link: Link::Down(o), .. } = &mut self.phase else { return };
        if std::mem::take(&mut o.old_socket_open) {
            return;
        }
        if matches!(o.step, Step::Connecting { .. }) {
            self.attempt_failed(now, false, false);
        }
    }

    /// Sends the next connect attempt, or gives up when none is left.
    fn next_attempt(&mut self, now: Instant) {
        let max = self.params.reconnect.max_attempts;
        let timeout = self.params.reconnect.attempt_timeout;
        let Phase::Live { link: Link::Down(o), .. } = &mut self.phase else { return };
        if o.attempts >= max {
            let reason = match (o.attempts, o.reason) {
                (0, LossReason::SessionExpired) => {
                    EndReason::UpstreamError { code: "session_expired".to_owned() }
                }
                (0, _) => EndReason::UpstreamClosed,
                _ => EndReason::UpstreamConnectFailed,
            };
            self.give_up(now, reason);
            return;
        }
        o.attempts += 1;
        o.step = Step::Connecting { deadline: later(now, timeout) };
        self.out.push_back(Output::ConnectUpstream);
    }

    /// The attempt in flight failed: back off, or give up.
    fn attempt_failed(&mut self, now: Instant, rejected: bool, timed_out: bool) {
        let policy = &self.params.reconnect;
        let Phase::Live { link: Link::Down(o), .. } = &mut self.phase else { return };
        let attempt = o.attempts;
        let last = rejected || attempt >= policy.max_attempts;
        o.step = Step::Backoff { until: later(now, policy.backoff(attempt)) };
        self.upstream_event(UpstreamEvent::AttemptFailed { attempt, timed_out });
        if last {
            self.give_up(now, EndReason::UpstreamConnectFailed);
        }
    }

    /// A recycle attempt failed: the old session still serves; retry after the backoff, or
    /// stop recycling.
    fn recycle_failed(&mut self, now: Instant, rejected: bool, timed_out: bool) {
        let policy = &self.params.reconnect;
        let Phase::Live { link: Link::Up { recycle, .. }, .. } = &mut self.phase else { return };
        let Recycle::Connecting { attempts, .. } = *recycle else { return };
        *recycle = if rejected || attempts >= policy.max_attempts {
            Recycle::Off
        } else {
            Recycle::Backoff { attempts, until: later(now, policy.backoff(attempts)) }
        };
        self.upstream_event(UpstreamEvent::AttemptFailed { attempt: attempts, timed_out });
    }

    /// A new socket is in place while live: configure it and restore the conversation.
    pub(super) fn restore(&mut self, now: Instant) {
        let Phase::Live { link, .. } = &self.phase else { return };
        let (reason, attempts, since, resume, deferred) = match link {
            Link::Failing { .. } => return,
            Link::Up { recycle, .. } => {
                // The switch of a recycle (or a socket we did not ask for: configure it anyway).
                let (reason, attempts) = match *recycle {
                    Recycle::Connecting { attempts, .. } | Recycle::Backoff { attempts, .. } => {
                        (LossReason::SessionCap, attempts)
                    }
                    Recycle::Idle | Recycle::Off => (LossReason::Closed, 1),
                };
                let announced = matches!(recycle, Recycle::Connecting { .. } | Recycle::Backoff { .. });
                let (_, deferred) = self.take_queued_model_events();
                let Some(resume) = self.detach(now) else { return };
                if !announced {
                    self.reconnects += 1;
                    self.upstream_event(UpstreamEvent::Reconnecting { reason });
                }
                (reason, attempts, now, resume, deferred)
            }
            Link::Down(_) => {
                let Phase::Live { link, .. } = &mut self.phase else { return };
                let Link::Down(o) = std::mem::replace(link, Link::up(now)) else { return };
                let Outage { reason, since, attempts, resume, deferred, .. } = *o;
                (reason, attempts, since, resume, deferred)
            }
        };
        // A recycle took no outage: the new session carries no attempts.
        let carried = if reason == LossReason::SessionCap && since == now { 0 } else { attempts };
        let (restored_items, replayed_ms) = {
            let Self { phase, out, params, transcript, pool, .. } = self;
            let Phase::Live { bridge: b, link } = phase else { return };
            *link = Link::Up { since: now, recycle: Recycle::Idle, carried };
            let mut session = params.session.clone();
            if let Some(f) = ModelAudioFormat::from_audio_format(b.model_format) {
                session.input_format = f;
                session.output_format = f;
            }
            out.push_back(Output::Realtime(ClientEvent::SessionUpdate(Box::new(session))));
            let mut items: Vec<ClientEvent> = Vec::new();
            let mut chars = 0;
            for t in transcript.turns().into_iter().rev() {
                if t.text.is_empty() || resume.skip.contains(&t.item_id) {
                    continue;
                }
                chars += t.text.chars().count();
                if chars > params.reconnect.max_restore_chars {
                    break;
                }
                items.push(match t.role {
                    super::Role::Caller => ClientEvent::UserText { text: t.text },
                    super::Role::Agent => ClientEvent::AssistantText { text: t.text },
                });
            }
            items.reverse();
            items.extend(resume.calls);
            items.extend(deferred);
            if resume.note {
                if let Some(note) = &params.reconnect.resume_note {
                    items.push(ClientEvent::SystemText { text: note.clone() });
                }
            }
            let restored_items = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.extend(items.into_iter().map(Output::Realtime));

            // Caller audio the new session has not heard.
            let start = b.history.start();
            let lost = start.saturating_sub(resume.from);
            let from = resume.from.max(start);
            b.session_base = from;
            let Bridge { history, transcoder, scratch, provider_format, .. } = &mut **b;
            let fb = provider_format.frame_bytes().max(1);
            let audio = history.since(from);
            let replayed_ms = provider_format.duration_ms(audio.len());
            for chunk in audio.chunks(fb) {
                let audio_b64 = super::encode_for_model(transcoder, scratch, chunk, pool);
                out.push_back(Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }));
            }
            if lost > 0 {
                let frames = lost.div_ceil(fb as u64);
                out.push_back(Output::Event(CallEvent::Dropped {
                    reason: DropReason::PendingOverflow,
                    count: frames,
                }));
            }
            if resume.answer {
                b.gate.owe(None);
            }
            (restored_items, replayed_ms)
        };
        let outage_ms = if reason == LossReason::SessionCap && since == now {
            0
        } else {
            u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
        };
        self.upstream_event(UpstreamEvent::Restored {
            reason,
            attempts,
            outage_ms,
            restored_items,
            replayed_ms,
        });
        self.event(CallEvent::UpstreamReady);
    }

    /// The model cannot be reached: clear the agent's audio, play the apology, then hang up
    /// and end with `reason` (at once when there is no apology or it cannot be played).
    pub(super) fn give_up(&mut self, now: Instant, reason: EndReason) {
        let at = self.ms_since_start(now);
        let attempts = match &self.phase {
            Phase::Live { link: Link::Down(o), .. } => o.attempts,
            Phase::Live { link: Link::Up { .. }, .. } => 0,
            _ => return,
        };
        self.upstream_event(UpstreamEvent::GaveUp { attempts });
        self.cancel_all_tools(now);
        let apology = self.params.apology;
        let grace = self.params.apology_grace;
        let Self { phase, out, transcript, .. } = self;
        let Phase::Live { bridge: b, link } = phase else { return };
        // The apology is not an answer: no first-audio latency for it.
        b.awaiting_first_audio = None;
        let playing = b.playback.is_playing() || b.playback.items.iter().any(|it| !it.finished);
        if playing {
            out.push_back(Output::Provider(ProviderOut::Clear));
            for (i, _) in b.playback.clear() {
                transcript.agent_finished(&b.playback.items[i].item_id, at, true);
            }
            if let Some(t) = b.transcoder.as_mut() {
                t.reset_to_provider();
            }
        }
        let clip = apology.and_then(|a| Some((a, provider_audio(a.ulaw, b.provider_format)?)));
        match clip {
            Some((a, audio)) => {
                let item = b.playback.item(APOLOGY_ITEM_ID, APOLOGY_RESPONSE_ID, 0);
                let dropped = b.playback.push(item, &audio, audio.len(), b.provider_format);
                if dropped > 0 {
                    // Only with an outbound buffer shorter than the clip (`max_buffered_ms`).
                    let frames = dropped.div_ceil(b.provider_format.frame_bytes().max(1)) as u64;
                    out.push_back(Output::Event(CallEvent::Dropped {
                        reason: DropReason::OutboundOverflow,
                        count: frames,
                    }));
                }
                b.playback.audio_done(item);
                transcript.agent_text(APOLOGY_ITEM_ID, a.text, at);
                let deadline = later(now, a.duration().saturating_add(grace));
                *link = Link::Failing { reason, deadline, item: Some(item) };
                self.pump_and_mark(now);
                self.emit_final_turns();
            }
            None => {
                *link = Link::Failing { reason, deadline: now, item: None };
                self.emit_final_turns();
                self.finish_apology(now);
            }
        }
    }

    /// The apology played (or its time is up): hang up and end.
    pub(super) fn finish_apology(&mut self, now: Instant) {
        let Phase::Live { link: Link::Failing { reason, .. }, .. } = &self.phase else { return };
        let reason = reason.clone();
        self.out.push_back(Output::HangUp);
        self.end(now, reason);
    }

    /// `finished` playback items include the apology: the call can hang up.
    pub(super) fn apology_played(&self, finished: &[usize]) -> bool {
        matches!(&self.phase, Phase::Live { link: Link::Failing { item: Some(i), .. }, .. } if finished.contains(i))
    }

    /// Link timers and recycling; part of [`Call::service`].
    pub(super) fn service_link(&mut self, now: Instant) {
        let due = match &self.phase {
            Phase::Live { bridge, link } => match link {
                Link::Down(o) => match o.step {
                    Step::Backoff { until } if now >= until => Some(Due::Attempt),
                    Step::Connecting { deadline } if now >= deadline => {
                        Some(Due::AttemptFailed { timed_out: true })
                    }
                    _ => None,
                },
                Link::Failing { deadline, .. } if now >= *deadline => Some(Due::FinishApology),
                Link::Failing { .. } => None,
                Link::Up { since, recycle, .. } => match *recycle {
                    Recycle::Idle => self
                        .recycle_at(bridge, *since)
                        .is_some_and(|at| now >= at)
                        .then_some(Due::StartRecycle),
                    Recycle::Backoff { until, .. } if now >= until => Some(Due::StartRecycle),
                    Recycle::Connecting { deadline, .. } if now >= deadline => Some(Due::RecycleFailed),
                    Recycle::Backoff { .. } | Recycle::Connecting { .. } | Recycle::Off => None,
                },
            },
            _ => None,
        };
        match due {
            None => {}
            Some(Due::Attempt) => self.next_attempt(now),
            Some(Due::AttemptFailed { timed_out }) => self.attempt_failed(now, false, timed_out),
            Some(Due::FinishApology) => self.finish_apology(now),
            Some(Due::RecycleFailed) => self.recycle_failed(now, false, true),
            Some(Due::StartRecycle) => {
                let timeout = self.params.reconnect.attempt_timeout;
                let Phase::Live { link: Link::Up { recycle, .. }, .. } = &mut self.phase else { return };
                let (attempts, first) = match *recycle {
                    Recycle::Backoff { attempts, .. } => (attempts + 1, false),
                    _ => (1, true),
                };
                *recycle = Recycle::Connecting { attempts, deadline: later(now, timeout) };
                self.out.push_back(Output::ConnectUpstream);
                if first {
                    self.reconnects += 1;
                    self.upstream_event(UpstreamEvent::Reconnecting { reason: LossReason::SessionCap });
                }
            }
        }
    }

    /// When an idle recycle is due for a session opened at `since`: the forced time, or
    /// earlier once the call is quiet. Mirrors [`Call::service_link`] exactly, so a returned
    /// time is always acted on.
    fn recycle_at(&self, b: &Bridge, since: Instant) -> Option<Instant> {
        let cap = self.params.session_cap?;
        let window = self.params.recycle_window.min(cap / 2);
        let quiet_from = later(since, cap - window);
        let force_at = later(since, cap - window / 4);
        let quiet = b.idle_since.filter(|_| {
            self.transcript.pending_caller_text() == 0 && b.tools.idle() && b.dtmf.deadline().is_none()
        });
        Some(match quiet {
            Some(idle) => force_at.min(quiet_from.max(later(idle, self.params.recycle_quiet))),
            None => force_at,
        })
    }

    /// The link's next deadline, if any (part of [`Call::poll_timeout`]).
    pub(super) fn link_deadline(&self) -> Option<Instant> {
        let Phase::Live { bridge, link } = &self.phase else { return None };
        match link {
            Link::Down(o) => Some(match o.step {
                Step::Backoff { until } => until,
                Step::Connecting { deadline } => deadline,
            }),
            Link::Failing { deadline, .. } => Some(*deadline),
            Link::Up { since, recycle, .. } => match *recycle {
                Recycle::Idle => self.recycle_at(bridge, *since),
                Recycle::Backoff { until, .. } => Some(until),
                Recycle::Connecting { deadline, .. } => Some(deadline),
                Recycle::Off => None,
            },
        }
    }
}

/// The apology in the provider's format (`None` when it cannot be converted).
fn provider_audio(ulaw: &[u8], provider: AudioFormat) -> Option<Vec<u8>> {
    if provider == AudioFormat::PCMU_8K {
        return Some(ulaw.to_vec());
    }
    // The transcoder's "model" side is the clip's format here: model → provider.
    let mut t = Transcoder::new(provider, AudioFormat::PCMU_8K).ok()?;
    let mut out = Vec::with_capacity(t.max_to_provider_bytes(ulaw.len()) + t.max_to_provider_bytes(0));
    t.to_provider(ulaw, &mut out);
    t.flush_to_provider(&mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = ReconnectPolicy::default();
        let ms = |n| p.backoff(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)], [100, 200, 400, 800, 1600, 2000]);
        assert_eq!(p.backoff(u32::MAX), p.max_backoff);
    }

    #[test]
    fn history_keeps_the_newest_audio_and_its_position() {
        let mut h = CallerHistory::new(AudioFormat::PCMU_8K, 10);
        h.push(&[1; 50]);
        h.push(&[2; 50]);
        assert_eq!((h.start(), h.end()), (20, 100));
        assert_eq!(h.since(0).len(), 80);
        assert_eq!(h.since(90), &[2; 10]);
        h.push(&[3; 200]);
        assert_eq!((h.start(), h.end()), (220, 300));
        assert!(h.since(0).iter().all(|&b| b == 3));
        let mut off = CallerHistory::new(AudioFormat::PCMU_8K, 0);
        off.push(&[1; 160]);
        assert_eq!((off.start(), off.end()), (160, 160));
    }

    #[test]
    fn a_live_history_keeps_the_tail_or_the_open_turn() {
        let tail = AudioFormat::PCMU_8K.bytes_for_ms(LIVE_TAIL_MS) as u64;
        let mut h = CallerHistory::new(AudioFormat::PCMU_8K, 8_000);
        for _ in 0..400 {
            h.push(&[7; 160]);
            h.keep_from(u64::MAX);
        }
        assert_eq!((h.start(), h.end()), (64_000 - tail, 64_000));
        // A turn that opened 3 s back stays whole, beyond the tail.
        let turn = h.end() - tail;
        for _ in 0..150 {
            h.push(&[7; 160]);
            h.keep_from(turn);
        }
        assert_eq!(h.start(), turn);
        let grown = h.ring.capacity();
        h.keep_from(u64::MAX);
        h.shrink();
        assert_eq!(h.end() - h.start(), tail);
        assert!(h.ring.capacity() < grown, "{} < {grown}", h.ring.capacity());
        // A turn longer than the hold: the ring stops growing at the bound.
        for _ in 0..600 {
            h.push(&[7; 160]);
            h.keep_from(0);
        }
        assert_eq!((h.end() - h.start(), h.ring.capacity()), (64_000, 64_000));
        // L16: whole samples only.
        let mut l16 = CallerHistory::new(AudioFormat::PCM16_24K, 8_000);
        l16.push(&[0; 200_000]);
        l16.keep_from(100_001);
        assert_eq!(l16.start(), 100_000, "the drop is a whole number of samples");
    }

    #[test]
    fn l16_history_drops_whole_samples() {
        let l16 = AudioFormat::PCM16_24K;
        let mut h = CallerHistory::new(l16, 1);
        h.push(&[0; 47]);
        h.push(&[0; 3]);
        assert_eq!(h.start() % 2, 0);
    }

    #[test]
    fn the_apology_converts_to_every_provider_format() {
        let a = Apology::BUILTIN;
        assert!(a.duration() > Duration::from_secs(2) && a.duration() < Duration::from_secs(5));
        for f in [AudioFormat::PCMU_8K, AudioFormat::PCMA_8K, AudioFormat::PCM16_24K] {
            let audio = provider_audio(a.ulaw, f).unwrap();
            let ms = f.duration_ms(audio.len()) as i64;
            assert!((ms - a.duration().as_millis() as i64).abs() < 30, "{f:?}: {ms} ms");
        }
    }
}
