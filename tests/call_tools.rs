//! Scenario tests of tools and DTMF in the call state machine, on a virtual clock: the model
//! calls functions, the "shell" answers (or not), the caller talks over it or presses keys.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callbridge::config::default_call_params;
use callbridge::core::audio::AudioFormat;
use callbridge::core::call::{
    BuiltinCall, Call, CallEvent, CallParams, CancelReason, DropReason, EndReason, Output, ProviderOut,
    RejectReason, ToolRequest, ToolResult, builtin_tools,
};
use callbridge::core::realtime::{ApiError, ClientEvent, FunctionTool, ResponseStatus, ServerEvent};
use callbridge::core::telephony::{ProviderEvent, StreamStart, Track};
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const FILLER: Duration = Duration::from_millis(1_500);

struct Harness {
    call: Call,
    t0: Instant,
    now: Instant,
}

impl Harness {
    /// A live μ-law call whose session declares the built-ins and a custom `lookup_order`.
    fn live() -> Self {
        Self::live_with(|_| {})
    }

    fn live_with(tune: impl FnOnce(&mut CallParams)) -> Self {
        let mut params = default_call_params();
        let mut tools = builtin_tools();
        tools.push(FunctionTool {
            name: "lookup_order".into(),
            description: "Look up an order.".into(),
            parameters: json!({"type":"object","properties":{"order":{"type":"string"}}}),
        });
        params.session.tools = tools.into();
        tune(&mut params);
        let now = Instant::now();
        let mut h = Self { call: Call::new(now, params), t0: now, now };
        let start = StreamStart {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            call_sid: "CA00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            tracks: vec![Track::Inbound],
            custom_parameters: BTreeMap::new(),
            media_format: AudioFormat::PCMU_8K,
            sequence_number: Some(1),
        };
        h.provider(ProviderEvent::Start(Box::new(start)));
        h.call.handle_upstream_connected(h.now);
        h.drain();
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
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

    fn created(&mut self, id: &str) -> Vec<Output> {
        self.realtime(ServerEvent::ResponseCreated { response_id: id.into() })
    }

    fn done(&mut self, id: &str) -> Vec<Output> {
        self.realtime(ServerEvent::ResponseDone {
            response_id: id.into(),
            status: ResponseStatus::Completed,
            reason: None,
            usage: None,
        })
    }

    fn function_call(
        &mut self,
        response_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
    ) -> Vec<Output> {
        self.realtime(ServerEvent::FunctionCallArgumentsDone {
            response_id: response_id.into(),
            item_id: Cow::Owned(format!("item_{call_id}")),
            call_id: call_id.into(),
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    fn result(&mut self, call_id: &str, result: ToolResult) -> Vec<Output> {
        self.call.handle_tool_result(self.now, call_id, result);
        self.drain()
    }

    fn speech_started(&mut self, item: &str) -> Vec<Output> {
        self.realtime(ServerEvent::SpeechStarted { item_id: item.into(), audio_start_ms: 0 })
    }

    fn speech_stopped(&mut self, item: &str) -> Vec<Output> {
        self.realtime(ServerEvent::SpeechStopped { item_id: item.into(), audio_end_ms: 0 })
    }

    /// `ms` of agent audio for `item` of `response`, then its `output_audio.done`.
    fn say(&mut self, response: &str, item: &str, ms: usize) -> Vec<Output> {
        let audio: Vec<u8> = (0..ms * 8).map(|i| (i % 200) as u8).collect();
        let mut out = self.realtime(ServerEvent::AudioDelta {
            response_id: response.into(),
            item_id: item.into(),
            content_index: 0,
            delta_b64: Cow::Owned(B64.encode(&audio)),
            audio: &audio,
        });
        out.extend(
            self.realtime(ServerEvent::AudioDone { response_id: response.into(), item_id: item.into() }),
        );
        out
    }

    fn dtmf(&mut self, digit: char) -> Vec<Output> {
        self.provider(ProviderEvent::Dtmf { digit, duration_ms: None })
    }

    /// Echoes every mark in `outs`, 20 ms of virtual time per frame before it, and keeps echoing
    /// marks that pacing sends as a result. Returns everything produced.
    fn play_all(&mut self, outs: Vec<Output>) -> Vec<Output> {
        let mut all = Vec::new();
        let mut todo = outs;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for o in &todo {
                match o {
                    Output::Provider(ProviderOut::Media { .. }) => self.advance(20),
                    Output::Provider(ProviderOut::Mark { name }) => {
                        next.extend(self.provider(ProviderEvent::Mark { name: name.as_str().into() }))
                    }
                    _ => {}
                }
            }
            all.extend(todo);
            todo = next;
        }
        all
    }

    /// Runs every timer due up to `until` the way the shell does (sleep to `poll_timeout`, then
    /// `handle_timeout`), checking that each deadline is acted on (no busy loop), and returns
    /// what came out.
    fn run_until(&mut self, until: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(deadline) = self.call.poll_timeout().filter(|d| *d <= until) {
            self.now = self.now.max(deadline);
            self.call.handle_timeout(self.now);
            out.extend(self.drain());
            if let Some(again) = self.call.poll_timeout() {
                assert!(again > deadline, "deadline {deadline:?} not acted on: the shell would spin");
            }
        }
        self.now = self.now.max(until);
        out
    }
}

fn tools(outs: &[Output]) -> Vec<&ToolRequest> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Tool(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Client events other than audio appends, in order.
fn sent(outs: &[Output]) -> Vec<&ClientEvent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Realtime(ClientEvent::InputAudioAppend { .. }) => None,
            Output::Realtime(e) => Some(e),
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

fn output(call_id: &str, output: serde_json::Value) -> ClientEvent {
    ClientEvent::FunctionCallOutput { call_id: call_id.into(), output: output.to_string() }
}

fn count_response_creates(outs: &[Output]) -> usize {
    sent(outs).iter().filter(|e| matches!(e, ClientEvent::ResponseCreate)).count()
}

fn is_filler(e: &&ClientEvent) -> bool {
    matches!(e, ClientEvent::ResponseCreateOutOfBand { .. })
}

#[test]
fn session_declares_the_tools() {
    let mut params = default_call_params();
    params.session.tools = builtin_tools().into();
    let mut call = Call::new(Instant::now(), params);
    let now = Instant::now();
    let start = StreamStart {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
        tracks: vec![Track::Inbound],
        custom_parameters: BTreeMap::new(),
        media_format: AudioFormat::PCMU_8K,
        sequence_number: None,
    };
    call.handle_provider(now, ProviderEvent::Start(Box::new(start)));
    call.handle_upstream_connected(now);
    let update = std::iter::from_fn(|| call.poll_output()).find_map(|o| match o {
        Output::Realtime(ClientEvent::SessionUpdate(s)) => Some(s),
        _ => None,
    });
    let names: Vec<String> = update.unwrap().tools.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, ["end_call", "transfer_call", "send_dtmf", "update_lead", "consult"]);
}

#[test]
fn a_function_call_runs_as_a_tool_and_its_result_goes_back_then_response_create() {
    let mut h = Harness::live();
    h.created("resp_1");
    let out = h.function_call("resp_1", "call_1", "lookup_order", r#"{"order":"A1"}"#);
    assert_eq!(
        tools(&out),
        vec![&ToolRequest {
            call_id: "call_1".into(),
            name: "lookup_order".into(),
            arguments: r#"{"order":"A1"}"#.into(),
            response_id: "resp_1".into(),
            builtin: None,
        }]
    );
    assert!(
        events(&out)
            .contains(&&CallEvent::ToolCalled { call_id: "call_1".into(), name: "lookup_order".into() })
    );
    assert!(sent(&out).is_empty(), "nothing goes to the model while the tool runs: {out:?}");
    assert!(h.done("resp_1").iter().all(|o| !matches!(o, Output::Realtime(_))));

    h.advance(300);
    let out = h.result("call_1", ToolResult::Ok(r#"{"status":"shipped"}"#.into()));
    assert_eq!(
        sent(&out),
        vec![&output("call_1", json!({"status":"shipped"})), &ClientEvent::ResponseCreate]
    );
    assert!(events(&out).contains(&&CallEvent::ToolFinished {
        call_id: "call_1".into(),
        name: "lookup_order".into(),
        ok: true,
        ms: 300,
    }));
    // A second result for the same call is stale.
    let out = h.result("call_1", ToolResult::Ok("{}".into()));
    assert!(sent(&out).is_empty());
    assert_eq!(events(&out), vec![&CallEvent::Dropped { reason: DropReason::StaleToolResult, count: 1 }]);
}

#[test]
fn response_create_waits_while_a_response_is_active() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    // A fast tool answers before the calling response is done: the output goes now, the
    // response.create only after response.done.
    let out = h.result("call_1", ToolResult::Ok("{}".into()));
    assert_eq!(sent(&out), vec![&output("call_1", json!({}))]);
    let out = h.done("resp_1");
    assert_eq!(sent(&out), vec![&ClientEvent::ResponseCreate]);
    // Until the server starts that response, nothing else may ask for one.
    h.dtmf('5');
    let out = h.dtmf('#');
    assert_eq!(sent(&out), vec![&ClientEvent::UserText { text: "[caller pressed keys: 5 #]".into() }]);
    h.created("resp_2");
    assert_eq!(count_response_creates(&h.done("resp_2")), 1, "the keys' turn follows");
}

#[test]
fn refused_response_create_is_sent_again_after_the_active_response() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    assert_eq!(count_response_creates(&h.result("call_1", ToolResult::Ok("{}".into()))), 1);
    // The server had just started a turn of its own: ours is refused.
    h.created("resp_vad");
    let out = h.realtime(ServerEvent::Error(ApiError {
        kind: "invalid_request_error".into(),
        code: Some("conversation_already_has_active_response".into()),
        message: "Conversation already has an active response".into(),
        param: None,
        event_id: None,
    }));
    assert_eq!(count_response_creates(&out), 0);
    assert_eq!(count_response_creates(&h.done("resp_vad")), 1);
}

#[test]
fn parallel_calls_get_one_response_create_after_the_last_result() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_a", "lookup_order", r#"{"order":"A"}"#);
    h.function_call("resp_1", "call_b", "lookup_order", r#"{"order":"B"}"#);
    h.done("resp_1");
    let out = h.result("call_a", ToolResult::Ok("1".into()));
    assert_eq!(sent(&out), vec![&output("call_a", json!(1))], "call_b still runs");
    let out = h.result("call_b", ToolResult::Err("not found".into()));
    assert_eq!(
        sent(&out),
        vec![&output("call_b", json!({"error":"not found"})), &ClientEvent::ResponseCreate]
    );
}

#[test]
fn unknown_tools_and_bad_arguments_are_answered_without_running() {
    let mut h = Harness::live();
    h.created("resp_1");
    let out = h.function_call("resp_1", "call_1", "launch_rockets", "{}");
    assert!(tools(&out).is_empty());
    assert_eq!(sent(&out), vec![&output("call_1", json!({"error":"unknown tool: launch_rockets"}))]);
    assert!(events(&out).contains(&&CallEvent::ToolRejected {
        call_id: "call_1".into(),
        name: "launch_rockets".into(),
        reason: RejectReason::UnknownTool,
    }));

    let out = h.function_call("resp_1", "call_2", "lookup_order", r#"{"order": "#);
    assert!(tools(&out).is_empty());
    let ClientEvent::FunctionCallOutput { output, .. } = sent(&out)[0] else { panic!("{out:?}") };
    assert!(output.contains("not valid JSON"), "{output}");

    let out = h.function_call("resp_1", "call_3", "send_dtmf", r#"{"digits":"12x"}"#);
    assert!(tools(&out).is_empty());
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, CallEvent::ToolRejected { reason: RejectReason::BadArguments, .. }))
    );

    // The model repeats a call id: ignored.
    let out = h.function_call("resp_1", "call_1", "lookup_order", "{}");
    assert!(tools(&out).is_empty() && sent(&out).is_empty());
    assert_eq!(events(&out), vec![&CallEvent::Dropped { reason: DropReason::DuplicateToolCall, count: 1 }]);

    // One response.create for all of it, once the response is done.
    assert_eq!(sent(&h.done("resp_1")), vec![&ClientEvent::ResponseCreate]);
}

#[test]
fn builtin_calls_carry_checked_arguments() {
    let mut h = Harness::live();
    h.created("resp_1");
    let out =
        h.function_call("resp_1", "call_1", "transfer_call", r#"{"target":"+15551230000","reason":"sales"}"#);
    assert_eq!(
        tools(&out)[0].builtin,
        Some(BuiltinCall::TransferCall { target: "+15551230000".into(), reason: Some("sales".into()) })
    );
    let out = h.function_call("resp_1", "call_2", "consult", r#"{"question":"Is 2027 a leap year?"}"#);
    assert_eq!(
        tools(&out)[0].builtin,
        Some(BuiltinCall::Consult { question: "Is 2027 a leap year?".into() })
    );
    // A model that sends no arguments at all gets `{}`.
    let out = h.function_call("resp_1", "call_3", "end_call", "");
    assert_eq!(tools(&out)[0].arguments, "{}");
    assert_eq!(tools(&out)[0].builtin, Some(BuiltinCall::EndCall { reason: None }));
}

#[test]
fn a_slow_tool_gets_one_filler_at_the_delay_then_its_result() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    assert_eq!(h.call.poll_timeout(), Some(h.at(1_500)));
    assert!(h.run_until(h.at(1_499)).is_empty());
    let out = h.run_until(h.at(1_500));
    let fillers: Vec<_> = sent(&out).into_iter().filter(is_filler).collect();
    assert_eq!(fillers.len(), 1, "{out:?}");
    assert!(events(&out).contains(&&CallEvent::FillerSpoken { call_id: "call_1".into() }));
    let ClientEvent::ResponseCreateOutOfBand { instructions } = fillers[0] else { unreachable!() };
    assert_eq!(instructions, &default_call_params().filler_instructions);

    // The filler plays; the caller hears silence again afterwards, but gets no second filler.
    h.created("resp_f");
    let out = h.say("resp_f", "item_f", 800);
    let mut out = out;
    out.extend(h.done("resp_f"));
    h.play_all(out);
    let out = h.run_until(h.at(15_000));
    assert!(!sent(&out).iter().any(is_filler), "one filler per wait: {out:?}");

    let out = h.result("call_1", ToolResult::Ok(r#"{"status":"shipped"}"#.into()));
    assert_eq!(
        sent(&out),
        vec![&output("call_1", json!({"status":"shipped"})), &ClientEvent::ResponseCreate]
    );
}

#[test]
fn the_filler_waits_for_the_models_own_words_to_play_out() {
    let mut h = Harness::live();
    h.created("resp_1");
    // "Let me check that for you" (1 s), then the call.
    let out = h.say("resp_1", "item_a1", 1_000);
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    let mut out = out;
    out.extend(h.done("resp_1"));
    assert_eq!(h.call.poll_timeout(), Some(h.at(20_000)), "only the tool timeout while audio plays");
    h.play_all(out);
    let played_out = h.now;
    assert_eq!(played_out, h.at(1_000));
    assert_eq!(h.call.poll_timeout(), Some(played_out + FILLER));
    // A result before the filler is due: no filler at all.
    h.advance(1_000);
    let out = h.result("call_1", ToolResult::Ok("{}".into()));
    assert_eq!(count_response_creates(&out), 1);
    assert!(!h.run_until(h.at(30_000)).iter().any(|o| matches!(o, Output::Realtime(_))));
}

#[test]
fn no_filler_when_disabled() {
    let mut h = Harness::live_with(|p| p.filler_delay = None);
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    assert_eq!(h.call.poll_timeout(), Some(h.at(20_000)));
}

#[test]
fn barge_in_cancels_the_tool_of_the_interrupted_response_and_drops_its_late_result() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.say("resp_1", "item_a1", 2_000);
    h.function_call("resp_1", "call_1", "consult", r#"{"question":"What is the refund policy?"}"#);
    h.advance(200);
    let out = h.speech_started("item_u2");
    assert!(out.contains(&Output::CancelTool { call_id: "call_1".into() }), "{out:?}");
    assert!(events(&out).contains(&&CallEvent::ToolCancelled {
        call_id: "call_1".into(),
        name: "consult".into(),
        reason: CancelReason::BargeIn,
        ms: 200,
    }));
    let told = output("call_1", json!({"error":"cancelled: the caller interrupted"}));
    assert!(sent(&out).contains(&&told));
    assert_eq!(count_response_creates(&out), 0, "the caller's own turn brings the next response");
    // Cancel, truncate and clear still go out as before.
    assert!(out.contains(&Output::Provider(ProviderOut::Clear)));

    let late = h.result("call_1", ToolResult::Ok("{}".into()));
    assert!(sent(&late).is_empty());
    assert_eq!(events(&late), vec![&CallEvent::Dropped { reason: DropReason::StaleToolResult, count: 1 }]);
    // Its function call event arriving after the cancel is not run either.
    let out = h.function_call("resp_1", "call_9", "lookup_order", "{}");
    assert!(tools(&out).is_empty());
    assert!(events(&out).contains(&&CallEvent::Dropped { reason: DropReason::CancelledToolCall, count: 1 }));
}

#[test]
fn speaking_while_waiting_does_not_cancel_the_tool() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    // "Hello?" while nothing plays: the caller is waiting for the lookup.
    let out = h.speech_started("item_u2");
    assert!(!out.iter().any(|o| matches!(o, Output::CancelTool { .. })), "{out:?}");
    // The result arrives while they talk: the output goes in, but no response over them; the
    // server answers their turn itself and that response sees the output.
    let out = h.result("call_1", ToolResult::Ok(r#"{"status":"shipped"}"#.into()));
    assert_eq!(sent(&out), vec![&output("call_1", json!({"status":"shipped"}))]);
    assert_eq!(count_response_creates(&h.speech_stopped("item_u2")), 0);
    h.created("resp_2");
    assert_eq!(count_response_creates(&h.done("resp_2")), 0, "no second response");
}

#[test]
fn without_server_responses_the_result_is_answered_after_the_caller_stops() {
    let mut h = Harness::live_with(|p| {
        if let callbridge::core::realtime::TurnDetection::ServerVad { create_response, .. } =
            &mut p.session.turn_detection
        {
            *create_response = false;
        }
    });
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    h.speech_started("item_u2");
    assert_eq!(count_response_creates(&h.result("call_1", ToolResult::Ok("{}".into()))), 0);
    assert_eq!(count_response_creates(&h.speech_stopped("item_u2")), 1);
}

#[test]
fn end_call_hangs_up_only_after_the_goodbye_played() {
    let mut h = Harness::live();
    h.created("resp_1");
    let goodbye = h.say("resp_1", "item_bye", 600);
    let out = h.function_call("resp_1", "call_1", "end_call", r#"{"reason":"done"}"#);
    assert_eq!(tools(&out)[0].builtin, Some(BuiltinCall::EndCall { reason: Some("done".into()) }));
    // The shell answers at once; the goodbye has not played yet.
    let out = h.result("call_1", ToolResult::HangUp);
    assert!(!out.contains(&Output::HangUp));
    let mut goodbye = goodbye;
    goodbye.extend(h.done("resp_1"));
    // Only the first mark comes back: 100 ms of 600 played.
    let first = goodbye
        .iter()
        .find_map(|o| match o {
            Output::Provider(ProviderOut::Mark { name }) => Some(name.clone()),
            _ => None,
        })
        .unwrap();
    h.advance(100);
    let out = h.provider(ProviderEvent::Mark { name: first.as_str().into() });
    assert!(!out.contains(&Output::HangUp));
    assert!(!h.run_until(h.at(500)).contains(&Output::HangUp));
    // The rest plays: hang up right after the last mark, then the call ends.
    let all = h.play_all(
        goodbye
            .into_iter()
            .filter(|o| !matches!(o, Output::Provider(ProviderOut::Mark { name }) if *name == first))
            .collect(),
    );
    let at = all.iter().position(|o| *o == Output::HangUp).expect("hang-up after the last mark");
    assert!(!all[at..].iter().any(|o| matches!(o, Output::Provider(ProviderOut::Media { .. }))));
    assert!(
        events(&all)
            .iter()
            .any(|e| matches!(e, CallEvent::ToolFinished { name, ok: true, .. } if name == "end_call"))
    );
    assert_eq!(all.last(), Some(&Output::End(EndReason::AgentHangup)));
    assert_eq!(h.call.phase_name(), "ended");
}

#[test]
fn end_call_hangs_up_at_the_cap_when_marks_never_come_back() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.say("resp_1", "item_bye", 600);
    h.function_call("resp_1", "call_1", "end_call", "{}");
    h.done("resp_1");
    h.advance(50);
    h.result("call_1", ToolResult::HangUp);
    assert!(!h.run_until(h.at(10_049)).contains(&Output::HangUp));
    let out = h.run_until(h.at(10_050));
    assert_eq!(out.iter().filter(|o| **o == Output::HangUp).count(), 1);
    assert_eq!(out.last(), Some(&Output::End(EndReason::AgentHangup)));
}

#[test]
fn barge_in_during_the_goodbye_keeps_the_call() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.say("resp_1", "item_bye", 600);
    h.function_call("resp_1", "call_1", "end_call", "{}");
    h.result("call_1", ToolResult::HangUp);
    h.done("resp_1");
    // "Wait, one more thing!"
    let out = h.speech_started("item_u2");
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, CallEvent::ToolCancelled { reason: CancelReason::BargeIn, .. }))
    );
    assert!(sent(&out).contains(&&output("call_1", json!({"error":"cancelled: the caller interrupted"}))));
    let out = h.run_until(h.at(60_000));
    assert!(!out.contains(&Output::HangUp));
    assert_eq!(h.call.phase_name(), "live");
}

#[test]
fn transfer_after_playout_then_the_stream_ends_as_transferred() {
    let mut h = Harness::live();
    h.created("resp_1");
    let out = h.say("resp_1", "item_a1", 300);
    h.function_call("resp_1", "call_1", "transfer_call", r#"{"target":"sip:desk@example.com"}"#);
    h.result("call_1", ToolResult::Transfer { target: "sip:desk@example.com".into() });
    let mut out = out;
    out.extend(h.done("resp_1"));
    assert!(!out.iter().any(|o| matches!(o, Output::Transfer { .. })));
    let all = h.play_all(out);
    let transfer = Output::Transfer { call_id: "call_1".into(), target: "sip:desk@example.com".into() };
    assert_eq!(all.iter().filter(|o| **o == transfer).count(), 1);
    assert_eq!(count_response_creates(&all), 0, "the call is leaving: the model is not asked to talk");
    // The provider ends the stream after the redirect.
    let out = h.provider(ProviderEvent::Stop);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, CallEvent::ToolFinished { ok: true, name, .. } if name == "transfer_call"))
    );
    assert_eq!(out.last(), Some(&Output::End(EndReason::Transferred)));
}

#[test]
fn a_failed_transfer_is_reported_to_the_model() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "transfer_call", r#"{"target":"+15551230000"}"#);
    h.done("resp_1");
    let out = h.result("call_1", ToolResult::Transfer { target: "+15551230000".into() });
    assert!(out.contains(&Output::Transfer { call_id: "call_1".into(), target: "+15551230000".into() }));
    let out = h.result("call_1", ToolResult::Err("the line is busy".into()));
    assert_eq!(
        sent(&out),
        vec![&output("call_1", json!({"error":"the line is busy"})), &ClientEvent::ResponseCreate]
    );
    assert!(events(&out).iter().any(|e| matches!(e, CallEvent::ToolFinished { ok: false, .. })));
    assert_eq!(h.provider(ProviderEvent::Stop).last(), Some(&Output::End(EndReason::ProviderStop)));
}

#[test]
fn an_invalid_transfer_target_from_the_shell_goes_back_as_an_error() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    let out = h.result("call_1", ToolResult::Transfer { target: "not a number".into() });
    assert!(!out.iter().any(|o| matches!(o, Output::Transfer { .. })));
    assert_eq!(count_response_creates(&out), 1);
}

#[test]
fn send_dtmf_presses_keys_after_playout_and_tells_the_model() {
    let mut h = Harness::live();
    h.created("resp_1");
    let out = h.say("resp_1", "item_a1", 200);
    h.function_call("resp_1", "call_1", "send_dtmf", r#"{"digits":"1w2#"}"#);
    let early = h.result("call_1", ToolResult::SendDtmf { digits: "1w2#".into() });
    assert!(!early.iter().any(|o| matches!(o, Output::SendDtmf { .. })));
    let mut out = out;
    out.extend(h.done("resp_1"));
    let all = h.play_all(out);
    let at = all.iter().position(|o| *o == Output::SendDtmf { digits: "1w2#".into() }).unwrap();
    let after = &all[at..];
    assert!(events(after).contains(&&CallEvent::DtmfSent { digits: "1w2#".into() }));
    assert_eq!(sent(after), vec![&output("call_1", json!({"sent":"1w2#"})), &ClientEvent::ResponseCreate]);
}

#[test]
fn caller_keys_are_batched_by_the_gap() {
    let mut h = Harness::live();
    let out = h.dtmf('1');
    assert_eq!(events(&out), vec![&CallEvent::Dtmf { digit: '1' }]);
    assert!(sent(&out).is_empty());
    h.advance(500);
    h.dtmf('2');
    h.advance(500);
    h.dtmf('3');
    assert_eq!(h.call.poll_timeout(), Some(h.at(2_500)));
    assert!(sent(&h.run_until(h.at(2_499))).is_empty());
    let out = h.run_until(h.at(2_500));
    assert_eq!(
        sent(&out),
        vec![
            &ClientEvent::UserText { text: "[caller pressed keys: 1 2 3]".into() },
            &ClientEvent::ResponseCreate
        ]
    );
    assert!(h.call.poll_timeout().is_none_or(|t| t > h.at(2_500)));
}

#[test]
fn hash_sends_the_keys_at_once_and_waits_for_an_active_response() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.dtmf('4');
    h.advance(200);
    let out = h.dtmf('#');
    assert_eq!(sent(&out), vec![&ClientEvent::UserText { text: "[caller pressed keys: 4 #]".into() }]);
    assert_eq!(sent(&h.done("resp_1")), vec![&ClientEvent::ResponseCreate]);
}

#[test]
fn keys_pressed_while_connecting_are_sent_once_live() {
    let mut params = default_call_params();
    params.dtmf_gap = Duration::from_millis(300);
    let t0 = Instant::now();
    let mut call = Call::new(t0, params);
    let start = StreamStart {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
        tracks: vec![Track::Inbound],
        custom_parameters: BTreeMap::new(),
        media_format: AudioFormat::PCMU_8K,
        sequence_number: None,
    };
    call.handle_provider(t0, ProviderEvent::Start(Box::new(start)));
    call.handle_provider(t0, ProviderEvent::Dtmf { digit: '7', duration_ms: Some(100) });
    let later = t0 + Duration::from_millis(1_000);
    call.handle_upstream_connected(later);
    let out: Vec<Output> = std::iter::from_fn(|| call.poll_output()).collect();
    assert!(sent(&out).contains(&&ClientEvent::UserText { text: "[caller pressed keys: 7]".into() }));
}

#[test]
fn a_tool_that_never_answers_times_out() {
    let mut h = Harness::live_with(|p| p.filler_delay = None);
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "consult", r#"{"question":"?"}"#);
    h.done("resp_1");
    let out = h.run_until(h.at(20_000));
    assert!(out.contains(&Output::CancelTool { call_id: "call_1".into() }));
    assert!(
        events(&out).iter().any(|e| matches!(
            e,
            CallEvent::ToolCancelled { reason: CancelReason::TimedOut, ms: 20_000, .. }
        ))
    );
    assert_eq!(
        sent(&out),
        vec![&output("call_1", json!({"error":"timed out"})), &ClientEvent::ResponseCreate]
    );
    let late = h.result("call_1", ToolResult::Ok("{}".into()));
    assert_eq!(events(&late), vec![&CallEvent::Dropped { reason: DropReason::StaleToolResult, count: 1 }]);
}

#[test]
fn the_end_of_the_call_cancels_running_tools() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "update_lead", r#"{"notes":"wants a callback"}"#);
    h.done("resp_1");
    h.dtmf('1');
    let out = h.provider(ProviderEvent::Stop);
    let cancel = out.iter().position(|o| *o == Output::CancelTool { call_id: "call_1".into() }).unwrap();
    let end = out.iter().position(|o| matches!(o, Output::End(_))).unwrap();
    assert!(cancel < end);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, CallEvent::ToolCancelled { reason: CancelReason::CallEnded, .. }))
    );
    assert!(sent(&out).is_empty(), "nothing more to the model: {out:?}");
    assert!(h.result("call_1", ToolResult::Ok("{}".into())).is_empty(), "nothing after End");
}

#[test]
fn every_called_tool_finishes_or_is_cancelled_exactly_once() {
    let mut h = Harness::live();
    let mut all = Vec::new();
    all.extend(h.created("resp_1"));
    for (id, name) in [("c1", "lookup_order"), ("c2", "end_call"), ("c3", "send_dtmf"), ("c4", "consult")] {
        let args = match name {
            "send_dtmf" => r#"{"digits":"1"}"#,
            "consult" => r#"{"question":"why?"}"#,
            _ => "{}",
        };
        all.extend(h.function_call("resp_1", id, name, args));
    }
    all.extend(h.result("c1", ToolResult::Ok("{}".into())));
    all.extend(h.result("c3", ToolResult::SendDtmf { digits: "1".into() }));
    all.extend(h.done("resp_1"));
    all.extend(h.result("c2", ToolResult::HangUp));
    all.extend(h.run_until(h.at(60_000)));
    let called: Vec<&str> = events(&all)
        .iter()
        .filter_map(|e| match e {
            CallEvent::ToolCalled { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(called, ["c1", "c2", "c3", "c4"]);
    for id in called {
        let outcomes = events(&all)
            .iter()
            .filter(|e| match e {
                CallEvent::ToolFinished { call_id, .. } | CallEvent::ToolCancelled { call_id, .. } => {
                    call_id == id
                }
                _ => false,
            })
            .count();
        assert_eq!(outcomes, 1, "{id}: {all:#?}");
    }
    assert_eq!(all.last(), Some(&Output::End(EndReason::AgentHangup)));
}

#[test]
fn barge_in_on_the_filler_keeps_the_tool_and_does_not_truncate_the_aside() {
    let mut h = Harness::live();
    h.created("resp_1");
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.done("resp_1");
    h.run_until(h.at(1_500));
    h.created("resp_f");
    h.say("resp_f", "item_f", 1_000);
    h.advance(100);
    // The caller talks over "one moment please": the filler is cut, the lookup goes on.
    let out = h.speech_started("item_u2");
    assert!(out.contains(&Output::Provider(ProviderOut::Clear)));
    assert!(
        out.contains(&Output::Realtime(ClientEvent::ResponseCancel { response_id: Some("resp_f".into()) }))
    );
    assert!(!sent(&out).iter().any(|e| matches!(e, ClientEvent::ItemTruncate { .. })), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::CancelTool { .. })), "{out:?}");
    let out = h.result("call_1", ToolResult::Ok("{}".into()));
    assert_eq!(sent(&out), vec![&output("call_1", json!({}))]);
}

#[test]
fn huge_configured_durations_mean_never_not_a_panic() {
    let mut h = Harness::live_with(|p| {
        p.tool_timeout = Duration::MAX;
        p.filler_delay = Some(Duration::MAX);
        p.action_playout_cap = Duration::MAX;
        p.dtmf_gap = Duration::MAX;
        p.session_cap = Some(Duration::MAX);
        p.recycle_quiet = Duration::MAX;
        p.reconnect.attempt_timeout = Duration::MAX;
    });
    h.created("resp_1");
    h.say("resp_1", "item_a1", 100);
    h.function_call("resp_1", "call_1", "lookup_order", "{}");
    h.function_call("resp_1", "call_2", "end_call", "{}");
    h.result("call_2", ToolResult::HangUp);
    h.done("resp_1");
    h.dtmf('1');
    let far = h.call.poll_timeout().unwrap();
    assert!(far > h.at(365 * 24 * 3600 * 1000), "{far:?}");
}
