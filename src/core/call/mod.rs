//! The call state machine: one phone call bridged to one Realtime session, sans-IO.
//!
//! Feed it with `handle_*` (decoded provider events, decoded Realtime events, upstream
//! connect/close, timeouts), always passing the current time; then drain [`Call::poll_output`]
//! until it returns `None` and sleep until [`Call::poll_timeout`]. It never reads a clock or
//! touches a socket, so tests drive it on a virtual clock.
//!
//! Phases: `AwaitingStart → Connecting → Live → Draining → Ended`; the end reason goes out
//! once, as [`Output::End`]. While live, the Realtime session can be replaced without ending the
//! call (lost socket, session cap) or, when the model cannot be reached, the call apologizes and
//! hangs up: see [`reconnect`].
//!
//! Tools the model calls and caller key presses are handled in [`tools`] and `dtmf.rs`; every
//! `response.create` the call sends itself goes through `gate.rs` (one response at a time).

mod dtmf;
mod gate;
mod playback;
mod pool;
pub mod reconnect;
pub mod tools;
mod transcript;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::core::audio::AudioFormat;
use crate::core::audio::transcode::Transcoder;
use crate::core::realtime::{ApiError, ClientEvent, ModelAudioFormat, ServerEvent, SessionConfig, Usage};
use crate::core::telephony::{Media, ProviderEvent, StreamStart, Track};

pub use playback::{MarkOutcome, Playback, Send};
pub use pool::StringPool;
pub use reconnect::{Apology, ConnectFailure, LossReason, ReconnectPolicy, UpstreamEvent};
pub use tools::{BuiltinCall, CancelReason, RejectReason, ToolRequest, ToolResult, builtin_tools};
pub use transcript::{Role, Transcript, Turn};

/// Default for [`CallParams::max_lead_ms`].
pub const DEFAULT_MAX_LEAD_MS: u32 = 300;
/// Default for [`CallParams::mark_interval_ms`].
pub const DEFAULT_MARK_INTERVAL_MS: u32 = 100;
/// Default for [`CallParams::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`CallParams::upstream_connect_timeout`].
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`CallParams::tool_timeout`].
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`CallParams::filler_delay`].
pub const DEFAULT_FILLER_DELAY: Duration = Duration::from_millis(1_500);
/// Default for [`CallParams::filler_instructions`].
pub const DEFAULT_FILLER_INSTRUCTIONS: &str = "In one short sentence, in the language of the conversation, \
    tell the caller you are looking into it and it will take a moment. Do not answer the question yet.";
/// Default for [`CallParams::action_playout_cap`].
pub const DEFAULT_ACTION_PLAYOUT_CAP: Duration = Duration::from_secs(10);
/// Default for [`CallParams::dtmf_gap`].
pub const DEFAULT_DTMF_GAP: Duration = Duration::from_millis(1_500);

/// Per-call settings.
#[derive(Debug, Clone)]
pub struct CallParams {
    /// Session template: instructions, voice, turn detection, transcription. The audio formats
    /// are chosen per call from the provider's `mediaFormat`.
    pub session: SessionConfig,
    /// Always convert to PCM 24 kHz, even when the model could take the provider's format.
    pub force_transcode: bool,
    /// Most unconfirmed agent audio at the provider (ms); default 300.
    pub max_lead_ms: u32,
    /// Agent audio between marks (ms); default 100.
    pub mark_interval_ms: u32,
    /// Agent audio buffered here at most (ms); beyond it the oldest is dropped and counted.
    pub max_buffered_ms: u32,
    /// Longest gap in caller audio filled with silence (ms); longer gaps are filled up to this.
    pub max_gap_fill_ms: u32,
    /// Caller audio held while the upstream connects (ms); older audio is dropped and counted.
    pub max_pending_ms: u32,
    /// No valid `start` within this closes the stream.
    pub start_timeout: Duration,
    /// Upstream not connected within this ends the call.
    pub upstream_connect_timeout: Duration,
    /// After the caller leaves, wait this long at most for outstanding caller transcriptions.
    pub transcript_linger: Duration,
    /// A tool still running after this is cancelled and the model told it timed out; default
    /// 20 s. The shell may give single tools a shorter limit of its own.
    pub tool_timeout: Duration,
    /// Silence while a tool runs before a short spoken filler ("one moment"); default 1.5 s;
    /// `None` = no fillers.
    pub filler_delay: Option<Duration>,
    /// The filler's per-response instructions (an out-of-band `response.create`).
    pub filler_instructions: String,
    /// Hang-up, transfer and sent keys wait for the agent's audio to play out, at most this long
    /// after the tool result; default 10 s.
    pub action_playout_cap: Duration,
    /// Caller key presses are sent to the model as one message once no key came for this long
    /// (or at `#`); default 1.5 s.
    pub dtmf_gap: Duration,
    /// How a lost Realtime session is reconnected mid-call ([`reconnect`]); defaults: 5
    /// attempts, backoff 100 ms doubling to 2 s, 3 s per attempt, 8 s of caller audio held.
    pub reconnect: ReconnectPolicy,
    /// The Realtime API's maximum session length: a session is recycled (replaced at a quiet
    /// moment, the conversation carried over) before it is reached. Default 60 min
    /// ([`reconnect::OPENAI_SESSION_CAP`]); use [`reconnect::AZURE_SESSION_CAP`] (30 min) for
    /// Azure (reference `openai-realtime.md` §1.5, §2). `None` never recycles.
    pub session_cap: Option<Duration>,
    /// How long before [`CallParams::session_cap`] recycling starts to wait for a quiet moment
    /// (at most half the cap); a quarter of it before the cap it recycles even if the call is
    /// busy. Default 2 min.
    pub recycle_window: Duration,
    /// Agent and caller both quiet (no agent audio playing or owed, caller not speaking) for
    /// this long makes a quiet moment to recycle at; default 600 ms.
    pub recycle_quiet: Duration,
    /// Played before hanging up when the model cannot be reached; default the built-in
    /// [`Apology::BUILTIN`]. `None` hangs up at once.
    pub apology: Option<Apology>,
    /// The apology's last mark may come back this long after the clip's length before the
    /// call hangs up anyway; default 1.5 s.
    pub apology_grace: Duration,
}

impl CallParams {
    /// Defaults around `session`: passthrough, 300 ms lead, marks every 100 ms.
    pub fn new(session: SessionConfig) -> Self {
        Self {
            session,
            force_transcode: false,
            max_lead_ms: DEFAULT_MAX_LEAD_MS,
            mark_interval_ms: DEFAULT_MARK_INTERVAL_MS,
            max_buffered_ms: 180_000,
            max_gap_fill_ms: 1_000,
            max_pending_ms: 5_000,
            start_timeout: DEFAULT_START_TIMEOUT,
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            transcript_linger: Duration::from_millis(1_500),
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            filler_delay: Some(DEFAULT_FILLER_DELAY),
            filler_instructions: DEFAULT_FILLER_INSTRUCTIONS.to_owned(),
            action_playout_cap: DEFAULT_ACTION_PLAYOUT_CAP,
            dtmf_gap: DEFAULT_DTMF_GAP,
            reconnect: ReconnectPolicy::default(),
            session_cap: Some(reconnect::OPENAI_SESSION_CAP),
            recycle_window: reconnect::DEFAULT_RECYCLE_WINDOW,
            recycle_quiet: reconnect::DEFAULT_RECYCLE_QUIET,
            apology: Some(Apology::BUILTIN),
            apology_grace: reconnect::DEFAULT_APOLOGY_GRACE,
        }
    }
}

/// Why a call ended (also the `reason` label of `callbridge_calls_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The provider sent `stop` (call over).
    ProviderStop,
    /// The provider's socket closed without `stop`.
    CallerHangup,
    /// The Realtime socket closed.
    UpstreamClosed,
    /// The Realtime API sent a fatal `error` (its code is kept for the log).
    UpstreamError {
        /// `error.code`, or `error.type` when the error has no code.
        code: String,
    },
    /// The Realtime socket could not be opened in time.
    UpstreamConnectFailed,
    /// No valid `start` within the start timeout.
    StartTimeout,
    /// The stream's format cannot be bridged.
    UnsupportedFormat,
    /// The provider broke the protocol beyond skipping a frame (e.g. an oversize message).
    ProviderError,
    /// The server shut down before the call finished.
    Shutdown,
    /// The stream's token was missing, forged, expired or replayed (no upstream was opened).
    Unauthorized,
    /// The agent hung up (`end_call`, [`Output::HangUp`]).
    AgentHangup,
    /// The call was transferred ([`Output::Transfer`]) and the stream then ended.
    Transferred,
}

impl EndReason {
    /// Stable label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::ProviderStop => "provider_stop",
            EndReason::CallerHangup => "caller_hangup",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::UpstreamError { .. } => "upstream_error",
            EndReason::UpstreamConnectFailed => "upstream_connect_failed",
            EndReason::StartTimeout => "start_timeout",
            EndReason::UnsupportedFormat => "unsupported_format",
            EndReason::ProviderError => "provider_error",
            EndReason::Shutdown => "shutdown",
            EndReason::Unauthorized => "unauthorized",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::Transferred => "transferred",
        }
    }
}

/// Things dropped on purpose, each counted with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Caller media older than what was already forwarded (reordered or duplicated).
    LateMedia,
    /// Media that arrived before `start`.
    MediaBeforeStart,
    /// Caller audio held during connect beyond `max_pending_ms`, or older than
    /// [`ReconnectPolicy::hold_ms`] when a new session takes over (counted in 20 ms frames).
    PendingOverflow,
    /// Agent audio beyond `max_buffered_ms`.
    OutboundOverflow,
    /// Agent audio for a response or item already cancelled by a barge-in.
    CancelledAudio,
    /// A mark echoed after a `clear` (flushed, not played).
    StaleMark,
    /// A mark name we never sent.
    UnknownMark,
    /// A second `start`, or provider events after the call ended.
    OutOfOrder,
    /// A tool result for a call that was cancelled, already answered, or never made.
    StaleToolResult,
    /// A function call whose `call_id` was already seen.
    DuplicateToolCall,
    /// A function call from a response the caller had already interrupted (not run).
    CancelledToolCall,
}

impl DropReason {
    /// Stable label for metrics (`reason` of `callbridge_dropped_total`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::LateMedia => "late_media",
            DropReason::MediaBeforeStart => "media_before_start",
            DropReason::PendingOverflow => "pending_overflow",
            DropReason::OutboundOverflow => "outbound_overflow",
            DropReason::CancelledAudio => "cancelled_audio",
            DropReason::StaleMark => "stale_mark",
            DropReason::UnknownMark => "unknown_mark",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::StaleToolResult => "stale_tool_result",
            DropReason::DuplicateToolCall => "duplicate_tool_call",
            DropReason::CancelledToolCall => "cancelled_tool_call",
        }
    }
}

/// A command for the provider's socket. The stream is [`Call::stream_sid`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOut {
    /// One 20 ms frame of agent audio, base64 in the provider's format.
    Media {
        /// The frame's audio, base64-encoded.
        payload_b64: String,
    },
    /// A playback mark, echoed by the provider once the audio before it has played.
    Mark {
        /// `"{generation}:{seq}"`, matched by [`Playback`] when it comes back.
        name: String,
    },
    /// Flush the provider's buffered, unplayed agent audio (barge-in).
    Clear,
}

/// Something worth a log line, a metric or a record.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// A valid `start` arrived; the upstream is being opened.
    Started {
        /// `start.callSid`: `CA…` on Twilio, a UUID on SignalWire.
        call_sid: String,
        /// `start.streamSid`: `MZ…` on Twilio, a UUID on SignalWire.
        stream_sid: String,
        /// The stream's audio (`start.mediaFormat`).
        provider_format: AudioFormat,
        /// The audio format asked of the model, both directions.
        model_format: AudioFormat,
        /// Payloads are forwarded without decoding (the two formats are equal).
        passthrough: bool,
        /// `start.customParameters`, verbatim; may hold personal data.
        custom_parameters: BTreeMap<String, String>,
    },
    /// The session was configured and buffered caller audio flushed.
    UpstreamReady,
    /// The model's VAD heard the caller start speaking (`input_audio_buffer.speech_started`).
    SpeechStarted {
        /// The caller's conversation item.
        item_id: String,
    },
    /// The model's VAD heard the caller stop speaking (`input_audio_buffer.speech_stopped`).
    SpeechStopped {
        /// The caller's conversation item.
        item_id: String,
    },
    /// First agent frame after the caller stopped speaking.
    FirstAudio {
        /// From handling `speech_stopped` to queueing that frame for the provider.
        latency: Duration,
    },
    /// The caller talked over the agent: `clear` (if audio was playing), truncates, cancel.
    BargeIn {
        /// Each agent item cut short: its id and the ms of it heard (the `audio_end_ms` of its
        /// truncate; a filler's item is out of the conversation and not truncated).
        truncated: Vec<(String, u64)>,
        /// A `clear` went to the provider (agent audio was playing or queued).
        cleared: bool,
        /// The response cancelled with `response.cancel`, if one was in progress.
        cancelled_response: Option<String>,
    },
    /// A turn became final.
    Turn(Turn),
    /// Something dropped on purpose.
    Dropped {
        /// Why; its [`DropReason::as_str`] is the metric label.
        reason: DropReason,
        /// How many: 20 ms frames for [`DropReason::OutboundOverflow`], messages otherwise.
        count: u64,
    },
    /// Silence inserted for a gap in caller audio (ms).
    GapFilled {
        /// Length of the inserted silence (ms), at most [`CallParams::max_gap_fill_ms`].
        ms: u64,
    },
    /// An `error` event from the Realtime API.
    UpstreamError {
        /// The event's `error` object.
        error: ApiError,
        /// Nothing more can succeed on the session: the call ends.
        fatal: bool,
    },
    /// A caller key press.
    Dtmf {
        /// `dtmf.digit`: `0`-`9`, `*`, `#` or `A`-`D`.
        digit: char,
    },
    /// `response.done` arrived (its token usage is added to [`Call::usage`]).
    ResponseDone {
        /// `response.id`.
        response_id: String,
        /// `response.status`: `completed`, `cancelled`, `failed`, `incomplete`, `in_progress`
        /// or `other` for an unknown one.
        status: &'static str,
    },
    /// A tool call went to the shell ([`Output::Tool`]). Exactly one
    /// [`CallEvent::ToolFinished`] or [`CallEvent::ToolCancelled`] follows.
    ToolCalled {
        /// The function call's `call_id`.
        call_id: String,
        /// A tool the session declared (a bounded set: fit for a metric label).
        name: String,
    },
    /// A tool call was answered with an error without running (see [`RejectReason`]).
    ToolRejected {
        /// The function call's `call_id`.
        call_id: String,
        /// The name the model used, at most 64 characters; **not** a declared tool when the reason
        /// is [`RejectReason::UnknownTool`], so never a metric label then.
        name: String,
        /// Why.
        reason: RejectReason,
    },
    /// A tool call finished: its result went to the model, or its call action was carried out
    /// (a transfer counts as finished when the stream ends after it).
    ToolFinished {
        /// The function call's `call_id`.
        call_id: String,
        /// The declared tool name.
        name: String,
        /// `false` for [`ToolResult::Err`] (including a failed transfer) or an invalid
        /// transfer target or digits.
        ok: bool,
        /// From [`CallEvent::ToolCalled`] to now (ms).
        ms: u64,
    },
    /// A tool call was cancelled ([`Output::CancelTool`] went out if it was still running).
    ToolCancelled {
        /// The function call's `call_id`.
        call_id: String,
        /// The declared tool name.
        name: String,
        /// Why.
        reason: CancelReason,
        /// From [`CallEvent::ToolCalled`] to now (ms).
        ms: u64,
    },
    /// A spoken filler was requested while a tool ran (out-of-band `response.create`).
    FillerSpoken {
        /// The tool call whose wait it covers (it covers every tool running at that moment).
        call_id: String,
    },
    /// Keys the model asked for were handed to the shell ([`Output::SendDtmf`]).
    DtmfSent {
        /// The keys: `0-9`, `*`, `#`, `w`. May be personal data (e.g. an account number).
        digits: String,
    },
}

/// What the shell must do next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this to the provider's socket.
    Provider(ProviderOut),
    /// Write this client event to the Realtime socket.
    Realtime(ClientEvent),
    /// Open a Realtime socket, then call [`Call::handle_upstream_connected`], or on failure
    /// [`Call::handle_upstream_connect_failed`] ([`Call::handle_upstream_closed`] works too, less
    /// precisely). While a session is up (a recycle) the old socket keeps being served until the
    /// new one is installed; installing it replaces (closes) the old one. A new
    /// `ConnectUpstream` while one is still in flight replaces that attempt.
    ConnectUpstream,
    /// Log, count or record this; nothing to write.
    Event(CallEvent),
    /// Run this tool as a task (never in the audio loop), then call
    /// [`Call::handle_tool_result`] with its `call_id`.
    Tool(ToolRequest),
    /// Abort the task of this tool call; its result is no longer wanted (a late one is dropped).
    CancelTool {
        /// The function call's `call_id` from [`ToolRequest`].
        call_id: String,
    },
    /// Hang the call up through the provider's REST API (`Status=completed`). The agent's audio
    /// (or the apology, when the model could not be reached) has played out; [`Output::End`]
    /// follows with [`EndReason::AgentHangup`] (or the upstream reason).
    HangUp,
    /// Transfer the call: redirect it through the provider's REST API to `<Dial>` the target
    /// (which ends this stream with `stop`). On failure, report it with
    /// [`Call::handle_tool_result`] and [`ToolResult::Err`].
    Transfer {
        /// The `transfer_call` tool call.
        call_id: String,
        /// An E.164 number or `sip:` URI, accepted by
        /// [`twiml::dial`](crate::core::telephony::twiml::dial).
        target: String,
    },
    /// Press these keys on the call (SignalWire: a `dtmf` message on the stream; Twilio: a REST
    /// redirect to `<Play digits>`). The model is already told they were sent.
    SendDtmf {
        /// `0-9`, `*`, `#`, `w` (0.5 s pause), at most [`tools::MAX_SEND_DIGITS`].
        digits: String,
    },
    /// The call is over: close both sockets. Emitted once.
    End(EndReason),
}

/// Phase of the call. Each variant holds only what is valid in it.
#[derive(Debug)]
enum Phase {
    AwaitingStart { deadline: Instant },
    Connecting { bridge: Box<Bridge>, deadline: Instant, pending: VecDeque<String>, pending_ms: u64 },
    Live { bridge: Box<Bridge>, link: reconnect::Link },
    Draining { bridge: Box<Bridge>, deadline: Instant, reason: EndReason },
    Ended,
}

/// Everything a started call has: both formats, inbound and outbound audio state.
#[derive(Debug)]
struct Bridge {
    stream_sid: String,
    provider_format: AudioFormat,
    model_format: AudioFormat,
    /// `None` in passthrough.
    transcoder: Option<Transcoder>,
    /// Next expected caller media timestamp (ms since stream start).
    next_ts: Option<u64>,
    scratch: Vec<u8>,
    playback: Playback,
    active_response: Option<String>,
    /// Responses cancelled by barge-in, so their late audio is dropped (last few only).
    cancelled: VecDeque<String>,
    /// When the caller last stopped speaking, until the first agent frame goes out.
    awaiting_first_audio: Option<Instant>,
    sends: Vec<Send>,
    /// Which responses are active or requested; `response.create`s owed.
    gate: gate::ResponseGate,
    /// Tool calls in flight and recently finished.
    tools: tools::Tools,
    /// Caller key presses not yet sent to the model.
    dtmf: dtmf::DtmfBatch,
    /// Between the caller's `speech_started` and `speech_stopped`.
    caller_speaking: bool,
    /// Since when the agent's audio has played out (see `tools.rs`), for fillers and recycling.
    idle_since: Option<Instant>,
    /// The caller's recent audio, for a new session ([`reconnect`]).
    history: reconnect::CallerHistory,
    /// History position where the caller's latest turn began (a little before the speech start
    /// its `speech_started` reports).
    turn_from: Option<u64>,
    /// History position of the first caller audio the current session was sent (its input
    /// audio's 0 ms, which `speech_started.audio_start_ms` counts from).
    session_base: u64,
    /// The caller's latest turn (item of the last `speech_started`).
    caller_item: Option<String>,
    /// Playback items before this index came from an earlier session (never truncated).
    old_items: usize,
}

/// One call.
#[derive(Debug)]
pub struct Call {
    params: CallParams,
    created: Instant,
    phase: Phase,
    out: VecDeque<Output>,
    transcript: Transcript,
    usage: Usage,
    pool: StringPool,
    /// Link changes for [`Call::poll_upstream_event`].
    upstream_events: VecDeque<UpstreamEvent>,
    /// Sessions replaced so far.
    reconnects: u32,
}

const CANCELLED_KEPT: usize = 8;

impl Call {
    /// A new call whose provider socket just opened at `now`.
    pub fn new(now: Instant, params: CallParams) -> Self {
        let deadline = later(now, params.start_timeout);
        Self {
            params,
            created: now,
            phase: Phase::AwaitingStart { deadline },
            out: VecDeque::new(),
            transcript: Transcript::default(),
            usage: Usage::default(),
            pool: StringPool::default(),
            upstream_events: VecDeque::new(),
            reconnects: 0,
        }
    }

    /// Hands back a string from an output (a media payload, a mark name, an append's audio)
    /// once it has been encoded, so the next frame reuses it instead of allocating.
    pub fn recycle(&mut self, s: String) {
        self.pool.put(s);
    }

    /// The provider's stream id, once started.
    pub fn stream_sid(&self) -> Option<&str> {
        self.bridge().map(|b| b.stream_sid.as_str())
    }

    /// Phase name for logs: `awaiting_start`, `connecting`, `live`, `draining`, `ended`.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::AwaitingStart { .. } => "awaiting_start",
            Phase::Connecting { .. } => "connecting",
            Phase::Live { .. } => "live",
            Phase::Draining { .. } => "draining",
            Phase::Ended => "ended",
        }
    }

    /// Per-call session changes (an outbound call's own instructions or voice). They apply to
    /// the `session.update` sent when the upstream connects, so call this before that (on the
    /// `Started` event); later calls change nothing already sent.
    pub fn set_session_overrides(&mut self, instructions: Option<String>, voice: Option<String>) {
        if let Some(i) = instructions {
            self.params.session.instructions = i;
        }
        if let Some(v) = voice {
            self.params.session.voice = v;
        }
    }

    /// State of the Realtime link for logs: `up`, `reconnecting`, `apologizing` (live), else
    /// `none`.
    pub fn upstream_state(&self) -> &'static str {
        match &self.phase {
            Phase::Live { link: reconnect::Link::Up { .. }, .. } => "up",
            Phase::Live { link: reconnect::Link::Down(_), .. } => "reconnecting",
            Phase::Live { link: reconnect::Link::Failing { .. }, .. } => "apologizing",
            _ => "none",
        }
    }

    /// All turns so far, ordered by speech start.
    pub fn transcript(&self) -> Vec<Turn> {
        self.transcript.turns()
    }

    /// Token usage summed over `response.done` events.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The next output, or `None` when there is nothing to do until the next input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Call::handle_timeout`] must be called next, if ever: the phase's deadline, or
    /// (while live) a tool timeout, a filler, a key-press batch, a call action cap, a reconnect
    /// backoff or attempt, a session recycle, or the end of the apology.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.phase_deadline(), self.tools_deadline(), self.link_deadline()].into_iter().flatten().min()
    }

    fn phase_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AwaitingStart { deadline } => Some(*deadline),
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Draining { deadline, .. } => Some(*deadline),
            Phase::Live { .. } | Phase::Ended => None,
        }
    }

    fn bridge(&self) -> Option<&Bridge> {
        match &self.phase {
            Phase::Connecting { bridge, .. }
            | Phase::Live { bridge, .. }
            | Phase::Draining { bridge, .. } => Some(bridge),
            Phase::AwaitingStart { .. } | Phase::Ended => None,
        }
    }

    fn ms_since_start(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_millis() as u64
    }

    fn event(&mut self, e: CallEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn dropped(&mut self, reason: DropReason, count: u64) {
        self.event(CallEvent::Dropped { reason, count });
    }

    // ---------------------------------------------------------------- inputs: provider

    /// A decoded provider message.
    pub fn handle_provider(&mut self, now: Instant, ev: ProviderEvent<'_>) {
        match ev {
            ProviderEvent::Connected { .. } | ProviderEvent::Unknown { .. } => {}
            ProviderEvent::Start(start) => self.on_start(now, *start),
            ProviderEvent::Media(m) => self.on_media(m),
            ProviderEvent::Mark { name } => {
                self.on_mark(now, &name);
                self.service(now);
            }
            ProviderEvent::Dtmf { digit, .. } => self.on_dtmf(now, digit),
            ProviderEvent::Stop => self.begin_end(now, EndReason::ProviderStop),
        }
    }

    /// The provider's socket closed (without `stop`, unless one came before).
    pub fn handle_provider_closed(&mut self, now: Instant) {
        self.begin_end(now, EndReason::CallerHangup);
    }

    /// The provider's socket broke the protocol so that it must be closed (e.g. oversize).
    pub fn handle_provider_error(&mut self, now: Instant) {
        self.begin_end(now, EndReason::ProviderError);
    }

    /// A caller key press: recorded, and batched for the model (not once the caller is gone).
    fn on_dtmf(&mut self, now: Instant, digit: char) {
        let gap = self.params.dtmf_gap;
        match &mut self.phase {
            Phase::Connecting { bridge, .. } | Phase::Live { bridge, .. } => {
                bridge.dtmf.push(digit, now, gap)
            }
            Phase::Draining { .. } => {}
            Phase::AwaitingStart { .. } | Phase::Ended => return,
        }
        self.event(CallEvent::Dtmf { digit });
        self.service(now);
    }

    fn on_start(&mut self, now: Instant, s: StreamStart) {
        if !matches!(self.phase, Phase::AwaitingStart { .. }) {
            self.dropped(DropReason::OutOfOrder, 1);
            return;
        }
        let provider_format = s.media_format;
        let model_format = model_format_for(provider_format, self.params.force_transcode);
        let transcoder = if model_format == provider_format {
            None
        } else {
            match Transcoder::new(provider_format, model_format) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.end(now, EndReason::UnsupportedFormat);
                    return;
                }
            }
        };
        self.event(CallEvent::Started {
            call_sid: s.call_sid,
            stream_sid: s.stream_sid.clone(),
            provider_format,
            model_format,
            passthrough: transcoder.is_none(),
            custom_parameters: s.custom_parameters,
        });
        let p = &self.params;
        let bridge = Box::new(Bridge {
            stream_sid: s.stream_sid,
            provider_format,
            model_format,
            transcoder,
            next_ts: None,
            // Grows on first use: only transcoding and gap filling need it.
            scratch: Vec::new(),
            playback: Playback::new(provider_format, p.max_lead_ms, p.mark_interval_ms, p.max_buffered_ms),
            active_response: None,
            cancelled: VecDeque::with_capacity(CANCELLED_KEPT),
            awaiting_first_audio: None,
            sends: Vec::with_capacity(32),
            gate: gate::ResponseGate::default(),
            tools: tools::Tools::default(),
            dtmf: dtmf::DtmfBatch::default(),
            caller_speaking: false,
            idle_since: None,
            history: reconnect::CallerHistory::new(provider_format, p.reconnect.hold_ms),
            turn_from: None,
            session_base: 0,
            caller_item: None,
            old_items: 0,
        });
        let deadline = later(now, self.params.upstream_connect_timeout);
        self.phase = Phase::Connecting { bridge, deadline, pending: VecDeque::new(), pending_ms: 0 };
        self.out.push_back(Output::ConnectUpstream);
    }

    fn on_media(&mut self, m: Media<'_>) {
        if m.track == Track::Outbound {
            return;
        }
        let max_gap = u64::from(self.params.max_gap_fill_ms);
        let max_pending = u64::from(self.params.max_pending_ms);
        let Self { phase, out, pool, .. } = self;
        // `held`: no session is there (reconnecting); the audio only goes into the history,
        // from which the next session gets it.
        let (bridge, mut pending, held) = match phase {
            Phase::Live { bridge, link: reconnect::Link::Up { .. } } | Phase::Draining { bridge, .. } => {
                (bridge, None, false)
            }
            Phase::Live { bridge, link: reconnect::Link::Down(_) } => (bridge, None, true),
            // The call is hanging up: nobody listens.
            Phase::Live { link: reconnect::Link::Failing { .. }, .. } => return,
            Phase::Connecting { bridge, pending, pending_ms, .. } => {
                (bridge, Some((pending, pending_ms)), false)
            }
            Phase::AwaitingStart { .. } => {
                self.dropped(DropReason::MediaBeforeStart, 1);
                return;
            }
            Phase::Ended => return,
        };
        let session_up = pending.is_none() && !held;
        let fmt = bridge.provider_format;
        let dur = fmt.duration_ms(m.audio.len());
        let mut deliver = |audio_b64: String, ms: u64, out: &mut VecDeque<Output>| match &mut pending {
            None => out.push_back(Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 })),
            Some((pending, pending_ms)) => {
                pending.push_back(audio_b64);
                **pending_ms += ms.max(1);
            }
        };
        let mut gap_filled = None;
        if let Some(expected) = bridge.next_ts {
            if m.timestamp_ms.saturating_add(dur) <= expected {
                out.push_back(Output::Event(CallEvent::Dropped { reason: DropReason::LateMedia, count: 1 }));
                return;
            }
            if m.timestamp_ms > expected {
                let gap = (m.timestamp_ms - expected).min(max_gap);
                let silence = vec![fmt.silence_byte(); fmt.bytes_for_ms(gap as u32)];
                bridge.history.push(&silence);
                if !held {
                    deliver(bridge.model_b64(&silence, pool), gap, out);
                }
                gap_filled = Some(gap);
            }
        }
        bridge.next_ts = Some(bridge.next_ts.unwrap_or(0).max(m.timestamp_ms.saturating_add(dur)));
        bridge.history.push(m.audio);
        if session_up {
            // A session is there: only an open turn and a short tail may be needed again.
            bridge.history.keep_from(bridge.turn_from.unwrap_or(u64::MAX));
        }
        if held {
            if let Some(ms) = gap_filled {
                out.push_back(Output::Event(CallEvent::GapFilled { ms }));
            }
            return;
        }
        let audio_b64 = match bridge.transcoder {
            // Passthrough: the provider's base64 goes to the model untouched.
            None => {
                let mut s = pool.take();
                s.push_str(&m.payload_b64);
                s
            }
            Some(_) => bridge.model_b64(m.audio, pool),
        };
        deliver(audio_b64, dur, out);
        if let Some(ms) = gap_filled {
            out.push_back(Output::Event(CallEvent::GapFilled { ms }));
        }
        if let Some((pending, pending_ms)) = pending {
            let mut dropped = 0;
            while *pending_ms > max_pending && pending.len() > 1 {
                if let Some(s) = pending.pop_front() {
                    pool.put(s);
                }
                *pending_ms = pending_ms.saturating_sub(u64::from(crate::core::audio::FRAME_MS));
                dropped += 1;
            }
            if dropped > 0 {
                out.push_back(Output::Event(CallEvent::Dropped {
                    reason: DropReason::PendingOverflow,
                    count: dropped,
                }));
            }
        }
    }

    fn on_mark(&mut self, now: Instant, name: &str) {
        let at = self.ms_since_start(now);
        let Some(bridge) = self.bridge_mut() else { return };
        let outcome = bridge.playback.mark_echoed(name);
        match outcome {
            MarkOutcome::Played { finished } => {
                let ids: Vec<String> = finished
                    .iter()
                    .filter_map(|&i| bridge.playback.items.get(i))
                    .map(|it| it.item_id.clone())
                    .collect();
                for id in ids {
                    self.transcript.agent_finished(&id, at, false);
                }
                self.pump(now);
                self.emit_final_turns();
                if self.apology_played(&finished) {
                    self.finish_apology(now);
                }
            }
            MarkOutcome::Stale => self.dropped(DropReason::StaleMark, 1),
            MarkOutcome::Unknown => self.dropped(DropReason::UnknownMark, 1),
        }
    }

    // ---------------------------------------------------------------- inputs: upstream

    /// A Realtime socket is open: configure the session and flush held caller audio. While
    /// live (a reconnect or a recycle), configure the new session and restore the conversation
    /// ([`reconnect`]).
    pub fn handle_upstream_connected(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Live { .. }) {
            self.restore(now);
            self.service(now);
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Ended);
        let Phase::Connecting { mut bridge, pending, pending_ms, .. } = phase else {
            self.phase = phase;
            return;
        };
        let mut session = self.params.session.clone();
        if let Some(f) = ModelAudioFormat::from_audio_format(bridge.model_format) {
            session.input_format = f;
            session.output_format = f;
        }
        self.out.push_back(Output::Realtime(ClientEvent::SessionUpdate(Box::new(session))));
        for audio_b64 in pending {
            self.out.push_back(Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }));
        }
        let held = bridge.provider_format.bytes_for_ms(u32::try_from(pending_ms).unwrap_or(u32::MAX)) as u64;
        bridge.session_base = bridge.history.end().saturating_sub(held);
        self.phase = Phase::Live { bridge, link: reconnect::Link::up(now) };
        self.event(CallEvent::UpstreamReady);
        // Key presses that came while connecting.
        self.service(now);
    }

    /// The Realtime socket closed (or, from a shell that does not tell them apart, a connect
    /// attempt failed). Before the first session it ends the call; while live the session is
    /// replaced ([`reconnect`]) and the call goes on: the socket in place was lost, or the
    /// reconnect attempt in flight failed. The first close after a session was given up because
    /// of an `error` is that socket's own, and a close while waiting to retry is ignored.
    pub fn handle_upstream_closed(&mut self, now: Instant) {
        use reconnect::Link;
        let reason = match &self.phase {
            Phase::Connecting { .. } => EndReason::UpstreamConnectFailed,
            Phase::Draining { reason, .. } => reason.clone(),
            Phase::Live { link: Link::Up { .. }, .. } => {
                self.upstream_lost(now, LossReason::Closed);
                self.service(now);
                return;
            }
            Phase::Live { link: Link::Down(_), .. } => {
                self.closed_while_down(now);
                self.service(now);
                return;
            }
            Phase::Live { link: Link::Failing { .. }, .. } => return,
            Phase::AwaitingStart { .. } | Phase::Ended => EndReason::UpstreamClosed,
        };
        self.end(now, reason);
    }

    /// A decoded Realtime server event. Ignored while the session is being replaced or the call
    /// is giving up (it can only come from a socket already given up).
    pub fn handle_realtime(&mut self, now: Instant, ev: ServerEvent<'_>) {
        if matches!(&self.phase, Phase::Live { link, .. } if !link.is_up()) {
            return;
        }
        let at = self.ms_since_start(now);
        match ev {
            ServerEvent::SpeechStarted { item_id, audio_start_ms } => {
                self.on_speech_started(now, &item_id, audio_start_ms)
            }
            ServerEvent::SpeechStopped { item_id, .. } => {
                self.note_caller_speaking(false);
                self.transcript.caller_stopped(&item_id, at);
                if let Some(b) = self.bridge_mut() {
                    b.awaiting_first_audio = Some(now);
                }
                self.event(CallEvent::SpeechStopped { item_id: item_id.into_owned() });
            }
            ServerEvent::ResponseCreated { response_id } => {
                if let Some(b) = self.bridge_mut() {
                    b.gate.created(&response_id);
                    b.active_response = Some(response_id.into_owned());
                }
            }
            ServerEvent::AudioDelta { response_id, item_id, content_index, audio, .. } => {
                self.on_audio_delta(now, &response_id, &item_id, content_index, audio)
            }
            ServerEvent::AudioDone { item_id, .. } => {
                let mut finished = false;
                if let Some(b) = self.bridge_mut() {
                    if let Some(i) =
                        b.playback.items.iter().rposition(|it| it.item_id == item_id && !it.finished)
                    {
                        // The resampler holds a few ms of the reply's end: push it out too.
                        if let Some(t) = b.transcoder.as_mut() {
                            b.scratch.clear();
                            t.flush_to_provider(&mut b.scratch);
                            let model_format = b.model_format;
                            b.playback.push(i, &b.scratch, 0, model_format);
                        }
                        finished = b.playback.audio_done(i);
                    }
                }
                if finished {
                    self.transcript.agent_finished(&item_id, at, false);
                    self.emit_final_turns();
                }
                self.pump_and_mark(now);
            }
            ServerEvent::OutputTranscriptDelta { item_id, delta } => {
                self.transcript.agent_delta(&item_id, &delta, at)
            }
            ServerEvent::OutputTranscriptDone { item_id, transcript } => {
                self.transcript.agent_text(&item_id, &transcript, at)
            }
            ServerEvent::InputTranscriptionCompleted { item_id, transcript } => {
                self.transcript.caller_text(&item_id, &transcript, at);
                self.caller_turn_settled(&item_id);
                self.emit_final_turns();
                self.maybe_finish_draining(now);
            }
            ServerEvent::InputTranscriptionFailed { item_id, .. } => {
                self.transcript.caller_text(&item_id, "", at);
                self.caller_turn_settled(&item_id);
                self.emit_final_turns();
                self.maybe_finish_draining(now);
            }
            ServerEvent::ResponseDone { response_id, status, usage, .. } => {
                if let Some(u) = &usage {
                    self.usage.add(u);
                }
                if let Some(b) = self.bridge_mut() {
                    if b.active_response.as_deref() == Some(&*response_id) {
                        b.active_response = None;
                    }
                    b.gate.done(&response_id);
                    b.playback.pad_tail();
                }
                self.pump_and_mark(now);
                self.event(CallEvent::ResponseDone {
                    response_id: response_id.into_owned(),
                    status: status.as_str(),
                });
            }
            ServerEvent::Error(error) => {
                let fatal = error.is_fatal();
                let code = error.code.clone().unwrap_or_else(|| error.kind.clone());
                if code == "conversation_already_has_active_response" {
                    // Our response.create raced a response the server started itself: owe it.
                    if let Some(b) = self.bridge_mut() {
                        b.gate.refused();
                    }
                }
                let retryable = error.is_retryable();
                self.event(CallEvent::UpstreamError { error, fatal });
                match (fatal, &self.phase) {
                    (false, _) => {}
                    // A new session gets past it (the session expired): reconnect.
                    (true, Phase::Live { .. }) if retryable => {
                        self.upstream_lost(now, LossReason::SessionExpired)
                    }
                    // Key, account, model or configuration: no session will work. Apologize.
                    (true, Phase::Live { .. }) => self.give_up(now, EndReason::UpstreamError { code }),
                    (true, _) => self.end(now, EndReason::UpstreamError { code }),
                }
            }
            ServerEvent::FunctionCallArgumentsDone { response_id, call_id, name, arguments, .. } => {
                self.on_function_call(now, &response_id, &call_id, &name, &arguments)
            }
            ServerEvent::SessionCreated
            | ServerEvent::SessionUpdated { .. }
            | ServerEvent::InputAudioCommitted { .. }
            | ServerEvent::ItemTruncated { .. }
            | ServerEvent::Unknown { .. } => {}
        }
        self.service(now);
    }

    fn bridge_mut(&mut self) -> Option<&mut Bridge> {
        match &mut self.phase {
            Phase::Connecting { bridge, .. }
            | Phase::Live { bridge, .. }
            | Phase::Draining { bridge, .. } => Some(bridge),
            Phase::AwaitingStart { .. } | Phase::Ended => None,
        }
    }

    /// The caller's turn `item_id` has its transcription: once they are quiet, a new session
    /// would not replay it (see `detach`), so its audio need not be kept.
    fn caller_turn_settled(&mut self, item_id: &str) {
        let Some(b) = self.bridge_mut() else { return };
        if !b.caller_speaking && b.caller_item.as_deref() == Some(item_id) {
            b.turn_from = None;
            b.history.keep_from(u64::MAX);
            b.history.shrink();
        }
    }

    /// `audio_start_ms`: where the speech starts in this session's input audio (the event's).
    fn on_speech_started(&mut self, now: Instant, item_id: &str, audio_start_ms: u64) {
        let at = self.ms_since_start(now);
        self.transcript.caller_started(item_id, at);
        self.event(CallEvent::SpeechStarted { item_id: item_id.to_owned() });
        self.note_caller_speaking(true);
        let Some(b) = self.bridge_mut() else { return };
        b.awaiting_first_audio = None;
        // Where a new session would have to start hearing this turn again.
        let fmt = b.provider_format;
        let offset = fmt.bytes_for_ms(u32::try_from(audio_start_ms).unwrap_or(u32::MAX)) as u64;
        let start = b.session_base.saturating_add(offset).min(b.history.end());
        let lead = fmt.bytes_for_ms(reconnect::REPLAY_LEAD_MS) as u64;
        b.turn_from = Some(start.saturating_sub(lead));
        b.caller_item = Some(item_id.to_owned());
        let playing = b.playback.is_playing() || b.playback.items.iter().any(|it| !it.finished);
        let cancelled_response = b.active_response.take();
        if !playing && cancelled_response.is_none() {
            return;
        }
        let mut out = Vec::new();
        let mut truncated = Vec::new();
        // Responses the caller cut short: their tool calls are cancelled too.
        let mut interrupted: Vec<String> = Vec::new();
        if playing {
            out.push(Output::Provider(ProviderOut::Clear));
            for (i, audio_end_ms) in b.playback.clear() {
                let it = &b.playback.items[i];
                truncated.push((it.item_id.clone(), audio_end_ms));
                if !interrupted.contains(&it.response_id) {
                    interrupted.push(it.response_id.clone());
                }
                if b.gate.is_aside(&it.response_id) || i < b.old_items {
                    // A filler is out-of-band: its item is not in the conversation to truncate.
                    // An earlier session's item is not in this session's conversation either.
                    continue;
                }
                out.push(Output::Realtime(ClientEvent::ItemTruncate {
                    item_id: it.item_id.clone(),
                    content_index: it.content_index,
                    audio_end_ms,
                }));
            }
            if let Some(t) = b.transcoder.as_mut() {
                t.reset_to_provider();
            }
        }
        if let Some(id) = &cancelled_response {
            out.push(Output::Realtime(ClientEvent::ResponseCancel { response_id: Some(id.clone()) }));
            if b.cancelled.len() == CANCELLED_KEPT {
                b.cancelled.pop_front();
            }
            b.cancelled.push_back(id.clone());
            if !interrupted.contains(id) {
                interrupted.push(id.clone());
            }
        }
        self.out.extend(out);
        for (id, _) in &truncated {
            self.transcript.agent_finished(id, at, true);
        }
        self.event(CallEvent::BargeIn { truncated, cleared: playing, cancelled_response });
        self.emit_final_turns();
        self.cancel_interrupted(now, &interrupted);
    }

    fn on_audio_delta(
        &mut self,
        now: Instant,
        response_id: &str,
        item_id: &str,
        content_index: u32,
        audio: &[u8],
    ) {
        let Some(b) = self.bridge_mut() else { return };
        let late = b.cancelled.iter().any(|r| r == response_id)
            || b.playback.items.iter().any(|it| it.item_id == item_id && it.finished);
        if late {
            self.dropped(DropReason::CancelledAudio, 1);
            return;
        }
        let item = b.playback.item(item_id, response_id, content_index);
        let model_format = b.model_format;
        let b_frame_bytes = b.provider_format.frame_bytes();
        let dropped = match b.transcoder.as_mut() {
            None => b.playback.push(item, audio, audio.len(), model_format),
            Some(t) => {
                b.scratch.clear();
                t.to_provider(audio, &mut b.scratch);
                b.playback.push(item, &b.scratch, audio.len(), model_format)
            }
        };
        if dropped > 0 {
            let frames = dropped.div_ceil(b_frame_bytes) as u64;
            self.dropped(DropReason::OutboundOverflow, frames);
        }
        self.pump(now);
    }

    /// Sends what pacing allows (only while live) and records first-audio latency and agent
    /// turn starts.
    fn pump(&mut self, now: Instant) {
        self.pump_inner(now, false);
    }

    /// Like [`Call::pump`], then marks whatever went out since the last mark.
    fn pump_and_mark(&mut self, now: Instant) {
        self.pump_inner(now, true);
    }

    fn pump_inner(&mut self, now: Instant, mark_after: bool) {
        let at = self.ms_since_start(now);
        let Phase::Live { bridge: b, .. } = &mut self.phase else { return };
        let mut sends = std::mem::take(&mut b.sends);
        b.playback.pump(&mut sends, &mut self.pool);
        if mark_after {
            b.playback.mark_now(&mut sends, &mut self.pool);
        }
        let mut first_audio = None;
        for s in sends.drain(..) {
            match s {
                Send::Frame { item, first_of_item, payload_b64 } => {
                    if first_of_item {
                        if let Some(it) = b.playback.items.get(item) {
                            self.transcript.agent_started(&it.item_id, at);
                        }
                    }
                    if let Some(t0) = b.awaiting_first_audio.take() {
                        first_audio = Some(now.saturating_duration_since(t0));
                    }
                    self.out.push_back(Output::Provider(ProviderOut::Media { payload_b64 }));
                }
                Send::Mark { name } => self.out.push_back(Output::Provider(ProviderOut::Mark { name })),
            }
        }
        b.sends = sends;
        if let Some(latency) = first_audio {
            self.event(CallEvent::FirstAudio { latency });
        }
    }

    fn emit_final_turns(&mut self) {
        for t in self.transcript.take_final() {
            self.event(CallEvent::Turn(t));
        }
    }

    // ---------------------------------------------------------------- timers and ending

    /// A deadline from [`Call::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.service(now);
        let due = self.phase_deadline().is_some_and(|d| d <= now);
        if !due {
            return;
        }
        let reason = match &self.phase {
            Phase::AwaitingStart { .. } => EndReason::StartTimeout,
            Phase::Connecting { .. } => EndReason::UpstreamConnectFailed,
            Phase::Draining { reason, .. } => reason.clone(),
            Phase::Live { .. } | Phase::Ended => return,
        };
        self.end(now, reason);
    }

    /// Runs whatever is due while live: tools, key presses, owed responses, fillers
    /// (`tools.rs`), then reconnect and recycle timers ([`reconnect`]). Called after every
    /// input that can change them.
    fn service(&mut self, now: Instant) {
        self.service_tools(now);
        self.service_link(now);
    }

    /// The server is shutting down and the drain time is over: end now.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.end(now, EndReason::Shutdown);
    }

    /// The caller side is gone (or the agent hung up): cancel tools, wait briefly for outstanding
    /// caller transcriptions, then end. A stream that stops after a transfer ends as
    /// [`EndReason::Transferred`].
    fn begin_end(&mut self, now: Instant, reason: EndReason) {
        let transferred = self.bridge().is_some_and(|b| b.tools.transferring());
        let reason = match reason {
            EndReason::ProviderStop | EndReason::CallerHangup if transferred => EndReason::Transferred,
            other => other,
        };
        self.cancel_all_tools(now);
        let phase = std::mem::replace(&mut self.phase, Phase::Ended);
        match phase {
            Phase::Live { mut bridge, link: reconnect::Link::Up { .. } }
                if self.transcript.pending_caller_text() > 0 =>
            {
                bridge.playback.clear();
                let deadline = later(now, self.params.transcript_linger);
                self.phase = Phase::Draining { bridge, deadline, reason };
            }
            Phase::Draining { .. } => self.phase = phase,
            other => {
                self.phase = other;
                self.end(now, reason);
            }
        }
    }

    fn maybe_finish_draining(&mut self, now: Instant) {
        if let Phase::Draining { reason, .. } = &self.phase {
            if self.transcript.pending_caller_text() == 0 {
                let reason = reason.clone();
                self.end(now, reason);
            }
        }
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if matches!(self.phase, Phase::Ended) {
            return;
        }
        self.cancel_all_tools(now);
        self.transcript.close(self.ms_since_start(now));
        self.emit_final_turns();
        self.phase = Phase::Ended;
        self.out.push_back(Output::End(reason));
    }
}

impl Bridge {
    /// Converts provider-format audio to the model's format and base64-encodes it into a
    /// string from `pool`.
    fn model_b64(&mut self, provider_audio: &[u8], pool: &mut StringPool) -> String {
        encode_for_model(&mut self.transcoder, &mut self.scratch, provider_audio, pool)
    }
}

/// Provider-format audio in the model's format (through `transcoder`, with `scratch`),
/// base64-encoded into a string from `pool`.
fn encode_for_model(
    transcoder: &mut Option<Transcoder>,
    scratch: &mut Vec<u8>,
    provider_audio: &[u8],
    pool: &mut StringPool,
) -> String {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = pool.take();
    match transcoder.as_mut() {
        None => engine.encode_string(provider_audio, &mut out),
        Some(t) => {
            scratch.clear();
            t.to_model(provider_audio, scratch);
            engine.encode_string(&scratch, &mut out);
        }
    }
    out
}

/// `t + d`, or a century later when that overflows: a huge configured duration must mean
/// "never", not a panic (`Instant + Duration` panics on overflow).
fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(CENTURY)).unwrap_or(t)
}

/// The model-side format for a provider format: the same format when the model accepts it
/// (μ-law/A-law 8 kHz, PCM16 LE 24 kHz) unless transcoding is forced, else PCM16 24 kHz.
fn model_format_for(provider: AudioFormat, force_transcode: bool) -> AudioFormat {
    let accepted = [AudioFormat::PCMU_8K, AudioFormat::PCMA_8K, AudioFormat::PCM16_24K];
    if !force_transcode && accepted.contains(&provider) { provider } else { AudioFormat::PCM16_24K }
}
