//! Property checks shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the
//! proptest suite (`tests/decoders_never_panic.rs` includes this file as a module).
//!
//! Every `check_*` function takes arbitrary bytes, feeds them to one decoder (or to the call
//! state machine) and asserts the invariants that are cheap to state. Any panic, whether in
//! `callbridge` or in an assertion here, is a finding. The functions only use `callbridge`,
//! `base64` and `serde_json`, which both the fuzz crate and the main crate's tests depend on.
//!
//! Text decoders take `&str` (WebSocket text frames are UTF-8), so non-UTF-8 input is converted
//! lossily rather than thrown away.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::{self, Config, ConfigError};
use callbridge::core::audio::frames::FrameRing;
use callbridge::core::audio::resample::{SUPPORTED_RATES_HZ, StreamResampler};
use callbridge::core::audio::transcode::Transcoder;
use callbridge::core::audio::{AudioFormat, ByteOrder, Encoding, g711, l16};
use callbridge::core::call::{Call, CallEvent, CallParams, Output, ProviderOut};
use callbridge::core::realtime::{self, ClientEvent, RealtimeDecoder, ServerEvent};
use callbridge::core::telephony::{DecodeError, Dialect, ProviderCodec, ProviderCommand, ProviderEvent};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64_NO_PAD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Realtime frames may be large (`session.updated` echoes, long deltas); the driver's limit.
const REALTIME_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The provider `event` values the codec handles; anything else must decode as `Unknown`.
pub const PROVIDER_EVENTS: [&str; 6] = ["connected", "start", "media", "mark", "dtmf", "stop"];

/// The Realtime `type` values the decoder handles (GA and beta names).
pub const REALTIME_EVENTS: [&str; 20] = [
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "response.output_audio.delta",
    "response.audio.delta",
    "response.output_audio.done",
    "response.audio.done",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.audio_transcript.done",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "response.function_call_arguments.done",
    "response.done",
    "conversation.item.truncated",
    "error",
];

/// Every environment variable `Config::from_source` reads.
pub const CONFIG_VARS: [&str; 26] = [
    config::ENV_HOST,
    config::ENV_PORT,
    config::ENV_OPENAI_API_KEY,
    config::ENV_OPENAI_REALTIME_URL,
    config::ENV_OPENAI_REALTIME_MODEL,
    config::ENV_OPENAI_AUTH,
    config::ENV_AGENT_INSTRUCTIONS,
    config::ENV_AGENT_VOICE,
    config::ENV_AUDIO_MODE,
    config::ENV_TURN_DETECTION,
    config::ENV_VAD_THRESHOLD,
    config::ENV_VAD_SILENCE_MS,
    config::ENV_VAD_PREFIX_PADDING_MS,
    config::ENV_INTERRUPT_RESPONSE,
    config::ENV_TRANSCRIPTION_MODEL,
    config::ENV_TRANSCRIPTION_LANGUAGE,
    config::ENV_NOISE_REDUCTION,
    config::ENV_MAX_CALLS,
    config::ENV_MAX_MESSAGE_BYTES,
    config::ENV_START_TIMEOUT,
    config::ENV_UPSTREAM_CONNECT_TIMEOUT,
    config::ENV_UPGRADE_TIMEOUT,
    config::ENV_DRAIN_TIMEOUT,
    config::ENV_MAX_LEAD_MS,
    config::ENV_MARK_INTERVAL_MS,
    config::ENV_LOG_FORMAT,
];

// ------------------------------------------------------------------------------ open findings

/// Whether to step around an input that triggers an open finding (a known, reported panic in
/// `callbridge` that is not fixed yet; see "Findings" in docs/fuzzing.md). Skipping lets the
/// fuzzer keep looking for other bugs instead of stopping at the known one every run. Set
/// `CALLBRIDGE_FUZZ_KNOWN=1` to hit open findings anyway (e.g. to check a fix).
pub fn skip_known(finding: Option<&'static str>) -> bool {
    static HIT_KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    finding.is_some() && !*HIT_KNOWN.get_or_init(|| std::env::var_os("CALLBRIDGE_FUZZ_KNOWN").is_some())
}

/// F1: a configured `START_TIMEOUT` / `UPSTREAM_CONNECT_TIMEOUT` too large to add to an
/// `Instant` (≳ 2^63 s) loads fine, then panics in `Call::new` / `Call::on_start`.
pub fn known_finding_config(data: &[u8]) -> Option<&'static str> {
    let c = Config::from_source(&env_from(data)).ok()?;
    let now = Instant::now();
    let overflows = |d: Duration| now.checked_add(d).is_none();
    (overflows(c.call.start_timeout) || overflows(c.call.upstream_connect_timeout)).then_some("F1")
}

/// F2: a media `timestamp` within one frame of `u64::MAX` overflows `timestamp + duration` in
/// `Call::on_media` (any media line whose timestamp plus payload length overflows counts, started
/// or not). Call scripts cannot set the timeouts behind F1, so only F2 is checked.
pub fn known_finding_call(data: &[u8]) -> Option<&'static str> {
    let text = text(data);
    let mut codec = ProviderCodec::new(Dialect::SignalWire, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES);
    text.split('\n').filter(|l| l.starts_with(['t', 's'])).find_map(|line| match codec.decode(&line[1..]) {
        Ok(ProviderEvent::Media(m)) if m.timestamp_ms.checked_add(m.audio.len() as u64).is_none() => {
            Some("F2")
        }
        _ => None,
    })
}

/// Variables added to `Config` while this harness was written (call control, store, …), by
/// name only so the harness compiles against either version of `src/config.rs`. Without
/// `TWILIO_VALIDATE_SIGNATURE=false` or a provider secret the config refuses to load, so the
/// seeds and the proptests set one.
pub const EXTRA_CONFIG_VARS: [&str; 24] = [
    "CALLBRIDGE_DATA_DIR",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_REST_PATH",
    "SUPABASE_RETRY_FIRST",
    "SUPABASE_RETRY_MAX",
    "LEAD_TABLE",
    "SUMMARY_MODEL",
    "OPENAI_BASE_URL",
    "API_TOKEN",
    "PUBLIC_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_VALIDATE_SIGNATURE",
    "TWILIO_API_BASE",
    "SIGNALWIRE_SPACE",
    "SIGNALWIRE_PROJECT_ID",
    "SIGNALWIRE_API_TOKEN",
    "SIGNALWIRE_SIGNING_KEY",
    "STREAM_TOKEN_KEY",
    "STREAM_TOKEN_TTL",
    "UPGRADES_PER_IP_PER_MINUTE",
    "CLIENT_IP_HEADER",
    "MACHINE_DETECTION",
];

/// The `i`th known variable: [`CONFIG_VARS`], then [`EXTRA_CONFIG_VARS`].
pub fn config_var(i: usize) -> Option<&'static str> {
    CONFIG_VARS.get(i).or_else(|| EXTRA_CONFIG_VARS.get(i - CONFIG_VARS.len().min(i))).copied()
}

/// The input as text: borrowed when it is UTF-8, lossily converted otherwise.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Parses encoder output, panicking with the text when it is not valid JSON.
fn parse_json(what: &str, text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("{what} wrote invalid JSON ({e}): {text:?}"),
    }
}

/// `core::json::push_str` must escape exactly as serde_json does (its documented contract).
fn check_json_string(s: &str) {
    let mut ours = String::new();
    callbridge::core::json::push_str(&mut ours, s);
    match serde_json::to_string(s) {
        Ok(theirs) => assert_eq!(ours, theirs, "json::push_str differs from serde_json"),
        Err(e) => panic!("serde_json cannot encode a &str: {e}"),
    }
}

// ------------------------------------------------------------------------------------ provider

/// Decodes `data` as one provider frame in `dialect`. Returns whether it decoded.
///
/// Invariants: a frame over the limit is `Oversize`; a media payload is canonical base64 of
/// the decoded audio; a decoded mark re-encodes and re-decodes to the same name; a DTMF digit
/// is one of `0-9 * # A-D`; a decoded start names a format the transcoder accepts; `Unknown` is
/// never one of the handled events; decoding is deterministic.
pub fn check_provider(dialect: Dialect, data: &[u8]) -> bool {
    let text = text(data);
    if !text.is_empty() {
        let mut small = ProviderCodec::new(dialect, text.len() - 1);
        assert!(matches!(small.decode(&text), Err(DecodeError::Oversize { .. })), "limit not enforced");
    }
    let mut codec = ProviderCodec::new(dialect, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES);
    let first = match codec.decode(&text) {
        Ok(ev) => {
            check_provider_event(dialect, &ev);
            Ok(format!("{ev:?}"))
        }
        Err(e) => Err(provider_error(&e)),
    };
    let second = match codec.decode(&text) {
        Ok(ev) => Ok(format!("{ev:?}")),
        Err(e) => Err(provider_error(&e)),
    };
    assert_eq!(first, second, "decoding the same frame twice differs");
    first.is_ok()
}

fn provider_error(e: &DecodeError) -> String {
    let kind = e.kind();
    assert!(!kind.is_empty());
    format!("{kind}: {e}")
}

fn check_provider_event(dialect: Dialect, ev: &ProviderEvent<'_>) {
    match ev {
        ProviderEvent::Media(m) => {
            assert_eq!(B64.encode(m.audio), m.payload_b64, "payload is not canonical base64 of the audio");
            let json = provider_command_json(&ProviderCommand::Media {
                stream_sid: "MZ1",
                payload_b64: &m.payload_b64,
            });
            assert_eq!(json["media"]["payload"].as_str(), Some(&*m.payload_b64));
        }
        ProviderEvent::Mark { name } => {
            let mut out = String::new();
            ProviderCodec::new(dialect, usize::MAX)
                .encode(&ProviderCommand::Mark { stream_sid: "MZ1", name }, &mut out);
            let mut again = ProviderCodec::new(dialect, usize::MAX);
            match again.decode(&out) {
                Ok(ProviderEvent::Mark { name: back }) => {
                    assert_eq!(&back, name, "mark name changed in a round trip")
                }
                other => panic!("re-encoded mark decoded as {other:?}: {out}"),
            }
        }
        ProviderEvent::Dtmf { digit, .. } => {
            assert!("0123456789*#ABCD".contains(*digit), "dtmf digit {digit:?}");
        }
        ProviderEvent::Start(s) => {
            assert!(!s.stream_sid.is_empty() && !s.call_sid.is_empty());
            assert!(
                Transcoder::new(s.media_format, AudioFormat::PCM16_24K).is_ok(),
                "start decoded a format the bridge cannot transcode: {:?}",
                s.media_format
            );
            let json = provider_command_json(&ProviderCommand::Clear { stream_sid: &s.stream_sid });
            assert_eq!(json["streamSid"].as_str(), Some(s.stream_sid.as_str()));
        }
        ProviderEvent::Unknown { kind } => {
            assert!(!PROVIDER_EVENTS.contains(&kind.as_str()), "handled event {kind:?} decoded as Unknown");
        }
        ProviderEvent::Connected { .. } | ProviderEvent::Stop => {}
    }
}

fn provider_command_json(cmd: &ProviderCommand<'_>) -> serde_json::Value {
    let mut out = String::new();
    ProviderCodec::new(Dialect::Twilio, usize::MAX).encode(cmd, &mut out);
    parse_json("ProviderCodec::encode", &out)
}

/// Encodes `data` (as text) as every outbound provider field and checks the JSON: the encoder
/// must escape any string, and a mark must come back through the decoder unchanged.
pub fn check_provider_encode(data: &[u8]) {
    let s = text(data);
    check_json_string(&s);
    let json = provider_command_json(&ProviderCommand::Media { stream_sid: &s, payload_b64: &s });
    assert_eq!(json["streamSid"].as_str(), Some(&*s));
    assert_eq!(json["media"]["payload"].as_str(), Some(&*s));
    let json = provider_command_json(&ProviderCommand::Clear { stream_sid: &s });
    assert_eq!(json["event"].as_str(), Some("clear"));
    let mut out = String::new();
    let mut codec = ProviderCodec::new(Dialect::SignalWire, usize::MAX);
    codec.encode(&ProviderCommand::Mark { stream_sid: &s, name: &s }, &mut out);
    match codec.decode(&out) {
        Ok(ProviderEvent::Mark { name }) => assert_eq!(name, s),
        other => panic!("encoded mark decoded as {other:?}: {out}"),
    }
}

// ------------------------------------------------------------------------------------ realtime

/// Decodes `data` as one Realtime server frame. Returns whether it decoded.
///
/// Invariants: over the limit is `Oversize`; decoding is deterministic (the scratch buffer is
/// reused correctly); an audio delta's bytes re-encode to its base64 text (padding aside);
/// `Unknown` is never a handled type; errors have a kind and a message.
pub fn check_realtime(data: &[u8]) -> bool {
    let text = text(data);
    if !text.is_empty() {
        let mut small = RealtimeDecoder::new(text.len() - 1);
        assert!(
            matches!(small.decode(&text), Err(realtime::RealtimeDecodeError::Oversize { .. })),
            "limit not enforced"
        );
    }
    let mut decoder = RealtimeDecoder::new(REALTIME_MAX_MESSAGE_BYTES);
    let first = match decoder.decode(&text) {
        Ok(ev) => {
            check_server_event(&ev);
            Ok(format!("{ev:?}"))
        }
        Err(e) => Err(format!("{}: {e}", e.kind())),
    };
    let second = match decoder.decode(&text) {
        Ok(ev) => Ok(format!("{ev:?}")),
        Err(e) => Err(format!("{}: {e}", e.kind())),
    };
    assert_eq!(first, second, "decoding the same frame twice differs");
    first.is_ok()
}

fn check_server_event(ev: &ServerEvent<'_>) {
    let kind = ev.kind();
    match ev {
        ServerEvent::AudioDelta { delta_b64, audio, .. } => {
            assert_eq!(B64_NO_PAD.encode(audio), delta_b64.trim_end_matches('='), "delta does not re-encode");
        }
        ServerEvent::Unknown { kind: raw } => {
            assert_eq!(kind, "unknown");
            assert!(!REALTIME_EVENTS.contains(&raw.as_str()), "handled type {raw:?} decoded as Unknown");
        }
        ServerEvent::Error(e) => {
            let _ = e.is_fatal();
        }
        ServerEvent::ResponseDone { status, usage, .. } => {
            let _ = status.as_str();
            if let Some(u) = usage {
                let mut sum = u.clone();
                sum.add(u);
            }
        }
        _ => assert_ne!(kind, "unknown"),
    }
}

// ------------------------------------------------------------------------------------ G.711

/// Treats `data` as G.711 codes (both laws) and as little-endian linear samples.
///
/// Invariants: decoded values are fixed points (`decode(encode(decode(c))) == decode(c)`), A-law
/// codes round-trip exactly and μ-law ones except negative zero (0x7F → 0xFF), slice helpers
/// match the per-sample functions, and encoding a sample errs by at most one top-segment step.
pub fn check_g711(data: &[u8]) {
    let mut pcm = Vec::new();
    let mut codes = Vec::new();
    let mut pcm2 = Vec::new();
    for (decode, encode, to_linear) in [
        (
            g711::decode_ulaw as fn(&[u8], &mut Vec<i16>),
            g711::encode_ulaw as fn(&[i16], &mut Vec<u8>),
            g711::ulaw_to_linear as fn(u8) -> i16,
        ),
        (g711::decode_alaw, g711::encode_alaw, g711::alaw_to_linear),
    ] {
        pcm.clear();
        decode(data, &mut pcm);
        assert_eq!(pcm.len(), data.len());
        for (&c, &s) in data.iter().zip(&pcm) {
            assert_eq!(to_linear(c), s);
        }
        codes.clear();
        encode(&pcm, &mut codes);
        pcm2.clear();
        decode(&codes, &mut pcm2);
        assert_eq!(pcm, pcm2, "decoded samples are not fixed points");
    }
    for &c in data {
        let u = g711::linear_to_ulaw(g711::ulaw_to_linear(c));
        assert_eq!(u, if c == 0x7F { 0xFF } else { c }, "μ-law code {c:#04x}");
        assert_eq!(g711::linear_to_alaw(g711::alaw_to_linear(c)), c, "A-law code {c:#04x}");
    }
    let mut samples = Vec::new();
    l16::decode(data, ByteOrder::Little, &mut samples);
    for &x in &samples {
        for (encode, decode) in [
            (g711::linear_to_ulaw as fn(i16) -> u8, g711::ulaw_to_linear as fn(u8) -> i16),
            (g711::linear_to_alaw, g711::alaw_to_linear),
        ] {
            let y = decode(encode(x));
            assert!((i32::from(x) - i32::from(y)).abs() <= 1024, "sample {x} came back as {y}");
            assert_eq!(decode(encode(y)), y, "sample {x}: {y} is not a fixed point");
        }
    }
}

// ------------------------------------------------------------------------------------ L16

/// Decodes `data[1..]` as L16 in the byte order chosen by `data[0]`, whole and split at the
/// point chosen by `data[1]`, carrying an odd byte the way the transcoder does.
///
/// Invariants: whole pairs are consumed (odd lengths leave one byte), the other byte order is
/// the byte-swapped view, encoding gives the consumed bytes back, and any split gives the same
/// samples.
pub fn check_l16(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let order = if sel & 1 == 0 { ByteOrder::Little } else { ByteOrder::Big };
    let other = if sel & 1 == 0 { ByteOrder::Big } else { ByteOrder::Little };
    let mut samples = vec![7i16];
    let consumed = l16::decode(rest, order, &mut samples);
    assert_eq!(consumed, rest.len() & !1);
    assert_eq!(samples.len(), 1 + rest.len() / 2);
    assert_eq!(samples[0], 7, "decode overwrote what was in dst");
    let samples = &samples[1..];

    let mut bytes = Vec::new();
    l16::encode(samples, order, &mut bytes);
    assert_eq!(bytes, rest[..consumed]);

    let swapped: Vec<u8> = rest[..consumed].chunks_exact(2).flat_map(|p| [p[1], p[0]]).collect();
    let mut other_samples = Vec::new();
    assert_eq!(l16::decode(&swapped, other, &mut other_samples), consumed);
    assert_eq!(other_samples, samples);

    let split = usize::from(sel >> 1).min(rest.len());
    let (a, b) = rest.split_at(split);
    let mut parts = Vec::new();
    let used = l16::decode(a, order, &mut parts);
    let mut tail = a[used..].to_vec();
    tail.extend_from_slice(b);
    l16::decode(&tail, order, &mut parts);
    assert_eq!(parts, samples, "split at {split} decodes differently");
}

// ------------------------------------------------------------------------------------ transcoder

/// Formats the transcoder/resampler targets choose from; the last entries are unsupported rates.
const FORMATS: [AudioFormat; 12] = [
    AudioFormat::PCMU_8K,
    AudioFormat::PCMA_8K,
    AudioFormat::PCM16_24K,
    AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 8000 },
    AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 },
    AudioFormat { encoding: Encoding::L16(ByteOrder::Big), sample_rate_hz: 16000 },
    AudioFormat { encoding: Encoding::L16(ByteOrder::Big), sample_rate_hz: 32000 },
    AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 48000 },
    AudioFormat { encoding: Encoding::Pcmu, sample_rate_hz: 16000 },
    AudioFormat { encoding: Encoding::Pcma, sample_rate_hz: 24000 },
    AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 44100 },
    AudioFormat { encoding: Encoding::Pcmu, sample_rate_hz: 0 },
];

/// Transcodes provider payload bytes. `data[0]` picks the provider format, `data[1]` the model
/// format, `data[2..4]` the chunk sizes; the rest is audio, fed to both directions.
///
/// Invariants: unsupported rates are an error, not a panic; every call appends at most the
/// documented `max_to_*_bytes` and whole samples; passthrough copies; splitting the input into
/// chunks gives the same output as one call (the resampler's documented streaming property);
/// the re-framing ring hands out exact frames and drops whole frames only.
pub fn check_transcode(data: &[u8]) {
    let [p, m, c1, c2, audio @ ..] = data else { return };
    let provider = FORMATS[usize::from(*p) % FORMATS.len()];
    let model = FORMATS[usize::from(*m) % FORMATS.len()];
    let chunks = [usize::from(*c1) * 3 + 1, usize::from(*c2) * 5 + 1];
    let supported = |f: AudioFormat| SUPPORTED_RATES_HZ.contains(&f.sample_rate_hz);
    let whole = match Transcoder::new(provider, model) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            assert!(
                provider.sample_rate_hz != model.sample_rate_hz && !(supported(provider) && supported(model)),
                "{provider:?} -> {model:?} refused: {e}"
            );
            return;
        }
    };
    let mut chunked = match Transcoder::new(provider, model) {
        Ok(t) => t,
        Err(e) => panic!("second Transcoder::new failed: {e}"),
    };
    let mut whole = whole;
    assert_eq!(whole.is_passthrough(), provider == model);

    // Provider -> model, whole vs chunked.
    let mut out_whole = Vec::new();
    whole.to_model(audio, &mut out_whole);
    assert!(out_whole.len() <= whole.max_to_model_bytes(audio.len()), "to_model over its bound");
    if provider == model {
        assert_eq!(out_whole, audio);
    } else {
        assert_eq!(out_whole.len() % model.bytes_per_sample(), 0, "to_model split a sample");
    }
    let mut out_chunked = Vec::new();
    for (i, chunk) in split_cycling(audio, &chunks).enumerate() {
        let before = out_chunked.len();
        chunked.to_model(chunk, &mut out_chunked);
        assert!(
            out_chunked.len() - before <= chunked.max_to_model_bytes(chunk.len()),
            "to_model chunk {i} over its bound"
        );
    }
    assert_eq!(out_whole, out_chunked, "to_model depends on how the input is split");

    // Model -> provider, whole vs chunked, then flush.
    let mut back_whole = Vec::new();
    whole.to_provider(audio, &mut back_whole);
    assert!(back_whole.len() <= whole.max_to_provider_bytes(audio.len()), "to_provider over its bound");
    let mut back_chunked = Vec::new();
    for chunk in split_cycling(audio, &chunks) {
        let before = back_chunked.len();
        chunked.to_provider(chunk, &mut back_chunked);
        assert!(back_chunked.len() - before <= chunked.max_to_provider_bytes(chunk.len()));
    }
    assert_eq!(back_whole, back_chunked, "to_provider depends on how the input is split");
    let before = back_whole.len();
    whole.flush_to_provider(&mut back_whole);
    assert!(back_whole.len() - before <= whole.max_to_provider_bytes(0), "flush over its bound");
    chunked.flush_to_provider(&mut back_chunked);
    assert_eq!(back_whole, back_chunked);
    if provider != model {
        assert_eq!(back_whole.len() % provider.bytes_per_sample(), 0, "to_provider split a sample");
    }

    // After a reset the transcoder behaves like a fresh one.
    chunked.reset_to_provider();
    let mut again = Vec::new();
    chunked.to_provider(audio, &mut again);
    let mut fresh = match Transcoder::new(provider, model) {
        Ok(t) => t,
        Err(e) => panic!("third Transcoder::new failed: {e}"),
    };
    let mut expected = Vec::new();
    fresh.to_provider(audio, &mut expected);
    assert_eq!(again, expected, "reset_to_provider left state behind");

    // Re-frame what went to the provider, as the playback ledger does.
    let frame = provider.frame_bytes();
    let mut ring = FrameRing::new(frame, frame * (usize::from(*c2) % 8 + 1));
    let mut popped = Vec::new();
    for chunk in split_cycling(&back_whole, &chunks) {
        let dropped = ring.push(chunk);
        assert_eq!(dropped % ring.frame_bytes(), 0, "ring dropped a partial frame");
        assert!(ring.len_bytes() <= ring.capacity_bytes());
        let before = popped.len();
        if ring.pop_frame(&mut popped) {
            assert_eq!(popped.len() - before, ring.frame_bytes());
        }
    }
    while ring.pop_padded(&mut popped, provider.silence_byte()) {}
    assert!(ring.is_empty());
    assert_eq!(popped.len() % ring.frame_bytes(), 0);
}

/// Splits `data` into consecutive chunks whose lengths cycle through `sizes`.
fn split_cycling<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// Resamples `data[3..]` (little-endian samples) between two rates picked by `data[0..2]`, in
/// chunks sized by `data[2]`.
///
/// Invariants: each call appends at most `max_output_len`; the total after `flush` is exactly
/// `ceil(input * to / from) + delay_samples()` (documented on `flush`); identity copies.
pub fn check_resample(data: &[u8]) {
    let [a, b, c, audio @ ..] = data else { return };
    let rates = [8000, 16000, 24000, 32000, 48000, 44100, 0];
    let from = rates[usize::from(*a) % rates.len()];
    let to = rates[usize::from(*b) % rates.len()];
    let mut r = match StreamResampler::new(from, to) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            assert!(!SUPPORTED_RATES_HZ.contains(&from) || !SUPPORTED_RATES_HZ.contains(&to));
            return;
        }
    };
    let mut input = Vec::new();
    l16::decode(audio, ByteOrder::Little, &mut input);
    let chunk = usize::from(*c) + 1;
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        let before = out.len();
        r.process(piece, &mut out);
        assert!(out.len() - before <= r.max_output_len(piece.len()), "process over its bound");
    }
    if r.is_identity() {
        assert_eq!(out, input);
    }
    let before = out.len();
    r.flush(&mut out);
    assert!(out.len() - before <= r.max_output_len(0) + r.delay_samples(), "flush over its bound");
    if !r.is_identity() && !input.is_empty() {
        let n = input.len() as u64;
        let expected = (n * u64::from(to)).div_ceil(u64::from(from)) + r.delay_samples() as u64;
        assert_eq!(out.len() as u64, expected, "{n} samples {from} -> {to} Hz");
    }
}

// ------------------------------------------------------------------------------------ config

/// Builds an environment from `data` (lines of `NAME=value`; a decimal name `i` stands for the
/// known variable [`config_var`]`(i)`) and loads it through the config's `Source` trait.
///
/// Invariants: errors name their variable; a loaded config keeps its documented bounds; its
/// session encodes to valid JSON that carries the instructions verbatim; and its call settings
/// can start a call (deadlines are computed from the configured timeouts).
pub fn check_config(data: &[u8]) -> bool {
    match Config::from_source(&env_from(data)) {
        Err(e) => {
            let shown = e.to_string();
            let var = match &e {
                ConfigError::Missing { var } | ConfigError::Invalid { var, .. } => *var,
            };
            assert!(shown.contains(var), "error does not name {var}: {shown}");
            false
        }
        Ok(c) => {
            assert!(c.max_calls >= 1);
            assert!(c.call.max_lead_ms >= 20 && c.call.mark_interval_ms >= 20);
            assert!(c.upstream.url.starts_with("ws://") || c.upstream.url.starts_with("wss://"));
            assert!(!c.upstream.api_key.is_empty());
            assert!(format!("{:?}", c.upstream).contains("[redacted]"), "api key not redacted in Debug");
            let mut out = String::new();
            realtime::encode(&ClientEvent::SessionUpdate(Box::new(c.call.session.clone())), &mut out);
            let json = parse_json("session.update encoder", &out);
            assert_eq!(json["session"]["instructions"].as_str(), Some(c.call.session.instructions.as_str()));
            assert_eq!(
                json["session"]["audio"]["output"]["voice"].as_str(),
                Some(c.call.session.voice.as_str())
            );
            check_json_string(&c.call.session.instructions);
            // A loaded config must be usable: a call computes its deadlines from it.
            let now = Instant::now();
            let mut call = Call::new(now, c.call.clone());
            let _ = call.poll_timeout();
            let mut codec = ProviderCodec::new(Dialect::Twilio, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES);
            if let Ok(start) = codec.decode(START_FRAME) {
                call.handle_provider(now, start);
            }
            let _ = call.poll_timeout();
            call.handle_timeout(now + Duration::from_secs(1));
            while call.poll_output().is_some() {}
            true
        }
    }
}

/// A Twilio `start` for μ-law 8 kHz.
const START_FRAME: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;

/// The environment `check_config` loads: `NAME=value` lines, a numeric name `i` standing for
/// [`config_var`]`(i)`.
fn env_from(data: &[u8]) -> HashMap<String, String> {
    let text = text(data);
    let mut env = HashMap::new();
    for line in text.split('\n') {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key.parse::<usize>().ok().and_then(config_var) {
            Some(name) => name.to_owned(),
            None => key.to_owned(),
        };
        env.insert(key, value.to_owned());
    }
    env
}

// ------------------------------------------------------------------------------------ call

/// Drives one [`Call`] with a script, one step per line; the first byte of a line is the step:
///
/// | line | step |
/// |---|---|
/// | `#key=value` | call parameter before the first other step: `transcode`, `lead`, `mark`, `buffer`, `pending`, `gap`, `linger` (ms) |
/// | `t{json}` / `s{json}` | a Twilio / SignalWire frame, through the provider codec |
/// | `r{json}` | a Realtime server frame, through the Realtime decoder |
/// | `a{resp}/{item}` | a synthetic audio delta of 100 ms of the model format (800 bytes for G.711) |
/// | `+{ms}` | advance the virtual clock (at most 10 min) and fire due timeouts |
/// | `k` / `K` | the provider echoes the oldest / every outstanding mark (encoded and decoded) |
/// | `c` `x` `h` `e` `z` `!` | upstream connected, upstream closed, provider closed, provider error, shutdown, timeout |
///
/// All outputs are drained after each step. Invariants: `End` is emitted exactly once (after
/// the script the caller hangs up and time runs out, so every call ends); nothing is sent to
/// either socket after `End`; no provider command before `start`; provider media frames are
/// exactly 20 ms of the provider's format; every client event and provider command encodes to
/// valid JSON; a truncate never claims more audio than was received for the item.
pub fn check_call(data: &[u8]) {
    let text = text(data);
    let mut h = CallHarness::new(&text);
    for line in text.split('\n') {
        h.step(line);
    }
    h.finish();
}

struct CallHarness {
    call: Call,
    now: Instant,
    twilio: ProviderCodec,
    signalwire: ProviderCodec,
    realtime: RealtimeDecoder,
    /// Mark names sent and not yet echoed, oldest first.
    marks: std::collections::VecDeque<String>,
    ended: usize,
    /// From `CallEvent::Started`: provider commands need it.
    stream_sid: Option<String>,
    provider_format: Option<AudioFormat>,
    model_format: Option<AudioFormat>,
    /// Model audio received per item id (bytes), for the truncate bound.
    received: HashMap<String, usize>,
    encoded: String,
}

impl CallHarness {
    fn new(script: &str) -> Self {
        let mut params = config::default_call_params();
        for line in script.split('\n') {
            let Some(opt) = line.strip_prefix('#') else { continue };
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            let ms = value.trim().parse::<u32>().unwrap_or(0);
            apply_param(&mut params, key.trim(), ms);
        }
        let now = Instant::now();
        Self {
            call: Call::new(now, params),
            now,
            twilio: ProviderCodec::new(Dialect::Twilio, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES),
            signalwire: ProviderCodec::new(Dialect::SignalWire, ProviderCodec::DEFAULT_MAX_MESSAGE_BYTES),
            realtime: RealtimeDecoder::new(REALTIME_MAX_MESSAGE_BYTES),
            marks: std::collections::VecDeque::new(),
            ended: 0,
            stream_sid: None,
            provider_format: None,
            model_format: None,
            received: HashMap::new(),
            encoded: String::new(),
        }
    }

    fn step(&mut self, line: &str) {
        let mut chars = line.chars();
        let Some(op) = chars.next() else { return };
        let rest = chars.as_str();
        let now = self.now;
        match op {
            't' | 's' => {
                let codec = if op == 't' { &mut self.twilio } else { &mut self.signalwire };
                if let Ok(ev) = codec.decode(rest) {
                    self.call.handle_provider(now, ev);
                }
            }
            'r' => {
                if let Ok(ev) = self.realtime.decode(rest) {
                    if let ServerEvent::AudioDelta { item_id, audio, .. } = &ev {
                        *self.received.entry(item_id.to_string()).or_default() += audio.len();
                    }
                    self.call.handle_realtime(now, ev);
                }
            }
            'a' => {
                let (response_id, item_id) = rest.split_once('/').unwrap_or(("resp_fuzz", rest));
                let bytes = self.model_format.map_or(800, |f| f.bytes_for_ms(100));
                let audio: Vec<u8> = (0..bytes).map(|i| (i * 37 % 251) as u8).collect();
                *self.received.entry(item_id.to_owned()).or_default() += audio.len();
                let delta_b64 = B64.encode(&audio);
                self.call.handle_realtime(
                    now,
                    ServerEvent::AudioDelta {
                        response_id: response_id.into(),
                        item_id: item_id.into(),
                        content_index: 0,
                        delta_b64: delta_b64.into(),
                        audio: &audio,
                    },
                );
            }
            '+' => {
                let ms = rest.trim().parse::<u64>().unwrap_or(20).min(600_000);
                self.advance(Duration::from_millis(ms));
            }
            'k' => {
                if let Some(name) = self.marks.pop_front() {
                    self.echo_mark(&name);
                }
            }
            'K' => {
                while let Some(name) = self.marks.pop_front() {
                    self.echo_mark(&name);
                    self.drain();
                }
            }
            'c' => self.call.handle_upstream_connected(now),
            'x' => self.call.handle_upstream_closed(now),
            'h' => self.call.handle_provider_closed(now),
            'e' => self.call.handle_provider_error(now),
            'z' => self.call.handle_shutdown(now),
            '!' => self.call.handle_timeout(now),
            _ => {}
        }
        self.drain();
    }

    /// The provider echoes a mark: encode it as the provider would send it and decode it back.
    fn echo_mark(&mut self, name: &str) {
        let mut frame = String::new();
        let sid = self.stream_sid.clone().unwrap_or_default();
        self.twilio.encode(&ProviderCommand::Mark { stream_sid: &sid, name }, &mut frame);
        match self.twilio.decode(&frame) {
            Ok(ev @ ProviderEvent::Mark { .. }) => self.call.handle_provider(self.now, ev),
            other => panic!("mark echo {frame} decoded as {other:?}"),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        // A timeout may move the call on to a phase with a later deadline (at most a few).
        for _ in 0..8 {
            match self.call.poll_timeout() {
                Some(deadline) if deadline <= self.now => {
                    self.call.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.call.poll_output() {
            let to_socket =
                matches!(out, Output::Provider(_) | Output::Realtime(_) | Output::ConnectUpstream);
            assert!(!(to_socket && self.ended > 0), "output after End: {out:?}");
            match out {
                Output::Provider(p) => self.provider_out(p),
                Output::Realtime(ev) => self.realtime_out(ev),
                Output::ConnectUpstream => {}
                Output::Event(e) => self.event(e),
                Output::End(reason) => {
                    let _ = reason.as_str();
                    self.ended += 1;
                    assert_eq!(self.ended, 1, "End emitted twice");
                }
                other @ (Output::Tool(_)
                | Output::CancelTool { .. }
                | Output::HangUp
                | Output::Transfer { .. }
                | Output::SendDtmf { .. }) => assert_eq!(self.ended, 0, "call action after End: {other:?}"),
            }
        }
    }

    fn provider_out(&mut self, p: ProviderOut) {
        let sid = match &self.stream_sid {
            Some(sid) => sid.clone(),
            None => panic!("provider command {p:?} before the call started"),
        };
        if let Some(current) = self.call.stream_sid() {
            assert_eq!(current, sid, "stream id changed");
        }
        self.encoded.clear();
        let cmd = match &p {
            ProviderOut::Media { payload_b64 } => {
                let audio = match B64.decode(payload_b64) {
                    Ok(a) => a,
                    Err(e) => panic!("media payload is not base64 ({e}): {payload_b64}"),
                };
                if let Some(f) = self.provider_format {
                    assert_eq!(audio.len(), f.frame_bytes(), "provider frame is not 20 ms of {f:?}");
                }
                ProviderCommand::Media { stream_sid: &sid, payload_b64 }
            }
            ProviderOut::Mark { name } => {
                self.marks.push_back(name.clone());
                ProviderCommand::Mark { stream_sid: &sid, name }
            }
            ProviderOut::Clear => ProviderCommand::Clear { stream_sid: &sid },
        };
        self.twilio.encode(&cmd, &mut self.encoded);
        let json = parse_json("ProviderCodec::encode", &self.encoded);
        assert_eq!(json["streamSid"].as_str(), Some(sid.as_str()));
        match p {
            ProviderOut::Media { payload_b64: s } | ProviderOut::Mark { name: s } => self.call.recycle(s),
            ProviderOut::Clear => {}
        }
    }

    fn realtime_out(&mut self, ev: ClientEvent) {
        self.encoded.clear();
        realtime::encode(&ev, &mut self.encoded);
        let json = parse_json("realtime::encode", &self.encoded);
        assert!(json["type"].is_string(), "client event without a type: {}", self.encoded);
        match ev {
            ClientEvent::InputAudioAppend { audio_b64 } => {
                let audio = match B64.decode(&audio_b64) {
                    Ok(a) => a,
                    Err(e) => panic!("appended audio is not base64 ({e}): {audio_b64}"),
                };
                if let Some(f) = self.model_format {
                    assert_eq!(audio.len() % f.bytes_per_sample(), 0, "append splits a sample");
                }
                self.call.recycle(audio_b64);
            }
            ClientEvent::ItemTruncate { item_id, audio_end_ms, .. } => {
                let received = self.received.get(&item_id).copied().unwrap_or(0);
                let received_ms = self.model_format.map_or(u64::MAX, |f| f.duration_ms(received));
                assert!(
                    audio_end_ms <= received_ms,
                    "truncate of {item_id} at {audio_end_ms} ms, only {received_ms} ms received"
                );
            }
            _ => {}
        }
    }

    fn event(&mut self, e: CallEvent) {
        if let CallEvent::Started { provider_format, model_format, passthrough, stream_sid, .. } = e {
            assert_eq!(passthrough, provider_format == model_format);
            assert!(self.stream_sid.is_none(), "second Started");
            self.stream_sid = Some(stream_sid);
            self.provider_format = Some(provider_format);
            self.model_format = Some(model_format);
        }
    }

    /// The caller hangs up and time runs out: every call must end, exactly once.
    fn finish(mut self) {
        let now = self.now;
        self.call.handle_provider_closed(now);
        self.drain();
        self.advance(Duration::from_secs(3600));
        assert_eq!(
            self.call.phase_name(),
            "ended",
            "call still {} after hang-up and timeouts",
            self.call.phase_name()
        );
        assert_eq!(self.ended, 1, "End emitted {} times", self.ended);
        let _ = self.call.transcript();
        let _ = self.call.usage();
    }
}

fn apply_param(params: &mut CallParams, key: &str, ms: u32) {
    match key {
        "transcode" => params.force_transcode = true,
        "lead" => params.max_lead_ms = ms.clamp(20, 10_000),
        "mark" => params.mark_interval_ms = ms.clamp(20, 10_000),
        "buffer" => params.max_buffered_ms = ms.min(600_000),
        "pending" => params.max_pending_ms = ms.min(600_000),
        "gap" => params.max_gap_fill_ms = ms.min(60_000),
        "linger" => params.transcript_linger = Duration::from_millis(u64::from(ms.min(600_000))),
        _ => {}
    }
}
