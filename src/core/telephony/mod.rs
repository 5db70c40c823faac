//! Sans-IO codec for telephony media-stream WebSocket messages: Twilio Media Streams, and
//! SignalWire's cXML `<Stream>` as a dialect of it.
//!
//! [`ProviderCodec::decode`] turns one inbound text frame into a [`ProviderEvent`];
//! [`ProviderCodec::encode`] appends one outbound [`ProviderCommand`] as JSON text. No IO, no
//! clock, no async: the driver owns the socket and feeds frames in.
//!
//! # Protocol
//!
//! Sources: <https://www.twilio.com/docs/voice/media-streams/websocket-messages> and
//! <https://developer.signalwire.com/compatibility-api/cxml/voice/stream>, as summarised in the
//! project's telephony-media-streams reference (§1, §2).
//!
//! * Every frame is a JSON object with a string `event`; keys are camelCase exactly as sent.
//! * `sequenceNumber`, `media.chunk` and `media.timestamp` are decimal *strings* on the wire;
//!   `mediaFormat.sampleRate`, `mediaFormat.channels` and SignalWire's `dtmf.duration` are
//!   numbers. The decoder also accepts numbers for the string counters, because clones send them.
//! * Unknown events decode to [`ProviderEvent::Unknown`]; unknown fields are ignored.
//!
//! | | Twilio | SignalWire |
//! |---|---|---|
//! | `connected.version` | `"1.0.0"` | `"0.2.0"` (not checked) |
//! | IDs | `MZ…`/`CA…`/`AC…` | UUIDs |
//! | `start.accountSid` | required | may be absent (decodes to `""`) |
//! | `start.mediaFormat` | required, always μ-law 8 kHz | μ-law 8 kHz or L16 16/24 kHz; absent = μ-law 8 kHz |
//! | top-level `streamSid` | on every message after `connected` | often absent on inbound messages |
//! | `dtmf` | `track` + `digit` | `digit` + `duration` (ms, number) |
//! | `stop` | `stop{accountSid,callSid}` | no body |
//!
//! The codec never checks `streamSid` against the stream; the call state machine does.

mod error;
pub mod twiml;
mod wire;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;

pub use error::DecodeError;

use crate::core::audio::AudioFormat;

/// Which provider's variant of the media-stream protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Twilio Media Streams (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>).
    Twilio,
    /// SignalWire cXML `<Stream>` (<https://developer.signalwire.com/compatibility-api/cxml/voice/stream>).
    SignalWire,
}

impl Dialect {
    /// Stable lower-case name for routes, logs and metric labels: `"twilio"` or `"signalwire"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::SignalWire => "signalwire",
        }
    }

    /// Inverse of [`Dialect::name`] (exact match), e.g. for a `/media/{provider}` path segment.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "twilio" => Some(Self::Twilio),
            "signalwire" => Some(Self::SignalWire),
            _ => None,
        }
    }
}

/// Direction of a media track, from the provider's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// Audio the provider receives from the far end: the caller's voice. Wire value `"inbound"`.
    Inbound,
    /// Audio the provider plays into the call (`<Say>`, `<Play>`, or what we send on a
    /// bidirectional stream). Wire value `"outbound"`.
    Outbound,
}

impl Track {
    /// The wire value: `"inbound"` or `"outbound"` (as in `media.track` and `start.tracks`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The `start` message: stream metadata, sent once per stream right after `connected`.
///
/// Owned because it outlives the frame it came from (the call keeps it for its whole life).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// `start.streamSid` (falls back to top-level `streamSid`): `MZ…` on Twilio, a UUID on
    /// SignalWire. Every outbound command must carry it.
    pub stream_sid: String,
    /// `start.callSid`: `CA…` on Twilio, a UUID on SignalWire.
    pub call_sid: String,
    /// `start.accountSid`: `AC…` on Twilio, the project UUID on SignalWire (`""` if absent there).
    pub account_sid: String,
    /// `start.tracks`: which tracks will arrive. `[Inbound]` if absent (the provider default).
    pub tracks: Vec<Track>,
    /// `start.customParameters`: the `<Parameter name value>` pairs from the `<Stream>` markup,
    /// verbatim. Empty if absent. May carry caller data: treat as personal data in logs.
    pub custom_parameters: BTreeMap<String, String>,
    /// `start.mediaFormat`, mapped: `audio/x-mulaw` 8000 Hz → [`AudioFormat::PCMU_8K`],
    /// `audio/x-alaw` 8000 Hz → [`AudioFormat::PCMA_8K`], `audio/x-L16` at 8000/16000/24000 Hz
    /// → little-endian L16 at that rate. Always mono.
    pub media_format: AudioFormat,
    /// Top-level `sequenceNumber` (`"1"` for `start` in practice), if present.
    pub sequence_number: Option<u64>,
}

/// One `media` message: a chunk of call audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// `media.track`; `Inbound` if absent.
    pub track: Track,
    /// `media.chunk`: 1-based count of media messages (per track on SignalWire).
    pub chunk: u64,
    /// `media.timestamp`: presentation time of the first sample, ms since the stream started.
    /// Gaps mean lost or late audio; never derive timing from arrival time instead.
    pub timestamp_ms: u64,
    /// `media.payload` exactly as received (after JSON unescaping): base64 of raw audio in the
    /// stream's [`StreamStart::media_format`]. Passthrough forwards this text untouched.
    pub payload_b64: Cow<'a, str>,
    /// The decoded payload, in the codec's scratch buffer (overwritten by the next `decode`).
    /// Usually one 20 ms frame (160 bytes μ-law, 640/960 bytes L16 16/24 kHz), but any length
    /// is accepted.
    pub audio: &'a [u8],
}

/// One decoded inbound provider message. Borrows from the frame and the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent<'a> {
    /// First message after the handshake. `protocol` is `"Call"`; `version` is `"1.0.0"` on
    /// Twilio and `"0.2.0"` on SignalWire. Either is `""` if absent; neither is checked.
    Connected {
        /// Top-level `protocol`.
        protocol: Cow<'a, str>,
        /// Top-level `version`.
        version: Cow<'a, str>,
    },
    /// Stream metadata, once per stream. Boxed to keep the enum small for the media hot path.
    Start(Box<StreamStart>),
    /// A chunk of call audio.
    Media(Media<'a>),
    /// Playback reached a mark we sent, or `clear` flushed it (bidirectional streams only).
    Mark {
        /// `mark.name`: the name we sent, echoed.
        name: Cow<'a, str>,
    },
    /// The caller pressed a key (bidirectional streams only).
    Dtmf {
        /// `dtmf.digit`: one of `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// `dtmf.duration` (ms): SignalWire only.
        duration_ms: Option<u32>,
    },
    /// The stream ended (call hung up or stream stopped). The provider closes the socket next.
    Stop,
    /// Any other `event` value. Not an error: providers add events over time.
    Unknown {
        /// The `event` value, verbatim. Peer-controlled: never use it as a metric label.
        kind: String,
    },
}

/// A message we send on a bidirectional stream.
///
/// Encoded with exactly the documented fields in the documented order: Twilio raises warning
/// 31951 for a missing or extra field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCommand<'a> {
    /// Queue audio for playback: `{"event":"media","streamSid":…,"media":{"payload":…}}`.
    /// `payload_b64` is base64 of raw audio in the stream's format, any length.
    Media {
        /// The stream's SID from [`StreamStart::stream_sid`].
        stream_sid: &'a str,
        /// Base64 audio, no file header.
        payload_b64: &'a str,
    },
    /// Ask for `name` to be echoed once everything queued before it has played:
    /// `{"event":"mark","streamSid":…,"mark":{"name":…}}`.
    Mark {
        /// The stream's SID.
        stream_sid: &'a str,
        /// Any string; it comes back verbatim in [`ProviderEvent::Mark`].
        name: &'a str,
    },
    /// Drop all queued audio at once; pending marks are echoed back:
    /// `{"event":"clear","streamSid":…}`.
    Clear {
        /// The stream's SID.
        stream_sid: &'a str,
    },
    /// Play one DTMF tone into the call: `{"event":"dtmf","streamSid":…,"dtmf":{"digit":…}}`.
    /// SignalWire only (reference §2.2); Twilio cannot send DTMF over the socket.
    Dtmf {
        /// The stream's SID.
        stream_sid: &'a str,
        /// `0-9`, `*`, `#`, `A-D`, as a one-character string.
        digit: &'a str,
    },
}

/// Decoder/encoder for one media-stream connection.
///
/// Holds a scratch buffer for decoded audio so the per-frame path does not allocate once the
/// buffer has grown to the largest frame seen.
#[derive(Debug, Clone)]
pub struct ProviderCodec {
    /// Which provider variant this connection speaks.
    dialect: Dialect,
    /// Frames longer than this (bytes) are rejected before parsing.
    max_message_bytes: usize,
    /// Decoded audio of the last `media` message; [`Media::audio`] borrows it.
    scratch: Vec<u8>,
}

impl ProviderCodec {
    /// Default frame limit (bytes). A 20 ms L16 24 kHz frame, the largest the providers send,
    /// is about 1.4 KiB of JSON; neither provider documents a maximum.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

    /// A codec for `dialect` that rejects frames longer than `max_message_bytes`.
    pub fn new(dialect: Dialect, max_message_bytes: usize) -> Self {
        Self { dialect, max_message_bytes, scratch: Vec::new() }
    }

    /// The dialect this codec was built for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The frame limit (bytes).
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Decodes one inbound text frame.
    ///
    /// The result borrows `text` (strings without escapes) and the codec's scratch buffer
    /// ([`Media::audio`]), so it must be dropped before the next call. Never panics; every
    /// malformed frame is a [`DecodeError`].
    pub fn decode<'a>(&'a mut self, text: &'a str) -> Result<ProviderEvent<'a>, DecodeError> {
        if text.len() > self.max_message_bytes {
            return Err(DecodeError::Oversize { len: text.len(), max: self.max_message_bytes });
        }
        let raw: wire::Raw<'a> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(err) => return unknown_or_error(text, err),
        };
        let event = raw.event.as_ref().ok_or(DecodeError::MissingField("event"))?;
        match &*event.0 {
            "media" => wire::media(raw.media, &mut self.scratch).map(ProviderEvent::Media),
            "mark" => wire::mark(raw.mark),
            "dtmf" => wire::dtmf(raw.dtmf),
            "start" => wire::start(raw, self.dialect).map(|s| ProviderEvent::Start(Box::new(s))),
            "connected" => Ok(wire::connected(raw)),
            "stop" => Ok(ProviderEvent::Stop),
            other => Ok(ProviderEvent::Unknown { kind: other.to_owned() }),
        }
    }

    /// Appends `cmd` to `out` as one JSON text message, with exactly the documented fields in
    /// the documented order and strings escaped as JSON requires. Does not clear `out`.
    pub fn encode(&self, cmd: &ProviderCommand<'_>, out: &mut String) {
        // Both dialects take the same outbound shapes (reference §1.4, §2.2).
        let (event, stream_sid, body) = match *cmd {
            ProviderCommand::Media { stream_sid, payload_b64 } => {
                ("media", stream_sid, Some(("media", "payload", payload_b64)))
            }
            ProviderCommand::Mark { stream_sid, name } => ("mark", stream_sid, Some(("mark", "name", name))),
            ProviderCommand::Clear { stream_sid } => ("clear", stream_sid, None),
            ProviderCommand::Dtmf { stream_sid, digit } => {
                ("dtmf", stream_sid, Some(("dtmf", "digit", digit)))
            }
        };
        out.reserve(48 + stream_sid.len() + body.map_or(0, |(_, _, v)| v.len()));
        out.push_str(r#"{"event":""#);
        out.push_str(event);
        out.push_str(r#"","streamSid":"#);
        crate::core::json::push_str(out, stream_sid);
        if let Some((object, field, value)) = body {
            out.push_str(r#",""#);
            out.push_str(object);
            out.push_str(r#"":{""#);
            out.push_str(field);
            out.push_str(r#"":"#);
            crate::core::json::push_str(out, value);
            out.push('}');
        }
        out.push('}');
    }
}

/// A frame that failed the full parse is still [`ProviderEvent::Unknown`] if it is a JSON object
/// whose `event` we do not handle: an unfamiliar event may reuse a field name (`media`, `start`,
/// …) with a shape of its own, and that must not read as a protocol error. Only runs on the
/// error path, so well-formed frames are parsed once.
fn unknown_or_error(text: &str, err: serde_json::Error) -> Result<ProviderEvent<'static>, DecodeError> {
    match serde_json::from_str::<wire::RawKind<'_>>(text) {
        Ok(raw) if !KNOWN_EVENTS.contains(&&*raw.event.0) => {
            Ok(ProviderEvent::Unknown { kind: raw.event.0.into_owned() })
        }
        _ => Err(DecodeError::Json(err)),
    }
}

/// The `event` values [`ProviderCodec::decode`] dispatches on.
const KNOWN_EVENTS: [&str; 6] = ["connected", "start", "media", "mark", "dtmf", "stop"];
