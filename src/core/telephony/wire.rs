//! Serde shapes of inbound provider messages, their conversion into [`ProviderEvent`]s, and the
//! JSON string writer used for outbound commands.
//!
//! Inbound messages are parsed into one flat [`Raw`] struct holding every field any event can
//! carry, then dispatched on `event`. That is about twice as fast as an internally tagged enum
//! (which buffers the whole object before choosing a variant) and lets strings borrow from the
//! frame. Fields are `Option` so an absent field becomes a typed [`DecodeError::MissingField`]
//! naming its wire path instead of an opaque serde message.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{DecodeError, Dialect, Media, ProviderEvent, StreamStart, Track};
use crate::core::audio::{AudioFormat, ByteOrder, Encoding};

/// Every field of every inbound Twilio/SignalWire message. Unknown fields are skipped, so new
/// provider fields never break decoding.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Raw<'a> {
    #[serde(borrow)]
    pub event: Option<Text<'a>>,
    /// Top level on every Twilio message but `connected`; often absent on SignalWire.
    #[serde(borrow)]
    pub stream_sid: Option<Text<'a>>,
    pub sequence_number: Option<Num>,
    #[serde(borrow)]
    pub protocol: Option<Text<'a>>,
    #[serde(borrow)]
    pub version: Option<Text<'a>>,
    /// Owned: `start` arrives once per call and becomes an owned [`StreamStart`] anyway.
    pub start: Option<RawStart>,
    #[serde(borrow)]
    pub media: Option<RawMedia<'a>>,
    #[serde(borrow)]
    pub mark: Option<RawMark<'a>>,
    #[serde(borrow)]
    pub dtmf: Option<RawDtmf<'a>>,
}

/// Just the discriminator, to classify a frame whose full parse failed.
#[derive(Deserialize)]
pub(super) struct RawKind<'a> {
    #[serde(borrow)]
    pub event: Text<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawStart {
    stream_sid: Option<String>,
    account_sid: Option<String>,
    call_sid: Option<String>,
    tracks: Option<Vec<String>>,
    custom_parameters: Option<BTreeMap<String, String>>,
    media_format: Option<RawMediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMediaFormat {
    encoding: Option<String>,
    sample_rate: Option<Num>,
    channels: Option<Num>,
}

#[derive(Deserialize)]
pub(super) struct RawMedia<'a> {
    #[serde(borrow)]
    track: Option<Text<'a>>,
    chunk: Option<Num>,
    timestamp: Option<Num>,
    #[serde(borrow)]
    payload: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RawMark<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

/// Twilio also sends `track` (always `inbound_track`); it carries no information, so it is skipped.
#[derive(Deserialize)]
pub(super) struct RawDtmf<'a> {
    #[serde(borrow)]
    digit: Option<Text<'a>>,
    /// SignalWire only: tone length (ms), a JSON number.
    duration: Option<Num>,
}

/// A JSON string that borrows from the frame unless it contained escapes.
///
/// serde's `#[serde(borrow)]` only borrows a bare `Cow<str>` field, not an `Option<Cow<str>>`,
/// hence this newtype.
pub(super) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// A counter that the protocol sends as a decimal string but clones sometimes send as a JSON
/// number. A bad value is kept as a reason rather than failing the parse, so the error can name
/// the field ([`DecodeError::InvalidField`]) and so a bad field an event does not use (say
/// `sequenceNumber` on `media`) costs nothing.
pub(super) enum Num {
    Value(u64),
    Invalid(String),
}

impl Num {
    fn into_u64(self, field: &'static str) -> Result<u64, DecodeError> {
        match self {
            Self::Value(v) => Ok(v),
            Self::Invalid(reason) => Err(DecodeError::invalid(field, reason)),
        }
    }

    fn into_u32(self, field: &'static str) -> Result<u32, DecodeError> {
        let v = self.into_u64(field)?;
        u32::try_from(v).map_err(|_| DecodeError::invalid(field, format!("{v} does not fit in 32 bits")))
    }
}

/// Strictly ASCII digits (no sign, no whitespace), checked for overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Peer text quoted into an error reason, cut short so a hostile frame cannot bloat logs.
fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 32;
    let mut out: String = s.chars().take(MAX_CHARS).collect();
    if s.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

const NUM_EXPECTED: &str = "expected a decimal string or a non-negative integer";

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumVisitor;

        impl<'de> Visitor<'de> for NumVisitor {
            type Value = Num;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NUM_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                Ok(match parse_decimal(v) {
                    Some(n) => Num::Value(n),
                    None => Num::Invalid(format!("{NUM_EXPECTED}, found string {}", excerpt(v))),
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num::Value(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(match u64::try_from(v) {
                    Ok(n) => Num::Value(n),
                    Err(_) => Num::Invalid(format!("{NUM_EXPECTED}, found {v}")),
                })
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                // `20.0` is tolerated; fractions, negatives and values past 2^53 (where f64 stops
                // being exact) are not.
                const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;
                Ok(if v.fract() == 0.0 && (0.0..=EXACT_LIMIT).contains(&v) {
                    // Lossless: integral and within f64's exact integer range.
                    Num::Value(v as u64)
                } else {
                    Num::Invalid(format!("{NUM_EXPECTED}, found {v}"))
                })
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Num, E> {
                Ok(Num::Invalid(format!("{NUM_EXPECTED}, found {v}")))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num::Invalid(format!("{NUM_EXPECTED}, found an array")))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num::Invalid(format!("{NUM_EXPECTED}, found an object")))
            }
        }

        deserializer.deserialize_any(NumVisitor)
    }
}

impl Track {
    fn from_wire(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// Standard alphabet, canonical padding required: the payload may be forwarded verbatim to a
/// peer whose decoder is strict, so accepting sloppy base64 here would only move the failure.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(super) fn connected(raw: Raw<'_>) -> ProviderEvent<'_> {
    // Informational only, so absence is tolerated rather than failing the stream.
    let protocol = raw.protocol.map_or(Cow::Borrowed(""), |t| t.0);
    let version = raw.version.map_or(Cow::Borrowed(""), |t| t.0);
    ProviderEvent::Connected { protocol, version }
}

pub(super) fn start(raw: Raw<'_>, dialect: Dialect) -> Result<StreamStart, DecodeError> {
    let start = raw.start.ok_or(DecodeError::MissingField("start"))?;
    let stream_sid = start
        .stream_sid
        .or_else(|| raw.stream_sid.map(|t| t.0.into_owned()))
        .ok_or(DecodeError::MissingField("start.streamSid"))?;
    if stream_sid.is_empty() {
        return Err(DecodeError::invalid("start.streamSid", "empty"));
    }
    let call_sid = start.call_sid.ok_or(DecodeError::MissingField("start.callSid"))?;
    if call_sid.is_empty() {
        return Err(DecodeError::invalid("start.callSid", "empty"));
    }
    let account_sid = match (start.account_sid, dialect) {
        (Some(sid), _) => sid,
        (None, Dialect::SignalWire) => String::new(),
        (None, Dialect::Twilio) => return Err(DecodeError::MissingField("start.accountSid")),
    };
    let tracks = match start.tracks {
        // Absent means the provider default, `inbound_track`.
        None => vec![Track::Inbound],
        Some(names) => names
            .iter()
            .map(|name| {
                Track::from_wire(name).ok_or_else(|| {
                    DecodeError::invalid("start.tracks", format!("unknown track {}", excerpt(name)))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let media_format = match (start.media_format, dialect) {
        (Some(format), _) => media_format(format)?,
        // SignalWire's `<Stream codec>` defaults to PCMU@8000h.
        (None, Dialect::SignalWire) => AudioFormat::PCMU_8K,
        (None, Dialect::Twilio) => return Err(DecodeError::MissingField("start.mediaFormat")),
    };
    let sequence_number = raw.sequence_number.map(|n| n.into_u64("sequenceNumber")).transpose()?;
    Ok(StreamStart {
        stream_sid,
        call_sid,
        account_sid,
        tracks,
        custom_parameters: start.custom_parameters.unwrap_or_default(),
        media_format,
        sequence_number,
    })
}

fn media_format(raw: RawMediaFormat) -> Result<AudioFormat, DecodeError> {
    let encoding = raw.encoding.ok_or(DecodeError::MissingField("start.mediaFormat.encoding"))?;
    let sample_rate = raw
        .sample_rate
        .ok_or(DecodeError::MissingField("start.mediaFormat.sampleRate"))?
        .into_u32("start.mediaFormat.sampleRate")?;
    // Both providers document mono only; absence is read as that.
    let channels = raw.channels.map_or(Ok(1), |n| n.into_u32("start.mediaFormat.channels"))?;
    // MIME types are case-insensitive (RFC 2045 §5.1); SignalWire writes `audio/x-L16`.
    let is = |name: &str| encoding.eq_ignore_ascii_case(name);
    let format = match sample_rate {
        _ if channels != 1 => None,
        8000 if is("audio/x-mulaw") => Some(AudioFormat::PCMU_8K),
        8000 if is("audio/x-alaw") => Some(AudioFormat::PCMA_8K),
        // Byte order is undocumented; SignalWire's own OpenAI bridge forwards L16 untouched as
        // little-endian `pcm16` (reference §2.2).
        8000 | 16000 | 24000 if is("audio/x-L16") => {
            Some(AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: sample_rate })
        }
        _ => None,
    };
    format.ok_or(DecodeError::UnsupportedFormat { encoding, sample_rate, channels })
}

pub(super) fn media<'a>(
    raw: Option<RawMedia<'a>>,
    scratch: &'a mut Vec<u8>,
) -> Result<Media<'a>, DecodeError> {
    let raw = raw.ok_or(DecodeError::MissingField("media"))?;
    let track = match raw.track {
        None => Track::Inbound,
        Some(t) => Track::from_wire(&t.0)
            .ok_or_else(|| DecodeError::invalid("media.track", format!("unknown track {}", excerpt(&t.0))))?,
    };
    let chunk = raw.chunk.ok_or(DecodeError::MissingField("media.chunk"))?.into_u64("media.chunk")?;
    let timestamp_ms =
        raw.timestamp.ok_or(DecodeError::MissingField("media.timestamp"))?.into_u64("media.timestamp")?;
    let payload_b64 = raw.payload.ok_or(DecodeError::MissingField("media.payload"))?.0;
    // Cleared, not replaced: once the buffer has grown to a frame, decoding never allocates.
    scratch.clear();
    BASE64
        .decode_vec(payload_b64.as_bytes(), scratch)
        .map_err(|_| DecodeError::Base64 { field: "media.payload" })?;
    Ok(Media { track, chunk, timestamp_ms, payload_b64, audio: scratch.as_slice() })
}

pub(super) fn mark(raw: Option<RawMark<'_>>) -> Result<ProviderEvent<'_>, DecodeError> {
    let name = raw.and_then(|m| m.name).ok_or(DecodeError::MissingField("mark.name"))?.0;
    Ok(ProviderEvent::Mark { name })
}

pub(super) fn dtmf(raw: Option<RawDtmf<'_>>) -> Result<ProviderEvent<'static>, DecodeError> {
    let raw = raw.ok_or(DecodeError::MissingField("dtmf"))?;
    let text = raw.digit.ok_or(DecodeError::MissingField("dtmf.digit"))?.0;
    let mut chars = text.chars();
    let digit = match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => c,
        _ => {
            return Err(DecodeError::invalid(
                "dtmf.digit",
                format!("expected one of 0-9 * # A-D, found {}", excerpt(&text)),
            ));
        }
    };
    let duration_ms = raw.duration.map(|n| n.into_u32("dtmf.duration")).transpose()?;
    Ok(ProviderEvent::Dtmf { digit, duration_ms })
}
