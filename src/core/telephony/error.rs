//! Why a provider message could not be decoded.

/// A provider text frame that could not be turned into a [`super::ProviderEvent`].
///
/// Every variant means the peer (or something pretending to be it) sent bad input; none of them
/// means the codec is broken. Field names use the wire's dotted path and casing
/// (`media.payload`, `start.callSid`) so a log line points straight at the offending JSON.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than the codec's limit; it was rejected before any parsing.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    Oversize {
        /// Size of the rejected frame (bytes).
        len: usize,
        /// The configured limit (bytes).
        max: usize,
    },
    /// Not JSON, not a JSON object, trailing garbage, or a field of the wrong JSON type.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field the event needs is absent (or `null`).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present with the right JSON type but a value outside the protocol.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// Dotted wire path of the field.
        field: &'static str,
        /// What was wrong with the value.
        reason: String,
    },
    /// A payload field is not standard, padded base64 (RFC 4648 §4).
    #[error("field `{field}` is not valid base64")]
    Base64 {
        /// Dotted wire path of the field.
        field: &'static str,
    },
    /// `start.mediaFormat` names an audio format the bridge cannot carry.
    #[error("unsupported media format {encoding:?} at {sample_rate} Hz with {channels} channel(s)")]
    UnsupportedFormat {
        /// `mediaFormat.encoding` as received.
        encoding: String,
        /// `mediaFormat.sampleRate` (Hz).
        sample_rate: u32,
        /// `mediaFormat.channels`.
        channels: u32,
    },
}

impl DecodeError {
    /// Short, stable label for metrics and logs; never contains peer-supplied text.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oversize { .. } => "oversize",
            Self::Json(_) => "json",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::Base64 { .. } => "base64",
            Self::UnsupportedFormat { .. } => "unsupported_format",
        }
    }

    /// Shorthand for [`DecodeError::InvalidField`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField { field, reason: reason.into() }
    }
}
