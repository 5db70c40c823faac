//! Server → client: decoding Realtime server events from WebSocket text frames.
//!
//! Source: <https://platform.openai.com/docs/api-reference/realtime-server-events>, field sets
//! checked against the `openai` Python SDK 3.52.0 models (`openai/types/realtime/*_event.py`).
//!
//! The decoder parses every frame into one flat, borrowed serde struct holding the union of the
//! fields the bridge uses (`wire`), then dispatches on the `type` string. Strings borrow from the
//! frame text (`Cow::Borrowed`) unless JSON escapes force a copy, so the most frequent event,
//! `response.output_audio.delta`, costs one parse plus one base64 decode into the decoder's
//! reusable scratch buffer, and no allocation once that buffer has grown.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de;
use serde::{Deserialize, Serialize};

mod wire;

use self::wire::{Kind, Text, Wire, WireUsage};
use crate::core::audio::AudioFormat;

/// Base64 as OpenAI sends it (standard alphabet), accepting input with or without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One decoded Realtime server event, borrowing its strings from the frame text.
///
/// GA names are listed first; the beta names the decoder also accepts are given per variant.
/// Source: <https://platform.openai.com/docs/api-reference/realtime-server-events>.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent<'a> {
    /// `session.created`: the first event on a new socket, carrying the server's default session.
    SessionCreated,
    /// `session.updated`: the effective session after a `session.update`.
    ///
    /// The formats come from GA `session.audio.{input,output}.format` (`{"type":"audio/pcmu"}` →
    /// [`AudioFormat::PCMU_8K`], `audio/pcma` → [`AudioFormat::PCMA_8K`], `{"type":"audio/pcm",
    /// "rate":24000}` → [`AudioFormat::PCM16_24K`]; `rate` defaults to 24000 when absent) or from
    /// the beta strings `input_audio_format` / `output_audio_format` (`g711_ulaw`, `g711_alaw`,
    /// `pcm16`). `None` when the echo does not say, or names a format this crate does not know.
    SessionUpdated {
        /// Format of the audio we send (`input_audio_buffer.append`).
        input_format: Option<AudioFormat>,
        /// Format of the audio the model sends (`response.output_audio.delta`).
        output_format: Option<AudioFormat>,
    },
    /// `input_audio_buffer.speech_started`: server VAD heard the caller start talking (barge-in).
    SpeechStarted {
        /// The user message item that will be created for this speech.
        item_id: Cow<'a, str>,
        /// Offset of the speech start from the beginning of all audio written to the buffer in
        /// this session, in milliseconds (includes the configured `prefix_padding_ms`).
        audio_start_ms: u64,
    },
    /// `input_audio_buffer.speech_stopped`: server VAD heard the caller stop talking.
    SpeechStopped {
        /// The user message item that will be created for this speech.
        item_id: Cow<'a, str>,
        /// Offset of the speech end from the start of the session's input audio, in milliseconds.
        audio_end_ms: u64,
    },
    /// `input_audio_buffer.committed`: the input buffer became a user item.
    InputAudioCommitted {
        /// The user message item created from the buffer.
        item_id: Cow<'a, str>,
    },
    /// `response.created`: a model response started (status `in_progress`).
    ResponseCreated {
        /// `response.id`.
        response_id: Cow<'a, str>,
    },
    /// `response.output_audio.delta` (beta `response.audio.delta`): a chunk of model audio.
    AudioDelta {
        /// The response this audio belongs to.
        response_id: Cow<'a, str>,
        /// The assistant message item (the `item_id` for `conversation.item.truncate`).
        item_id: Cow<'a, str>,
        /// Index of the audio content part in the item (the `content_index` for a truncate).
        content_index: u32,
        /// The audio exactly as received: base64 in the session's output format. Forward this
        /// unchanged when the telephony side speaks the same format (passthrough).
        delta_b64: Cow<'a, str>,
        /// `delta_b64` decoded, in the decoder's reusable scratch buffer (valid until the next
        /// `decode`). Its length gives the duration: 8 bytes per ms for G.711 at 8 kHz.
        audio: &'a [u8],
    },
    /// `response.output_audio.done` (beta `response.audio.done`): the item's audio is complete.
    AudioDone {
        /// The response the audio belonged to.
        response_id: Cow<'a, str>,
        /// The assistant message item.
        item_id: Cow<'a, str>,
    },
    /// `response.output_audio_transcript.delta` (beta `response.audio_transcript.delta`): a piece
    /// of the transcript of the model's speech.
    OutputTranscriptDelta {
        /// The assistant message item.
        item_id: Cow<'a, str>,
        /// The new transcript text.
        delta: Cow<'a, str>,
    },
    /// `response.output_audio_transcript.done` (beta `response.audio_transcript.done`): the full
    /// transcript of one assistant audio part. Not sent for a response cancelled before it ended.
    OutputTranscriptDone {
        /// The assistant message item.
        item_id: Cow<'a, str>,
        /// The whole transcript.
        transcript: Cow<'a, str>,
    },
    /// `conversation.item.input_audio_transcription.completed`: the caller's speech as text.
    /// Arrives asynchronously (before or after the response events); needs `transcription` on.
    InputTranscriptionCompleted {
        /// The user message item that holds the audio.
        item_id: Cow<'a, str>,
        /// The transcript.
        transcript: Cow<'a, str>,
    },
    /// `conversation.item.input_audio_transcription.failed`: transcribing the caller failed.
    InputTranscriptionFailed {
        /// The user message item that holds the audio.
        item_id: Cow<'a, str>,
        /// `error.message` (or `error.code` when the message is missing; empty if neither is sent).
        message: Cow<'a, str>,
    },
    /// `response.function_call_arguments.done`: the model wants a tool run.
    FunctionCallArgumentsDone {
        /// The response that made the call.
        response_id: Cow<'a, str>,
        /// The `function_call` item.
        item_id: Cow<'a, str>,
        /// Echo this in the `function_call_output` item.
        call_id: Cow<'a, str>,
        /// The function name.
        name: Cow<'a, str>,
        /// Arguments as JSON text, model-generated: parse defensively.
        arguments: Cow<'a, str>,
    },
    /// `response.done`: a response ended, whatever its outcome.
    ResponseDone {
        /// `response.id`.
        response_id: Cow<'a, str>,
        /// `response.status`.
        status: ResponseStatus,
        /// `response.status_details.reason` (`turn_detected`, `client_cancelled`,
        /// `max_output_tokens`, `content_filter`); for a failed response without a reason, the
        /// `status_details.error.code` (or `.type`) instead, so the failure cause is not lost.
        reason: Option<Cow<'a, str>>,
        /// `response.usage`, when present.
        usage: Option<Usage>,
    },
    /// `conversation.item.truncated`: the server accepted a `conversation.item.truncate`.
    ItemTruncated {
        /// The truncated assistant item.
        item_id: Cow<'a, str>,
        /// The truncated audio content part.
        content_index: u32,
        /// Audio kept, in milliseconds from the start of the part.
        audio_end_ms: u64,
    },
    /// `error`: the server rejected something or failed. See [`ApiError::is_fatal`].
    Error(ApiError),
    /// Any other event type (`rate_limits.updated`, `conversation.item.added`,
    /// `response.content_part.added`, …). Not an error.
    Unknown {
        /// The event's `type` string.
        kind: String,
    },
}

impl ServerEvent<'_> {
    /// The GA wire name of this event (`"unknown"` for [`ServerEvent::Unknown`]); a bounded set,
    /// fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionCreated => "session.created",
            Self::SessionUpdated { .. } => "session.updated",
            Self::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            Self::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            Self::InputAudioCommitted { .. } => "input_audio_buffer.committed",
            Self::ResponseCreated { .. } => "response.created",
            Self::AudioDelta { .. } => "response.output_audio.delta",
            Self::AudioDone { .. } => "response.output_audio.done",
            Self::OutputTranscriptDelta { .. } => "response.output_audio_transcript.delta",
            Self::OutputTranscriptDone { .. } => "response.output_audio_transcript.done",
            Self::InputTranscriptionCompleted { .. } => {
                "conversation.item.input_audio_transcription.completed"
            }
            Self::InputTranscriptionFailed { .. } => "conversation.item.input_audio_transcription.failed",
            Self::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            Self::ResponseDone { .. } => "response.done",
            Self::ItemTruncated { .. } => "conversation.item.truncated",
            Self::Error(_) => "error",
            Self::Unknown { .. } => "unknown",
        }
    }
}

/// Final status of a response (`response.status` in `response.done`).
///
/// Source: `RealtimeResponse.status` in the Python SDK
/// (`completed | cancelled | failed | incomplete | in_progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// The response finished normally.
    Completed,
    /// Cancelled by `response.cancel` or by server VAD (`interrupt_response`, reason `turn_detected`).
    Cancelled,
    /// Failed; `status_details.error` says why.
    Failed,
    /// Cut short (`max_output_tokens` or `content_filter`).
    Incomplete,
    /// Still running (only seen in `response.created`).
    InProgress,
    /// Missing, or a value this crate does not know.
    Other,
}

impl ResponseStatus {
    fn from_wire(status: &str) -> Self {
        match status {
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            "incomplete" => Self::Incomplete,
            "in_progress" => Self::InProgress,
            _ => Self::Other,
        }
    }

    /// The wire string (`"other"` for [`ResponseStatus::Other`]); fit for a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
            Self::InProgress => "in_progress",
            Self::Other => "other",
        }
    }
}

/// Token usage of one response (`response.done` → `response.usage`), or a sum of several.
///
/// Counts are tokens; absent fields count as 0. `input_tokens` includes the cached ones
/// (`input_cached_tokens` is a subset). Source: `RealtimeResponseUsage` and its
/// `input_token_details` / `output_token_details` in the Python SDK.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// `total_tokens`: input + output.
    pub total_tokens: u64,
    /// `input_tokens`: text + audio (+ image) input, cached included.
    pub input_tokens: u64,
    /// `output_tokens`: text + audio output.
    pub output_tokens: u64,
    /// `input_token_details.text_tokens`.
    pub input_text_tokens: u64,
    /// `input_token_details.audio_tokens`.
    pub input_audio_tokens: u64,
    /// `input_token_details.cached_tokens`.
    pub input_cached_tokens: u64,
    /// `output_token_details.text_tokens`.
    pub output_text_tokens: u64,
    /// `output_token_details.audio_tokens`.
    pub output_audio_tokens: u64,
}

impl Usage {
    /// Adds `other` field by field (saturating), to total a call's responses.
    pub fn add(&mut self, other: &Usage) {
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.input_text_tokens = self.input_text_tokens.saturating_add(other.input_text_tokens);
        self.input_audio_tokens = self.input_audio_tokens.saturating_add(other.input_audio_tokens);
        self.input_cached_tokens = self.input_cached_tokens.saturating_add(other.input_cached_tokens);
        self.output_text_tokens = self.output_text_tokens.saturating_add(other.output_text_tokens);
        self.output_audio_tokens = self.output_audio_tokens.saturating_add(other.output_audio_tokens);
    }
}

/// The `error` object of a Realtime `error` event.
///
/// Source: `RealtimeError` in the Python SDK (`type`, `code`, `message`, `param`, `event_id`).
/// A missing `type` or `message` decodes as an empty string rather than failing: an error
/// report is the event we can least afford to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// `error.type`, e.g. `invalid_request_error`, `server_error`.
    pub kind: String,
    /// `error.code`, e.g. `session_expired`, `response_cancel_not_active`.
    pub code: Option<String>,
    /// `error.message`, human-readable.
    pub message: String,
    /// `error.param`: the parameter at fault, if any.
    pub param: Option<String>,
    /// `error.event_id`: the client event that caused it, if any (we send no `event_id`s today).
    pub event_id: Option<String>,
}

impl ApiError {
    /// `error.code`s after which nothing more can succeed on this session.
    const FATAL_CODES: &'static [&'static str] = &[
        "session_expired",
        "beta_api_shape_disabled",
        "invalid_api_key",
        "insufficient_quota",
        "model_not_found",
        "account_deactivated",
        "billing_not_active",
    ];

    /// `error.type`s that are fatal whatever the code: credentials or account refused.
    const FATAL_KINDS: &'static [&'static str] =
        &["authentication_error", "permission_error", "insufficient_quota", "invalid_api_key"];

    /// Whether this error ends the session (hang up or reconnect) rather than just one request.
    ///
    /// Rule: fatal when `code` is one of
    /// - `session_expired` — sent as an `invalid_request_error` when the session reaches its
    ///   maximum duration (60 min on OpenAI, 30 min on Azure); seen in public reports, e.g.
    ///   livekit/agents#1122: "Your session hit the maximum duration of 15 minutes.";
    /// - `beta_api_shape_disabled` — the beta protocol is switched off (reference §1.1, unverified);
    /// - `invalid_api_key`, `insufficient_quota`, `model_not_found`, `account_deactivated`,
    ///   `billing_not_active` — OpenAI API error codes for a key, account or model that no later
    ///   request will get past either;
    ///
    /// or when `type` is `authentication_error`, `permission_error`, `insufficient_quota` or
    /// `invalid_api_key`.
    ///
    /// Everything else is recoverable: log it and go on. OpenAI documents the `error` event as
    /// "most errors are recoverable and the session will stay open"
    /// (<https://platform.openai.com/docs/api-reference/realtime-server-events/error>). That covers
    /// every `invalid_request_error` caused by one bad client event (a truncate past the audio
    /// sent, `response_cancel_not_active`, `input_audio_buffer_commit_empty`,
    /// `conversation_already_has_active_response`, …), rate-limit errors (a later response may
    /// succeed), unknown types, and `server_error` (it fails the current response, which then ends
    /// with `response.done` status `failed`). A server that really cannot go on closes the socket;
    /// the caller sees that as the connection ending, not through this method.
    ///
    /// One more rule: an `invalid_request_error` whose `param` is `session` or starts with
    /// `session.` rejected our `session.update` (e.g. `session.audio.input.format.rate`, the
    /// shape the built-in simulator sends; OpenAI's own `param` paths are **UNVERIFIED**). The
    /// server then keeps its defaults (PCM 24 kHz, no instructions), so the call cannot go on
    /// as configured: fatal, and not retryable ([`ApiError::is_retryable`]).
    pub fn is_fatal(&self) -> bool {
        self.code.as_deref().is_some_and(|code| Self::FATAL_CODES.contains(&code))
            || Self::FATAL_KINDS.contains(&self.kind.as_str())
            || self.rejects_session()
    }

    /// Whether a **new** session could get past this error, so the bridge should reconnect
    /// rather than give up: only `session_expired` (the session reached its maximum duration,
    /// reference §1.5; a fresh session starts the clock again). Every other fatal error is about
    /// the key, the account, the model or our configuration, and would fail the next session too.
    /// Meaningful for fatal errors; a recoverable error needs no new session either way.
    pub fn is_retryable(&self) -> bool {
        self.code.as_deref() == Some("session_expired")
    }

    /// An `invalid_request_error` aimed at the session configuration (see [`ApiError::is_fatal`]).
    fn rejects_session(&self) -> bool {
        self.kind == "invalid_request_error"
            && self.param.as_deref().is_some_and(|p| p == "session" || p.starts_with("session."))
    }
}

/// Why a frame could not be decoded. Unknown event types are not errors ([`ServerEvent::Unknown`]).
#[derive(Debug, thiserror::Error)]
pub enum RealtimeDecodeError {
    /// The frame is longer than the decoder's limit; it was not parsed.
    #[error("realtime event of {len} bytes exceeds the {max}-byte limit")]
    Oversize {
        /// Frame length in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// Not a JSON object, or a handled event whose fields have the wrong JSON types.
    #[error("realtime event is not valid JSON for its type: {0}")]
    Json(#[from] serde_json::Error),
    /// A handled event lacks a field the bridge needs (dotted path, e.g. `response.id`).
    #[error("realtime event lacks the `{0}` field")]
    MissingField(&'static str),
    /// A base64 field (the audio `delta`) is not valid base64.
    #[error("realtime event field `{field}` is not valid base64")]
    Base64 {
        /// The field name.
        field: &'static str,
    },
}

impl RealtimeDecodeError {
    /// A short stable name for metric labels: `oversize`, `json`, `missing_field`, `base64`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oversize { .. } => "oversize",
            Self::Json(_) => "json",
            Self::MissingField(_) => "missing_field",
            Self::Base64 { .. } => "base64",
        }
    }
}

/// Decodes Realtime server frames, reusing one scratch buffer for decoded audio.
///
/// One per connection. `decode` borrows the decoder until the returned event is dropped, so the
/// decoded audio can live in the scratch buffer without a copy.
#[derive(Debug)]
pub struct RealtimeDecoder {
    /// Decoded audio of the last `AudioDelta`; grows to the largest delta seen, then stays.
    scratch: Vec<u8>,
    /// Frames longer than this (bytes) are rejected before parsing.
    max_message_bytes: usize,
}

impl RealtimeDecoder {
    /// A decoder that rejects frames longer than `max_message_bytes` bytes.
    ///
    /// `session.updated` echoes the instructions and tool schemas, and audio deltas can hold
    /// seconds of audio, so allow generously (around a few MiB).
    pub fn new(max_message_bytes: usize) -> Self {
        Self { scratch: Vec::new(), max_message_bytes }
    }

    /// Decodes one text frame.
    ///
    /// Errors only for frames that are oversize, not a JSON object, lack `type`, or are one of
    /// the handled events with a missing or mistyped field the bridge needs. Any other `type`
    /// decodes as [`ServerEvent::Unknown`], even when the rest of its body would not fit the
    /// handled events' fields.
    pub fn decode<'a>(&'a mut self, text: &'a str) -> Result<ServerEvent<'a>, RealtimeDecodeError> {
        if text.len() > self.max_message_bytes {
            return Err(RealtimeDecodeError::Oversize { len: text.len(), max: self.max_message_bytes });
        }
        // serde's derived struct visitor also accepts a JSON array (fields by position); an event
        // is always an object, so refuse anything else up front.
        if !text.trim_start().starts_with('{') {
            return Err(RealtimeDecodeError::Json(de::Error::custom(
                "a realtime event must be a JSON object",
            )));
        }
        let wire: Wire<'a> = match serde_json::from_str(text) {
            Ok(wire) => wire,
            Err(err) => return unknown_or_error(text, err),
        };
        let kind = required(wire.kind, "type")?.0;
        let Some(handled) = Kind::from_wire(&kind) else {
            return Ok(ServerEvent::Unknown { kind: kind.into_owned() });
        };
        Ok(match handled {
            Kind::SessionCreated => ServerEvent::SessionCreated,
            Kind::SessionUpdated => {
                let (input_format, output_format) = wire.session.map(|s| s.formats()).unwrap_or((None, None));
                ServerEvent::SessionUpdated { input_format, output_format }
            }
            Kind::SpeechStarted => ServerEvent::SpeechStarted {
                item_id: need(wire.item_id, "item_id")?,
                audio_start_ms: required(wire.audio_start_ms, "audio_start_ms")?,
            },
            Kind::SpeechStopped => ServerEvent::SpeechStopped {
                item_id: need(wire.item_id, "item_id")?,
                audio_end_ms: required(wire.audio_end_ms, "audio_end_ms")?,
            },
            Kind::InputAudioCommitted => {
                ServerEvent::InputAudioCommitted { item_id: need(wire.item_id, "item_id")? }
            }
            Kind::ResponseCreated => ServerEvent::ResponseCreated {
                response_id: need(wire.response.and_then(|r| r.id), "response.id")?,
            },
            Kind::AudioDelta => {
                let response_id = need(wire.response_id, "response_id")?;
                let item_id = need(wire.item_id, "item_id")?;
                let content_index = required(wire.content_index, "content_index")?;
                let delta_b64 = need(wire.delta, "delta")?;
                self.scratch.clear();
                BASE64
                    .decode_vec(delta_b64.as_bytes(), &mut self.scratch)
                    .map_err(|_| RealtimeDecodeError::Base64 { field: "delta" })?;
                ServerEvent::AudioDelta {
                    response_id,
                    item_id,
                    content_index,
                    delta_b64,
                    audio: &self.scratch,
                }
            }
            Kind::AudioDone => ServerEvent::AudioDone {
                response_id: need(wire.response_id, "response_id")?,
                item_id: need(wire.item_id, "item_id")?,
            },
            Kind::OutputTranscriptDelta => ServerEvent::OutputTranscriptDelta {
                item_id: need(wire.item_id, "item_id")?,
                delta: need(wire.delta, "delta")?,
            },
            Kind::OutputTranscriptDone => ServerEvent::OutputTranscriptDone {
                item_id: need(wire.item_id, "item_id")?,
                transcript: need(wire.transcript, "transcript")?,
            },
            Kind::InputTranscriptionCompleted => ServerEvent::InputTranscriptionCompleted {
                item_id: need(wire.item_id, "item_id")?,
                transcript: need(wire.transcript, "transcript")?,
            },
            Kind::InputTranscriptionFailed => {
                let error = required(wire.error, "error")?;
                ServerEvent::InputTranscriptionFailed {
                    item_id: need(wire.item_id, "item_id")?,
                    message: error.message.or(error.code).map_or(Cow::Borrowed(""), |t| t.0),
                }
            }
            Kind::FunctionCallArgumentsDone => ServerEvent::FunctionCallArgumentsDone {
                response_id: need(wire.response_id, "response_id")?,
                item_id: need(wire.item_id, "item_id")?,
                call_id: need(wire.call_id, "call_id")?,
                name: need(wire.name, "name")?,
                arguments: need(wire.arguments, "arguments")?,
            },
            Kind::ResponseDone => {
                let response = required(wire.response, "response")?;
                let status = response
                    .status
                    .as_ref()
                    .map_or(ResponseStatus::Other, |s| ResponseStatus::from_wire(&s.0));
                let reason = response
                    .status_details
                    .and_then(|d| d.reason.or_else(|| d.error.and_then(|e| e.code.or(e.kind))).map(|t| t.0));
                ServerEvent::ResponseDone {
                    response_id: need(response.id, "response.id")?,
                    status,
                    reason,
                    usage: response.usage.map(WireUsage::into_usage),
                }
            }
            Kind::ItemTruncated => ServerEvent::ItemTruncated {
                item_id: need(wire.item_id, "item_id")?,
                content_index: required(wire.content_index, "content_index")?,
                audio_end_ms: required(wire.audio_end_ms, "audio_end_ms")?,
            },
            Kind::Error => {
                let error = required(wire.error, "error")?;
                ServerEvent::Error(ApiError {
                    kind: owned(error.kind).unwrap_or_default(),
                    code: owned(error.code),
                    message: owned(error.message).unwrap_or_default(),
                    param: owned(error.param),
                    event_id: owned(error.event_id),
                })
            }
        })
    }
}

/// After a parse failure: an event whose `type` we do not handle is still `Unknown` (its body may
/// use our field names with other JSON types); anything else keeps the parse error.
fn unknown_or_error<'a>(text: &str, err: serde_json::Error) -> Result<ServerEvent<'a>, RealtimeDecodeError> {
    #[derive(Deserialize)]
    struct TypeOnly<'t> {
        #[serde(rename = "type", borrow)]
        kind: Option<Text<'t>>,
    }
    match serde_json::from_str::<TypeOnly<'_>>(text) {
        Ok(TypeOnly { kind: Some(kind) }) if Kind::from_wire(&kind.0).is_none() => {
            Ok(ServerEvent::Unknown { kind: kind.0.into_owned() })
        }
        _ => Err(RealtimeDecodeError::Json(err)),
    }
}

fn need<'a>(field: Option<Text<'a>>, name: &'static str) -> Result<Cow<'a, str>, RealtimeDecodeError> {
    field.map(|t| t.0).ok_or(RealtimeDecodeError::MissingField(name))
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, RealtimeDecodeError> {
    field.ok_or(RealtimeDecodeError::MissingField(name))
}

fn owned(field: Option<Text<'_>>) -> Option<String> {
    field.map(|t| t.0.into_owned())
}

#[cfg(test)]
mod tests;
