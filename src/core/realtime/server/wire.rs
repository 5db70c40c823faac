//! The wire side of the decoder: the flat borrowed structs serde fills from a frame, the map
//! from `type` strings (GA and beta) to the handled events, and the audio-format mapping of
//! `session.updated`. Field sets follow the `openai` Python SDK 3.52.0 event models.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::Usage;
use crate::core::audio::{AudioFormat, ByteOrder, Encoding};

/// The handled event types; the one place where wire names (GA and beta) map to variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    InputAudioCommitted,
    ResponseCreated,
    AudioDelta,
    AudioDone,
    OutputTranscriptDelta,
    OutputTranscriptDone,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    FunctionCallArgumentsDone,
    ResponseDone,
    ItemTruncated,
    Error,
}

impl Kind {
    pub(super) fn from_wire(kind: &str) -> Option<Self> {
        Some(match kind {
            "session.created" => Self::SessionCreated,
            "session.updated" => Self::SessionUpdated,
            "input_audio_buffer.speech_started" => Self::SpeechStarted,
            "input_audio_buffer.speech_stopped" => Self::SpeechStopped,
            "input_audio_buffer.committed" => Self::InputAudioCommitted,
            "response.created" => Self::ResponseCreated,
            "response.output_audio.delta" | "response.audio.delta" => Self::AudioDelta,
            "response.output_audio.done" | "response.audio.done" => Self::AudioDone,
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                Self::OutputTranscriptDelta
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                Self::OutputTranscriptDone
            }
            "conversation.item.input_audio_transcription.completed" => Self::InputTranscriptionCompleted,
            "conversation.item.input_audio_transcription.failed" => Self::InputTranscriptionFailed,
            "response.function_call_arguments.done" => Self::FunctionCallArgumentsDone,
            "response.done" => Self::ResponseDone,
            "conversation.item.truncated" => Self::ItemTruncated,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// A JSON string that borrows from the input when it has no escapes.
///
/// serde's own `Cow<str>` impl always copies when wrapped in `Option`, so this newtype does
/// the borrowing for optional fields.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

/// Every top-level field the handled events use; serde skips the rest (`event_id`,
/// `output_index`, `item`, `rate_limits`, …).
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) item_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) response_id: Option<Text<'a>>,
    /// Base64 audio or transcript text, depending on the event.
    #[serde(borrow)]
    pub(super) delta: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) transcript: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) call_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) name: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) arguments: Option<Text<'a>>,
    pub(super) content_index: Option<u32>,
    pub(super) audio_start_ms: Option<u64>,
    pub(super) audio_end_ms: Option<u64>,
    #[serde(borrow)]
    pub(super) response: Option<WireResponse<'a>>,
    #[serde(borrow)]
    pub(super) session: Option<WireSession<'a>>,
    #[serde(borrow)]
    pub(super) error: Option<WireError<'a>>,
}

/// `response` of `response.created` / `response.done` (SDK `RealtimeResponse`).
#[derive(Deserialize)]
pub(super) struct WireResponse<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) status_details: Option<WireStatusDetails<'a>>,
    pub(super) usage: Option<WireUsage>,
}

/// `response.status_details` (SDK `RealtimeResponseStatus`).
#[derive(Deserialize)]
pub(super) struct WireStatusDetails<'a> {
    #[serde(borrow)]
    pub(super) reason: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) error: Option<WireError<'a>>,
}

/// `error` of the `error` event (SDK `RealtimeError`), of `…transcription.failed`, and of
/// `status_details`.
#[derive(Deserialize)]
pub(super) struct WireError<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) message: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) param: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) event_id: Option<Text<'a>>,
}

/// `response.usage` (SDK `RealtimeResponseUsage`).
#[derive(Deserialize)]
pub(super) struct WireUsage {
    pub(super) total_tokens: Option<u64>,
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) input_token_details: Option<WireTokenDetails>,
    pub(super) output_token_details: Option<WireTokenDetails>,
}

/// `input_token_details` / `output_token_details` (`cached_tokens` only exists for input).
#[derive(Deserialize)]
pub(super) struct WireTokenDetails {
    pub(super) text_tokens: Option<u64>,
    pub(super) audio_tokens: Option<u64>,
    pub(super) cached_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn into_usage(self) -> Usage {
        let input = self.input_token_details.unwrap_or(WireTokenDetails::NONE);
        let output = self.output_token_details.unwrap_or(WireTokenDetails::NONE);
        Usage {
            total_tokens: self.total_tokens.unwrap_or(0),
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            input_text_tokens: input.text_tokens.unwrap_or(0),
            input_audio_tokens: input.audio_tokens.unwrap_or(0),
            input_cached_tokens: input.cached_tokens.unwrap_or(0),
            output_text_tokens: output.text_tokens.unwrap_or(0),
            output_audio_tokens: output.audio_tokens.unwrap_or(0),
        }
    }
}

impl WireTokenDetails {
    const NONE: Self = Self { text_tokens: None, audio_tokens: None, cached_tokens: None };
}

/// `session` of `session.created` / `session.updated`: GA `audio.*.format` objects, or the beta
/// flat format strings.
#[derive(Deserialize)]
pub(super) struct WireSession<'a> {
    #[serde(borrow)]
    pub(super) audio: Option<WireAudio<'a>>,
    #[serde(borrow)]
    pub(super) input_audio_format: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) output_audio_format: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct WireAudio<'a> {
    #[serde(borrow)]
    pub(super) input: Option<WireAudioDirection<'a>>,
    #[serde(borrow)]
    pub(super) output: Option<WireAudioDirection<'a>>,
}

#[derive(Deserialize)]
pub(super) struct WireAudioDirection<'a> {
    #[serde(borrow)]
    pub(super) format: Option<WireFormat<'a>>,
}

/// SDK `RealtimeAudioFormats`: `{"type":"audio/pcm","rate":24000}`, `{"type":"audio/pcmu"}`,
/// `{"type":"audio/pcma"}`.
#[derive(Deserialize)]
pub(super) struct WireFormat<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Text<'a>>,
    pub(super) rate: Option<u32>,
}

impl WireSession<'_> {
    pub(super) fn formats(&self) -> (Option<AudioFormat>, Option<AudioFormat>) {
        let ga = |dir: Option<&WireAudioDirection<'_>>| {
            dir.and_then(|d| d.format.as_ref()).and_then(WireFormat::audio_format)
        };
        let audio = self.audio.as_ref();
        let input = ga(audio.and_then(|a| a.input.as_ref()))
            .or_else(|| self.input_audio_format.as_ref().and_then(|f| beta_format(&f.0)));
        let output = ga(audio.and_then(|a| a.output.as_ref()))
            .or_else(|| self.output_audio_format.as_ref().and_then(|f| beta_format(&f.0)));
        (input, output)
    }
}

impl WireFormat<'_> {
    fn audio_format(&self) -> Option<AudioFormat> {
        match self.kind.as_ref()?.0.as_ref() {
            "audio/pcmu" => Some(AudioFormat::PCMU_8K),
            "audio/pcma" => Some(AudioFormat::PCMA_8K),
            // Only 24 kHz is accepted today; report another rate as it is so a mismatch shows.
            "audio/pcm" => match self.rate.unwrap_or(24_000) {
                0 => None,
                rate => {
                    Some(AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: rate })
                }
            },
            _ => None,
        }
    }
}

/// Beta `input_audio_format` / `output_audio_format` strings.
fn beta_format(name: &str) -> Option<AudioFormat> {
    match name {
        "g711_ulaw" => Some(AudioFormat::PCMU_8K),
        "g711_alaw" => Some(AudioFormat::PCMA_8K),
        "pcm16" => Some(AudioFormat::PCM16_24K),
        _ => None,
    }
}
