//! Upstream resilience through the real server on loopback: the Realtime socket dies in the
//! middle of the agent's reply and the call goes on; a short session cap recycles the session
//! several times during one call without audible loss.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::config::{self, UpstreamConfig};
use callbridge::core::call::{CallParams, Role};
use callbridge::driver::{CallNote, Shared};
use callbridge::server::{self, ServerHandle};
use callbridge::sim::caller::{self, CallerConfig, CallerEventKind, CallerReport, Step};
use callbridge::sim::fixtures;
use callbridge::sim::realtime::{self as sim_rt, SimConfig, SimEventKind, SimFault, SimHandle};
use callbridge::store::record::next_record;
use tokio::sync::mpsc;

async fn rig(
    fault: Option<SimFault>,
    tune: impl FnOnce(&mut CallParams),
) -> (ServerHandle, SimHandle, mpsc::Receiver<CallNote>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut simcfg = SimConfig::from_fixtures().unwrap();
    simcfg.speed = 1.5;
    simcfg.vad.silence_ms = 800;
    simcfg.fault = fault;
    let sim = sim_rt::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let mut params = config::default_call_params();
    tune(&mut params);
    let (tx, rx) = mpsc::channel(16);
    let shared = Arc::new(Shared::new(
        UpstreamConfig::simulator(sim.url()),
        params,
        config::DEFAULT_MAX_MESSAGE_BYTES,
        8,
        Some(tx),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server =
        server::start(listener, shared, callbridge::metrics::install().unwrap(), Duration::from_secs(2))
            .unwrap();
    (server, sim, rx)
}

/// Longest run of silence inside what the caller heard, between the first and the last agent
/// audio (ms, 20 ms resolution).
fn longest_gap_ms(r: &CallerReport) -> u64 {
    let frame = (r.sample_rate_hz / 50) as usize;
    let loud: Vec<bool> = r
        .heard_track
        .chunks(frame)
        .map(|f| f.iter().map(|s| i64::from(*s).abs()).max().unwrap_or(0) > 300)
        .collect();
    let (Some(first), Some(last)) = (loud.iter().position(|l| *l), loud.iter().rposition(|l| *l)) else {
        return u64::MAX;
    };
    let mut longest = 0;
    let mut run = 0;
    for l in &loud[first..=last] {
        run = if *l { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    longest as u64 * 20
}

async fn reconnects(server: &ServerHandle, reason: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr)).await.unwrap().text().await.unwrap();
    let key = format!("callbridge_upstream_reconnects_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_survives_the_model_socket_dying_mid_reply() {
    let (server, sim, mut records) = rig(Some(SimFault::CloseFirstConnectionAfterDeltas(25)), |_| {}).await;
    let before = reconnects(&server, "closed").await;
    let cfg = CallerConfig::twilio(
        format!("ws://{}/media/twilio", server.addr),
        vec![
            Step::Speak(fixtures::clip("caller_question").unwrap()),
            Step::WaitAgentDone { quiet: Duration::from_millis(1500), timeout: Duration::from_secs(40) },
            Step::HangUp,
        ],
    );
    let report = caller::run_call(cfg).await.unwrap();
    let record = next_record(&mut records).await.unwrap();

    assert_eq!(report.close.as_ref().map(|c| c.0), Some(1000), "the call ended normally: {:?}", report.close);
    assert_eq!(record.end_reason, "provider_stop");
    assert!(sim.connections() >= 2, "the bridge reconnected: {} connections", sim.connections());
    let gap = longest_gap_ms(&report);
    assert!(gap < 1500, "longest gap in the agent's speech: {gap} ms");
    assert!(reconnects(&server, "closed").await >= before + 1.0, "the reconnect was counted");
    // No hole: the caller's question and a complete agent answer are both in the transcript.
    assert!(
        record.transcript.iter().any(|t| t.role == Role::Caller && !t.text.is_empty()),
        "{:?}",
        record.transcript
    );
    assert!(
        record.transcript.iter().any(|t| t.role == Role::Agent && !t.interrupted && !t.text.is_empty()),
        "{:?}",
        record.transcript
    );
    assert!(record.timeline.iter().any(|e| e.kind == "restored"), "timeline shows the restore");
    eprintln!("mid-reply kill: longest gap {gap} ms, {} upstream connections", sim.connections());
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_session_cap_recycles_a_60_second_call_without_loss() {
    let (server, sim, mut records) = rig(None, |p| {
        p.session_cap = Some(Duration::from_secs(20));
        p.recycle_window = Duration::from_secs(8);
    })
    .await;
    let before = reconnects(&server, "session_cap").await;
    let turn = |clip: &str| {
        [
            Step::Speak(fixtures::clip(clip).unwrap()),
            Step::WaitAgentDone { quiet: Duration::from_millis(1000), timeout: Duration::from_secs(40) },
        ]
    };
    let mut script: Vec<Step> = Vec::new();
    script.extend(turn("caller_question"));
    script.extend(turn("caller_followup"));
    script.extend(turn("caller_question"));
    script.extend(turn("caller_followup"));
    script.push(Step::Pause(Duration::from_secs(3)));
    script.push(Step::HangUp);
    let started = Instant::now();
    let cfg = CallerConfig::twilio(format!("ws://{}/media/twilio", server.addr), script);
    let report = caller::run_call(cfg).await.unwrap();
    let call_s = started.elapsed().as_secs_f64();
    let record = next_record(&mut records).await.unwrap();

    assert!(call_s >= 45.0, "a long call: {call_s:.1} s");
    let recycles = reconnects(&server, "session_cap").await - before;
    assert!(recycles >= 2.0, "{recycles} recycles in a {call_s:.0} s call");
    assert_eq!(report.clears, 0, "no agent audio was cut");
    let agent_turns = record.transcript.iter().filter(|t| t.role == Role::Agent).count();
    assert!(agent_turns >= 4, "every caller turn was answered: {:?}", record.transcript);
    assert!(record.transcript.iter().filter(|t| t.role == Role::Agent).all(|t| !t.interrupted));
    // Every answer was heard: nothing lost in a switch.
    let replies = sim
        .log()
        .iter()
        .filter(|e| matches!(e.kind, SimEventKind::ResponseStarted { out_of_band: false, .. }))
        .count();
    assert!(replies >= 4);
    assert!(report.log.iter().filter(|e| matches!(e.kind, CallerEventKind::FirstAgentAudio)).count() == 1);
    eprintln!(
        "session cap 20 s: {call_s:.0} s call, {recycles} recycles, {} connections, {agent_turns} agent turns, {} ms agent audio heard",
        sim.connections(),
        report.audio_ms_received
    );
    server.shutdown(Duration::from_secs(2)).await;
}
