//! The provider's side of the media-stream protocol, built to be cheap at thousands of calls
//! (reference `telephony-media-streams.md` §1–2).
//!
//! Every outbound `media` message of a run is built once, before the first call, and shared by
//! all calls: cloning a [`Message`] only bumps a reference count. The bridge does not check
//! `streamSid` on inbound media, so the shared frames carry one fixed [`BENCH_STREAM_SID`]; each
//! call's own ids appear in its `start`, its `mark` echoes and its `stop`.
//!
//! Inbound messages are read with a borrowed serde struct that keeps only `event`,
//! `media.payload` (whose decoded length is computed from the base64 length, never decoded) and
//! `mark.name`.

use std::borrow::Cow;
use std::fmt::Write as _;

use anyhow::anyhow;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::core::audio::resample::StreamResampler;
use crate::core::audio::{AudioFormat, ByteOrder, Encoding, FRAME_MS, g711, l16};
use crate::sim::fixtures;
use crate::sim::ids::IdGen;

/// `streamSid` of the shared `media` frames (Twilio shape: `MZ` and 32 hex digits).
pub(crate) const BENCH_STREAM_SID: &str = "MZ0000000000000000000000000000be4c";

/// The caller clips the harness loops, in order.
const CLIPS: [&str; 3] = ["caller_question", "caller_followup", "caller_interrupt"];

/// Which provider the simulated calls play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum BenchProvider {
    /// Twilio Media Streams, μ-law 8 kHz (passthrough in the bridge by default).
    #[value(name = "twilio")]
    #[serde(rename = "twilio")]
    Twilio,
    /// SignalWire with L16 16 kHz little-endian (the bridge transcodes to PCM 24 kHz and back).
    #[value(name = "signalwire-l16")]
    #[serde(rename = "signalwire-l16")]
    SignalwireL16,
}

impl BenchProvider {
    /// The stream's audio format.
    pub(crate) const fn format(self) -> AudioFormat {
        match self {
            Self::Twilio => AudioFormat::PCMU_8K,
            Self::SignalwireL16 => {
                AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 }
            }
        }
    }

    /// Bytes in one 20 ms frame (160 for μ-law 8 kHz, 640 for L16 16 kHz).
    pub(crate) const fn frame_bytes(self) -> usize {
        self.format().frame_bytes()
    }

    /// Stable name, as on the command line.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::SignalwireL16 => "signalwire-l16",
        }
    }
}

/// One call's identifiers (Twilio `MZ…`/`CA…`/`AC…`, SignalWire UUIDs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallIds {
    /// `start.streamSid`, also on mark echoes and `stop`.
    pub stream_sid: String,
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.accountSid`.
    pub account_sid: String,
}

impl CallIds {
    /// Deterministic ids for call `index` of a run seeded with `seed`.
    pub(crate) fn new(provider: BenchProvider, seed: u64, index: usize) -> Self {
        let mut ids = IdGen::from_seed(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        match provider {
            BenchProvider::Twilio => Self {
                stream_sid: ids.hex_sid("MZ"),
                call_sid: ids.hex_sid("CA"),
                account_sid: ids.hex_sid("AC"),
            },
            BenchProvider::SignalwireL16 => {
                Self { stream_sid: ids.uuid(), call_sid: ids.uuid(), account_sid: ids.uuid() }
            }
        }
    }
}

/// The looped caller speech in the provider's format, trimmed to whole 20 ms frames.
///
/// # Errors
/// If the embedded fixtures are inconsistent or the resampler cannot be built.
pub(crate) fn caller_audio(provider: BenchProvider) -> anyhow::Result<Vec<u8>> {
    let mut ulaw = Vec::new();
    for name in CLIPS {
        ulaw.extend_from_slice(fixtures::clip(name)?.ulaw);
    }
    let mut bytes = match provider {
        BenchProvider::Twilio => ulaw,
        BenchProvider::SignalwireL16 => {
            let mut linear = Vec::with_capacity(ulaw.len());
            g711::decode_ulaw(&ulaw, &mut linear);
            let mut rs = StreamResampler::new(8000, 16000).map_err(|e| anyhow!(e))?;
            let delay = rs.delay_samples();
            let mut up = Vec::with_capacity(rs.max_output_len(linear.len()) + delay);
            rs.process(&linear, &mut up);
            rs.flush(&mut up);
            up.drain(..delay.min(up.len()));
            let mut out = Vec::with_capacity(up.len() * 2);
            l16::encode(&up, ByteOrder::Little, &mut out);
            out
        }
    };
    let fb = provider.frame_bytes();
    bytes.truncate(bytes.len() / fb * fb);
    if bytes.is_empty() {
        anyhow::bail!("the caller fixtures are shorter than one frame");
    }
    Ok(bytes)
}

/// Builds `count` consecutive `media` messages looping `audio` (a whole number of frames):
/// frame `k` has `sequenceNumber` k+2 (`start` is 1), `chunk` k+1 and `timestamp` k·20 ms, so
/// timestamps never repeat within a call.
pub(crate) fn media_frames(provider: BenchProvider, audio: &[u8], count: usize) -> Vec<Message> {
    let fb = provider.frame_bytes();
    let payloads: Vec<String> = audio.chunks_exact(fb).map(|f| BASE64.encode(f)).collect();
    frames_of(provider, &payloads, count)
}

/// `--barge-in`'s speech/silence cycle, in 20 ms frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BargeIn {
    /// Frames of caller speech per cycle; the first frames are voiced.
    pub speech_frames: usize,
    /// Frames of digital silence after the speech.
    pub silence_frames: usize,
}

impl BargeIn {
    /// 3 s of speech, 2 s of silence: longer than the simulator's 800 ms end-of-speech
    /// silence (`sim-realtime`), so every cycle is one new speech onset.
    pub(crate) const DEFAULT: Self = Self { speech_frames: 150, silence_frames: 100 };

    /// Frames per cycle.
    pub(crate) const fn cycle(self) -> usize {
        self.speech_frames + self.silence_frames
    }

    /// Whether frame `k` of a call is the first speech frame after a silence (frame 0 starts the
    /// call and is not one).
    pub(crate) fn is_onset(self, k: usize) -> bool {
        k > 0 && k % self.cycle().max(1) == 0
    }
}

/// Voiced 20 ms frames needed at the start of a speech segment: the simulator's VAD reports
/// speech after 60 ms of voiced audio, so onsets start with that many voiced frames.
const VOICED_LEAD_FRAMES: usize = 3;

/// Like [`media_frames`], but cycling `pattern`: each speech segment is taken from `audio`
/// (looped) starting where [`VOICED_LEAD_FRAMES`] voiced frames in a row begin (RMS at or above
/// the simulator's VAD threshold), followed by digital silence. Frame `k` is a speech onset iff
/// [`BargeIn::is_onset`]`(k)`.
///
/// # Errors
/// If `audio` has no voiced run long enough or the pattern has no speech.
pub(crate) fn barge_in_frames(
    provider: BenchProvider,
    audio: &[u8],
    pattern: BargeIn,
    count: usize,
) -> anyhow::Result<Vec<Message>> {
    if pattern.speech_frames < VOICED_LEAD_FRAMES {
        anyhow::bail!("a barge-in speech segment needs at least {VOICED_LEAD_FRAMES} frames");
    }
    let fb = provider.frame_bytes();
    let format = provider.format();
    let threshold = crate::sim::realtime::SimVad::default().rms_threshold;
    let mut linear = Vec::with_capacity(fb);
    let frames: Vec<(String, bool)> = audio
        .chunks_exact(fb)
        .map(|f| {
            linear.clear();
            match format.encoding {
                Encoding::Pcmu => g711::decode_ulaw(f, &mut linear),
                Encoding::Pcma => g711::decode_alaw(f, &mut linear),
                Encoding::L16(order) => {
                    l16::decode(f, order, &mut linear);
                }
            }
            (BASE64.encode(f), rms(&linear) >= threshold)
        })
        .collect();
    let n = frames.len();
    let voiced_at = |i: usize| (0..VOICED_LEAD_FRAMES).all(|j| frames[(i + j) % n].1);
    let silence = BASE64.encode(vec![format.silence_byte(); fb]);
    let mut payloads = Vec::new();
    let mut cursor = 0usize;
    // One speech segment per cycle until the clip has been walked through once.
    while cursor < n {
        let Some(skip) = (0..n).find(|&d| voiced_at(cursor + d)) else {
            anyhow::bail!("the caller audio has no {VOICED_LEAD_FRAMES} voiced frames in a row");
        };
        cursor += skip;
        for j in 0..pattern.speech_frames {
            payloads.push(frames[(cursor + j) % n].0.clone());
        }
        cursor += pattern.speech_frames;
        payloads.extend(std::iter::repeat_n(silence.clone(), pattern.silence_frames));
    }
    Ok(frames_of(provider, &payloads, count))
}

/// Root mean square of linear samples (as the simulator's VAD computes it).
fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// `count` `media` messages cycling `payloads` (see [`media_frames`]).
fn frames_of(provider: BenchProvider, payloads: &[String], count: usize) -> Vec<Message> {
    let mut frames = Vec::with_capacity(count);
    for k in 0..count {
        let payload = payloads.get(k % payloads.len().max(1)).map_or("", String::as_str);
        let mut s = String::with_capacity(payload.len() + 160);
        let (seq, chunk, ts) = (k + 2, k + 1, k as u64 * u64::from(FRAME_MS));
        // Writing to a String cannot fail.
        let _ = match provider {
            BenchProvider::Twilio => write!(
                s,
                r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{BENCH_STREAM_SID}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}}}}"#
            ),
            BenchProvider::SignalwireL16 => write!(
                s,
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}}}}"#
            ),
        };
        frames.push(Message::text(s));
    }
    frames
}

/// The `connected` message (the same for every call of a provider).
pub(crate) fn connected(provider: BenchProvider) -> Message {
    let version = match provider {
        BenchProvider::Twilio => "1.0.0",
        BenchProvider::SignalwireL16 => "0.2.0",
    };
    Message::text(json!({"event": "connected", "protocol": "Call", "version": version}).to_string())
}

/// The call's `start` message.
pub(crate) fn start(provider: BenchProvider, ids: &CallIds) -> Message {
    let msg = match provider {
        BenchProvider::Twilio => json!({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": ids.stream_sid,
            "start": {
                "streamSid": ids.stream_sid,
                "accountSid": ids.account_sid,
                "callSid": ids.call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }),
        // SignalWire: no top-level streamSid, customParameters only when set.
        BenchProvider::SignalwireL16 => json!({
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": ids.stream_sid,
                "accountSid": ids.account_sid,
                "callSid": ids.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-L16", "sampleRate": 16000, "channels": 1},
            },
        }),
    };
    Message::text(msg.to_string())
}

/// The call's `stop` message; `seq` is its `sequenceNumber`.
pub(crate) fn stop(provider: BenchProvider, ids: &CallIds, seq: u64) -> Message {
    let msg = match provider {
        BenchProvider::Twilio => json!({
            "event": "stop",
            "sequenceNumber": seq.to_string(),
            "streamSid": ids.stream_sid,
            "stop": {"accountSid": ids.account_sid, "callSid": ids.call_sid},
        }),
        BenchProvider::SignalwireL16 => json!({"event": "stop", "sequenceNumber": seq.to_string()}),
    };
    Message::text(msg.to_string())
}

/// A `u64` serialised as a JSON string without an intermediate allocation.
struct SeqStr(u64);

impl Serialize for SeqStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct MarkOut<'a> {
    event: &'static str,
    #[serde(rename = "sequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence_number: Option<SeqStr>,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    mark: MarkName<'a>,
}

#[derive(Serialize)]
struct MarkName<'a> {
    name: &'a str,
}

/// The echo of mark `name`, as the provider sends it once playback reaches it (one allocation).
/// Twilio numbers it with `seq`; SignalWire sends no `sequenceNumber` on marks.
pub(crate) fn mark_echo(provider: BenchProvider, stream_sid: &str, seq: u64, name: &str) -> Option<Message> {
    let sequence_number = match provider {
        BenchProvider::Twilio => Some(SeqStr(seq)),
        BenchProvider::SignalwireL16 => None,
    };
    let out = MarkOut { event: "mark", sequence_number, stream_sid, mark: MarkName { name } };
    serde_json::to_string(&out).ok().map(Message::text)
}

/// A message from the bridge, as far as the harness cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromBridge<'a> {
    /// `media`: this many audio bytes (decoded length of `media.payload`).
    Media { bytes: usize },
    /// `mark` with its name.
    Mark { name: Cow<'a, str> },
    /// `clear`.
    Clear,
    /// Any other event, or a `media`/`mark` missing its field.
    Other,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<InboundMedia<'a>>,
    #[serde(borrow, default)]
    mark: Option<InboundMark<'a>>,
}

#[derive(Deserialize)]
struct InboundMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InboundMark<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Reads one text message from the bridge.
///
/// # Errors
/// If it is not a JSON object with a string `event`.
pub(crate) fn decode(text: &str) -> Result<FromBridge<'_>, serde_json::Error> {
    let msg: Inbound<'_> = serde_json::from_str(text)?;
    Ok(match (msg.event.as_ref(), msg.media, msg.mark) {
        ("media", Some(media), _) => FromBridge::Media { bytes: base64_decoded_len(&media.payload) },
        ("mark", _, Some(mark)) => FromBridge::Mark { name: mark.name },
        ("clear", _, _) => FromBridge::Clear,
        _ => FromBridge::Other,
    })
}

/// Bytes that standard base64 text of this length decodes to (padded or not), without decoding.
pub(crate) fn base64_decoded_len(b64: &str) -> usize {
    let b = b64.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    (b.len() - pad) * 3 / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(m: &Message) -> Value {
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    }

    #[test]
    fn decoded_length_matches_the_base64_engine() {
        for n in 0..50 {
            let bytes = vec![0xA5u8; n];
            let b64 = BASE64.encode(&bytes);
            assert_eq!(base64_decoded_len(&b64), n, "{b64}");
            let unpadded = b64.trim_end_matches('=');
            assert_eq!(base64_decoded_len(unpadded), n, "{unpadded}");
        }
        assert_eq!(BENCH_STREAM_SID.len(), 34);
    }

    #[test]
    fn shared_frames_have_the_twilio_shape_and_loop_the_audio() {
        let audio = caller_audio(BenchProvider::Twilio).unwrap();
        assert_eq!(audio.len() % 160, 0);
        let nframes = audio.len() / 160;
        let frames = media_frames(BenchProvider::Twilio, &audio, nframes + 2);
        let f1 = parse(&frames[1]);
        assert_eq!(f1["event"], "media");
        assert_eq!(f1["sequenceNumber"], "3");
        assert_eq!(f1["streamSid"], BENCH_STREAM_SID);
        assert_eq!(f1["media"]["chunk"], "2");
        assert_eq!(f1["media"]["timestamp"], "20");
        assert_eq!(f1["media"]["track"], "inbound");
        let payload = BASE64.decode(f1["media"]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload, audio[160..320]);
        // After the clip, the audio loops but the timestamp keeps growing.
        let wrapped = parse(&frames[nframes]);
        assert_eq!(wrapped["media"]["payload"], parse(&frames[0])["media"]["payload"]);
        assert_eq!(wrapped["media"]["timestamp"], (nframes * 20).to_string());
        // The shared frames decode with the bridge's own codec.
        let mut codec =
            crate::core::telephony::ProviderCodec::new(crate::core::telephony::Dialect::Twilio, 1 << 16);
        assert!(codec.decode(frames[0].to_text().unwrap()).is_ok());
    }

    #[test]
    fn barge_in_frames_alternate_voiced_speech_and_silence() {
        let pattern = BargeIn { speech_frames: 150, silence_frames: 100 };
        assert!(!pattern.is_onset(0) && pattern.is_onset(250) && !pattern.is_onset(251));
        let threshold = crate::sim::realtime::SimVad::default().rms_threshold;
        let audio = caller_audio(BenchProvider::Twilio).unwrap();
        let frames = barge_in_frames(BenchProvider::Twilio, &audio, pattern, 1000).unwrap();
        assert_eq!(frames.len(), 1000);
        let payload =
            |k: usize| BASE64.decode(parse(&frames[k])["media"]["payload"].as_str().unwrap()).unwrap();
        let loud = |k: usize| {
            let mut lin = Vec::new();
            g711::decode_ulaw(&payload(k), &mut lin);
            rms(&lin) >= threshold
        };
        for onset in [0, 250, 500, 750] {
            assert!((onset..onset + 3).all(loud), "onset {onset} starts voiced");
            assert!((onset + 150..onset + 250).all(|k| payload(k) == [0xFF; 160]), "silence after {onset}");
        }
        assert_eq!(parse(&frames[999])["media"]["timestamp"], "19980");
        let l16 = caller_audio(BenchProvider::SignalwireL16).unwrap();
        let frames = barge_in_frames(BenchProvider::SignalwireL16, &l16, pattern, 300).unwrap();
        let silent = BASE64.decode(parse(&frames[200])["media"]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(silent, [0u8; 640]);
        assert!(barge_in_frames(BenchProvider::Twilio, &[0xFF; 1600], pattern, 10).is_err(), "no speech");
    }

    #[test]
    fn signalwire_l16_messages() {
        let audio = caller_audio(BenchProvider::SignalwireL16).unwrap();
        assert_eq!(audio.len() % 640, 0);
        let frames = media_frames(BenchProvider::SignalwireL16, &audio, 3);
        let f = parse(&frames[0]);
        assert!(f.get("streamSid").is_none());
        assert_eq!(BASE64.decode(f["media"]["payload"].as_str().unwrap()).unwrap().len(), 640);
        let ids = CallIds::new(BenchProvider::SignalwireL16, 7, 3);
        assert_eq!(ids.stream_sid.len(), 36);
        let c = parse(&connected(BenchProvider::SignalwireL16));
        assert_eq!(c["version"], "0.2.0");
        let s = parse(&start(BenchProvider::SignalwireL16, &ids));
        assert!(s.get("streamSid").is_none());
        assert!(s["start"].get("customParameters").is_none());
        assert_eq!(s["start"]["mediaFormat"]["encoding"], "audio/x-L16");
        assert_eq!(s["start"]["mediaFormat"]["sampleRate"], 16000);
        assert_eq!(
            parse(&stop(BenchProvider::SignalwireL16, &ids, 9)),
            json!({"event": "stop", "sequenceNumber": "9"})
        );
        let m = parse(&mark_echo(BenchProvider::SignalwireL16, &ids.stream_sid, 4, "0:1").unwrap());
        assert_eq!(m, json!({"event": "mark", "streamSid": ids.stream_sid, "mark": {"name": "0:1"}}));
    }

    #[test]
    fn per_call_twilio_messages() {
        let ids = CallIds::new(BenchProvider::Twilio, 7, 3);
        assert_eq!(ids, CallIds::new(BenchProvider::Twilio, 7, 3), "deterministic");
        assert_ne!(ids, CallIds::new(BenchProvider::Twilio, 7, 4));
        assert!(ids.stream_sid.starts_with("MZ") && ids.stream_sid.len() == 34);
        assert_eq!(
            parse(&connected(BenchProvider::Twilio)),
            json!({"event":"connected","protocol":"Call","version":"1.0.0"})
        );
        let s = parse(&start(BenchProvider::Twilio, &ids));
        assert_eq!(s["streamSid"], ids.stream_sid);
        assert_eq!(s["start"]["callSid"], ids.call_sid);
        assert_eq!(s["start"]["accountSid"], ids.account_sid);
        assert_eq!(
            s["start"]["mediaFormat"],
            json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
        );
        let stop = parse(&stop(BenchProvider::Twilio, &ids, 12));
        assert_eq!(stop["sequenceNumber"], "12");
        assert_eq!(stop["stop"]["callSid"], ids.call_sid);
        let m = parse(&mark_echo(BenchProvider::Twilio, &ids.stream_sid, 42, "a\"b").unwrap());
        assert_eq!(
            m,
            json!({"event": "mark", "sequenceNumber": "42", "streamSid": ids.stream_sid, "mark": {"name": "a\"b"}})
        );
    }

    #[test]
    fn decode_keeps_only_what_the_harness_needs() {
        let media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//7+/w=="}}"#;
        assert_eq!(decode(media).unwrap(), FromBridge::Media { bytes: 4 });
        let escaped = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"\/\/7+"}}"#;
        assert_eq!(decode(escaped).unwrap(), FromBridge::Media { bytes: 3 });
        let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"0:17"}}"#;
        assert_eq!(decode(mark).unwrap(), FromBridge::Mark { name: "0:17".into() });
        assert_eq!(decode(r#"{"event":"clear","streamSid":"MZ1"}"#).unwrap(), FromBridge::Clear);
        assert_eq!(decode(r#"{"event":"media"}"#).unwrap(), FromBridge::Other);
        assert_eq!(decode(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#).unwrap(), FromBridge::Other);
        assert!(decode("nope").is_err());
        assert!(decode(r#"{"media":{}}"#).is_err());
    }
}
