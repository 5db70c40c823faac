//! `kill -TERM` during an active call: readiness turns 503, the call finishes, the process exits 0.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use callbridge::sim::caller::{self, CallerConfig, Step};
use callbridge::sim::fixtures;
use callbridge::sim::realtime::{self as sim_rt, SimConfig};

async fn status(addr: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_active_calls_then_exits_zero() {
    let mut simcfg = SimConfig::from_fixtures().unwrap();
    simcfg.vad.silence_ms = 800;
    let sim = sim_rt::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .arg("serve")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("OPENAI_API_KEY", "sim-key-not-a-secret")
        .env("OPENAI_REALTIME_URL", sim.url())
        .env("DRAIN_TIMEOUT", "30s")
        .env("TWILIO_VALIDATE_SIGNATURE", "false")
        .env(
            "CALLBRIDGE_DATA_DIR",
            std::env::temp_dir().join(format!("callbridge-shutdown-{}", std::process::id())),
        )
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The JSON start-up line carries the bound address.
    let stdout = child.stdout.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(addr) = v.get("addr").and_then(|a| a.as_str()) {
                        let _ = addr_tx.send(addr.to_string());
                        sent = true;
                    }
                }
            }
        }
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(20)).expect("server printed its address");
    assert_eq!(status(&addr, "/readyz").await, 200);

    let script = vec![
        Step::Speak(fixtures::clip("caller_question").unwrap()),
        Step::WaitAgentDone { quiet: Duration::from_millis(500), timeout: Duration::from_secs(40) },
        Step::HangUp,
    ];
    let call =
        tokio::spawn(caller::run_call(CallerConfig::twilio(format!("ws://{addr}/media/twilio"), script)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut saw_503 = false;
    for _ in 0..50 {
        if status(&addr, "/readyz").await == 503 {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_503, "readiness turns 503 while draining");
    // New streams are refused while draining.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/media/twilio")).await;
    assert!(refused.is_err());

    let report = call.await.unwrap().expect("the active call finishes normally");
    assert_eq!(report.close.as_ref().map(|c| c.0), Some(1000));
    assert!(report.audio_ms_received > 1000);
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(exit.code(), Some(0));
    sim.shutdown().await;
}
