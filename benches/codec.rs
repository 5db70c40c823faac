//! Micro-benchmarks of the per-frame hot path: provider decode/encode, G.711, and the call state
//! machine handling one inbound 20 ms frame in passthrough. Run with `cargo bench`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use callbridge::config::default_call_params;
use callbridge::core::audio::{AudioFormat, g711};
use callbridge::core::call::Call;
use callbridge::core::telephony::{Dialect, ProviderCodec, ProviderCommand, ProviderEvent};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const START: &str = include_str!("../fixtures/twilio/start.json");
const MEDIA: &str = include_str!("../fixtures/twilio/media.json");

fn provider_codec(c: &mut Criterion) {
    let mut codec = ProviderCodec::new(Dialect::Twilio, 64 * 1024);
    c.bench_function("twilio_decode_media", |b| {
        b.iter(|| {
            let ev = codec.decode(black_box(MEDIA)).unwrap();
            black_box(matches!(ev, ProviderEvent::Media(_)));
        })
    });
    let payload = "/".repeat(216);
    let mut out = String::with_capacity(512);
    c.bench_function("twilio_encode_media", |b| {
        b.iter(|| {
            out.clear();
            codec.encode(
                &ProviderCommand::Media {
                    stream_sid: "MZ0123456789abcdef0123456789abcdef",
                    payload_b64: &payload,
                },
                &mut out,
            );
            black_box(out.len());
        })
    });
}

fn g711_frame(c: &mut Criterion) {
    let pcm: Vec<i16> = (0..160).map(|i| ((i as f32 * 0.3).sin() * 12_000.0) as i16).collect();
    let mut ulaw = Vec::with_capacity(160);
    let mut back = Vec::with_capacity(160);
    c.bench_function("ulaw_encode_decode_20ms", |b| {
        b.iter(|| {
            ulaw.clear();
            back.clear();
            g711::encode_ulaw(black_box(&pcm), &mut ulaw);
            g711::decode_ulaw(&ulaw, &mut back);
            black_box(back.len());
        })
    });
}

fn call_inbound_frame(c: &mut Criterion) {
    let mut codec = ProviderCodec::new(Dialect::Twilio, 64 * 1024);
    let now = Instant::now();
    let mut call = Call::new(now, default_call_params());
    if let Ok(ev) = codec.decode(START) {
        call.handle_provider(now, ev);
    }
    call.handle_upstream_connected(now);
    while call.poll_output().is_some() {}
    assert_eq!(AudioFormat::PCMU_8K.frame_bytes(), 160);
    // Each frame carries a later timestamp so none is dropped as a duplicate.
    let mut ts = 0u64;
    c.bench_function("call_inbound_frame_passthrough", |b| {
        b.iter_batched(
            || {
                ts += 20;
                MEDIA.replace("\"timestamp\":\"20\"", &format!("\"timestamp\":\"{ts}\""))
            },
            |text| {
                let ev = codec.decode(&text).unwrap();
                call.handle_provider(now, ev);
                while let Some(o) = call.poll_output() {
                    black_box(o);
                }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, provider_codec, g711_frame, call_inbound_frame);
criterion_main!(benches);
