//! `callbridge demo`: the whole product on one machine. Starts the server, the Realtime
//! simulator (or, with `--live`, uses the real OpenAI endpoint) and a simulated caller that
//! streams recorded speech through a call with one normal turn and one barge-in; then prints the
//! timeline and transcript and writes what the caller said and heard to a WAV file.
//!
//! The end-to-end tests run the same scenario through [`run`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

use crate::config::{self, UpstreamConfig};
use crate::core::audio::{AudioFormat, ByteOrder, Encoding};
use crate::core::call::Role;
use crate::driver::{CallRecord, Shared};
use crate::sim::caller::{self, CallerConfig, CallerEventKind, CallerReport, Step};
use crate::sim::fixtures;
use crate::sim::realtime::{self as sim_rt, SimConfig, SimEventKind, SimLogEntry};
use crate::store::record::next_record;
use crate::{metrics, server};

/// Which provider the simulated caller plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoProvider {
    /// Twilio, μ-law 8 kHz: passthrough to the model's `audio/pcmu`.
    #[default]
    Twilio,
    /// SignalWire with `L16@16000h`: transcoded to and from the model's PCM 24 kHz.
    SignalWireL16,
}

/// How to run the demo call.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Use the real OpenAI Realtime API (`OPENAI_API_KEY`, `OPENAI_REALTIME_URL`,
    /// `OPENAI_REALTIME_MODEL` from the environment) instead of the simulator.
    pub live: bool,
    /// The provider, and so the stream format, the simulated caller uses.
    pub provider: DemoProvider,
    /// Transcode even when passthrough is possible.
    pub force_transcode: bool,
    /// Write the caller's stereo WAV here.
    pub wav: Option<PathBuf>,
    /// Capture every client event the server sent to the simulator (JSONL).
    pub capture: Option<PathBuf>,
}

/// Everything the demo call produced.
pub struct DemoReport {
    /// The server's record of the call.
    pub record: CallRecord,
    /// What the simulated caller sent, heard and saw.
    pub caller: CallerReport,
    /// What the Realtime simulator did and saw; empty with [`DemoOptions::live`].
    pub sim_log: Vec<SimLogEntry>,
    /// Readable timeline lines, in time order.
    pub timeline: Vec<String>,
    /// From the model's `speech_started` to the caller receiving `clear`, per barge-in (ms).
    pub clear_after_speech_ms: Vec<f64>,
    /// `audio_end_ms` of each truncate the model acknowledged.
    pub truncated_at_ms: Vec<u64>,
    /// The server's first-audio latencies (ms).
    pub first_audio_ms: Vec<String>,
    /// The server's address.
    pub server_addr: SocketAddr,
}

/// The simulator configured with the speech fixtures (replies and caller transcripts).
pub fn sim_config(capture: Option<PathBuf>) -> anyhow::Result<SimConfig> {
    let mut cfg = SimConfig::from_fixtures()?;
    // The synthesized clips pause up to about 600 ms between sentences; a turn must not end there.
    cfg.vad.silence_ms = 800;
    cfg.capture_path = capture;
    Ok(cfg)
}

/// The scripted call: a question answered in full, a follow-up interrupted mid-reply, the
/// interruption answered, then hang-up.
pub fn demo_script() -> anyhow::Result<Vec<Step>> {
    let wait_done =
        Step::WaitAgentDone { quiet: Duration::from_millis(800), timeout: Duration::from_secs(45) };
    Ok(vec![
        Step::Pause(Duration::from_millis(400)),
        Step::Speak(fixtures::clip("caller_question")?),
        wait_done.clone(),
        Step::Speak(fixtures::clip("caller_followup")?),
        Step::WaitHeard { min_ms: 2_500, timeout: Duration::from_secs(45) },
        Step::Speak(fixtures::clip("caller_interrupt")?),
        wait_done,
        Step::Pause(Duration::from_millis(300)),
        Step::HangUp,
    ])
}

/// Runs the demo call and returns what happened.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let prometheus = metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (sim, upstream) = if opts.live {
        let cfg =
            config::Config::from_env().context("--live reads the OpenAI settings from the environment")?;
        (None, cfg.upstream)
    } else {
        let sim = sim_rt::start(sim_config(opts.capture.clone())?, loopback).await?;
        let upstream = UpstreamConfig::simulator(sim.url());
        (Some(sim), upstream)
    };
    let mut params = config::default_call_params();
    params.force_transcode = opts.force_transcode;
    let (records_tx, mut records_rx) = mpsc::channel(4);
    let shared =
        Arc::new(Shared::new(upstream, params, config::DEFAULT_MAX_MESSAGE_BYTES, 16, Some(records_tx)));
    let listener = tokio::net::TcpListener::bind(loopback).await?;
    let server = server::start(listener, shared, prometheus, Duration::from_secs(5))?;
    let server_addr = server.addr;

    let script = demo_script()?;
    let mut caller_cfg = match opts.provider {
        DemoProvider::Twilio => CallerConfig::twilio(format!("ws://{server_addr}/media/twilio"), script),
        DemoProvider::SignalWireL16 => {
            let l16 = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16_000 };
            CallerConfig::signalwire(format!("ws://{server_addr}/media/signalwire"), l16, script)
        }
    };
    caller_cfg.custom_parameters = BTreeMap::from([("leadId".to_owned(), "lead-demo-1".to_owned())]);
    let caller_result = caller::run_call(caller_cfg).await;
    let record = tokio::time::timeout(Duration::from_secs(10), next_record(&mut records_rx)).await;
    server.shutdown(Duration::from_secs(5)).await;
    let sim_log = match sim {
        Some(sim) => {
            let log = sim.log();
            sim.shutdown().await;
            log
        }
        None => Vec::new(),
    };
    let caller = caller_result.context("simulated caller")?;
    let record = match record {
        Ok(Some(r)) => r,
        _ => bail!("the server produced no call record"),
    };
    if let Some(path) = &opts.wav {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        caller.write_wav(path)?;
    }
    Ok(build_report(record, caller, sim_log, server_addr))
}

fn build_report(
    record: CallRecord,
    caller: CallerReport,
    sim_log: Vec<SimLogEntry>,
    server_addr: SocketAddr,
) -> DemoReport {
    let t0 = caller.log.first().map_or(record.opened, |e| e.at.min(record.opened));
    let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    let mut lines: Vec<(f64, String)> = Vec::new();
    let clip_text = |name: &str| fixtures::clip(name).map(|c| c.text).unwrap_or_default();
    for e in &caller.log {
        let what = match &e.kind {
            CallerEventKind::Connected => "caller  connected".to_owned(),
            CallerEventKind::StartSent => "caller  → start".to_owned(),
            CallerEventKind::SpeakBegin { clip } => format!("caller  speaks: \"{}\"", clip_text(clip)),
            CallerEventKind::SpeakEnd { .. } => "caller  stops speaking".to_owned(),
            CallerEventKind::FirstAgentAudio => "caller  hears the agent".to_owned(),
            CallerEventKind::AgentAudioAfterSilence => "caller  hears the agent".to_owned(),
            CallerEventKind::ClearReceived { dropped_ms } => {
                format!("caller  ← clear ({dropped_ms} ms of queued agent audio dropped)")
            }
            CallerEventKind::HangUp => "caller  → stop (hang up)".to_owned(),
            CallerEventKind::Closed { code, reason } => format!("caller  socket closed ({code} {reason})"),
            CallerEventKind::MarkEchoed { .. } | CallerEventKind::Warning { .. } => continue,
        };
        lines.push((ms(e.at), what));
    }
    for e in &sim_log {
        let what = match &e.kind {
            SimEventKind::SpeechStarted { audio_start_ms } => {
                format!("model   speech_started (audio_start_ms {audio_start_ms})")
            }
            SimEventKind::SpeechStopped { audio_end_ms } => {
                format!("model   speech_stopped (audio_end_ms {audio_end_ms})")
            }
            SimEventKind::ResponseStarted { clip, .. } => format!("model   response.created ({clip})"),
            SimEventKind::ResponseDone { status, .. } => format!("model   response.done ({status})"),
            SimEventKind::Truncated { audio_end_ms, .. } => {
                format!("model   item truncated at {audio_end_ms} ms")
            }
            SimEventKind::CancelReceived => "model   ← response.cancel".to_owned(),
            SimEventKind::SessionUpdated { input_format, output_format } => {
                format!("model   session.updated (in {input_format}, out {output_format})")
            }
            _ => continue,
        };
        lines.push((ms(e.at), what));
    }
    let mut first_audio_ms = Vec::new();
    for e in &record.timeline {
        let at = ms(record.opened + Duration::from_millis(e.at_ms));
        let what = match e.kind {
            "first_audio" => {
                first_audio_ms.push(e.detail.clone());
                format!("bridge  first agent audio {} after speech stopped", e.detail)
            }
            "barge_in" => format!("bridge  barge-in: {}", e.detail),
            "started" => format!("bridge  stream started: {}", e.detail),
            "ended" => format!("bridge  call ended: {}", e.detail),
            _ => continue,
        };
        lines.push((at, what));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));

    let speech_starts: Vec<Instant> = sim_log
        .iter()
        .filter(|e| matches!(e.kind, SimEventKind::SpeechStarted { .. }))
        .map(|e| e.at)
        .collect();
    let clear_after_speech_ms = caller
        .log
        .iter()
        .filter(|e| matches!(e.kind, CallerEventKind::ClearReceived { .. }))
        .filter_map(|c| {
            let started = speech_starts.iter().filter(|s| **s <= c.at).max()?;
            Some(c.at.duration_since(*started).as_secs_f64() * 1000.0)
        })
        .collect();
    let truncated_at_ms = sim_log
        .iter()
        .filter_map(|e| match e.kind {
            SimEventKind::Truncated { audio_end_ms, .. } => Some(audio_end_ms),
            _ => None,
        })
        .collect();
    let timeline = lines.into_iter().map(|(at, what)| format!("{:>8.0} ms  {what}", at)).collect();
    DemoReport {
        record,
        caller,
        sim_log,
        timeline,
        clear_after_speech_ms,
        truncated_at_ms,
        first_audio_ms,
        server_addr,
    }
}

impl DemoReport {
    /// What must hold for the demo call to count as a success; each failure is described.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.record.end_reason != "provider_stop" {
            p.push(format!("call ended with {} instead of the caller's stop", self.record.end_reason));
        }
        if self.clear_after_speech_ms.is_empty() {
            p.push("no barge-in: the caller never received a clear".to_owned());
        }
        let agent_turns = self.record.transcript.iter().filter(|t| t.role == Role::Agent).count();
        if agent_turns < 3 {
            p.push(format!("expected 3 agent turns, got {agent_turns}"));
        }
        if !self.record.transcript.iter().any(|t| t.role == Role::Agent && t.interrupted) {
            p.push("no agent turn was interrupted".to_owned());
        }
        if self.caller.audio_ms_received == 0 {
            p.push("the caller heard no agent audio".to_owned());
        }
        p
    }
}

/// Runs the demo and prints the timeline, transcript and checks; errors if the call did not go
/// as scripted.
pub async fn run_and_print(opts: DemoOptions) -> anyhow::Result<()> {
    // The timeline is the demo's output; logs only for warnings unless RUST_LOG says otherwise.
    crate::telemetry::init(false, "warn");
    let mode = match (opts.provider, opts.force_transcode) {
        (DemoProvider::Twilio, false) => "Twilio μ-law 8 kHz, passthrough to the model",
        (DemoProvider::Twilio, true) => "Twilio μ-law 8 kHz, transcoded to PCM 24 kHz",
        (DemoProvider::SignalWireL16, _) => "SignalWire L16 16 kHz, transcoded to PCM 24 kHz",
    };
    let upstream = if opts.live { "the OpenAI Realtime API" } else { "the built-in Realtime simulator" };
    println!("callbridge demo: one simulated call ({mode}) against {upstream}\n");
    let wav = opts.wav.clone();
    let report = run(opts).await?;
    println!("Timeline (ms since the caller connected)");
    for line in &report.timeline {
        println!("  {line}");
    }
    println!("\nTranscript");
    for t in &report.record.transcript {
        let who = match t.role {
            Role::Caller => "caller",
            Role::Agent => "agent ",
        };
        let cut = if t.interrupted { "  [interrupted]" } else { "" };
        println!("  [{:>6.2} s] {who}: {}{cut}", t.started_ms as f64 / 1000.0, t.text);
    }
    println!("\nSummary");
    println!(
        "  call ended: {} after {:.1} s",
        report.record.end_reason,
        report.record.duration_ms as f64 / 1000.0
    );
    println!(
        "  frames: {} caller frames in, {} agent frames out; caller heard {} ms of agent audio",
        report.record.frames_in, report.record.frames_out, report.caller.audio_ms_received
    );
    println!("  first agent audio after the caller stopped: {}", report.first_audio_ms.join(", "));
    for ms in &report.clear_after_speech_ms {
        let verdict = if *ms <= 50.0 { "within" } else { "OVER" };
        println!("  barge-in → clear in {ms:.1} ms after speech_started ({verdict} the 50 ms target)");
    }
    for ms in &report.truncated_at_ms {
        println!("  agent reply truncated at {ms} ms (audio the caller had heard)");
    }
    if let Some(w) = &wav {
        println!("  caller audio: {} (left = caller, right = what the caller heard)", w.display());
    }
    let problems = report.problems();
    if problems.is_empty() {
        println!("\nOK");
        Ok(())
    } else {
        bail!("the demo call did not go as scripted: {}", problems.join("; "))
    }
}
