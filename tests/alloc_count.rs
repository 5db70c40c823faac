//! Counts heap allocations on the passthrough per-frame path with a counting global allocator
//! (a count, not a timing): provider `media` decode → call state machine → `append` encode, and
//! model audio delta decode → re-framing → provider `media`/`mark` encode → mark echo.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::default_call_params;
use callbridge::core::call::{Call, Output, ProviderOut};
use callbridge::core::realtime::{self, ClientEvent, RealtimeDecoder};
use callbridge::core::telephony::{Dialect, ProviderCodec, ProviderCommand, ProviderEvent};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const START: &str = include_str!("../fixtures/twilio/start.json");

/// Drives one call: `frames` inbound media and as many outbound 20 ms deltas, echoing marks.
/// Counts allocations only for the frames after `warmup`.
fn run(frames: u64, warmup: u64) -> u64 {
    let mut codec = ProviderCodec::new(Dialect::Twilio, 64 * 1024);
    let mut decoder = RealtimeDecoder::new(1 << 20);
    let t0 = Instant::now();
    let mut call = Call::new(t0, default_call_params());
    call.handle_provider(t0, codec.decode(START).unwrap());
    call.handle_upstream_connected(t0);
    while call.poll_output().is_some() {}

    // Everything the loop reads is built up front.
    let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
    let media: Vec<String> = (0..frames)
        .map(|k| {
            format!(
                r#"{{"event":"media","sequenceNumber":"{}","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}}}}"#,
                k + 2,
                k + 1,
                k * 20
            )
        })
        .collect();
    let delta = format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{payload}"}}"#
    );
    let created = r#"{"type":"response.created","event_id":"event_0","response":{"id":"resp_1","status":"in_progress","output":[]}}"#;
    call.handle_realtime(t0, decoder.decode(created).unwrap());

    let mut text = String::with_capacity(4096);
    let mut marks: Vec<String> = (0..64).map(|_| String::with_capacity(32)).collect();
    let mut sent_frames = 0u64;
    for (k, m) in media.iter().enumerate() {
        if k as u64 == warmup {
            COUNTING.store(true, Ordering::SeqCst);
        }
        let now = t0 + Duration::from_millis(20 * k as u64);
        call.handle_provider(now, codec.decode(m).unwrap());
        call.handle_realtime(now, decoder.decode(&delta).unwrap());
        let mut n_marks = 0;
        while let Some(out) = call.poll_output() {
            text.clear();
            match out {
                Output::Realtime(ev) => {
                    realtime::encode(&ev, &mut text);
                    if let ClientEvent::InputAudioAppend { audio_b64 } = ev {
                        call.recycle(audio_b64);
                    }
                }
                Output::Provider(ProviderOut::Media { payload_b64 }) => {
                    codec.encode(
                        &ProviderCommand::Media { stream_sid: "MZ1", payload_b64: &payload_b64 },
                        &mut text,
                    );
                    call.recycle(payload_b64);
                    sent_frames += 1;
                }
                Output::Provider(ProviderOut::Mark { name }) => {
                    codec.encode(&ProviderCommand::Mark { stream_sid: "MZ1", name: &name }, &mut text);
                    marks[n_marks].clear();
                    marks[n_marks].push_str(&name);
                    n_marks += 1;
                    call.recycle(name);
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        // The provider plays in real time: echo this tick's marks.
        for name in &marks[..n_marks] {
            call.handle_provider(now, ProviderEvent::Mark { name: Cow::Borrowed(name.as_str()) });
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert!(sent_frames > frames / 2, "agent audio flowed: {sent_frames} frames");
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn passthrough_frames_allocate_nothing_in_steady_state() {
    let allocs = run(2_000, 500);
    assert_eq!(allocs, 0, "heap allocations in 1,500 steady-state frames (in and out)");
}
