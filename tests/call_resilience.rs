//! Upstream resilience on a virtual clock: the Realtime socket dies in the middle of a reply,
//! connect attempts fail, the API sends fatal errors, and sessions are recycled before their
//! cap. The harness plays the provider (it plays agent frames in real time and echoes each mark
//! once the audio before it has played) and the caller (a 20 ms frame every tick, each frame's
//! bytes unique so loss and duplication show); tests play the model.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::default_call_params;
use callbridge::core::audio::{AudioFormat, ByteOrder, Encoding};
use callbridge::core::call::reconnect::{APOLOGY_TEXT, APOLOGY_ULAW, DEFAULT_RESUME_NOTE};
use callbridge::core::call::{
    Call, CallEvent, CallParams, ConnectFailure, DropReason, EndReason, LossReason, Output, ProviderOut,
    Role, ToolResult, UpstreamEvent,
};
use callbridge::core::realtime::{ApiError, ClientEvent, FunctionTool, ResponseStatus, ServerEvent};
use callbridge::core::telephony::{Media, ProviderEvent, StreamStart, Track};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const TICK: Duration = Duration::from_millis(20);
/// Every byte of the agent audio of reply `n` is `2n` or `2n + 1` (never 0xFF, the μ-law silence
/// used for padding), so a heard frame tells which reply it came from.
fn reply_byte(n: u8, i: u64) -> u8 {
    2 * n + (i % 2) as u8
}

/// A reply the model is streaming.
struct Reply {
    response_id: String,
    item_id: String,
    /// Which reply (1-based), for its audio pattern.
    n: u8,
    total_ms: u64,
    sent_ms: u64,
    /// Audio sent per 20 ms tick (20 = real time).
    per_tick_ms: u64,
    text: String,
    text_sent: usize,
}

struct H {
    call: Call,
    t0: Instant,
    now: Instant,
    /// Every output, with the ms since `t0` it came out at.
    log: Vec<(u64, Output)>,
    /// When the audio queued at the provider has played.
    play_end: Instant,
    /// Marks the provider echoes, each once the audio before it has played.
    marks: VecDeque<(Instant, String)>,
    /// The provider echoes marks (false: a provider that went quiet).
    echo_marks: bool,
    /// Agent frames as the caller hears them: play start (ms since `t0`) and bytes.
    heard: Vec<(u64, Vec<u8>)>,
    /// Caller media sent so far: next timestamp, all bytes.
    caller_ts: u64,
    caller_bytes: Vec<u8>,
    reply: Option<Reply>,
    /// Connects asked for and not answered: answered this long after (None: the test answers).
    auto_connect: Option<Duration>,
    connect_at: Option<Instant>,
    /// Link events drained from the call.
    events: Vec<UpstreamEvent>,
    /// Total agent audio the model sent (ms).
    model_audio_ms: u64,
    /// Caller audio the current session has been sent (ms): what `audio_start_ms` counts.
    session_ms: u64,
}

impl H {
    fn new(tune: impl FnOnce(&mut CallParams)) -> Self {
        let mut params = default_call_params();
        params.session.tools = [FunctionTool {
            name: "lookup_order".into(),
            description: "Look up an order.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        }]
        .into();
        tune(&mut params);
        let t0 = Instant::now();
        Self {
            call: Call::new(t0, params),
            t0,
            now: t0,
            log: Vec::new(),
            play_end: t0,
            marks: VecDeque::new(),
            echo_marks: true,
            heard: Vec::new(),
            caller_ts: 0,
            caller_bytes: Vec::new(),
            reply: None,
            auto_connect: None,
            connect_at: None,
            events: Vec::new(),
            model_audio_ms: 0,
            session_ms: 0,
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    fn start_live(&mut self, format: AudioFormat) {
        let start = StreamStart {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            call_sid: "CA00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            tracks: vec![Track::Inbound],
            custom_parameters: BTreeMap::new(),
            media_format: format,
            sequence_number: Some(1),
        };
        self.call.handle_provider(self.now, ProviderEvent::Start(Box::new(start)));
        self.absorb();
        self.connect();
    }

    /// Takes every output: plays agent frames, schedules mark echoes, logs everything.
    fn absorb(&mut self) {
        loop {
            let mut flushed = Vec::new();
            while let Some(o) = self.call.poll_output() {
                match &o {
                    Output::Provider(ProviderOut::Media { payload_b64 }) => {
                        let start = self.play_end.max(self.now);
                        self.heard
                            .push(((start - self.t0).as_millis() as u64, B64.decode(payload_b64).unwrap()));
                        self.play_end = start + TICK;
                    }
                    Output::Provider(ProviderOut::Mark { name }) => {
                        self.marks.push_back((self.play_end, name.clone()))
                    }
                    Output::Provider(ProviderOut::Clear) => {
                        // The provider flushes its queue and returns the pending marks.
                        self.play_end = self.now;
                        flushed.extend(self.marks.drain(..).map(|(_, n)| n));
                    }
                    Output::ConnectUpstream => {
                        if let Some(d) = self.auto_connect {
                            self.connect_at = Some(self.now + d);
                        }
                    }
                    Output::Realtime(ClientEvent::SessionUpdate(_)) => self.session_ms = 0,
                    Output::Realtime(ClientEvent::InputAudioAppend { audio_b64 }) => {
                        self.session_ms += B64.decode(audio_b64).unwrap().len() as u64 / 8;
                    }
                    _ => {}
                }
                self.log.push((self.ms(), o));
            }
            while let Some(e) = self.call.poll_upstream_event() {
                self.events.push(e);
            }
            if flushed.is_empty() {
                break;
            }
            for name in flushed {
                self.call.handle_provider(self.now, ProviderEvent::Mark { name: name.into() });
            }
        }
    }

    fn log_len(&self) -> usize {
        self.log.len()
    }

    fn since(&self, i: usize) -> Vec<Output> {
        self.log[i..].iter().map(|(_, o)| o.clone()).collect()
    }

    /// One 20 ms tick: due mark echoes, a caller frame, a model delta, due timers.
    fn tick(&mut self) {
        self.now += TICK;
        if self.echo_marks {
            while self.marks.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, name) = self.marks.pop_front().unwrap();
                self.call.handle_provider(self.now, ProviderEvent::Mark { name: name.into() });
                self.absorb();
            }
        }
        if self.connect_at.is_some_and(|t| t <= self.now) {
            self.connect_at = None;
            self.connect();
        }
        self.caller_frame();
        self.stream_reply();
        while self.call.poll_timeout().is_some_and(|t| t <= self.now) {
            self.call.handle_timeout(self.now);
            self.absorb();
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.tick();
        }
    }

    fn caller_frame(&mut self) {
        let k = self.caller_ts / 20;
        let audio: Vec<u8> = (0..160).map(|i| ((k * 7 + i) % 250) as u8).collect();
        let b64 = B64.encode(&audio);
        self.call.handle_provider(
            self.now,
            ProviderEvent::Media(Media {
                track: Track::Inbound,
                chunk: k + 1,
                timestamp_ms: self.caller_ts,
                payload_b64: Cow::Owned(b64),
                audio: &audio,
            }),
        );
        self.caller_ts += 20;
        self.caller_bytes.extend_from_slice(&audio);
        self.absorb();
    }

    fn realtime(&mut self, ev: ServerEvent<'_>) {
        self.call.handle_realtime(self.now, ev);
        self.absorb();
    }

    /// Server VAD reports speech that began 300 ms ago in the session's input audio.
    fn speech_started(&mut self, item: &str) {
        let audio_start_ms = self.session_ms.saturating_sub(300);
        self.realtime(ServerEvent::SpeechStarted { item_id: item.to_owned().into(), audio_start_ms });
    }

    /// The caller talks for `ms`; the model hears it and transcribes it 200 ms later.
    fn caller_turn(&mut self, item: &str, ms: u64, text: &str) {
        self.speech_started(item);
        self.run(ms);
        self.realtime(ServerEvent::SpeechStopped { item_id: item.to_owned().into(), audio_end_ms: 0 });
        self.run(200);
        self.realtime(ServerEvent::InputTranscriptionCompleted {
            item_id: item.to_owned().into(),
            transcript: text.to_owned().into(),
        });
    }

    /// The model starts a reply of `ms` audio, streamed `per_tick_ms` per tick.
    fn start_reply(&mut self, n: u8, ms: u64, per_tick_ms: u64, text: &str) {
        let response_id = format!("resp_{n}");
        self.realtime(ServerEvent::ResponseCreated { response_id: response_id.clone().into() });
        self.reply = Some(Reply {
            response_id,
            item_id: format!("item_a{n}"),
            n,
            total_ms: ms,
            sent_ms: 0,
            per_tick_ms,
            text: text.to_owned(),
            text_sent: 0,
        });
    }

    fn stream_reply(&mut self) {
        let Some(mut r) = self.reply.take() else { return };
        let ms = r.per_tick_ms.min(r.total_ms - r.sent_ms);
        let audio: Vec<u8> = (0..ms * 8).map(|i| reply_byte(r.n, i)).collect();
        self.call.handle_realtime(
            self.now,
            ServerEvent::AudioDelta {
                response_id: r.response_id.clone().into(),
                item_id: r.item_id.clone().into(),
                content_index: 0,
                delta_b64: Cow::Owned(B64.encode(&audio)),
                audio: &audio,
            },
        );
        r.sent_ms += ms;
        self.model_audio_ms += ms;
        // The transcript runs along with the audio.
        let upto = r.text.len() * r.sent_ms as usize / r.total_ms as usize;
        let upto = (upto..=r.text.len()).find(|&i| r.text.is_char_boundary(i)).unwrap();
        if upto > r.text_sent {
            let delta = r.text[r.text_sent..upto].to_owned();
            self.call.handle_realtime(
                self.now,
                ServerEvent::OutputTranscriptDelta { item_id: r.item_id.clone().into(), delta: delta.into() },
            );
            r.text_sent = upto;
        }
        self.absorb();
        if r.sent_ms < r.total_ms {
            self.reply = Some(r);
            return;
        }
        self.realtime(ServerEvent::AudioDone {
            response_id: r.response_id.clone().into(),
            item_id: r.item_id.clone().into(),
        });
        self.realtime(ServerEvent::OutputTranscriptDone {
            item_id: r.item_id.clone().into(),
            transcript: r.text.clone().into(),
        });
        self.realtime(ServerEvent::ResponseDone {
            response_id: r.response_id.into(),
            status: ResponseStatus::Completed,
            reason: None,
            usage: None,
        });
    }

    /// The Realtime socket dies: the model's reply in flight is gone with it.
    fn kill(&mut self) {
        self.reply = None;
        self.call.handle_upstream_closed(self.now);
        self.absorb();
    }

    /// A new socket is in place (the old one, if any, is gone with its reply).
    fn connect(&mut self) {
        self.reply = None;
        self.call.handle_upstream_connected(self.now);
        self.absorb();
    }

    /// Agent frames of reply `n` heard so far.
    fn heard_from(&self, n: u8) -> Vec<&(u64, Vec<u8>)> {
        self.heard.iter().filter(|(_, f)| f[0] / 2 == n).collect()
    }

    /// Every caller byte the model sessions were sent, in order.
    fn appended(&self) -> Vec<u8> {
        appends(&self.log.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>()).concat()
    }

    /// Plays out until the provider has played everything and no reply streams.
    fn settle(&mut self) {
        for _ in 0..2_000 {
            if self.reply.is_none() && self.marks.is_empty() && self.play_end <= self.now {
                return;
            }
            self.tick();
        }
        panic!("never settled");
    }

    fn count(&self, f: impl Fn(&Output) -> bool) -> usize {
        self.log.iter().filter(|(_, o)| f(o)).count()
    }
}

fn sent(outs: &[Output]) -> Vec<&ClientEvent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Realtime(e) => Some(e),
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

fn not_audio(e: &&ClientEvent) -> bool {
    !matches!(e, ClientEvent::InputAudioAppend { .. })
}

fn api_error(kind: &str, code: Option<&str>, param: Option<&str>) -> ServerEvent<'static> {
    ServerEvent::Error(ApiError {
        kind: kind.into(),
        code: code.map(Into::into),
        message: "m".into(),
        param: param.map(Into::into),
        event_id: None,
    })
}

const QUESTION: &str = "When will my order arrive?";
const ANSWER: &str = "Your order shipped on Tuesday and it should arrive by Friday afternoon.";

#[test]
fn socket_dies_mid_reply_and_the_call_goes_on() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(400);
    h.caller_turn("item_u1", 1_500, QUESTION);
    // A reply streamed in real time: little is buffered here when the socket dies.
    h.start_reply(1, 4_000, 20, ANSWER);
    h.run(1_500);
    assert!(!h.heard_from(1).is_empty());
    let at_loss = h.log_len();
    let loss_ms = h.ms();
    let caller_at_loss = h.caller_bytes.len();
    h.kill();

    let out = h.since(at_loss);
    assert!(!out.iter().any(|o| matches!(o, Output::End(_))), "the call goes on: {out:?}");
    assert_eq!(out.iter().filter(|o| **o == Output::ConnectUpstream).count(), 1, "attempt 1 at once");
    assert_eq!(h.events, vec![UpstreamEvent::Reconnecting { reason: LossReason::Closed }]);
    assert_eq!(h.call.upstream_state(), "reconnecting");

    // The connect takes 300 ms; the caller keeps talking to nobody meanwhile.
    h.run(300);
    assert!(appends(&h.since(at_loss)).is_empty(), "no audio goes to a dead socket");
    let at_connect = h.log_len();
    h.connect();
    let out = h.since(at_connect);
    let events: Vec<&ClientEvent> = sent(&out).into_iter().filter(not_audio).collect();
    match events.as_slice() {
        [
            ClientEvent::SessionUpdate(s),
            ClientEvent::UserText { text: q },
            ClientEvent::AssistantText { text: a },
            ClientEvent::SystemText { text: note },
            ClientEvent::ResponseCreate,
        ] => {
            assert_eq!(s.voice, default_call_params().session.voice, "the same session again");
            assert_eq!(q, QUESTION);
            assert!(!a.is_empty() && ANSWER.starts_with(a.as_str()) && a.len() < ANSWER.len(), "{a:?}");
            assert_eq!(note, DEFAULT_RESUME_NOTE);
        }
        other => panic!("session.update, the turns, the note, response.create: {other:?}"),
    }
    // The caller audio of the outage reaches the new session, and response.create comes last.
    assert_eq!(appends(&out).concat(), h.caller_bytes[caller_at_loss..]);
    assert_eq!(sent(&out).last(), Some(&&ClientEvent::ResponseCreate));
    // Nothing of the caller was lost or sent twice over both sessions.
    assert_eq!(h.appended(), h.caller_bytes);

    // The new session answers after 400 ms.
    h.run(400);
    h.start_reply(2, 2_000, 20, "Friday afternoon, as I said.");
    h.settle();

    let last_old = h.heard_from(1).last().unwrap().0 + 20;
    let first_new = h.heard_from(2).first().unwrap().0;
    let gap = first_new.saturating_sub(last_old);
    assert!(gap < 1_500, "the caller hears a gap of {gap} ms");
    assert!(first_new > loss_ms, "old audio played on after the loss");

    let turns = h.call.transcript();
    let summary: Vec<(Role, bool)> = turns.iter().map(|t| (t.role, t.interrupted)).collect();
    assert_eq!(summary, vec![(Role::Caller, false), (Role::Agent, true), (Role::Agent, false)]);
    assert!(turns.iter().all(|t| !t.text.is_empty()), "no hole: {turns:?}");
    assert_eq!(h.call.reconnects(), 1);
    assert!(
        matches!(
            h.events.as_slice(),
            [
                _,
                UpstreamEvent::Restored {
                    reason: LossReason::Closed,
                    attempts: 1,
                    outage_ms: 300,
                    restored_items: 3,
                    ..
                }
            ]
        ),
        "{:?}",
        h.events
    );
    assert!(h.log.iter().any(|(_, o)| *o == Output::Event(CallEvent::UpstreamReady)));
    assert_eq!(h.call.upstream_state(), "up");
}

#[test]
fn a_barge_in_on_old_audio_does_not_truncate_in_the_new_session() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    // Sent at 5× real time: seconds of it are buffered here when the socket dies.
    h.start_reply(1, 20_000, 100, ANSWER);
    h.run(1_200);
    h.kill();
    h.run(200);
    h.connect();
    // The model's continuation is requested; the caller interrupts the old audio first.
    h.realtime(ServerEvent::ResponseCreated { response_id: "resp_2".into() });
    let i = h.log_len();
    h.speech_started("item_u2");
    let out = h.since(i);
    assert!(out.contains(&Output::Provider(ProviderOut::Clear)), "{out:?}");
    assert!(!sent(&out).iter().any(|e| matches!(e, ClientEvent::ItemTruncate { .. })), "{out:?}");
    assert!(sent(&out).contains(&&ClientEvent::ResponseCancel { response_id: Some("resp_2".into()) }));
}

#[test]
fn a_caller_mid_turn_is_heard_again_by_the_new_session() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(2_000);
    let speech_at = h.caller_bytes.len();
    h.speech_started("item_u1");
    h.run(800);
    h.kill();
    h.run(200);
    let i = h.log_len();
    h.connect();
    let out = h.since(i);
    let events: Vec<&ClientEvent> = sent(&out).into_iter().filter(not_audio).collect();
    assert!(matches!(events.as_slice(), [ClientEvent::SessionUpdate(_)]), "no answer asked for: {events:?}");
    // The turn from half a second before the speech start it reported (300 ms before the
    // event), to now.
    let from = speech_at - 800 * 8;
    assert_eq!(appends(&out).concat(), h.caller_bytes[from..]);
    assert!(h.call.transcript().is_empty(), "the unfinished turn is transcribed again");
    assert!(
        matches!(h.events.last(), Some(UpstreamEvent::Restored { replayed_ms: 1_800, .. })),
        "{:?}",
        h.events
    );

    // The new session hears the whole turn and answers it.
    h.caller_turn("item_v1", 400, QUESTION);
    let turns = h.call.transcript();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].text, QUESTION);
}

#[test]
fn a_long_turn_is_replayed_whole_though_quiet_audio_is_not_kept() {
    // While the session is up the history keeps a 1.5 s tail, and an open turn from its start.
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(10_000);
    let speech_at = h.caller_bytes.len();
    h.speech_started("item_u1");
    h.run(5_000);
    h.kill();
    let i = h.log_len();
    h.connect();
    let out = h.since(i);
    assert_eq!(appends(&out).concat(), h.caller_bytes[speech_at - 800 * 8..]);
    assert!(
        matches!(h.events.last(), Some(UpstreamEvent::Restored { replayed_ms: 5_800, .. })),
        "{:?}",
        h.events
    );
}

#[test]
fn an_unanswered_finished_turn_is_asked_for_again() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 800, QUESTION);
    // Transcribed, but the socket dies before any reply.
    h.kill();
    h.run(100);
    let i = h.log_len();
    h.connect();
    let events: Vec<ClientEvent> = sent(&h.since(i)).into_iter().filter(not_audio).cloned().collect();
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::SessionUpdate(_), ClientEvent::UserText { .. }, ClientEvent::ResponseCreate]
        ),
        "{events:?}"
    );
}

#[test]
fn outage_longer_than_the_hold_drops_the_oldest_audio_counted() {
    let mut h = H::new(|p| p.reconnect.hold_ms = 200);
    h.start_live(AudioFormat::PCMU_8K);
    h.run(400);
    h.kill();
    h.run(500);
    let i = h.log_len();
    h.connect();
    let out = h.since(i);
    assert_eq!(appends(&out).concat(), h.caller_bytes[h.caller_bytes.len() - 200 * 8..]);
    assert!(
        out.contains(&Output::Event(CallEvent::Dropped { reason: DropReason::PendingOverflow, count: 15 }))
    );
}

#[test]
fn audio_queued_for_a_socket_that_failed_a_write_is_sent_again() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(200);
    let before = h.caller_bytes.len();
    // Three frames queued; the shell's write fails while it drains them.
    for _ in 0..3 {
        let k = h.caller_ts / 20;
        let audio = vec![k as u8; 160];
        h.call.handle_provider(
            h.now,
            ProviderEvent::Media(Media {
                track: Track::Inbound,
                chunk: k + 1,
                timestamp_ms: h.caller_ts,
                payload_b64: Cow::Owned(B64.encode(&audio)),
                audio: &audio,
            }),
        );
        h.caller_ts += 20;
        h.caller_bytes.extend_from_slice(&audio);
    }
    h.call.handle_upstream_closed(h.now);
    let i = h.log_len();
    h.absorb();
    assert!(appends(&h.since(i)).is_empty(), "queued appends are taken back");
    h.connect();
    assert_eq!(appends(&h.since(i)).concat(), h.caller_bytes[before..]);
    assert_eq!(h.appended(), h.caller_bytes);
}

#[test]
fn failed_connects_back_off_then_the_caller_hears_an_apology_and_the_call_hangs_up() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    // Sent at 10× real time: the reply is still playing when the call gives up.
    h.start_reply(1, 8_000, 200, ANSWER);
    h.run(600);
    h.kill();
    let mut waits = Vec::new();
    let (mut gave_up, mut heard_before) = (0, 0);
    for _ in 0..5 {
        h.run(60);
        (gave_up, heard_before) = (h.ms(), h.heard.len());
        h.call.handle_upstream_connect_failed(h.now, ConnectFailure::Transient);
        h.absorb();
        let i = h.log_len();
        while h.call.upstream_state() == "reconnecting" && !h.since(i).contains(&Output::ConnectUpstream) {
            h.tick();
        }
        if h.call.upstream_state() == "reconnecting" {
            waits.push(h.ms() - gave_up);
        }
    }
    // Attempt 1 at once, then 100, 200, 400, 800 ms after each failure.
    assert_eq!(waits, [100, 200, 400, 800]);
    assert_eq!(
        h.count(|o| *o == Output::ConnectUpstream),
        1 + 5,
        "the first session's connect and 5 attempts"
    );
    assert_eq!(h.call.upstream_state(), "apologizing");
    assert!(matches!(h.events.last(), Some(UpstreamEvent::GaveUp { attempts: 5 })));
    let i = h.log_len();
    h.settle();
    let out = h.since(i);
    assert!(appends(&out).is_empty(), "nobody listens any more");
    // The agent's leftover audio was cleared for the apology, which plays in full.
    assert!(h.log.iter().any(|(_, o)| *o == Output::Provider(ProviderOut::Clear)));
    let apology: Vec<u8> = h.heard[heard_before..].iter().flat_map(|(_, f)| f.clone()).collect();
    assert_eq!(&apology[..APOLOGY_ULAW.len()], APOLOGY_ULAW);
    assert!(apology[APOLOGY_ULAW.len()..].iter().all(|&b| b == 0xFF), "padding only");
    // Then hang-up, then the end.
    let tail: Vec<&Output> =
        h.log.iter().map(|(_, o)| o).filter(|o| matches!(o, Output::HangUp | Output::End(_))).collect();
    assert_eq!(tail, vec![&Output::HangUp, &Output::End(EndReason::UpstreamConnectFailed)]);
    let ended = h.log.iter().find(|(_, o)| matches!(o, Output::End(_))).unwrap().0;
    let clip_ms = APOLOGY_ULAW.len() as u64 / 8;
    assert!(
        (clip_ms..clip_ms + 200).contains(&(ended - gave_up)),
        "ended {} ms after giving up",
        ended - gave_up
    );
    let turns = h.call.transcript();
    let last = turns.last().unwrap();
    assert_eq!((last.role, last.text.as_str(), last.interrupted), (Role::Agent, APOLOGY_TEXT, false));
}

#[test]
fn a_shell_that_reports_connect_failures_as_closes_gets_the_same_backoff() {
    let mut h = H::new(|p| p.apology = None);
    h.start_live(AudioFormat::PCMU_8K);
    h.kill();
    for wait in [100, 200, 400, 800] {
        h.kill();
        // A second close while waiting changes nothing.
        h.kill();
        let i = h.log_len();
        h.run(wait - 20);
        assert!(!h.since(i).contains(&Output::ConnectUpstream));
        h.run(20);
        assert!(h.since(i).contains(&Output::ConnectUpstream), "retried {wait} ms after the failure");
    }
    h.kill();
    let tail: Vec<&Output> = h.log.iter().map(|(_, o)| o).rev().take(2).collect();
    assert_eq!(tail, vec![&Output::End(EndReason::UpstreamConnectFailed), &Output::HangUp]);
}

#[test]
fn an_unanswered_attempt_times_out_and_the_next_one_goes_out() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.kill();
    let i = h.log_len();
    h.run(3_000);
    assert!(
        h.events.contains(&UpstreamEvent::AttemptFailed { attempt: 1, timed_out: true }),
        "{:?}",
        h.events
    );
    h.run(100);
    assert_eq!(h.since(i).iter().filter(|o| **o == Output::ConnectUpstream).count(), 1);
    h.connect();
    assert!(matches!(h.events.last(), Some(UpstreamEvent::Restored { attempts: 2, outage_ms: 3_100, .. })));
}

#[test]
fn a_fatal_auth_error_apologizes_and_hangs_up_without_reconnecting() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    h.start_reply(1, 3_000, 20, ANSWER);
    h.run(500);
    // A provider that stopped echoing marks: the apology's time limit ends the call.
    h.echo_marks = false;
    let i = h.log_len();
    h.reply = None;
    h.realtime(api_error("invalid_request_error", Some("invalid_api_key"), None));
    let gave_up = h.ms();
    let out = h.since(i);
    assert!(matches!(out[0], Output::Event(CallEvent::UpstreamError { fatal: true, .. })));
    assert!(out.contains(&Output::Provider(ProviderOut::Clear)));
    assert!(!out.contains(&Output::ConnectUpstream));
    assert_eq!(h.events, vec![UpstreamEvent::GaveUp { attempts: 0 }]);
    h.run(6_000);
    assert_eq!(h.count(|o| *o == Output::ConnectUpstream), 1, "only the first session's");
    let ended = h.log.iter().find(|(_, o)| matches!(o, Output::End(_))).unwrap();
    assert_eq!(ended.1, Output::End(EndReason::UpstreamError { code: "invalid_api_key".into() }));
    // The clip's length plus the 1.5 s grace for its last mark (to the next 20 ms tick).
    let limit = APOLOGY_ULAW.len() as u64 / 8 + 1_500;
    assert!((limit..limit + 20).contains(&(ended.0 - gave_up)), "{} ms", ended.0 - gave_up);
    let pos = |want: &Output| h.log.iter().position(|(_, o)| o == want).unwrap();
    let between = &h.log[pos(&Output::HangUp) + 1..pos(&ended.1)];
    assert!(between.iter().all(|(_, o)| matches!(o, Output::Event(_))), "hang-up, then the end: {between:?}");
}

#[test]
fn a_rejected_session_update_is_not_retried() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(api_error("invalid_request_error", Some("invalid_value"), Some("session.audio.output.voice")));
    assert_eq!(h.call.upstream_state(), "apologizing");
    h.settle();
    assert!(
        h.log
            .iter()
            .any(|(_, o)| *o == Output::End(EndReason::UpstreamError { code: "invalid_value".into() }))
    );
    // An error about one item is recoverable.
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.realtime(api_error("invalid_request_error", Some("invalid_value"), Some("item.content")));
    assert_eq!(h.call.upstream_state(), "up");
}

#[test]
fn an_expired_session_is_replaced() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    h.realtime(api_error("invalid_request_error", Some("session_expired"), None));
    assert_eq!(h.events, vec![UpstreamEvent::Reconnecting { reason: LossReason::SessionExpired }]);
    assert_eq!(h.log.last().unwrap().1, Output::ConnectUpstream);
    // The server closes the expired socket after the error: the attempt in flight goes on.
    h.call.handle_upstream_closed(h.now);
    h.run(100);
    assert_eq!(h.count(|o| *o == Output::ConnectUpstream), 2, "no new attempt");
    h.connect();
    assert!(!h.events.iter().any(|e| matches!(e, UpstreamEvent::AttemptFailed { .. })), "{:?}", h.events);
    assert_eq!(h.call.upstream_state(), "up");
    assert!(matches!(
        h.events.last(),
        Some(UpstreamEvent::Restored { reason: LossReason::SessionExpired, .. })
    ));
}

#[test]
fn a_running_tool_is_answered_in_the_new_session() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    h.realtime(ServerEvent::ResponseCreated { response_id: "resp_1".into() });
    h.realtime(ServerEvent::FunctionCallArgumentsDone {
        response_id: "resp_1".into(),
        item_id: "item_f1".into(),
        call_id: "call_1".into(),
        name: "lookup_order".into(),
        arguments: r#"{"order":"A1"}"#.into(),
    });
    assert!(h.log.iter().any(|(_, o)| matches!(o, Output::Tool(t) if t.call_id == "call_1")));
    h.kill();
    h.run(100);
    // The result comes while no session is there: it waits.
    let i = h.log_len();
    h.call.handle_tool_result(h.now, "call_1", ToolResult::Ok(r#"{"eta":"Friday"}"#.into()));
    h.absorb();
    assert!(sent(&h.since(i)).is_empty());
    h.run(100);
    let i = h.log_len();
    h.connect();
    let events: Vec<ClientEvent> = sent(&h.since(i)).into_iter().filter(not_audio).cloned().collect();
    assert_eq!(
        events[1..],
        [
            ClientEvent::UserText { text: QUESTION.into() },
            ClientEvent::FunctionCall {
                call_id: "call_1".into(),
                name: "lookup_order".into(),
                arguments: r#"{"order":"A1"}"#.into()
            },
            ClientEvent::FunctionCallOutput {
                call_id: "call_1".into(),
                output: r#"{"eta":"Friday"}"#.into()
            },
            ClientEvent::ResponseCreate,
        ]
    );
}

#[test]
fn sessions_are_recycled_before_the_cap_at_quiet_moments() {
    let mut h = H::new(|p| p.session_cap = Some(Duration::from_secs(20)));
    h.start_live(AudioFormat::PCMU_8K);
    // The shell's connects take 150 ms.
    h.auto_connect = Some(Duration::from_millis(150));
    // Conversation for 60 s: the caller asks (2 s), the model answers in real time (3 s),
    // then 1.5 s of quiet.
    let mut n = 0u8;
    let first = h.log_len();
    while h.ms() < 60_000 {
        n += 1;
        h.caller_turn(&format!("item_u{n}"), 2_000, &format!("Question {n}?"));
        h.run(100);
        h.start_reply(n, 3_000, 20, &format!("Answer {n}."));
        h.settle();
        h.run(1_500);
    }
    let recycles: Vec<u64> =
        h.log[first..].iter().filter(|(_, o)| *o == Output::ConnectUpstream).map(|(at, _)| *at).collect();
    assert!(recycles.len() >= 2, "recycled at {recycles:?}");
    let restored: Vec<&UpstreamEvent> = h
        .events
        .iter()
        .filter(|e| matches!(e, UpstreamEvent::Restored { reason: LossReason::SessionCap, .. }))
        .collect();
    assert_eq!(restored.len(), recycles.len());
    assert!(restored.iter().all(|e| matches!(e, UpstreamEvent::Restored { outage_ms: 0, .. })));
    assert_eq!(h.call.reconnects() as usize, recycles.len());
    // Each recycle happened at a quiet moment: no agent audio playing, none owed.
    for at in &recycles {
        for n in 1..=n {
            let frames = h.heard_from(n);
            let (first, last) = (frames.first().unwrap().0, frames.last().unwrap().0 + 20);
            assert!(
                !(first..last + 600).contains(at),
                "recycle at {at} ms during reply {n} ({first}..{last})"
            );
        }
    }
    // Each restore carried the whole conversation so far.
    let sessions: Vec<usize> = h
        .log
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| matches!(o, Output::Realtime(ClientEvent::SessionUpdate(_))))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(sessions.len(), 1 + recycles.len());
    let last_restore: Vec<ClientEvent> =
        sent(&h.since(*sessions.last().unwrap())).into_iter().filter(not_audio).cloned().collect();
    assert!(matches!(last_restore[1], ClientEvent::UserText { ref text } if text == "Question 1?"));
    assert!(!last_restore.contains(&ClientEvent::ResponseCreate), "nothing was owed: {last_restore:?}");
    // No audible loss: every caller byte reached exactly one session, every agent byte played.
    assert_eq!(h.appended(), h.caller_bytes);
    assert_eq!(h.count(|o| *o == Output::Provider(ProviderOut::Clear)), 0);
    let agent_ms: u64 = (1..=n).map(|n| h.heard_from(n).len() as u64 * 20).sum();
    assert_eq!(agent_ms, h.model_audio_ms);
    let turns = h.call.transcript();
    assert_eq!(turns.len(), 2 * n as usize);
    assert!(turns.iter().all(|t| !t.text.is_empty() && !t.interrupted));
}

#[test]
fn a_call_that_is_never_quiet_is_recycled_by_force_before_the_cap() {
    let mut h = H::new(|p| p.session_cap = Some(Duration::from_secs(20)));
    h.start_live(AudioFormat::PCMU_8K);
    h.caller_turn("item_u1", 600, QUESTION);
    // One very long answer, streamed in real time.
    h.start_reply(1, 40_000, 20, ANSWER);
    let i = h.log_len();
    while !h.since(i).contains(&Output::ConnectUpstream) {
        h.tick();
    }
    // Quiet window from 10 s, forced at a quarter of the (10 s) window before the 20 s cap.
    assert_eq!(h.ms(), 17_500);
    h.run(200);
    let i = h.log_len();
    h.connect();
    let events: Vec<ClientEvent> = sent(&h.since(i)).into_iter().filter(not_audio).cloned().collect();
    assert!(matches!(events.last(), Some(ClientEvent::ResponseCreate)), "the cut answer goes on: {events:?}");
    assert!(events.iter().any(|e| matches!(e, ClientEvent::SystemText { .. })));
}

#[test]
fn a_failed_recycle_keeps_the_old_session_and_tries_again() {
    let mut h = H::new(|p| p.session_cap = Some(Duration::from_secs(20)));
    h.start_live(AudioFormat::PCMU_8K);
    let i = h.log_len();
    while !h.since(i).contains(&Output::ConnectUpstream) {
        h.tick();
    }
    assert_eq!(h.ms(), 10_000, "quiet from the start of the window");
    h.run(100);
    h.call.handle_upstream_connect_failed(h.now, ConnectFailure::Transient);
    h.absorb();
    assert_eq!(h.call.upstream_state(), "up", "the old session still serves");
    let before = h.caller_bytes.len();
    h.run(100);
    assert_eq!(h.appended().len(), before + 5 * 160, "caller audio still flows to the old session");
    assert_eq!(h.count(|o| *o == Output::ConnectUpstream), 3, "first session, recycle, retry");
    h.connect();
    assert!(matches!(
        h.events.last(),
        Some(UpstreamEvent::Restored { reason: LossReason::SessionCap, attempts: 2, .. })
    ));
    assert_eq!(h.call.reconnects(), 1);
}

#[test]
fn no_cap_no_recycle() {
    let mut h = H::new(|p| p.session_cap = None);
    h.start_live(AudioFormat::PCMU_8K);
    assert_eq!(h.call.poll_timeout(), None);
    h.run(2_000);
    assert_eq!(h.count(|o| *o == Output::ConnectUpstream), 1);
}

#[test]
fn transcoded_calls_reconnect_and_apologize_in_their_own_format() {
    let l16 = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16_000 };
    let mut h = H::new(|_| {});
    h.echo_marks = false;
    h.start_live(l16);
    h.kill();
    let i = h.log_len();
    h.connect();
    assert!(sent(&h.since(i)).iter().any(|e| matches!(e, ClientEvent::SessionUpdate(_))));
    h.realtime(api_error("authentication_error", None, None));
    let frames: Vec<&Vec<u8>> = h.heard.iter().map(|(_, f)| f).collect();
    assert!(!frames.is_empty() && frames.iter().all(|f| f.len() == 640), "20 ms L16 16 kHz frames");
}

#[test]
fn an_upstream_that_drops_every_session_ends_in_the_apology_not_a_loop() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(1_000);
    // Every new session dies right away: the attempts add up instead of starting over.
    let mut waits = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        if h.call.upstream_state() != "up" {
            break;
        }
        let i = h.log_len();
        h.kill();
        let lost = h.ms();
        while h.call.upstream_state() == "reconnecting" && !h.since(i).contains(&Output::ConnectUpstream) {
            h.tick();
        }
        if h.call.upstream_state() == "reconnecting" {
            waits.push(h.ms() - lost);
            h.run(100);
            h.connect();
        }
        last = Some(h.ms());
    }
    assert_eq!(waits, [0, 100, 200, 400, 800]);
    assert_eq!(h.call.upstream_state(), "apologizing", "gave up at {last:?}");
    assert!(matches!(h.events.last(), Some(UpstreamEvent::GaveUp { attempts: 5 })));
    // A session that stays up long enough starts the count afresh.
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    for _ in 0..8 {
        h.kill();
        assert_eq!(h.log.last().unwrap().1, Output::ConnectUpstream, "attempt 1 at once");
        h.run(100);
        h.connect();
        h.run(10_000);
    }
    assert_eq!(h.call.upstream_state(), "up");
}

#[test]
fn a_reply_cut_before_its_question_was_transcribed_starts_afresh() {
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(1_000);
    let speech_at = h.caller_bytes.len();
    h.speech_started("item_u1");
    h.run(1_000);
    h.realtime(ServerEvent::SpeechStopped { item_id: "item_u1".into(), audio_end_ms: 0 });
    h.run(100);
    // The reply starts before the transcription has come; then the socket dies.
    h.start_reply(1, 3_000, 20, ANSWER);
    h.run(200);
    h.kill();
    h.run(100);
    let i = h.log_len();
    h.connect();
    let out = h.since(i);
    let events: Vec<&ClientEvent> = sent(&out).into_iter().filter(not_audio).collect();
    assert!(
        matches!(events.as_slice(), [ClientEvent::SessionUpdate(_)]),
        "the new session answers the turn itself: {events:?}"
    );
    assert_eq!(appends(&out).concat(), h.caller_bytes[speech_at - 800 * 8..]);
    // The caller heard the start of a reply: it stays in the transcript, cut; the question will be
    // transcribed again by the new session.
    let turns = h.call.transcript();
    assert_eq!(turns.iter().map(|t| (t.role, t.interrupted)).collect::<Vec<_>>(), vec![(Role::Agent, true)]);
    h.caller_turn("item_v1", 200, QUESTION);
    let turns = h.call.transcript();
    let asked: Vec<&str> = turns.iter().filter(|t| t.role == Role::Caller).map(|t| t.text.as_str()).collect();
    assert_eq!(asked, [QUESTION]);
}

#[test]
fn a_turn_replayed_twice_is_still_whole() {
    // The new session's speech_started counts from the replayed audio, not from when it
    // arrived: a turn cut twice is replayed from its real start both times.
    let mut h = H::new(|_| {});
    h.start_live(AudioFormat::PCMU_8K);
    h.run(1_000);
    let speech_at = h.caller_bytes.len();
    h.speech_started("item_u1");
    h.run(3_000);
    h.kill();
    h.run(100);
    h.connect();
    // The new session hears the replay at once: the speech begins 500 ms into it (the lead).
    h.realtime(ServerEvent::SpeechStarted { item_id: "item_u2".into(), audio_start_ms: 500 });
    h.run(200);
    h.kill();
    h.run(100);
    let i = h.log_len();
    h.connect();
    assert_eq!(appends(&h.since(i)).concat(), h.caller_bytes[speech_at - 800 * 8..]);
}
