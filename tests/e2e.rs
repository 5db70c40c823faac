//! End to end over loopback: the real server on port 0, the Realtime simulator, and simulated
//! callers, covering a normal turn and a barge-in in passthrough and transcode mode, malformed
//! provider input, admission limits, timeouts and the HTTP surface.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{self, UpstreamConfig};
use callbridge::core::call::Role;
use callbridge::demo::{self, DemoOptions, DemoProvider};
use callbridge::driver::{CallNote, Shared};
use callbridge::server::{self, ServerHandle};
use callbridge::sim::caller::{self, CallerConfig, Step};
use callbridge::sim::fixtures;
use callbridge::sim::realtime::{self as sim_rt, SimConfig, SimHandle};
use callbridge::store::record::next_record;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn capture_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/client-events");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&path);
    path
}

async fn demo_call(provider: DemoProvider, force_transcode: bool, capture: &str) -> demo::DemoReport {
    let opts =
        DemoOptions { provider, force_transcode, capture: Some(capture_path(capture)), ..Default::default() };
    demo::run(opts).await.expect("demo call")
}

fn check_demo(report: &demo::DemoReport) {
    assert_eq!(report.problems(), Vec::<String>::new(), "timeline:\n{}", report.timeline.join("\n"));
    let t = &report.record.transcript;
    // Normal turn: the question, then a full reply. Barge-in: the follow-up's reply is cut.
    assert_eq!(t[0].role, Role::Caller);
    assert!(t[0].text.contains("order"), "{t:?}");
    assert!(t[1].role == Role::Agent && !t[1].interrupted, "{t:?}");
    assert!(t.iter().any(|x| x.role == Role::Agent && x.interrupted));
    // The truncate never claims more than the caller heard of the 14 s reply.
    assert_eq!(report.truncated_at_ms.len(), 1, "{:?}", report.truncated_at_ms);
    assert!(report.truncated_at_ms[0] > 0 && report.truncated_at_ms[0] < 14_000);
    assert!(report.caller.heard_track.iter().any(|s| s.unsigned_abs() > 1000), "caller heard speech");
    assert_eq!(report.caller.close.as_ref().map(|c| c.0), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_call_with_barge_in() {
    let report = demo_call(DemoProvider::Twilio, false, "e2e-passthrough").await;
    check_demo(&report);
    assert!(report.timeline.iter().any(|l| l.contains("passthrough")));
    // The call shows in /metrics (the recorder is per process, so other tests may add to it).
    let text = callbridge::metrics::install().unwrap().render();
    for line in [
        "callbridge_barge_ins_total",
        "callbridge_barge_in_reaction_seconds_count",
        "callbridge_first_audio_latency_seconds_count",
        "callbridge_calls_total{reason=\"provider_stop\"}",
        "callbridge_frames_in_total{provider=\"twilio\"}",
        "callbridge_frames_out_total{provider=\"twilio\"}",
    ] {
        assert!(metric(&text, line) >= 1.0, "{line} missing in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_call_with_barge_in() {
    let report = demo_call(DemoProvider::SignalWireL16, false, "e2e-transcode").await;
    check_demo(&report);
    assert!(report.timeline.iter().any(|l| l.contains("transcode")));
}

// ---------------------------------------------------------------------------------------------

struct Rig {
    server: ServerHandle,
    sim: SimHandle,
    records: mpsc::Receiver<CallNote>,
}

async fn rig(tune: impl FnOnce(&mut callbridge::core::call::CallParams), max_calls: usize) -> Rig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut simcfg = SimConfig::from_fixtures().unwrap();
    simcfg.speed = 50.0;
    simcfg.vad.silence_ms = 800;
    let sim = sim_rt::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let upstream = UpstreamConfig::simulator(sim.url());
    let mut params = config::default_call_params();
    tune(&mut params);
    let (tx, records) = mpsc::channel(16);
    let shared =
        Arc::new(Shared::new(upstream, params, config::DEFAULT_MAX_MESSAGE_BYTES, max_calls, Some(tx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prometheus = callbridge::metrics::install().unwrap();
    let server = server::start(listener, shared, prometheus, Duration::from_secs(2)).unwrap();
    Rig { server, sim, records }
}

fn short_script() -> Vec<Step> {
    vec![
        Step::Speak(fixtures::clip("caller_question").unwrap()),
        Step::WaitAgentDone { quiet: Duration::from_millis(500), timeout: Duration::from_secs(30) },
        Step::HangUp,
    ]
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_provider_messages_never_hurt_other_calls() {
    let mut rig = rig(|_| {}, 8).await;
    let addr = rig.server.addr;
    let good = tokio::spawn(caller::run_call(CallerConfig::twilio(
        format!("ws://{addr}/media/twilio"),
        short_script(),
    )));

    let (mut bad, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/media/twilio")).await.unwrap();
    let media = r#"{"event":"media","sequenceNumber":"2","streamSid":"MZ1","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"//////////8="}}"#;
    let junk = [
        "{not json",
        r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"%%%notbase64"}}"#,
        r#"{"event":"hologram","streamSid":"MZ1"}"#,
        media, // before start
    ];
    for j in junk {
        bad.send(Message::text(j)).await.unwrap();
    }
    bad.send(Message::binary(vec![0u8; 160])).await.unwrap();
    let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1","accountSid":"AC1","callSid":"CA1","tracks":["inbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
    bad.send(Message::text(start)).await.unwrap();
    bad.send(Message::text(media)).await.unwrap();
    // A 1 MiB message is refused while reading and the stream closed with 1009.
    let huge = format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(1 << 20));
    let _ = bad.send(Message::text(huge)).await;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = bad.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the bad stream is closed");
    assert_eq!(close.map(|c| c.0), Some(1009));

    let report = good.await.unwrap().expect("the good call completes");
    assert_eq!(report.close.as_ref().map(|c| c.0), Some(1000));
    assert!(report.audio_ms_received > 1000, "the good call heard its answer");

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(5), next_record(&mut rig.records))
            .await
            .unwrap()
            .unwrap();
        reasons.push(r.end_reason);
    }
    reasons.sort();
    assert_eq!(reasons, vec!["provider_error", "provider_stop"]);

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for kind in ["json", "base64", "unknown_event", "media_before_start", "binary_frame", "oversize"] {
        let line = format!("callbridge_provider_errors_total{{provider=\"twilio\",kind=\"{kind}\"}}");
        assert!(metric(&text, &line) >= 1.0, "{line} missing in\n{text}");
    }
    rig.server.shutdown(Duration::from_secs(1)).await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_cost_no_upstream_session() {
    let mut rig = rig(|p| p.start_timeout = Duration::from_millis(300), 8).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/media/twilio", rig.server.addr)).await.unwrap();
    let frame = loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1008));
    let r = next_record(&mut rig.records).await.unwrap();
    assert_eq!(r.end_reason, "start_timeout");
    assert_eq!(rig.sim.connections(), 0, "no Realtime session was opened");
    rig.server.shutdown(Duration::from_secs(1)).await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_calls_refuses_the_excess_and_health_reports() {
    let rig = rig(|_| {}, 1).await;
    let addr = rig.server.addr;
    let (_first, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/media/twilio")).await.unwrap();
    let second = tokio_tungstenite::connect_async(format!("ws://{addr}/media/twilio")).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["activeCalls"], 1);
    assert!(v["uptime"].is_u64());
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    match tokio_tungstenite::connect_async(format!("ws://{addr}/media/nosuchprovider")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    rig.server.shutdown(Duration::from_millis(200)).await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rig = rig(|_| {}, 4).await;
    let mut s = tokio::net::TcpStream::connect(rig.server.addr).await.unwrap();
    s.write_all(b"GET /media/twilio HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Headers never finish: the server cuts the connection after its request timeout (2 s here).
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the stalled connection was closed by the server");
    rig.server.shutdown(Duration::from_millis(200)).await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_ends_the_call_with_a_reason() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Nothing listens on this port: the connect fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/v1/realtime", dead.local_addr().unwrap());
    drop(dead);
    let upstream =
        UpstreamConfig { connect_timeout: Duration::from_secs(2), ..UpstreamConfig::simulator(url) };
    let (tx, mut records) = mpsc::channel(4);
    let shared = Arc::new(Shared::new(upstream, config::default_call_params(), 65536, 4, Some(tx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server =
        server::start(listener, shared, callbridge::metrics::install().unwrap(), Duration::from_secs(2))
            .unwrap();
    let report =
        caller::run_call(CallerConfig::twilio(format!("ws://{}/media/twilio", server.addr), short_script()))
            .await;
    // The caller's script cannot finish; what matters is how the bridge ended the stream.
    let close = match report {
        Ok(r) => r.close,
        Err(_) => None,
    };
    let r = next_record(&mut records).await.unwrap();
    assert_eq!(r.end_reason, "upstream_connect_failed");
    if let Some((code, _)) = close {
        assert_eq!(code, 1011);
    }
    server.shutdown(Duration::from_millis(200)).await;
}
