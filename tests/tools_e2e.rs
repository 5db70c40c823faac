//! The model's tools end to end on loopback: the simulated model calls a tool, the bridge runs
//! it off the audio loop and answers; provider actions go to a fake provider REST API that
//! checks the wire format; caller key presses reach the model's conversation.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::clients::telephony_rest::TelephonyRest;
use callbridge::clients::tools::{Consultant, CustomTool};
use callbridge::config::{self, UpstreamConfig};
use callbridge::driver::{Shared, ToolRuntime};
use callbridge::server::{self, ServerHandle};
use callbridge::sim::caller::{self, CallerConfig, CallerEventKind, CallerReport, Step};
use callbridge::sim::chat::{CONSULT_ANSWER, ChatSim};
use callbridge::sim::fixtures;
use callbridge::sim::realtime::{
    self as sim_rt, AfterTool, ScriptedToolCall, SimConfig, SimEventKind, SimHandle,
};
use callbridge::sim::telephony_api::{self as fake_api, FakeTelephonyApi};

struct Rig {
    server: ServerHandle,
    sim: SimHandle,
    api: FakeTelephonyApi,
    _chat: ChatSim,
}

async fn rig(script: Vec<ScriptedToolCall>, custom: Vec<CustomTool>, filler: Option<Duration>) -> Rig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut simcfg = SimConfig::from_fixtures().unwrap();
    simcfg.speed = 4.0;
    simcfg.vad.silence_ms = 800;
    simcfg.tool_script = script;
    let sim = sim_rt::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let api = FakeTelephonyApi::start().await.unwrap();
    let chat = ChatSim::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let tools = ToolRuntime {
        http: reqwest::Client::new(),
        custom,
        consultant: Some(
            Consultant::openai(&chat.base_url(), "sk-test-fake", "gpt-sim", Duration::from_secs(5)).unwrap(),
        ),
        transfer_targets: vec!["+15550100099".into()],
        twilio: Some(
            TelephonyRest::twilio(fake_api::ACCOUNT_SID, fake_api::AUTH_TOKEN, &api.base_url()).unwrap(),
        ),
        signalwire: None,
    };
    let mut params = config::default_call_params();
    params.session.tools = tools.declared().into();
    params.filler_delay = filler;
    let shared = Arc::new(
        Shared::new(UpstreamConfig::simulator(sim.url()), params, config::DEFAULT_MAX_MESSAGE_BYTES, 8, None)
            .with_tools(Arc::new(tools)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server =
        server::start(listener, shared, callbridge::metrics::install().unwrap(), Duration::from_secs(2))
            .unwrap();
    Rig { server, sim, api, _chat: chat }
}

fn call(rig: &Rig, script: Vec<Step>) -> CallerConfig {
    let c = CallerConfig::twilio(format!("ws://{}/media/twilio", rig.server.addr), script);
    rig.api.add_call(&c.call_sid);
    c
}

fn question() -> Step {
    Step::Speak(fixtures::clip("caller_question").unwrap())
}

fn tool(on_turn: usize, name: &str, arguments: &str, say_before: Option<&str>) -> ScriptedToolCall {
    ScriptedToolCall {
        on_turn,
        name: name.into(),
        arguments: arguments.into(),
        say_before: say_before.map(|c| fixtures::clip(c).unwrap()),
        then: AfterTool::Reply,
    }
}

fn heard_ms(r: &CallerReport) -> u64 {
    r.audio_ms_received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_after_the_goodbye_has_played() {
    let rig =
        rig(vec![tool(0, "end_call", r#"{"reason":"done"}"#, Some("agent_goodbye"))], vec![], None).await;
    let goodbye_ms = fixtures::clip("agent_goodbye").unwrap().ulaw.len() as u64 / 8;
    let c = call(&rig, vec![question(), Step::WaitClose { timeout: Duration::from_secs(30) }]);
    let sid = c.call_sid.clone();
    let report = caller::run_call(c).await.unwrap();

    // The whole goodbye reached the caller before the line was closed.
    assert!(heard_ms(&report) + 100 >= goodbye_ms, "heard {} of {goodbye_ms} ms", heard_ms(&report));
    assert_eq!(report.close.as_ref().map(|c| c.0), Some(1000), "{:?}", report.close);
    let closed_at = report.log.iter().find(|e| matches!(e.kind, CallerEventKind::Closed { .. })).unwrap().at;
    let last_mark =
        report.log.iter().rfind(|e| matches!(e.kind, CallerEventKind::MarkEchoed { .. })).unwrap().at;
    assert!(last_mark <= closed_at, "the last mark came back before the hang-up");
    // And the provider was told to hang up, with the documented request.
    assert!(rig.api.wait_for_requests(1, Duration::from_secs(5)).await);
    let hangup =
        rig.api.requests().into_iter().find(|r| r.path.ends_with(&format!("/Calls/{sid}.json"))).unwrap();
    assert_eq!(hangup.method, "POST");
    assert_eq!(hangup.value("Status"), Some("completed"));
    assert!(hangup.auth_ok);
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_call_redirects_to_dial_and_refuses_unlisted_numbers() {
    let rig = rig(
        vec![
            tool(0, "transfer_call", r#"{"target":"+15550100098"}"#, None),
            tool(
                1,
                "transfer_call",
                r#"{"target":"+15550100099","reason":"billing"}"#,
                Some("agent_goodbye"),
            ),
        ],
        vec![],
        None,
    )
    .await;
    let c = call(&rig, vec![question(), Step::Pause(Duration::from_secs(12)), Step::HangUp]);
    let sid = c.call_sid.clone();
    caller::run_call(c).await.unwrap();

    // The unlisted number was refused to the model, the listed one redirected.
    let outputs = rig.sim.tool_outputs();
    assert!(outputs.iter().any(|(_, o)| o.contains("not allowed")), "{outputs:?}");
    let reqs = rig.api.requests();
    let redirects: Vec<_> = reqs.iter().filter(|r| r.path.ends_with(&format!("/Calls/{sid}.json"))).collect();
    assert_eq!(redirects.len(), 1, "{reqs:?}");
    let twiml = redirects[0].value("Twiml").unwrap();
    let doc = roxmltree::Document::parse(twiml).unwrap();
    let number = doc.descendants().find(|n| n.has_tag_name("Number")).unwrap();
    assert_eq!(number.text(), Some("+15550100099"));
    assert!(number.ancestors().any(|n| n.has_tag_name("Dial")));
    rig.server.shutdown(Duration::from_secs(2)).await;
}

/// A custom tool that answers after `delay`.
async fn slow_tool(delay: Duration) -> (CustomTool, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/order",
        axum::routing::post(move |body: String| async move {
            tokio::time::sleep(delay).await;
            axum::Json(serde_json::json!({"status": "shipped", "asked": body.len()}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/order", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let tool = CustomTool {
        name: "check_order".into(),
        description: "Look up an order's shipping status.".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"order": {"type": "string"}}}),
        url,
        timeout_ms: 10_000,
    };
    (tool, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_custom_tool_gets_a_filler_and_barge_in_still_works() {
    let (slow, _server) = slow_tool(Duration::from_secs(5)).await;
    let filler = Duration::from_millis(1500);
    let rig =
        rig(vec![tool(0, "check_order", r#"{"order":"A-1001"}"#, None)], vec![slow], Some(filler)).await;
    let c = call(
        &rig,
        vec![
            question(),
            Step::Pause(Duration::from_millis(2500)),
            question(),
            Step::WaitAgentDone { quiet: Duration::from_millis(500), timeout: Duration::from_secs(30) },
            Step::HangUp,
        ],
    );
    let report = caller::run_call(c).await.unwrap();

    let log = rig.sim.log();
    let called = log.iter().find(|e| matches!(e.kind, SimEventKind::ToolCallSent(_))).unwrap().at;
    let filler_at = log
        .iter()
        .find(|e| matches!(e.kind, SimEventKind::ResponseStarted { out_of_band: true, .. }))
        .expect("a filler was spoken")
        .at;
    let waited = filler_at.duration_since(called);
    assert!(waited >= filler - Duration::from_millis(100), "filler after {waited:?}");
    assert!(waited <= filler + Duration::from_millis(1000), "filler after {waited:?}");
    // The caller spoke over the agent while the tool ran: the bridge cleared the audio.
    assert!(report.clears >= 1, "barge-in cleared playback: {} clears", report.clears);
    // The tool finished and its answer reached the model.
    let outputs = rig.sim.tool_outputs();
    assert!(outputs.iter().any(|(_, o)| o.contains("shipped")), "{outputs:?}");
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consult_asks_the_stronger_model_and_keys_reach_the_conversation() {
    let rig =
        rig(vec![tool(0, "consult", r#"{"question":"What does the warranty cover?"}"#, None)], vec![], None)
            .await;
    let c = call(
        &rig,
        vec![
            question(),
            Step::WaitAgentDone { quiet: Duration::from_millis(500), timeout: Duration::from_secs(30) },
            Step::Dtmf { digits: "123#".into(), gap: Duration::from_millis(150) },
            Step::Pause(Duration::from_millis(800)),
            Step::HangUp,
        ],
    );
    let started = Instant::now();
    caller::run_call(c).await.unwrap();
    let outputs = rig.sim.tool_outputs();
    assert!(outputs.iter().any(|(_, o)| o.contains(CONSULT_ANSWER)), "{outputs:?}");
    let texts = rig.sim.user_texts();
    assert!(texts.iter().any(|t| t.contains("1 2 3 #")), "{texts:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    rig.server.shutdown(Duration::from_secs(2)).await;
}
