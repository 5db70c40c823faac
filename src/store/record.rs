//! What a call leaves behind: a note when it starts, and its record, timeline and transcript
//! when it ends. The driver fills these; the store persists them.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::core::call::{CallEvent, Turn};
use crate::core::realtime::Usage;

/// Most timeline entries kept per call; later ones are counted, not stored.
const MAX_TIMELINE: usize = 2_000;

/// One line of a call's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// Milliseconds since the provider's socket opened.
    pub at_ms: u64,
    /// Stable kind, e.g. `speech_started`, `barge_in`, `first_audio`.
    pub kind: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

/// What the driver tells the store about a call (over a bounded channel; the call never waits).
#[derive(Debug)]
pub enum CallNote {
    /// A valid `start` arrived: the call exists from now on, even if the process dies.
    Started(CallStarted),
    /// The call ended.
    Ended(Box<CallRecord>),
    /// The provider's status callback (also for calls that never reached a stream).
    Status(CallStatus),
    /// The model's `update_lead` tool call.
    Lead(LeadUpdate),
}

/// Fields the model set on the call's lead with `update_lead`.
#[derive(Debug, Clone)]
pub struct LeadUpdate {
    /// The call it happened on.
    pub call_sid: String,
    /// The lead (from the signed stream parameters, never from the model).
    pub lead_id: String,
    /// New `status`.
    pub status: Option<String>,
    /// Notes, written to `last_call_summary` until the post-call summary replaces them.
    pub notes: Option<String>,
    /// Further columns of the lead table (names from the model: unknown ones are rejected by
    /// PostgREST and the row is parked, visible in the call's outbox).
    pub fields: BTreeMap<String, String>,
}

/// A provider status or answering-machine-detection callback.
#[derive(Debug, Clone)]
pub struct CallStatus {
    /// `CallSid`.
    pub call_sid: String,
    /// `twilio` or `signalwire`.
    pub provider: &'static str,
    /// `CallStatus`: `queued`, `initiated`, `ringing`, `in-progress`, `completed`, `busy`,
    /// `failed`, `no-answer`, `canceled`.
    pub status: Option<String>,
    /// `CallDuration` (s), on `completed`.
    pub duration_s: Option<i64>,
    /// `AnsweredBy` from AMD: `human`, `machine_start`, `machine_end_beep`, `fax`, `unknown`, …
    pub answered_by: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<&'static str>,
    /// `From`.
    pub from: Option<String>,
    /// `To`.
    pub to: Option<String>,
    /// Lead of an outbound call, if known.
    pub lead_id: Option<String>,
    /// When the callback arrived.
    pub at: SystemTime,
}

/// A call's identity when its stream starts.
#[derive(Debug, Clone)]
pub struct CallStarted {
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.streamSid`.
    pub stream_sid: String,
    /// `twilio` or `signalwire`.
    pub provider: &'static str,
    /// Wall-clock time the socket opened.
    pub started_at: SystemTime,
    /// `start.customParameters`, verbatim.
    pub custom_parameters: BTreeMap<String, String>,
}

/// Everything known about a call when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// `start.callSid`, once a valid `start` arrived.
    pub call_sid: Option<String>,
    /// `start.streamSid`, once a valid `start` arrived.
    pub stream_sid: Option<String>,
    /// `twilio` or `signalwire`.
    pub provider: &'static str,
    /// Wall-clock time the socket opened.
    #[serde(with = "unix_ms")]
    pub started_at: SystemTime,
    /// Monotonic time the socket opened (to line the timeline up with other in-process clocks).
    #[serde(skip)]
    pub opened: Instant,
    /// From the socket opening to the call's end (ms).
    pub duration_ms: u64,
    /// [`EndReason::as_str`](crate::core::call::EndReason::as_str) of how the call ended.
    pub end_reason: &'static str,
    /// Detail of the end, e.g. the upstream error code.
    pub end_detail: Option<String>,
    /// `start.customParameters`, verbatim; may hold personal data.
    pub custom_parameters: BTreeMap<String, String>,
    /// Both sides' turns, ordered by start.
    pub transcript: Vec<Turn>,
    /// Notable events in time order, the first 2,000 only.
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries not stored because the timeline was full (2,000 entries).
    pub timeline_dropped: u64,
    /// Token usage summed over the call's `response.done` events.
    pub usage: Usage,
    /// Caller media messages received from the provider.
    pub frames_in: u64,
    /// Agent media frames (20 ms each) sent to the provider.
    pub frames_out: u64,
}

impl CallRecord {
    /// Adds a timeline entry for `e`, if it is worth one.
    pub fn note(&mut self, at_ms: u64, e: &CallEvent) {
        let (kind, detail) = match e {
            CallEvent::Started { provider_format, model_format, passthrough, .. } => (
                "started",
                format!(
                    "{:?} {} Hz → model {:?} {} Hz ({})",
                    provider_format.encoding,
                    provider_format.sample_rate_hz,
                    model_format.encoding,
                    model_format.sample_rate_hz,
                    if *passthrough { "passthrough" } else { "transcode" }
                ),
            ),
            CallEvent::UpstreamReady => ("upstream_ready", String::new()),
            CallEvent::SpeechStarted { item_id } => ("speech_started", item_id.clone()),
            CallEvent::SpeechStopped { item_id } => ("speech_stopped", item_id.clone()),
            CallEvent::FirstAudio { latency } => ("first_audio", format!("{} ms", latency.as_millis())),
            CallEvent::BargeIn { truncated, cleared, cancelled_response } => {
                let cuts: Vec<String> = truncated.iter().map(|(id, ms)| format!("{id} at {ms} ms")).collect();
                (
                    "barge_in",
                    format!(
                        "clear={cleared} truncate=[{}] cancel={}",
                        cuts.join(", "),
                        cancelled_response.as_deref().unwrap_or("-")
                    ),
                )
            }
            CallEvent::Turn(t) => ("turn", format!("{:?}: {}", t.role, t.text)),
            CallEvent::Dropped { reason, count } => ("dropped", format!("{} x{count}", reason.as_str())),
            CallEvent::GapFilled { ms } => ("gap_filled", format!("{ms} ms")),
            CallEvent::UpstreamError { error, fatal } => (
                "upstream_error",
                format!("{} {} (fatal={fatal})", error.kind, error.code.as_deref().unwrap_or("")),
            ),
            CallEvent::Dtmf { digit } => ("dtmf", digit.to_string()),
            CallEvent::ResponseDone { response_id, status } => {
                ("response_done", format!("{response_id} {status}"))
            }
            CallEvent::ToolCalled { call_id, name } => ("tool_called", format!("{name} {call_id}")),
            CallEvent::ToolRejected { call_id, name, reason } => {
                ("tool_rejected", format!("{name} {call_id} {}", reason.as_str()))
            }
            CallEvent::ToolFinished { call_id, name, ok, ms } => {
                ("tool_finished", format!("{name} {call_id} ok={ok} {ms} ms"))
            }
            CallEvent::ToolCancelled { call_id, name, reason, ms } => {
                ("tool_cancelled", format!("{name} {call_id} {} {ms} ms", reason.as_str()))
            }
            CallEvent::FillerSpoken { call_id } => ("filler", call_id.clone()),
            // Digits may be personal data (an account number): only their count.
            CallEvent::DtmfSent { digits } => ("dtmf_sent", format!("{} keys", digits.len())),
        };
        self.push(at_ms, kind, detail);
    }

    /// Adds a timeline entry, or counts it when the timeline is full.
    pub fn push(&mut self, at_ms: u64, kind: &'static str, detail: String) {
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(TimelineEntry { at_ms, kind, detail });
        } else {
            self.timeline_dropped += 1;
        }
    }
}

mod unix_ms {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        s.serialize_u64(ms)
    }
}

/// Receives notes until the next call record, skipping start notes (for the demo and tests,
/// which read the driver's channel directly). `None` once the channel is closed.
pub async fn next_record(rx: &mut tokio::sync::mpsc::Receiver<CallNote>) -> Option<CallRecord> {
    while let Some(note) = rx.recv().await {
        if let CallNote::Ended(r) = note {
            return Some(*r);
        }
    }
    None
}
