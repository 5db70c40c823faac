//! Fixture, error-path and property tests for the provider codec.
//!
//! Fixtures are written from the documented schemas (reference §1.3, §2.2); payloads are a
//! 440 Hz tone (1 kHz for SignalWire μ-law) so decoded bytes can be spot-checked.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use super::*;
use crate::core::audio::{ByteOrder, Encoding};

mod twilio {
    pub const CONNECTED: &str = include_str!("../../../fixtures/twilio/connected.json");
    pub const START: &str = include_str!("../../../fixtures/twilio/start.json");
    pub const MEDIA: &str = include_str!("../../../fixtures/twilio/media.json");
    pub const MARK: &str = include_str!("../../../fixtures/twilio/mark.json");
    pub const DTMF: &str = include_str!("../../../fixtures/twilio/dtmf.json");
    pub const STOP: &str = include_str!("../../../fixtures/twilio/stop.json");
    pub const OUTBOUND_MEDIA: &str = include_str!("../../../fixtures/twilio/outbound_media.json");
    pub const OUTBOUND_MARK: &str = include_str!("../../../fixtures/twilio/outbound_mark.json");
    pub const OUTBOUND_CLEAR: &str = include_str!("../../../fixtures/twilio/outbound_clear.json");
}

mod signalwire {
    pub const CONNECTED: &str = include_str!("../../../fixtures/signalwire/connected.json");
    pub const START_PCMU: &str = include_str!("../../../fixtures/signalwire/start_pcmu.json");
    pub const START_L16_16K: &str = include_str!("../../../fixtures/signalwire/start_l16_16k.json");
    pub const START_L16_24K: &str = include_str!("../../../fixtures/signalwire/start_l16_24k.json");
    pub const MEDIA_PCMU: &str = include_str!("../../../fixtures/signalwire/media_pcmu.json");
    pub const MEDIA_L16_16K: &str = include_str!("../../../fixtures/signalwire/media_l16_16k.json");
    pub const MEDIA_L16_24K: &str = include_str!("../../../fixtures/signalwire/media_l16_24k.json");
    pub const DTMF: &str = include_str!("../../../fixtures/signalwire/dtmf.json");
    pub const MARK: &str = include_str!("../../../fixtures/signalwire/mark.json");
    pub const STOP: &str = include_str!("../../../fixtures/signalwire/stop.json");
}

const TWILIO_STREAM: &str = "MZ0123456789abcdef0123456789abcdef";
const TWILIO_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_CALL: &str = "CA0123456789abcdef0123456789abcdef";
const SW_STREAM: &str = "3f0c9a52-1d4e-4b7a-9c55-0e2d9b1a7f10";
const SW_ACCOUNT: &str = "b1c2d3e4-0000-4000-8000-000000000001";
const SW_CALL: &str = "c7d8e9f0-0000-4000-8000-000000000002";

const L16_LE: Encoding = Encoding::L16(ByteOrder::Little);

fn codec(dialect: Dialect) -> ProviderCodec {
    ProviderCodec::new(dialect, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES)
}

fn start_of(dialect: Dialect, text: &str) -> StreamStart {
    match codec(dialect).decode(text) {
        Ok(ProviderEvent::Start(start)) => *start,
        other => panic!("expected start, got {other:?}"),
    }
}

fn error_of(dialect: Dialect, text: &str) -> DecodeError {
    match codec(dialect).decode(text) {
        Err(err) => err,
        Ok(event) => panic!("expected an error, got {event:?}"),
    }
}

/// Checks a decoded media message against its fixture: counters, track, that `payload_b64` is
/// the fixture's text verbatim (and borrowed), and that `audio` is its exact decoding.
fn check_media(dialect: Dialect, text: &str, chunk: u64, timestamp_ms: u64, len: usize, head: [u8; 4]) {
    let expected_b64 = serde_json::from_str::<serde_json::Value>(text).unwrap()["media"]["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut codec = codec(dialect);
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert_eq!(media.track, Track::Inbound);
    assert_eq!(media.chunk, chunk);
    assert_eq!(media.timestamp_ms, timestamp_ms);
    assert_eq!(media.payload_b64, expected_b64);
    assert!(matches!(media.payload_b64, Cow::Borrowed(_)), "payload should borrow from the frame");
    assert_eq!(media.audio.len(), len);
    assert_eq!(media.audio[..4], head);
    assert_eq!(STANDARD.encode(media.audio), expected_b64);
}

// ---------------------------------------------------------------- Twilio fixtures

#[test]
fn twilio_connected() {
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(
        codec.decode(twilio::CONNECTED).unwrap(),
        ProviderEvent::Connected { protocol: "Call".into(), version: "1.0.0".into() }
    );
}

#[test]
fn twilio_start() {
    let start = start_of(Dialect::Twilio, twilio::START);
    assert_eq!(start.stream_sid, TWILIO_STREAM);
    assert_eq!(start.call_sid, TWILIO_CALL);
    assert_eq!(start.account_sid, TWILIO_ACCOUNT);
    assert_eq!(start.tracks, [Track::Inbound]);
    assert_eq!(start.media_format, AudioFormat::PCMU_8K);
    assert_eq!(start.sequence_number, Some(1));
    let params: Vec<_> = start.custom_parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(params, [("agent", "support-en"), ("session", "s_7Hq2")]);
}

#[test]
fn twilio_media() {
    check_media(Dialect::Twilio, twilio::MEDIA, 1, 20, 160, [0xff, 0xb9, 0xab, 0xa4]);
}

#[test]
fn twilio_mark() {
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(codec.decode(twilio::MARK).unwrap(), ProviderEvent::Mark { name: "resp_41:end".into() });
}

#[test]
fn twilio_dtmf() {
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(codec.decode(twilio::DTMF).unwrap(), ProviderEvent::Dtmf { digit: '7', duration_ms: None });
}

#[test]
fn twilio_stop() {
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(codec.decode(twilio::STOP).unwrap(), ProviderEvent::Stop);
}

// ---------------------------------------------------------------- SignalWire fixtures

#[test]
fn signalwire_connected() {
    let mut codec = codec(Dialect::SignalWire);
    assert_eq!(
        codec.decode(signalwire::CONNECTED).unwrap(),
        ProviderEvent::Connected { protocol: "Call".into(), version: "0.2.0".into() }
    );
}

#[test]
fn signalwire_start_pcmu_without_custom_parameters() {
    let start = start_of(Dialect::SignalWire, signalwire::START_PCMU);
    assert_eq!(start.stream_sid, SW_STREAM);
    assert_eq!(start.call_sid, SW_CALL);
    assert_eq!(start.account_sid, SW_ACCOUNT);
    assert_eq!(start.tracks, [Track::Inbound]);
    assert!(start.custom_parameters.is_empty());
    assert_eq!(start.media_format, AudioFormat::PCMU_8K);
    assert_eq!(start.sequence_number, Some(1));
}

#[test]
fn signalwire_start_l16_16k() {
    let start = start_of(Dialect::SignalWire, signalwire::START_L16_16K);
    assert_eq!(start.tracks, [Track::Inbound, Track::Outbound]);
    assert_eq!(start.media_format, AudioFormat { encoding: L16_LE, sample_rate_hz: 16000 });
    assert_eq!(start.media_format.frame_bytes(), 640);
    assert_eq!(start.custom_parameters.get("session").map(String::as_str), Some("s_7Hq2"));
}

#[test]
fn signalwire_start_l16_24k_is_openai_pcm16() {
    let start = start_of(Dialect::SignalWire, signalwire::START_L16_24K);
    assert_eq!(start.media_format, AudioFormat::PCM16_24K);
}

#[test]
fn signalwire_media_pcmu() {
    check_media(Dialect::SignalWire, signalwire::MEDIA_PCMU, 8, 160, 160, [0xff, 0xae, 0xa8, 0xae]);
}

#[test]
fn signalwire_media_l16_16k() {
    // First samples of the tone, little-endian: 0, then 1375 (0x055f).
    check_media(Dialect::SignalWire, signalwire::MEDIA_L16_16K, 8, 160, 640, [0x00, 0x00, 0x5f, 0x05]);
}

#[test]
fn signalwire_media_l16_24k() {
    check_media(Dialect::SignalWire, signalwire::MEDIA_L16_24K, 8, 160, 960, [0x00, 0x00, 0x97, 0x03]);
}

#[test]
fn signalwire_dtmf_has_duration() {
    let mut codec = codec(Dialect::SignalWire);
    assert_eq!(
        codec.decode(signalwire::DTMF).unwrap(),
        ProviderEvent::Dtmf { digit: '#', duration_ms: Some(160) }
    );
}

#[test]
fn signalwire_mark() {
    let mut codec = codec(Dialect::SignalWire);
    assert_eq!(codec.decode(signalwire::MARK).unwrap(), ProviderEvent::Mark { name: "resp_41:end".into() });
}

#[test]
fn signalwire_stop_without_body() {
    let mut codec = codec(Dialect::SignalWire);
    assert_eq!(codec.decode(signalwire::STOP).unwrap(), ProviderEvent::Stop);
}

// ---------------------------------------------------------------- encoding

fn encoded(cmd: &ProviderCommand<'_>) -> String {
    let mut out = String::new();
    codec(Dialect::Twilio).encode(cmd, &mut out);
    out
}

#[test]
fn encode_matches_outbound_fixtures_byte_for_byte() {
    let payload =
        serde_json::from_str::<serde_json::Value>(twilio::OUTBOUND_MEDIA).unwrap()["media"]["payload"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(STANDARD.decode(&payload).unwrap().len(), 160);
    assert_eq!(
        encoded(&ProviderCommand::Media { stream_sid: TWILIO_STREAM, payload_b64: &payload }),
        twilio::OUTBOUND_MEDIA
    );
    assert_eq!(
        encoded(&ProviderCommand::Mark { stream_sid: TWILIO_STREAM, name: "resp_41:end" }),
        twilio::OUTBOUND_MARK
    );
    assert_eq!(encoded(&ProviderCommand::Clear { stream_sid: TWILIO_STREAM }), twilio::OUTBOUND_CLEAR);
}

#[test]
fn encode_is_the_same_for_signalwire() {
    let cmd = ProviderCommand::Clear { stream_sid: SW_STREAM };
    let mut out = String::new();
    codec(Dialect::SignalWire).encode(&cmd, &mut out);
    assert_eq!(out, format!(r#"{{"event":"clear","streamSid":"{SW_STREAM}"}}"#));
}

#[test]
fn signalwire_dtmf_is_encoded_as_documented() {
    let mut out = String::new();
    codec(Dialect::SignalWire).encode(&ProviderCommand::Dtmf { stream_sid: SW_STREAM, digit: "1" }, &mut out);
    assert_eq!(out, format!(r#"{{"event":"dtmf","streamSid":"{SW_STREAM}","dtmf":{{"digit":"1"}}}}"#));
}

#[test]
fn encode_appends_without_clearing() {
    let codec = codec(Dialect::Twilio);
    let mut out = String::from("prefix|");
    codec.encode(&ProviderCommand::Clear { stream_sid: "MZ1" }, &mut out);
    codec.encode(&ProviderCommand::Clear { stream_sid: "MZ2" }, &mut out);
    assert_eq!(out, r#"prefix|{"event":"clear","streamSid":"MZ1"}{"event":"clear","streamSid":"MZ2"}"#);
}

#[test]
fn mark_names_are_escaped() {
    let name = "say \"hi\"\\ C:\\tmp\n\t\u{1}\u{1f} é 日本 🎧 </script> \u{7f}";
    let out = encoded(&ProviderCommand::Mark { stream_sid: "MZ1", name });
    assert_eq!(
        out,
        "{\"event\":\"mark\",\"streamSid\":\"MZ1\",\"mark\":{\"name\":\
         \"say \\\"hi\\\"\\\\ C:\\\\tmp\\n\\t\\u0001\\u001f é 日本 🎧 </script> \u{7f}\"}}"
    );
    // Any JSON parser reads back the original name, and so do we (as an echoed mark).
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["mark"]["name"], name);
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(codec.decode(&out).unwrap(), ProviderEvent::Mark { name: name.into() });
}

#[test]
fn escaped_inbound_strings_are_unescaped() {
    // Some JSON encoders escape `/`, which base64 uses; the payload must still decode.
    let text = r#"{"event":"media","media":{"chunk":"1","timestamp":"0","payload":"\/\/7+"}}"#;
    let mut codec = codec(Dialect::Twilio);
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert_eq!(media.payload_b64, "//7+");
    assert_eq!(media.audio, [0xff, 0xfe, 0xfe]);
}

// ---------------------------------------------------------------- unknown events

#[test]
fn unknown_event_is_not_an_error() {
    let mut codec = codec(Dialect::Twilio);
    let text = r#"{"event":"playedStream","sequenceNumber":"9","streamSid":"MZ1","name":"x"}"#;
    assert_eq!(codec.decode(text).unwrap(), ProviderEvent::Unknown { kind: "playedStream".into() });
}

#[test]
fn unknown_event_reusing_a_field_name_is_still_unknown() {
    // `media` has a shape of its own here; for an event we do not handle that is not an error.
    let mut codec = codec(Dialect::Twilio);
    let text = r#"{"event":"vendorMedia","media":"elsewhere","start":[1,2]}"#;
    assert_eq!(codec.decode(text).unwrap(), ProviderEvent::Unknown { kind: "vendorMedia".into() });
}

#[test]
fn unknown_fields_are_ignored() {
    let text = r#"{"event":"mark","mark":{"name":"m","extra":{"deep":[1]}},"x":null}"#;
    let mut codec = codec(Dialect::Twilio);
    assert_eq!(codec.decode(text).unwrap(), ProviderEvent::Mark { name: "m".into() });
}

// ---------------------------------------------------------------- errors

#[test]
fn not_json_is_a_json_error() {
    for text in ["", "hello", "{\"event\":\"stop\"", "{\"event\":\"stop\"} trailing"] {
        let err = error_of(Dialect::Twilio, text);
        assert!(matches!(err, DecodeError::Json(_)), "{text:?}: {err:?}");
        assert_eq!(err.kind(), "json");
    }
}

#[test]
fn json_that_is_not_an_object_is_a_json_error() {
    for text in [r#"[{"event":"stop"}]"#, "42", "\"stop\"", "null"] {
        assert!(matches!(error_of(Dialect::Twilio, text), DecodeError::Json(_)), "{text:?}");
    }
}

#[test]
fn missing_or_non_string_event() {
    assert!(matches!(error_of(Dialect::Twilio, "{}"), DecodeError::MissingField("event")));
    assert!(matches!(error_of(Dialect::Twilio, r#"{"event":7}"#), DecodeError::Json(_)));
}

#[test]
fn bad_base64_payload() {
    for payload in ["not base64!", "AAA", "AA=A", "/v7+/g=", "//7+ "] {
        let text =
            format!(r#"{{"event":"media","media":{{"chunk":"1","timestamp":"0","payload":"{payload}"}}}}"#);
        let err = error_of(Dialect::Twilio, &text);
        assert!(matches!(err, DecodeError::Base64 { field: "media.payload" }), "{payload:?}: {err:?}");
        assert_eq!(err.kind(), "base64");
    }
}

#[test]
fn missing_media_fields() {
    let cases = [
        (r#"{"event":"media"}"#, "media"),
        (r#"{"event":"media","media":{"chunk":"1","timestamp":"20"}}"#, "media.payload"),
        (r#"{"event":"media","media":{"chunk":"1","timestamp":"20","payload":null}}"#, "media.payload"),
        (r#"{"event":"media","media":{"timestamp":"20","payload":""}}"#, "media.chunk"),
        (r#"{"event":"media","media":{"chunk":"1","payload":""}}"#, "media.timestamp"),
    ];
    for (text, field) in cases {
        let err = error_of(Dialect::Twilio, text);
        assert!(matches!(err, DecodeError::MissingField(f) if f == field), "{text}: {err:?}");
        assert_eq!(err.kind(), "missing_field");
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn empty_payload_is_empty_audio() {
    let text = r#"{"event":"media","media":{"chunk":"1","timestamp":"20","payload":""}}"#;
    let mut codec = codec(Dialect::Twilio);
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert!(media.audio.is_empty());
}

#[test]
fn missing_call_sid() {
    let text = twilio::START.replace(&format!(r#""callSid":"{TWILIO_CALL}","#), "");
    assert!(matches!(error_of(Dialect::Twilio, &text), DecodeError::MissingField("start.callSid")));
    let text = r#"{"event":"start","start":{"streamSid":"MZ1","accountSid":"AC1","callSid":"","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
    assert!(matches!(
        error_of(Dialect::Twilio, text),
        DecodeError::InvalidField { field: "start.callSid", .. }
    ));
    assert!(matches!(error_of(Dialect::Twilio, r#"{"event":"start"}"#), DecodeError::MissingField("start")));
}

#[test]
fn start_stream_sid_falls_back_to_top_level() {
    let text = twilio::START.replace(&format!(r#""streamSid":"{TWILIO_STREAM}","callSid""#), r#""callSid""#);
    assert_ne!(text, twilio::START);
    assert_eq!(start_of(Dialect::Twilio, &text).stream_sid, TWILIO_STREAM);
    let text = r#"{"event":"start","start":{"callSid":"CA1","accountSid":"AC1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
    assert!(matches!(error_of(Dialect::Twilio, text), DecodeError::MissingField("start.streamSid")));
}

#[test]
fn dialect_specific_start_defaults() {
    let minimal = r#"{"event":"start","start":{"streamSid":"S","callSid":"C"}}"#;
    let start = start_of(Dialect::SignalWire, minimal);
    assert_eq!(start.account_sid, "");
    assert_eq!(start.media_format, AudioFormat::PCMU_8K);
    assert_eq!(start.tracks, [Track::Inbound]);
    assert_eq!(start.sequence_number, None);
    assert!(matches!(error_of(Dialect::Twilio, minimal), DecodeError::MissingField("start.accountSid")));
    let with_account = r#"{"event":"start","start":{"streamSid":"S","callSid":"C","accountSid":"A"}}"#;
    assert!(matches!(
        error_of(Dialect::Twilio, with_account),
        DecodeError::MissingField("start.mediaFormat")
    ));
}

#[test]
fn start_rejects_unknown_tracks() {
    let text = twilio::START.replace(r#"["inbound"]"#, r#"["inbound","sideways"]"#);
    assert!(matches!(
        error_of(Dialect::Twilio, &text),
        DecodeError::InvalidField { field: "start.tracks", .. }
    ));
}

#[test]
fn non_numeric_timestamp() {
    for value in [
        r#""abc""#,
        r#""""#,
        r#""-20""#,
        r#""+20""#,
        r#"" 20""#,
        r#""20.5""#,
        "-20",
        "20.5",
        "true",
        "{}",
        "[]",
    ] {
        let text = format!(r#"{{"event":"media","media":{{"chunk":"1","timestamp":{value},"payload":""}}}}"#);
        let err = error_of(Dialect::Twilio, &text);
        assert!(
            matches!(&err, DecodeError::InvalidField { field: "media.timestamp", .. }),
            "{value}: {err:?}"
        );
        assert_eq!(err.kind(), "invalid_field");
    }
    let overflow =
        r#"{"event":"media","media":{"chunk":"18446744073709551616","timestamp":"0","payload":""}}"#;
    assert!(matches!(
        error_of(Dialect::Twilio, overflow),
        DecodeError::InvalidField { field: "media.chunk", .. }
    ));
}

#[test]
fn counters_may_be_json_numbers() {
    let text = r#"{"event":"media","sequenceNumber":3,"media":{"track":"outbound","chunk":2,"timestamp":40.0,"payload":"/w=="}}"#;
    let mut codec = codec(Dialect::SignalWire);
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert_eq!(
        (media.track, media.chunk, media.timestamp_ms, media.audio),
        (Track::Outbound, 2, 40, &[0xff][..])
    );
}

#[test]
fn media_track_defaults_to_inbound_and_rejects_unknown_values() {
    let text = r#"{"event":"media","media":{"chunk":"1","timestamp":"0","payload":""}}"#;
    let mut codec = codec(Dialect::SignalWire);
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert_eq!(media.track, Track::Inbound);
    let text =
        r#"{"event":"media","media":{"track":"inbound_track","chunk":"1","timestamp":"0","payload":""}}"#;
    assert!(matches!(
        error_of(Dialect::Twilio, text),
        DecodeError::InvalidField { field: "media.track", .. }
    ));
}

#[test]
fn oversize_is_rejected_before_parsing() {
    // 1 MiB of nesting that the parser would reject for its depth: we must never get that far.
    let text = "[".repeat(1 << 20);
    let mut codec = ProviderCodec::new(Dialect::Twilio, 64 * 1024);
    let err = codec.decode(&text).unwrap_err();
    assert!(matches!(err, DecodeError::Oversize { len: 1_048_576, max: 65_536 }), "{err:?}");
    assert_eq!(err.kind(), "oversize");
    // Exactly at the limit is allowed.
    let mut codec = ProviderCodec::new(Dialect::Twilio, twilio::STOP.len());
    assert_eq!(codec.decode(twilio::STOP).unwrap(), ProviderEvent::Stop);
}

#[test]
fn unsupported_media_formats() {
    let cases = [
        ("audio/x-mulaw", 16000, 1),
        ("audio/x-alaw", 24000, 1),
        ("audio/x-L16", 48000, 1),
        ("audio/x-L16", 16000, 2),
        ("audio/x-mulaw", 8000, 2),
        ("audio/opus", 48000, 1),
    ];
    for (encoding, rate, channels) in cases {
        let text = format!(
            r#"{{"event":"start","start":{{"streamSid":"S","callSid":"C","accountSid":"A","mediaFormat":{{"encoding":"{encoding}","sampleRate":{rate},"channels":{channels}}}}}}}"#
        );
        let err = error_of(Dialect::SignalWire, &text);
        assert!(
            matches!(&err, DecodeError::UnsupportedFormat { encoding: e, sample_rate, channels: c }
                if e == encoding && *sample_rate == rate && *c == channels),
            "{text}: {err:?}"
        );
        assert_eq!(err.kind(), "unsupported_format");
    }
}

#[test]
fn supported_media_formats() {
    let cases = [
        ("audio/x-alaw", 8000, AudioFormat::PCMA_8K),
        ("AUDIO/X-MULAW", 8000, AudioFormat::PCMU_8K),
        ("audio/x-l16", 8000, AudioFormat { encoding: L16_LE, sample_rate_hz: 8000 }),
    ];
    for (encoding, rate, expected) in cases {
        let text = format!(
            r#"{{"event":"start","start":{{"streamSid":"S","callSid":"C","accountSid":"A","mediaFormat":{{"encoding":"{encoding}","sampleRate":{rate}}}}}}}"#
        );
        assert_eq!(start_of(Dialect::Twilio, &text).media_format, expected, "{encoding}");
    }
}

#[test]
fn invalid_dtmf_digits() {
    for digit in ["E", "a", "12", "", "\u{663}", "#*"] {
        let text = format!(r#"{{"event":"dtmf","dtmf":{{"track":"inbound_track","digit":"{digit}"}}}}"#);
        let err = error_of(Dialect::Twilio, &text);
        assert!(matches!(&err, DecodeError::InvalidField { field: "dtmf.digit", .. }), "{digit:?}: {err:?}");
    }
    assert!(matches!(
        error_of(Dialect::Twilio, r#"{"event":"dtmf","dtmf":{}}"#),
        DecodeError::MissingField("dtmf.digit")
    ));
    let negative = r##"{"event":"dtmf","dtmf":{"digit":"#","duration":-1}}"##;
    assert!(matches!(
        error_of(Dialect::SignalWire, negative),
        DecodeError::InvalidField { field: "dtmf.duration", .. }
    ));
}

#[test]
fn every_dtmf_digit_is_accepted() {
    let mut codec = codec(Dialect::Twilio);
    for digit in "0123456789*#ABCD".chars() {
        let text = format!(r#"{{"event":"dtmf","dtmf":{{"digit":"{digit}"}}}}"#);
        assert_eq!(codec.decode(&text).unwrap(), ProviderEvent::Dtmf { digit, duration_ms: None });
    }
}

#[test]
fn missing_mark_name() {
    assert!(matches!(
        error_of(Dialect::Twilio, r#"{"event":"mark"}"#),
        DecodeError::MissingField("mark.name")
    ));
    assert!(matches!(
        error_of(Dialect::Twilio, r#"{"event":"mark","mark":{}}"#),
        DecodeError::MissingField("mark.name")
    ));
}

#[test]
fn error_messages_name_the_field() {
    let err = DecodeError::InvalidField { field: "media.timestamp", reason: "x".into() };
    assert_eq!(err.to_string(), "invalid field `media.timestamp`: x");
    assert_eq!(
        DecodeError::Base64 { field: "media.payload" }.to_string(),
        "field `media.payload` is not valid base64"
    );
    assert_eq!(
        DecodeError::Oversize { len: 2, max: 1 }.to_string(),
        "message of 2 bytes exceeds the 1-byte limit"
    );
    let long = format!(
        r#"{{"event":"media","media":{{"chunk":"{}","timestamp":"0","payload":""}}}}"#,
        "x".repeat(1000)
    );
    let message = error_of(Dialect::Twilio, &long).to_string();
    assert!(message.contains("media.chunk") && message.len() < 200, "{message}");
}

// ---------------------------------------------------------------- codec behaviour

#[test]
fn scratch_is_reused_across_frames() {
    let mut codec = codec(Dialect::Twilio);
    let first = match codec.decode(twilio::MEDIA) {
        Ok(ProviderEvent::Media(media)) => media.audio.as_ptr(),
        other => panic!("expected media, got {other:?}"),
    };
    let capacity = codec.scratch.capacity();
    for _ in 0..10 {
        let Ok(ProviderEvent::Media(media)) = codec.decode(twilio::MEDIA) else { panic!("expected media") };
        assert_eq!(media.audio.as_ptr(), first);
    }
    assert_eq!(codec.scratch.capacity(), capacity);
}

#[test]
fn a_shorter_frame_yields_only_its_own_bytes() {
    let mut codec = codec(Dialect::Twilio);
    assert!(codec.decode(twilio::MEDIA).is_ok());
    let text = r#"{"event":"media","media":{"chunk":"1","timestamp":"0","payload":"/w=="}}"#;
    let Ok(ProviderEvent::Media(media)) = codec.decode(text) else { panic!("expected media") };
    assert_eq!(media.audio, [0xff]);
}

#[test]
fn dialect_names_round_trip() {
    for dialect in [Dialect::Twilio, Dialect::SignalWire] {
        assert_eq!(Dialect::from_name(dialect.name()), Some(dialect));
        assert_eq!(codec(dialect).dialect(), dialect);
    }
    assert_eq!(Dialect::SignalWire.name(), "signalwire");
    assert_eq!(Dialect::from_name("Twilio"), None);
    assert_eq!(Track::Outbound.as_str(), "outbound");
}

// ---------------------------------------------------------------- properties

const ALL_FIXTURES: [&str; 16] = [
    twilio::CONNECTED,
    twilio::START,
    twilio::MEDIA,
    twilio::MARK,
    twilio::DTMF,
    twilio::STOP,
    signalwire::CONNECTED,
    signalwire::START_PCMU,
    signalwire::START_L16_16K,
    signalwire::START_L16_24K,
    signalwire::MEDIA_PCMU,
    signalwire::MEDIA_L16_16K,
    signalwire::MEDIA_L16_24K,
    signalwire::DTMF,
    signalwire::MARK,
    signalwire::STOP,
];

/// Decodes `text` with both dialects; the only requirement is returning instead of panicking,
/// plus errors that can be labelled and displayed.
fn decode_both(text: &str) {
    for dialect in [Dialect::Twilio, Dialect::SignalWire] {
        let mut codec = ProviderCodec::new(dialect, 4096);
        if let Err(err) = codec.decode(text) {
            assert!(!err.kind().is_empty());
            assert!(!err.to_string().is_empty());
        }
    }
}

/// Pieces that are individually meaningful to the decoder, so random sequences of them reach
/// deep into the parse and the per-event checks rather than failing on the first byte.
fn json_token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\"",
        "\\",
        "\\u",
        "\\ud800",
        "null",
        "true",
        "-1",
        "0",
        "1e400",
        "18446744073709551616",
        "2.5",
        "\"event\"",
        "\"start\"",
        "\"media\"",
        "\"mark\"",
        "\"dtmf\"",
        "\"stop\"",
        "\"connected\"",
        "\"payload\"",
        "\"chunk\"",
        "\"timestamp\"",
        "\"track\"",
        "\"inbound\"",
        "\"outbound\"",
        "\"streamSid\"",
        "\"callSid\"",
        "\"accountSid\"",
        "\"mediaFormat\"",
        "\"encoding\"",
        "\"sampleRate\"",
        "\"channels\"",
        "\"audio/x-L16\"",
        "\"audio/x-mulaw\"",
        "\"customParameters\"",
        "\"tracks\"",
        "\"digit\"",
        "\"duration\"",
        "\"name\"",
        "\"sequenceNumber\"",
        "\"/w==\"",
        "\"AAA\"",
        "\"7\"",
        "\"é\"",
        "8000",
        "24000",
    ])
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        decode_both(&text);
    }

    #[test]
    fn json_ish_soup_never_panics(tokens in prop::collection::vec(json_token(), 0..64)) {
        decode_both(&tokens.concat());
    }

    #[test]
    fn json_ish_objects_never_panic(
        event in prop::sample::select(vec!["start", "media", "mark", "dtmf", "stop", "connected", "other"]),
        body in prop::collection::vec(json_token(), 0..48),
    ) {
        decode_both(&format!(r#"{{"event":"{event}","{event}":{{{}}}}}"#, body.concat()));
    }

    #[test]
    fn mutated_fixtures_never_panic(
        index in 0..ALL_FIXTURES.len(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..8,
        insert in "[\\PC\"\\\\{}\\[\\]:,0-9]{0,4}",
    ) {
        let fixture = ALL_FIXTURES[index];
        let mut start = at.index(fixture.len() + 1);
        while !fixture.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(fixture.len());
        while !fixture.is_char_boundary(end) {
            end -= 1;
        }
        decode_both(&format!("{}{insert}{}", &fixture[..start], &fixture[end..]));
    }

    #[test]
    fn escaping_matches_serde_json_and_round_trips(name in any::<String>(), sid in "[ -~]{0,40}") {
        let mut out = String::new();
        crate::core::json::push_str(&mut out, &name);
        prop_assert_eq!(&out, &serde_json::to_string(&name).unwrap());

        let message = encoded(&ProviderCommand::Mark { stream_sid: &sid, name: &name });
        let mut codec = codec(Dialect::Twilio);
        prop_assert_eq!(codec.decode(&message).unwrap(), ProviderEvent::Mark { name: name.as_str().into() });
        let parsed: serde_json::Value = serde_json::from_str(&message).unwrap();
        prop_assert_eq!(parsed["streamSid"].as_str(), Some(sid.as_str()));
    }

    #[test]
    fn media_payloads_round_trip(
        audio in prop::collection::vec(any::<u8>(), 0..2048),
        chunk in any::<u64>(),
        timestamp in any::<u64>(),
    ) {
        let payload = STANDARD.encode(&audio);
        let text = format!(
            r#"{{"event":"media","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp}","payload":"{payload}"}}}}"#
        );
        let mut codec = codec(Dialect::SignalWire);
        let Ok(ProviderEvent::Media(media)) = codec.decode(&text) else { panic!("expected media") };
        prop_assert_eq!(media.audio, &audio[..]);
        prop_assert_eq!((media.chunk, media.timestamp_ms), (chunk, timestamp));
        prop_assert_eq!(media.payload_b64, payload.as_str());
    }
}
