//! Client → server: encoding Realtime client events as JSON text.
//!
//! Source: <https://platform.openai.com/docs/api-reference/realtime-client-events>, shapes checked
//! against the `openai` Python SDK 3.52.0 models (`openai/types/realtime/*_event.py`,
//! `realtime_session_create_request.py`, `realtime_audio_config_*.py`) by
//! `tests/client_events.rs` and `scripts/check-client-events.py`.
//!
//! The JSON is written by hand into a caller-owned `String`: no `serde_json::Value`, no
//! intermediate buffers. `input_audio_buffer.append` runs 50 times a second per call, and
//! [`encode_input_audio_append`] writes it from a borrowed `&str` with no allocation once `out`
//! has grown.
//!
//! # Null or omitted
//!
//! In `session.update`, a key that is present changes the setting, a key that is absent keeps
//! the server's current value, and `null` turns a feature off (reference §1.2). [`SessionConfig`]
//! describes the whole session the bridge wants, so:
//! - `turn_detection` [`TurnDetection::Manual`], `transcription: None` and
//!   `noise_reduction: None` are sent as explicit `null`: "off" is what the config says, and a
//!   `session.update` sent again mid-call must switch a feature off that an earlier one turned on.
//! - `model: None`, `speed: None` and `idle_timeout_ms: None` are omitted: they mean "server
//!   default" (the model from the URL, speed 1.0, no idle timeout).
//! - `tools` and `tool_choice` are omitted when there are no tools (a new session has none).
//! - A non-finite `threshold` or `speed` (NaN, ±∞ cannot be written as JSON) is omitted, so the
//!   server keeps its value instead of receiving invalid JSON.
//!
//! Outside `session.update`: `response.create` has no `response` key (a normal turn, reference
//! §1.3) except the out-of-band one ([`ClientEvent::ResponseCreateOutOfBand`]), `response.cancel`
//! omits `response_id` when `None`, and no event carries an `event_id`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::core::audio::AudioFormat;

/// An audio format the Realtime model accepts (`session.audio.{input,output}.format`).
///
/// Source: SDK `RealtimeAudioFormats` (`audio/pcm` at 24 kHz only, `audio/pcmu`, `audio/pcma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelAudioFormat {
    /// `{"type":"audio/pcmu"}`: G.711 μ-law, 8 kHz mono. Twilio's format: passthrough.
    Pcmu,
    /// `{"type":"audio/pcma"}`: G.711 A-law, 8 kHz mono.
    Pcma,
    /// `{"type":"audio/pcm","rate":24000}`: 16-bit little-endian PCM, 24 kHz mono.
    Pcm24k,
}

impl ModelAudioFormat {
    /// The crate's description of this format.
    pub fn audio_format(&self) -> AudioFormat {
        match self {
            Self::Pcmu => AudioFormat::PCMU_8K,
            Self::Pcma => AudioFormat::PCMA_8K,
            Self::Pcm24k => AudioFormat::PCM16_24K,
        }
    }

    /// The model format for `format`, or `None` when the model cannot take it (e.g. L16 at 8 kHz
    /// or big-endian: transcode first).
    pub fn from_audio_format(format: AudioFormat) -> Option<Self> {
        [Self::Pcmu, Self::Pcma, Self::Pcm24k].into_iter().find(|m| m.audio_format() == format)
    }

    fn write(&self, out: &mut String) {
        out.push_str(match self {
            Self::Pcmu => r#"{"type":"audio/pcmu"}"#,
            Self::Pcma => r#"{"type":"audio/pcma"}"#,
            Self::Pcm24k => r#"{"type":"audio/pcm","rate":24000}"#,
        });
    }
}

/// How the server decides that the caller's turn ended (`audio.input.turn_detection`).
///
/// Source: SDK `RealtimeAudioInputTurnDetection` (`ServerVad`, `SemanticVad`, or `null`).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetection {
    /// `server_vad`: voice activity detection on volume.
    ServerVad {
        /// Activation threshold, 0.0–1.0 (server default 0.5); raise it for noisy lines.
        threshold: f32,
        /// Audio kept before detected speech, in ms (server default 300).
        prefix_padding_ms: u32,
        /// Silence that ends a turn, in ms (server default 500).
        silence_duration_ms: u32,
        /// After the model's audio has played, silence in ms after which the server commits and
        /// responds by itself; `None` = off (key omitted).
        idle_timeout_ms: Option<u32>,
        /// Whether the server starts a response when a turn ends.
        create_response: bool,
        /// Whether the server cancels the running response when the caller starts talking.
        interrupt_response: bool,
    },
    /// `semantic_vad`: a model judges whether the caller has finished.
    SemanticVad {
        /// `low`, `medium`, `high` or `auto` (= medium): how soon to answer (max wait 8/4/2 s).
        eagerness: String,
        /// Whether the server starts a response when a turn ends.
        create_response: bool,
        /// Whether the server cancels the running response when the caller starts talking.
        interrupt_response: bool,
    },
    /// No turn detection (`"turn_detection": null`): the bridge commits and requests responses.
    Manual,
}

/// Server-side input noise reduction (`audio.input.noise_reduction.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoiseReduction {
    /// `near_field`: a close microphone, e.g. a handset (the usual choice for phone calls).
    NearField,
    /// `far_field`: a distant microphone, e.g. a speakerphone or conference room.
    FarField,
}

/// Transcription of the caller's audio (`audio.input.transcription`); runs asynchronously on a
/// separate model. Source: SDK `AudioTranscription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcription {
    /// Transcription model, e.g. `gpt-4o-mini-transcribe`, `whisper-1` (on Azure: a deployment).
    pub model: String,
    /// ISO-639-1 language of the caller, e.g. `en`; `None` = detect (key omitted).
    pub language: Option<String>,
    /// Hint text (keywords for whisper-1, free text for gpt-4o-*-transcribe); `None` = omitted.
    pub prompt: Option<String>,
}

/// A function the model may call. Sent as `{"type":"function","name","description","parameters"}`
/// (flat, unlike Chat Completions). Source: SDK `RealtimeFunctionTool`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    /// Function name.
    pub name: String,
    /// When and how to call it, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// The whole session configuration the bridge wants (GA `session.update` → `session`).
///
/// See the module docs for which `None`s are sent as `null` and which are omitted.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// `session.model`; `None` = the model in the connection URL (key omitted).
    pub model: Option<String>,
    /// System prompt. Always sent; an empty string clears it.
    pub instructions: String,
    /// Voice name, e.g. `marin`, `cedar`, `alloy`. Fixed once the model has spoken.
    pub voice: String,
    /// Speech speed, 0.25–1.5 (server default 1.0); `None` = omitted.
    pub speed: Option<f32>,
    /// Format of the audio we append.
    pub input_format: ModelAudioFormat,
    /// Format of the audio the model sends.
    pub output_format: ModelAudioFormat,
    /// Turn detection; [`TurnDetection::Manual`] is sent as `null`.
    pub turn_detection: TurnDetection,
    /// Caller transcription; `None` is sent as `null` (off).
    pub transcription: Option<Transcription>,
    /// Input noise reduction; `None` is sent as `null` (off).
    pub noise_reduction: Option<NoiseReduction>,
    /// Functions the model may call; empty = `tools` and `tool_choice` omitted. Shared: every
    /// call's session declares the same tools, and their JSON schemas are kilobytes.
    pub tools: Arc<[FunctionTool]>,
}

/// A Realtime client event the bridge sends. Owned, so it can sit in an output queue.
///
/// Source: <https://platform.openai.com/docs/api-reference/realtime-client-events>.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `session.update` with the GA session shape.
    SessionUpdate(Box<SessionConfig>),
    /// `input_audio_buffer.append`: base64 audio in the session's input format (≤ 15 MiB).
    InputAudioAppend {
        /// The audio, base64.
        audio_b64: String,
    },
    /// `input_audio_buffer.commit`: make the buffered audio a user item (manual turns only).
    InputAudioCommit,
    /// `input_audio_buffer.clear`: drop the buffered audio.
    InputAudioClear,
    /// `conversation.item.truncate`: cut an assistant item's audio to what the caller heard.
    ItemTruncate {
        /// The assistant message item (from the audio deltas).
        item_id: String,
        /// The audio content part (from the audio deltas; 0 for a normal reply).
        content_index: u32,
        /// Audio heard, in ms from the start of the part; more than was sent is an error.
        audio_end_ms: u64,
    },
    /// `response.create` without a `response` object: a normal turn with the session defaults.
    ResponseCreate,
    /// `response.create` for a spoken aside that stays out of the conversation (e.g. a "one
    /// moment" filler while a tool runs):
    /// `{"type":"response.create","response":{"conversation":"none","output_modalities":["audio"],
    /// "instructions":…,"tool_choice":"none"}}`.
    ///
    /// `conversation: "none"` makes it out-of-band: its items are not added to the default
    /// conversation, while (with no `input`) it still sees that conversation as context, so it
    /// speaks the caller's language. `tool_choice: "none"`: it cannot call tools. Source:
    /// reference §1.3 (`response.create` overrides) and the SDK's `RealtimeResponseCreateParams`.
    ResponseCreateOutOfBand {
        /// Instructions for this response only (they replace the session's for it).
        instructions: String,
    },
    /// `response.cancel`: stop a running response.
    ResponseCancel {
        /// The response to cancel; `None` = the one in progress (key omitted).
        response_id: Option<String>,
    },
    /// `conversation.item.create` with a `function_call_output` item (a tool result). Send
    /// `response.create` after it (after the last one, if the model made several calls).
    FunctionCallOutput {
        /// The `call_id` from `response.function_call_arguments.done`.
        call_id: String,
        /// The result, usually JSON text.
        output: String,
    },
    /// `conversation.item.create` with a user message holding one `input_text` part, e.g. to
    /// make the assistant greet first (then send `response.create`).
    UserText {
        /// The text.
        text: String,
    },
    /// `conversation.item.create` with an assistant message holding one `output_text` part:
    /// something the agent said earlier, replayed into a new session to restore the
    /// conversation after a reconnect. Source: SDK `RealtimeConversationItemAssistantMessage`
    /// (content types `output_text` / `output_audio`).
    AssistantText {
        /// What the agent said (its output transcript).
        text: String,
    },
    /// `conversation.item.create` with a system message holding one `input_text` part: a note
    /// for the model in the middle of the conversation (e.g. that the line dropped). Source: SDK
    /// `RealtimeConversationItemSystemMessage` ("smaller updates" than `instructions`).
    SystemText {
        /// The note.
        text: String,
    },
    /// `conversation.item.create` with a `function_call` item: a tool call the model made in an
    /// earlier session that is still running, so its `function_call_output` has a call to
    /// answer in the new session. Source: SDK `RealtimeConversationItemFunctionCall`.
    FunctionCall {
        /// The call's `call_id`, reused so the later output matches it.
        call_id: String,
        /// The function name.
        name: String,
        /// The arguments as the model wrote them (JSON text).
        arguments: String,
    },
}

impl ClientEvent {
    /// The wire `type` of this event, e.g. `"input_audio_buffer.append"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionUpdate(_) => "session.update",
            Self::InputAudioAppend { .. } => "input_audio_buffer.append",
            Self::InputAudioCommit => "input_audio_buffer.commit",
            Self::InputAudioClear => "input_audio_buffer.clear",
            Self::ItemTruncate { .. } => "conversation.item.truncate",
            Self::ResponseCreate | Self::ResponseCreateOutOfBand { .. } => "response.create",
            Self::ResponseCancel { .. } => "response.cancel",
            Self::FunctionCallOutput { .. }
            | Self::UserText { .. }
            | Self::AssistantText { .. }
            | Self::SystemText { .. }
            | Self::FunctionCall { .. } => "conversation.item.create",
        }
    }
}

/// Appends `event` to `out` as one compact JSON object (no newline).
pub fn encode(event: &ClientEvent, out: &mut String) {
    match event {
        ClientEvent::SessionUpdate(config) => encode_session_update(config, out),
        ClientEvent::InputAudioAppend { audio_b64 } => encode_input_audio_append(audio_b64, out),
        ClientEvent::InputAudioCommit => out.push_str(r#"{"type":"input_audio_buffer.commit"}"#),
        ClientEvent::InputAudioClear => out.push_str(r#"{"type":"input_audio_buffer.clear"}"#),
        ClientEvent::ItemTruncate { item_id, content_index, audio_end_ms } => {
            out.push_str(r#"{"type":"conversation.item.truncate","item_id":"#);
            crate::core::json::push_str(out, item_id);
            out.push_str(r#","content_index":"#);
            push_number(out, u64::from(*content_index));
            out.push_str(r#","audio_end_ms":"#);
            push_number(out, *audio_end_ms);
            out.push('}');
        }
        ClientEvent::ResponseCreate => out.push_str(r#"{"type":"response.create"}"#),
        ClientEvent::ResponseCreateOutOfBand { instructions } => {
            out.push_str(
                r#"{"type":"response.create","response":{"conversation":"none","output_modalities":["audio"],"instructions":"#,
            );
            crate::core::json::push_str(out, instructions);
            out.push_str(r#","tool_choice":"none"}}"#);
        }
        ClientEvent::ResponseCancel { response_id } => {
            out.push_str(r#"{"type":"response.cancel""#);
            if let Some(id) = response_id {
                out.push_str(r#","response_id":"#);
                crate::core::json::push_str(out, id);
            }
            out.push('}');
        }
        ClientEvent::FunctionCallOutput { call_id, output } => {
            // No `status`: optional in the SDK ("has no effect on the conversation") and absent
            // from OpenAI's own samples.
            out.push_str(
                r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"#,
            );
            crate::core::json::push_str(out, call_id);
            out.push_str(r#","output":"#);
            crate::core::json::push_str(out, output);
            out.push_str("}}");
        }
        ClientEvent::UserText { text } => {
            out.push_str(
                r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"#,
            );
            crate::core::json::push_str(out, text);
            out.push_str("}]}}");
        }
        ClientEvent::AssistantText { text } => {
            out.push_str(
                r#"{"type":"conversation.item.create","item":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"#,
            );
            crate::core::json::push_str(out, text);
            out.push_str("}]}}");
        }
        ClientEvent::SystemText { text } => {
            out.push_str(
                r#"{"type":"conversation.item.create","item":{"type":"message","role":"system","content":[{"type":"input_text","text":"#,
            );
            crate::core::json::push_str(out, text);
            out.push_str("}]}}");
        }
        ClientEvent::FunctionCall { call_id, name, arguments } => {
            out.push_str(r#"{"type":"conversation.item.create","item":{"type":"function_call","call_id":"#);
            crate::core::json::push_str(out, call_id);
            out.push_str(r#","name":"#);
            crate::core::json::push_str(out, name);
            out.push_str(r#","arguments":"#);
            crate::core::json::push_str(out, arguments);
            out.push_str("}}");
        }
    }
}

/// Appends `{"type":"input_audio_buffer.append","audio":…}` for base64 audio borrowed from
/// elsewhere (e.g. a Twilio `media.payload`), without building a [`ClientEvent`].
pub fn encode_input_audio_append(audio_b64: &str, out: &mut String) {
    out.push_str(r#"{"type":"input_audio_buffer.append","audio":"#);
    crate::core::json::push_str(out, audio_b64);
    out.push('}');
}

/// `{"type":"session.update","session":{"type":"realtime",…}}` in the GA shape.
fn encode_session_update(config: &SessionConfig, out: &mut String) {
    out.push_str(r#"{"type":"session.update","session":{"type":"realtime""#);
    if let Some(model) = &config.model {
        out.push_str(r#","model":"#);
        crate::core::json::push_str(out, model);
    }
    out.push_str(r#","output_modalities":["audio"],"instructions":"#);
    crate::core::json::push_str(out, &config.instructions);

    out.push_str(r#","audio":{"input":{"format":"#);
    config.input_format.write(out);
    out.push_str(r#","noise_reduction":"#);
    match config.noise_reduction {
        Some(NoiseReduction::NearField) => out.push_str(r#"{"type":"near_field"}"#),
        Some(NoiseReduction::FarField) => out.push_str(r#"{"type":"far_field"}"#),
        None => out.push_str("null"),
    }
    out.push_str(r#","transcription":"#);
    match &config.transcription {
        Some(transcription) => {
            out.push_str(r#"{"model":"#);
            crate::core::json::push_str(out, &transcription.model);
            if let Some(language) = &transcription.language {
                out.push_str(r#","language":"#);
                crate::core::json::push_str(out, language);
            }
            if let Some(prompt) = &transcription.prompt {
                out.push_str(r#","prompt":"#);
                crate::core::json::push_str(out, prompt);
            }
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push_str(r#","turn_detection":"#);
    write_turn_detection(&config.turn_detection, out);

    out.push_str(r#"},"output":{"format":"#);
    config.output_format.write(out);
    out.push_str(r#","voice":"#);
    crate::core::json::push_str(out, &config.voice);
    if let Some(speed) = config.speed {
        push_float_field(out, "speed", speed);
    }
    out.push_str("}}");

    if !config.tools.is_empty() {
        out.push_str(r#","tools":["#);
        for (i, tool) in config.tools.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"type":"function","name":"#);
            crate::core::json::push_str(out, &tool.name);
            out.push_str(r#","description":"#);
            crate::core::json::push_str(out, &tool.description);
            out.push_str(r#","parameters":"#);
            // `Value`'s Display writes compact JSON; writing to a String cannot fail.
            let _ = write!(out, "{}", tool.parameters);
            out.push('}');
        }
        out.push_str(r#"],"tool_choice":"auto""#);
    }
    out.push_str("}}");
}

fn write_turn_detection(turn_detection: &TurnDetection, out: &mut String) {
    match turn_detection {
        TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            idle_timeout_ms,
            create_response,
            interrupt_response,
        } => {
            out.push_str(r#"{"type":"server_vad""#);
            push_float_field(out, "threshold", *threshold);
            out.push_str(r#","prefix_padding_ms":"#);
            push_number(out, u64::from(*prefix_padding_ms));
            out.push_str(r#","silence_duration_ms":"#);
            push_number(out, u64::from(*silence_duration_ms));
            if let Some(idle) = idle_timeout_ms {
                out.push_str(r#","idle_timeout_ms":"#);
                push_number(out, u64::from(*idle));
            }
            push_bool_fields(out, *create_response, *interrupt_response);
            out.push('}');
        }
        TurnDetection::SemanticVad { eagerness, create_response, interrupt_response } => {
            out.push_str(r#"{"type":"semantic_vad","eagerness":"#);
            crate::core::json::push_str(out, eagerness);
            push_bool_fields(out, *create_response, *interrupt_response);
            out.push('}');
        }
        TurnDetection::Manual => out.push_str("null"),
    }
}

fn push_bool_fields(out: &mut String, create_response: bool, interrupt_response: bool) {
    out.push_str(if create_response { r#","create_response":true"# } else { r#","create_response":false"# });
    out.push_str(if interrupt_response {
        r#","interrupt_response":true"#
    } else {
        r#","interrupt_response":false"#
    });
}

/// Appends `,"key":value`, or nothing when `value` is NaN or infinite (not representable in JSON).
fn push_float_field(out: &mut String, key: &str, value: f32) {
    if value.is_finite() {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        // f32's Display is the shortest decimal that reads back as the same f32 and never uses
        // an exponent: valid JSON for finite values. A whole number gets ".0", as serde_json
        // writes it, so it reads as a float everywhere. Writing to a String cannot fail.
        let start = out.len();
        let _ = write!(out, "{value}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
    }
}

fn push_number(out: &mut String, value: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests;
