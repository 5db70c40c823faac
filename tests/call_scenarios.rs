//! Scenario tests of the call state machine on a virtual clock: no sockets, no sleeping.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::default_call_params;
use callbridge::core::audio::{AudioFormat, ByteOrder, Encoding};
use callbridge::core::call::{Call, CallEvent, DropReason, EndReason, Output, ProviderOut, Role};
use callbridge::core::realtime::{ApiError, ClientEvent, ModelAudioFormat, ResponseStatus, ServerEvent};
use callbridge::core::telephony::{Media, ProviderEvent, StreamStart, Track};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Harness {
    call: Call,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut callbridge::core::call::CallParams)) -> Self {
        let mut params = default_call_params();
        tune(&mut params);
        let now = Instant::now();
        Self { call: Call::new(now, params), now }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.call.poll_output()).collect()
    }

    fn provider(&mut self, ev: ProviderEvent<'_>) -> Vec<Output> {
        self.call.handle_provider(self.now, ev);
        self.drain()
    }

    fn realtime(&mut self, ev: ServerEvent<'_>) -> Vec<Output> {
        self.call.handle_realtime(self.now, ev);
        self.drain()
    }

    fn start(&mut self, format: AudioFormat) -> Vec<Output> {
        let start = StreamStart {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            call_sid: "CA00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            tracks: vec![Track::Inbound],
            custom_parameters: BTreeMap::from([("leadId".to_string(), "lead-7".to_string())]),
            media_format: format,
            sequence_number: Some(1),
        };
        self.provider(ProviderEvent::Start(Box::new(start)))
    }

    fn start_live(&mut self, format: AudioFormat) -> Vec<Output> {
        let mut out = self.start(format);
        self.call.handle_upstream_connected(self.now);
        out.extend(self.drain());
        out
    }

    fn media(&mut self, timestamp_ms: u64, audio: &[u8]) -> Vec<Output> {
        let b64 = B64.encode(audio);
        self.provider(ProviderEvent::Media(Media {
            track: Track::Inbound,
            chunk: timestamp_ms / 20 + 1,
            timestamp_ms,
            payload_b64: Cow::Owned(b64),
            audio,
        }))
    }

    fn delta(&mut self, response_id: &str, item_id: &str, audio: &[u8]) -> Vec<Output> {
        self.realtime(ServerEvent::AudioDelta {
            response_id: response_id.into(),
            item_id: item_id.into(),
            content_index: 0,
            delta_b64: Cow::Owned(B64.encode(audio)),
            audio,
        })
    }

    fn mark(&mut self, name: &str) -> Vec<Output> {
        self.provider(ProviderEvent::Mark { name: name.into() })
    }

    /// Echoes every mark in `outs` in order, 20 ms of virtual time per frame before it, and
    /// keeps echoing marks that pacing sends as a result. Returns everything produced.
    fn play_all(&mut self, outs: Vec<Output>) -> Vec<Output> {
        let mut all = Vec::new();
        let mut todo = outs;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for o in &todo {
                match o {
                    Output::Provider(ProviderOut::Media { .. }) => self.advance(20),
                    Output::Provider(ProviderOut::Mark { name }) => next.extend(self.mark(name)),
                    _ => {}
                }
            }
            all.extend(todo);
            todo = next;
        }
        all
    }
}

fn frames(outs: &[Output]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Provider(ProviderOut::Media { payload_b64 }) => Some(B64.decode(payload_b64).unwrap()),
            _ => None,
        })
        .collect()
}

fn marks(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Provider(ProviderOut::Mark { name }) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn appends(outs: &[Output]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }) => {
                Some(B64.decode(audio_b64).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn events(outs: &[Output]) -> Vec<&CallEvent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn speech(item: &str) -> ServerEvent<'static> {
    ServerEvent::SpeechStarted { item_id: Cow::Owned(item.to_string()), audio_start_ms: 0 }
}

fn created(id: &str) -> ServerEvent<'static> {
    ServerEvent::ResponseCreated { response_id: Cow::Owned(id.to_string()) }
}

fn response_done(id: &str, status: ResponseStatus) -> ServerEvent<'static> {
    ServerEvent::ResponseDone { response_id: Cow::Owned(id.to_string()), status, reason: None, usage: None }
}

/// `ms` of μ-law agent audio with a recognisable byte pattern (never the silence byte).
fn agent_audio(ms: usize) -> Vec<u8> {
    (0..ms * 8).map(|i| (i % 200) as u8).collect()
}

#[test]
fn normal_turn_passthrough() {
    let mut h = Harness::new();
    let out = h.start(AudioFormat::PCMU_8K);
    assert!(out.contains(&Output::ConnectUpstream), "a valid start opens the upstream");
    // Caller audio while connecting is held, then flushed after session.update.
    let caller = vec![0x55u8; 160];
    assert!(appends(&h.media(0, &caller)).is_empty());
    h.call.handle_upstream_connected(h.now);
    let out = h.drain();
    match &out[0] {
        Output::Realtime(ClientEvent::SessionUpdate(s)) => {
            assert_eq!(s.input_format, ModelAudioFormat::Pcmu);
            assert_eq!(s.output_format, ModelAudioFormat::Pcmu);
        }
        other => panic!("session.update must come first, got {other:?}"),
    }
    assert_eq!(appends(&out), vec![caller.clone()]);
    // Passthrough forwards the payload untouched.
    h.advance(20);
    assert_eq!(appends(&h.media(20, &caller)), vec![caller.clone()]);

    h.realtime(speech("item_u1"));
    h.advance(800);
    h.realtime(ServerEvent::SpeechStopped { item_id: "item_u1".into(), audio_end_ms: 900 });
    h.advance(300);
    h.realtime(created("resp_1"));
    // Odd-sized deltas are re-cut into exact 160-byte frames, at most 300 ms ahead.
    let audio = agent_audio(1000);
    let mut out = Vec::new();
    for chunk in audio.chunks(333) {
        out.extend(h.delta("resp_1", "item_a1", chunk));
    }
    let sent = frames(&out);
    assert_eq!(sent.len(), 15, "lead is capped at 300 ms = 15 frames");
    assert!(sent.iter().all(|f| f.len() == 160));
    assert!(!marks(&out).is_empty());
    let latency = events(&out).iter().find_map(|e| match e {
        CallEvent::FirstAudio { latency } => Some(*latency),
        _ => None,
    });
    assert_eq!(latency, Some(Duration::from_millis(300)));

    let mut all = out;
    all.extend(
        h.realtime(ServerEvent::AudioDone { response_id: "resp_1".into(), item_id: "item_a1".into() }),
    );
    all.extend(h.realtime(ServerEvent::OutputTranscriptDone {
        item_id: "item_a1".into(),
        transcript: "Your order ships Friday.".into(),
    }));
    all.extend(h.realtime(response_done("resp_1", ResponseStatus::Completed)));
    let all = h.play_all(all);
    let sent: Vec<u8> = frames(&all).concat();
    assert_eq!(sent, audio, "every byte of the reply goes out in order");

    h.realtime(ServerEvent::InputTranscriptionCompleted {
        item_id: "item_u1".into(),
        transcript: "When will my order arrive?".into(),
    });
    let turns = h.call.transcript();
    assert_eq!(turns.len(), 2);
    assert_eq!((turns[0].role, turns[0].text.as_str()), (Role::Caller, "When will my order arrive?"));
    assert_eq!((turns[1].role, turns[1].interrupted), (Role::Agent, false));
    assert_eq!(turns[1].text, "Your order ships Friday.");

    let out = h.provider(ProviderEvent::Stop);
    assert_eq!(out.last(), Some(&Output::End(EndReason::ProviderStop)));
}

#[test]
fn barge_in_mid_reply_clears_truncates_and_cancels() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(created("resp_1"));
    let out = h.delta("resp_1", "item_a1", &agent_audio(2000));
    let first_marks = marks(&out);
    assert_eq!(frames(&out).len(), 15);
    // The caller hears the first 100 ms and 200 ms marks, then talks.
    h.advance(200);
    let mut more = h.mark(&first_marks[0]);
    more.extend(h.mark(&first_marks[1]));
    assert_eq!(frames(&more).len(), 10, "confirmed audio frees lead for more frames");
    h.advance(50);
    let out = h.realtime(speech("item_u2"));
    assert_eq!(out[1], Output::Provider(ProviderOut::Clear), "clear goes out first, got {out:?}");
    assert!(out.contains(&Output::Realtime(ClientEvent::ItemTruncate {
        item_id: "item_a1".into(),
        content_index: 0,
        audio_end_ms: 200,
    })));
    assert!(
        out.contains(&Output::Realtime(ClientEvent::ResponseCancel { response_id: Some("resp_1".into()) }))
    );
    // Audio still in flight for the cancelled response is dropped, not played after the clear.
    let late = h.delta("resp_1", "item_a1", &agent_audio(100));
    assert!(frames(&late).is_empty());
    assert!(events(&late).contains(&&CallEvent::Dropped { reason: DropReason::CancelledAudio, count: 1 }));
    let turns = h.call.transcript();
    assert!(turns.iter().any(|t| t.role == Role::Agent && t.interrupted));
}

#[test]
fn truncate_never_exceeds_audio_received() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(created("resp_1"));
    // 250 ms of audio (the last frame padded); marks follow every 100 ms and the item's end.
    let out = h.delta("resp_1", "item_a1", &agent_audio(250));
    let mut all = out;
    all.extend(
        h.realtime(ServerEvent::AudioDone { response_id: "resp_1".into(), item_id: "item_a1".into() }),
    );
    let names = marks(&all);
    assert_eq!(names.len(), 3, "{names:?}");
    // The caller heard 200 ms, then talks over the last 50 ms.
    h.mark(&names[0]);
    h.mark(&names[1]);
    let out = h.realtime(speech("item_u2"));
    let truncate = out.iter().find_map(|o| match o {
        Output::Realtime(ClientEvent::ItemTruncate { audio_end_ms, .. }) => Some(*audio_end_ms),
        _ => None,
    });
    assert_eq!(truncate, Some(200));
}

#[test]
fn barge_in_after_reply_finished_playing_sends_nothing() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(created("resp_1"));
    let mut out = h.delta("resp_1", "item_a1", &agent_audio(400));
    out.extend(
        h.realtime(ServerEvent::AudioDone { response_id: "resp_1".into(), item_id: "item_a1".into() }),
    );
    out.extend(h.realtime(response_done("resp_1", ResponseStatus::Completed)));
    h.play_all(out);
    let out = h.realtime(speech("item_u2"));
    assert!(!out.iter().any(|o| matches!(o, Output::Provider(_) | Output::Realtime(_))), "{out:?}");
    let turns = h.call.transcript();
    assert!(turns.iter().any(|t| t.role == Role::Agent && !t.interrupted));
}

#[test]
fn marks_after_clear_are_ignored() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(created("resp_1"));
    let out = h.delta("resp_1", "item_a1", &agent_audio(1000));
    let old = marks(&out);
    h.realtime(speech("item_u2"));
    // The provider flushes the pending marks after the clear: they mean "dropped", not "played".
    for name in &old {
        let echo = h.mark(name);
        assert!(frames(&echo).is_empty());
        assert_eq!(events(&echo), vec![&CallEvent::Dropped { reason: DropReason::StaleMark, count: 1 }]);
    }
    // A new reply paces from a clean ledger.
    h.realtime(created("resp_2"));
    let out = h.delta("resp_2", "item_a2", &agent_audio(1000));
    assert_eq!(frames(&out).len(), 15);
    assert!(marks(&out).iter().all(|m| m.starts_with("1:")), "new generation: {:?}", marks(&out));
    assert!(
        events(&h.mark("bogus")).contains(&&CallEvent::Dropped { reason: DropReason::UnknownMark, count: 1 })
    );
}

/// Resilience off: no reconnect, no apology (reconnects and the apology are covered by
/// tests/call_resilience.rs).
fn without_resilience(p: &mut callbridge::core::call::CallParams) {
    p.reconnect.max_attempts = 0;
    p.apology = None;
}

#[test]
fn upstream_errors_fatal_and_recoverable() {
    let mut h = Harness::with(without_resilience);
    h.start_live(AudioFormat::PCMU_8K);
    let recoverable = ApiError {
        kind: "invalid_request_error".into(),
        code: Some("response_cancel_not_active".into()),
        message: "no active response".into(),
        param: None,
        event_id: None,
    };
    let out = h.realtime(ServerEvent::Error(recoverable));
    assert!(!out.iter().any(|o| matches!(o, Output::End(_))));
    let fatal = ApiError {
        kind: "invalid_request_error".into(),
        code: Some("invalid_api_key".into()),
        message: "bad key".into(),
        param: None,
        event_id: None,
    };
    let out = h.realtime(ServerEvent::Error(fatal));
    assert_eq!(out.last(), Some(&Output::End(EndReason::UpstreamError { code: "invalid_api_key".into() })));
    assert_eq!(h.call.phase_name(), "ended");
    assert!(h.drain().is_empty(), "End is emitted once");
}

#[test]
fn upstream_close_and_connect_failure_end_the_call() {
    let mut h = Harness::new();
    h.start(AudioFormat::PCMU_8K);
    h.call.handle_upstream_closed(h.now);
    assert_eq!(h.drain().last(), Some(&Output::End(EndReason::UpstreamConnectFailed)));

    let mut h = Harness::with(without_resilience);
    h.start_live(AudioFormat::PCMU_8K);
    h.call.handle_upstream_closed(h.now);
    assert_eq!(h.drain().last(), Some(&Output::End(EndReason::UpstreamClosed)));
}

#[test]
fn stop_mid_response_waits_briefly_for_the_caller_transcript() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(speech("item_u1"));
    h.realtime(ServerEvent::SpeechStopped { item_id: "item_u1".into(), audio_end_ms: 500 });
    h.realtime(created("resp_1"));
    h.delta("resp_1", "item_a1", &agent_audio(600));
    let out = h.provider(ProviderEvent::Stop);
    assert!(!out.iter().any(|o| matches!(o, Output::End(_))), "draining for the transcript");
    assert_eq!(h.call.phase_name(), "draining");
    let out = h.realtime(ServerEvent::InputTranscriptionCompleted {
        item_id: "item_u1".into(),
        transcript: "Goodbye".into(),
    });
    assert_eq!(out.last(), Some(&Output::End(EndReason::ProviderStop)));
    let turns = h.call.transcript();
    assert_eq!(turns[0].text, "Goodbye");
    assert!(turns[1].interrupted, "agent audio that was not confirmed played counts as interrupted");

    // Without the transcript, the linger deadline ends it.
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(speech("item_u1"));
    h.provider(ProviderEvent::Stop);
    let deadline = h.call.poll_timeout().unwrap();
    h.now = deadline;
    h.call.handle_timeout(h.now);
    assert_eq!(h.drain().last(), Some(&Output::End(EndReason::ProviderStop)));
}

#[test]
fn out_of_order_and_duplicate_media() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    let f = vec![0x11u8; 160];
    assert_eq!(appends(&h.media(0, &f)).len(), 1);
    assert_eq!(appends(&h.media(20, &f)).len(), 1);
    // Duplicate and reordered frames are dropped and counted.
    let dup = h.media(20, &f);
    assert!(appends(&dup).is_empty());
    assert_eq!(events(&dup), vec![&CallEvent::Dropped { reason: DropReason::LateMedia, count: 1 }]);
    assert!(appends(&h.media(0, &f)).is_empty());
    // A 60 ms gap is filled with μ-law silence before the next frame.
    let out = h.media(100, &f);
    let a = appends(&out);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0], vec![0xFF; 480]);
    assert_eq!(a[1], f);
    assert!(events(&out).contains(&&CallEvent::GapFilled { ms: 60 }));
}

#[test]
fn alaw_gaps_are_filled_with_alaw_silence() {
    let mut h = Harness::new();
    let out = h.start_live(AudioFormat::PCMA_8K);
    assert!(out.iter().any(|o| matches!(o,
        Output::Realtime(ClientEvent::SessionUpdate(s)) if s.input_format == ModelAudioFormat::Pcma)));
    h.media(0, &[0x22; 160]);
    let a = appends(&h.media(40, &[0x22; 160]));
    assert_eq!(a[0], vec![0xD5; 160]);
}

#[test]
fn media_before_start_and_start_timeout() {
    let mut h = Harness::new();
    let out = h.media(0, &[0xFF; 160]);
    assert_eq!(events(&out), vec![&CallEvent::Dropped { reason: DropReason::MediaBeforeStart, count: 1 }]);
    let deadline = h.call.poll_timeout().unwrap();
    assert_eq!(deadline - h.now, Duration::from_secs(10));
    h.now = deadline;
    h.call.handle_timeout(h.now);
    assert_eq!(h.drain(), vec![Output::End(EndReason::StartTimeout)]);
}

#[test]
fn transcode_l16_16k_to_pcm_24k_and_back() {
    let mut h = Harness::new();
    let l16_16k = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 };
    let out = h.start_live(l16_16k);
    assert!(out.iter().any(|o| matches!(o,
        Output::Realtime(ClientEvent::SessionUpdate(s)) if s.input_format == ModelAudioFormat::Pcm24k)));
    // 1 s of caller audio at 16 kHz becomes about 1 s at 24 kHz.
    let frame: Vec<u8> =
        (0..320).flat_map(|i| (((i as f32 * 0.2).sin() * 8000.0) as i16).to_le_bytes()).collect();
    let mut model_bytes = 0;
    for i in 0..50 {
        model_bytes += appends(&h.media(i * 20, &frame)).iter().map(Vec::len).sum::<usize>();
    }
    assert!((46_000..=48_000).contains(&model_bytes), "{model_bytes}");
    // Model PCM 24 kHz comes back as exact 640-byte L16 16 kHz frames.
    h.realtime(created("resp_1"));
    let pcm24: Vec<u8> =
        (0..24_000).flat_map(|i| (((i as f32 * 0.1).sin() * 8000.0) as i16).to_le_bytes()).collect();
    let out = h.delta("resp_1", "item_a1", &pcm24[..9_600]);
    let sent = frames(&out);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|f| f.len() == 640));
}

#[test]
fn forced_transcode_for_pcmu() {
    let mut h = Harness::with(|p| p.force_transcode = true);
    let out = h.start_live(AudioFormat::PCMU_8K);
    assert!(out.iter().any(|o| matches!(o,
        Output::Realtime(ClientEvent::SessionUpdate(s)) if s.input_format == ModelAudioFormat::Pcm24k)));
    let a = appends(&h.media(0, &[0xFF; 160]));
    assert!(a.iter().all(|x| x.len() % 2 == 0));
}

#[test]
fn second_start_is_ignored() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    let out = h.start(AudioFormat::PCMU_8K);
    assert_eq!(events(&out), vec![&CallEvent::Dropped { reason: DropReason::OutOfOrder, count: 1 }]);
    assert_eq!(h.call.phase_name(), "live");
}

#[test]
fn streaming_reply_marks_every_interval_not_every_frame() {
    let mut h = Harness::new();
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(created("resp_1"));
    // The model streams at real time, one 20 ms delta per tick; the caller plays at real time.
    let mut frames_sent = 0;
    let mut marks_sent = 0;
    for _ in 0..100 {
        h.advance(20);
        let out = h.delta("resp_1", "item_a1", &agent_audio(20));
        frames_sent += frames(&out).len();
        marks_sent += marks(&out).len();
        for name in marks(&out) {
            h.mark(&name);
        }
    }
    assert_eq!(frames_sent, 100);
    assert_eq!(marks_sent, 20, "one mark per 100 ms of audio");
    // The item's end is marked so its playback can be confirmed.
    let out = h.realtime(ServerEvent::AudioDone { response_id: "resp_1".into(), item_id: "item_a1".into() });
    assert!(frames(&out).is_empty());
    assert!(marks(&out).is_empty(), "nothing unconfirmed was left: {out:?}");
    let turns = h.call.transcript();
    assert!(turns.iter().any(|t| t.role == Role::Agent && !t.interrupted), "fully played: {turns:?}");
    assert!(events(&out).iter().any(|e| matches!(e, CallEvent::Turn(t) if !t.interrupted)));
}
