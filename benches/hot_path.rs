//! Micro-benchmarks of everything on the per-frame path: provider and Realtime codecs, base64,
//! G.711, the resampler, frame re-framing, and the call state machine per 20 ms frame in
//! passthrough and transcode. `cargo bench` runs them all in seconds.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::default_call_params;
use callbridge::core::audio::frames::FrameRing;
use callbridge::core::audio::resample::StreamResampler;
use callbridge::core::audio::{AudioFormat, ByteOrder, Encoding, g711};
use callbridge::core::call::{Call, CallParams, Output, ProviderOut};
use callbridge::core::realtime::{self, ClientEvent, RealtimeDecoder, ServerEvent};
use callbridge::core::telephony::{
    Dialect, Media, ProviderCodec, ProviderCommand, ProviderEvent, StreamStart, Track,
};
use criterion::{Criterion, criterion_group, criterion_main};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const MEDIA: &str = include_str!("../fixtures/twilio/media.json");

fn sine(n: usize, step: f32) -> Vec<i16> {
    (0..n).map(|i| ((i as f32 * step).sin() * 12_000.0) as i16).collect()
}

fn codecs(c: &mut Criterion) {
    let mut codec = ProviderCodec::new(Dialect::Twilio, 64 * 1024);
    c.bench_function("twilio_decode_media", |b| {
        b.iter(|| black_box(matches!(codec.decode(black_box(MEDIA)).unwrap(), ProviderEvent::Media(_))))
    });
    let payload = B64.encode([0x55u8; 160]);
    let mut out = String::with_capacity(512);
    c.bench_function("twilio_encode_media", |b| {
        b.iter(|| {
            out.clear();
            let cmd = ProviderCommand::Media {
                stream_sid: "MZ0123456789abcdef0123456789abcdef",
                payload_b64: &payload,
            };
            codec.encode(&cmd, &mut out);
            black_box(out.len())
        })
    });
    let delta = format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{payload}"}}"#
    );
    let mut decoder = RealtimeDecoder::new(1 << 20);
    c.bench_function("realtime_decode_audio_delta", |b| {
        b.iter(|| {
            black_box(matches!(decoder.decode(black_box(&delta)).unwrap(), ServerEvent::AudioDelta { .. }))
        })
    });
    c.bench_function("realtime_encode_append", |b| {
        b.iter(|| {
            out.clear();
            realtime::encode_input_audio_append(black_box(&payload), &mut out);
            black_box(out.len())
        })
    });
    let frame = [0x55u8; 160];
    let mut text = String::with_capacity(256);
    let mut bytes = Vec::with_capacity(256);
    c.bench_function("base64_encode_decode_160", |b| {
        b.iter(|| {
            text.clear();
            bytes.clear();
            B64.encode_string(black_box(&frame), &mut text);
            B64.decode_vec(&text, &mut bytes).unwrap();
            black_box(bytes.len())
        })
    });
}

fn audio(c: &mut Criterion) {
    let pcm = sine(160, 0.3);
    let mut ulaw = Vec::with_capacity(160);
    let mut back = Vec::with_capacity(160);
    c.bench_function("ulaw_encode_decode_20ms", |b| {
        b.iter(|| {
            ulaw.clear();
            back.clear();
            g711::encode_ulaw(black_box(&pcm), &mut ulaw);
            g711::decode_ulaw(&ulaw, &mut back);
            black_box(back.len())
        })
    });
    for (from, to) in [(8_000u32, 24_000u32), (24_000, 8_000), (16_000, 24_000), (24_000, 16_000)] {
        let mut r = StreamResampler::new(from, to).unwrap();
        let input = sine(from as usize / 50, 0.1);
        let mut out = Vec::with_capacity(r.max_output_len(input.len()) * 2);
        c.bench_function(&format!("resample_{}k_to_{}k_20ms", from / 1000, to / 1000), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&input), &mut out);
                black_box(out.len())
            })
        });
    }
    let mut ring = FrameRing::new(160, 1 << 20);
    let chunk = vec![0x55u8; 333];
    let mut frame = Vec::with_capacity(160);
    c.bench_function("frame_ring_333b_in_160b_frames_out", |b| {
        b.iter(|| {
            ring.push(black_box(&chunk));
            while {
                frame.clear();
                ring.pop_frame(&mut frame)
            } {
                black_box(frame.len());
            }
        })
    });
}

/// A live call in `format`, with the Realtime session configured and a response running.
fn live_call(params: CallParams, format: AudioFormat) -> (Call, Instant) {
    let t0 = Instant::now();
    let mut call = Call::new(t0, params);
    let start = StreamStart {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
        tracks: vec![Track::Inbound],
        custom_parameters: Default::default(),
        media_format: format,
        sequence_number: Some(1),
    };
    call.handle_provider(t0, ProviderEvent::Start(Box::new(start)));
    call.handle_upstream_connected(t0);
    call.handle_realtime(t0, ServerEvent::ResponseCreated { response_id: "resp_1".into() });
    while call.poll_output().is_some() {}
    (call, t0)
}

/// Drains outputs the way the driver does (recycling strings) and echoes marks at once.
fn drain(call: &mut Call, now: Instant, marks: &mut Vec<String>) {
    marks.clear();
    while let Some(o) = call.poll_output() {
        match o {
            Output::Provider(ProviderOut::Media { payload_b64 }) => call.recycle(black_box(payload_b64)),
            Output::Provider(ProviderOut::Mark { name }) => marks.push(name),
            Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }) => {
                call.recycle(black_box(audio_b64))
            }
            other => {
                black_box(other);
            }
        }
    }
    for name in marks.drain(..) {
        call.handle_provider(now, ProviderEvent::Mark { name: Cow::Borrowed(&name) });
        call.recycle(name);
    }
}

fn call_frames(c: &mut Criterion) {
    let l16_16k = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16_000 };
    let cases = [
        ("passthrough", AudioFormat::PCMU_8K, AudioFormat::PCMU_8K),
        ("transcode_l16_16k", l16_16k, AudioFormat::PCM16_24K),
    ];
    for (name, provider, model) in cases {
        let (mut call, t0) = live_call(default_call_params(), provider);
        let inbound = vec![0x55u8; provider.frame_bytes()];
        let inbound_b64 = B64.encode(&inbound);
        let outbound = vec![0x55u8; model.frame_bytes()];
        let mut marks = Vec::new();
        let mut k = 0u64;
        c.bench_function(&format!("call_inbound_frame_{name}"), |b| {
            b.iter(|| {
                k += 1;
                let now = t0 + Duration::from_millis(20 * k);
                let media = Media {
                    track: Track::Inbound,
                    chunk: k,
                    timestamp_ms: 20 * k,
                    payload_b64: Cow::Borrowed(&inbound_b64),
                    audio: &inbound,
                };
                call.handle_provider(now, ProviderEvent::Media(media));
                drain(&mut call, now, &mut marks);
            })
        });
        let delta_b64 = B64.encode(&outbound);
        c.bench_function(&format!("call_outbound_frame_{name}"), |b| {
            b.iter(|| {
                k += 1;
                let now = t0 + Duration::from_millis(20 * k);
                let ev = ServerEvent::AudioDelta {
                    response_id: "resp_1".into(),
                    item_id: "item_1".into(),
                    content_index: 0,
                    delta_b64: Cow::Borrowed(&delta_b64),
                    audio: &outbound,
                };
                call.handle_realtime(now, ev);
                drain(&mut call, now, &mut marks);
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = codecs, audio, call_frames
}
criterion_main!(benches);
