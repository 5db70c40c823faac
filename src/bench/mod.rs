//! `callbridge bench`: a load harness that plays many simulated provider calls against a
//! media-stream endpoint (ours with the Realtime simulator in echo mode, or another bridge) and
//! measures what the bridge adds.
//!
//! Each call connects, sends Twilio (or SignalWire L16) `connected` and `start`, then one
//! `media` frame every 20 ms on an absolute schedule, looping caller speech. What comes back
//! is "played" at 20 ms per tick with `mark` echoes and `clear` handled as the provider does.
//! After the ramp the calls are held for `--duration`, then stop sending, wait a 1 s grace for
//! audio in flight, send `stop` and close.
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | `mod.rs` | CLI options, the runtime (`--threads`), sweeps, output files |
//! | `run` | one run: plan, shards, hold window, server figures at its edges |
//! | `shard` | one task per 16 calls: connects, one 20 ms ticker, a `SelectAll` of read halves |
//! | `wire` | prebuilt shared frames, per-call messages, borrowed decoding of bridge messages |
//! | `latency` | FIFO round-trip matching, loss, HDR summaries |
//! | `probe` | `/proc/PID` and `/metrics` readers, settling between sweep runs |
//! | `report`, `chart` | JSON, the stdout table, the SVG chart |
//!
//! # Measures
//!
//! * **Added round-trip latency**: the echo path is a FIFO of bytes, so the latency of a
//!   received frame is the time the received byte count first reached its last byte, minus the
//!   send time of the sent frame holding that byte (one sample per received frame, counted from
//!   the start of the hold).
//! * **Send lag**: actual − due send time of every frame; a harness that cannot keep up shows
//!   here rather than as bridge latency.
//! * **Loss**: (audio sent − audio received) of completed calls after the grace, in frames.
//! * **Server CPU-ms per call-second** over the hold and **KiB per call** (RSS at the end of
//!   the hold − RSS before the ramp), from `/proc/PID` or `/metrics`.
//!
//! * **Barge-in reaction** (`--barge-in`, against `sim-realtime --echo --echo-vad`): each call
//!   alternates 3 s of caller speech (each segment starting on voiced audio) and 2 s of digital
//!   silence. Echo plays the caller's audio back, so agent audio is always playing when the
//!   caller speaks again: the simulator's VAD sends `speech_started` and the bridge answers with
//!   `clear` (plus truncate and cancel upstream). The reaction is the time from sending the first
//!   speech frame after a silence to receiving that call's `clear`; onsets with no `clear` within
//!   2 s are counted. It includes the VAD's 60 ms of voiced audio before `speech_started` (the
//!   third voiced frame leaves 40 ms after the first), so about 40 ms is the caller's schedule.
//!   Each barge-in drops echoed audio, so with `--barge-in` there is no round-trip latency and
//!   the loss figure includes the dropped audio.
//!
//! Without `--barge-in` a `clear` from the bridge is still honoured (queue dropped, marks
//! echoed) and counted.
//!
//! Only loopback targets are accepted, and every run is bounded: connects time out after 10 s,
//! the hold is at most 10 minutes, and a run that overruns its bounds is abandoned.

mod chart;
mod latency;
mod probe;
mod report;
mod run;
mod shard;
mod wire;

use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

pub use latency::Percentiles;
pub use report::{Environment, HarnessFigures, RunReport, ServerFigures};
pub use wire::BenchProvider;

/// Longest hold a run accepts (the shared frame table grows with it).
const MAX_HOLD: Duration = Duration::from_secs(600);

/// Options of `callbridge bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Media-stream WebSocket URL of the bridge under test (ws:// or wss://, loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/media/twilio")]
    pub url: String,
    /// Provider the calls play: Twilio μ-law 8 kHz, or SignalWire L16 16 kHz (transcoded).
    #[arg(long, value_enum, default_value_t = BenchProvider::Twilio)]
    pub provider: BenchProvider,
    /// Concurrent calls (ignored with --sweep).
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Hold time after the ramp, e.g. `20s`, `500ms`, `2m` (at most 10 minutes).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Calls started per second during the ramp.
    #[arg(long, default_value_t = 200.0)]
    pub ramp: f64,
    /// Worker threads of the harness's own runtime (keep it cheaper than the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Calls driven by one task (one ticker and one reader set per shard).
    #[arg(long, default_value_t = 16, hide_short_help = true)]
    pub shard_size: usize,
    /// Server process to read CPU time and RSS from (`/proc/PID`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Prometheus page of the server (http://, loopback); `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes` are used if there is no --server-pid.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Write the JSON report here (one object; with --sweep, the environment and every run).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// One run per number of calls, in order, e.g. `100,200,500,1000`.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Measure barge-in reaction: calls alternate 3 s of speech and 2 s of silence, and each
    /// speech onset is timed to the bridge's `clear` (includes the simulator VAD's 60 ms of
    /// voiced audio before `speech_started`). Needs the simulator's VAD in echo mode
    /// (`sim-realtime --echo --echo-vad`; scripts/bench.sh passes it along). No round-trip
    /// latency in this mode: barge-ins drop echoed audio.
    #[arg(long)]
    pub barge_in: bool,
    /// Write an SVG chart of the sweep here.
    #[arg(long, requires = "sweep")]
    pub chart: Option<PathBuf>,
}

/// Runs `callbridge bench` on its own runtime with `args.threads` workers.
///
/// # Errors
/// Bad options, a non-loopback target, a run that overruns its bounds, or unwritable output.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("bench")
        .enable_all()
        .build()
        .context("cannot start the harness runtime")?;
    runtime.block_on(run_cli(args))
}

async fn run_cli(args: BenchArgs) -> anyhow::Result<()> {
    check_url(&args.url)?;
    if args.duration.is_zero() || args.duration > MAX_HOLD {
        bail!("--duration must be between 1 ms and {} s", MAX_HOLD.as_secs());
    }
    if args.sweep.contains(&0) {
        bail!("--sweep values must be at least 1");
    }
    let probe = probe::ServerProbe {
        pid: args.server_pid,
        metrics: args.metrics_url.as_deref().map(probe::parse_metrics_url).transpose()?,
    };
    if let Some(pid) = args.server_pid
        && !Path::new(&format!("/proc/{pid}/stat")).exists()
    {
        bail!("--server-pid {pid}: no such process");
    }
    let env = Environment::detect(args.threads, args.provider, &args.url);
    let counts = if args.sweep.is_empty() { vec![args.calls] } else { args.sweep.clone() };
    let mut runs = Vec::with_capacity(counts.len());
    for (i, &calls) in counts.iter().enumerate() {
        if i > 0 {
            probe.settle().await;
        }
        eprintln!(
            "bench: run {}/{}: {calls} calls, {} at {}/s, hold {:?}, {} harness thread(s){}",
            i + 1,
            counts.len(),
            args.provider.name(),
            args.ramp,
            args.duration,
            args.threads,
            if args.barge_in { ", barge-in (3 s speech / 2 s silence)" } else { "" }
        );
        let cfg = run::RunConfig {
            url: args.url.clone(),
            provider: args.provider,
            calls,
            hold: args.duration,
            ramp_per_s: args.ramp,
            shard_size: args.shard_size,
            barge_in: args.barge_in.then_some(wire::BargeIn::DEFAULT),
        };
        let report = run::run_once(&cfg, &probe).await?;
        if counts.len() > 1 {
            eprint!("{}", report::table(std::slice::from_ref(&report)));
        }
        runs.push(report);
    }
    println!("{}", env_line(&env));
    print!("{}", report::table(&runs));
    if let Some(path) = &args.json {
        let json = if args.sweep.is_empty() {
            serde_json::to_string_pretty(&report::SingleJson { environment: &env, run: &runs[0] })?
        } else {
            serde_json::to_string_pretty(&report::SweepJson { environment: &env, runs: &runs })?
        };
        create_parent(path)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if let Some(path) = &args.chart {
        create_parent(path)?;
        chart::write_svg(path, &runs).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

fn env_line(env: &Environment) -> String {
    format!(
        "{} × {} CPUs, harness {} thread(s), {} → {}",
        env.cpu_model,
        env.nproc,
        env.harness_threads,
        env.provider.name(),
        env.url
    )
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Accepts `ws://` and `wss://` URLs whose host resolves to loopback only.
fn check_url(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("--url {url:?} is not a URL"))?;
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        _ => bail!("--url must start with ws:// or wss://, not {url:?}"),
    };
    let host = uri.host().ok_or_else(|| anyhow!("--url {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, uri.port_u16().unwrap_or(default_port))
        .to_socket_addrs()
        .with_context(|| format!("--url {url:?}: cannot resolve {host:?}"))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!("--url {url:?} is not loopback; the harness only loads servers on this machine");
    }
    Ok(())
}

/// Parses `20s`, `500ms`, `2m`, `1h` or a bare number of seconds (fractions allowed).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?} (try 20s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("bad duration unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn only_loopback_urls() {
        assert!(check_url("ws://127.0.0.1:8080/media/twilio").is_ok());
        assert!(check_url("ws://localhost:8080/media/twilio").is_ok());
        assert!(check_url("ws://[::1]:8080/media/twilio").is_ok());
        assert!(check_url("wss://127.0.0.1/media").is_ok());
        assert!(check_url("ws://10.0.0.1:8080/media/twilio").is_err());
        assert!(check_url("http://127.0.0.1:8080/").is_err());
    }

    /// Echo simulator (`echo_vad` as given) and the real server in-process on loopback, then
    /// one 5-call run; also returns the simulator's log.
    async fn five_call_run(
        echo_vad: bool,
        hold: Duration,
        barge_in: Option<wire::BargeIn>,
    ) -> (RunReport, Vec<crate::sim::realtime::SimLogEntry>) {
        use crate::config::{self, UpstreamConfig};
        use crate::driver::Shared;
        use std::sync::Arc;

        let _ = rustls::crypto::ring::default_provider().install_default();
        let simcfg = crate::sim::realtime::SimConfig { echo: true, echo_vad, ..Default::default() };
        let sim = crate::sim::realtime::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
        let upstream = UpstreamConfig::simulator(sim.url());
        let shared = Arc::new(Shared::new(
            upstream,
            config::default_call_params(),
            config::DEFAULT_MAX_MESSAGE_BYTES,
            100,
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let prometheus = crate::metrics::install().unwrap();
        let server = crate::server::start(listener, shared, prometheus, Duration::from_secs(2)).unwrap();
        let metrics_url = format!("http://{}/metrics", server.addr);

        let cfg = run::RunConfig {
            url: format!("ws://{}/media/twilio", server.addr),
            provider: BenchProvider::Twilio,
            calls: 5,
            hold,
            ramp_per_s: 50.0,
            shard_size: 2,
            barge_in,
        };
        let probe = probe::ServerProbe {
            pid: Some(std::process::id()),
            metrics: Some(probe::parse_metrics_url(&metrics_url).unwrap()),
        };
        let r = run::run_once(&cfg, &probe).await.unwrap();
        server.shutdown(Duration::from_secs(2)).await;
        let log = sim.log();
        sim.shutdown().await;
        (r, log)
    }

    /// The whole path over loopback: echo simulator, the real server in-process, 5 calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_calls_through_the_real_server_and_the_echo_simulator() {
        let (r, _) = five_call_run(false, Duration::from_secs(2), None).await;
        assert_eq!(r.calls_failed, 0, "{:?}", r.failures);
        assert_eq!((r.calls_started, r.calls_completed), (5, 5));
        assert!(r.frames_received > 0, "{r:?}");
        assert!(r.latency_us.samples > 0, "{r:?}");
        assert!(r.marks_echoed > 0, "{r:?}");
        assert!(r.send_lag_us.samples >= r.frames_sent.min(1), "{r:?}");
        assert!(r.barge_in.is_none());
        let server_figures = r.server.as_ref().unwrap();
        assert!(server_figures.cpu_ms_hold.is_some() && server_figures.rss_hold_kib.is_some());
    }

    /// `--barge-in` over the same loopback path with the simulator's echo VAD: 1 s of speech,
    /// 1 s of silence (the in-process simulator ends speech after 500 ms), a 3 s hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_barge_in_calls_record_clear_reactions() {
        let pattern = wire::BargeIn { speech_frames: 50, silence_frames: 50 };
        let (r, log) = five_call_run(true, Duration::from_secs(3), Some(pattern)).await;
        assert_eq!(r.calls_failed, 0, "{:?}", r.failures);
        assert_eq!((r.calls_started, r.calls_completed), (5, 5));
        let b = r.barge_in.as_ref().unwrap();
        assert!(b.reaction_us.samples >= 1, "{b:?}");
        assert!(b.onsets >= b.reaction_us.samples, "{b:?}");
        assert!(r.clears >= b.reaction_us.samples, "{r:?}");
        assert_eq!(r.latency_us.samples, 0, "no round-trip samples with barge-in");
        assert_eq!((b.speech_ms, b.silence_ms), (1000, 1000));
        // The bridge's truncates and cancels were all answered, none with an error.
        use crate::sim::realtime::SimEventKind as K;
        let count = |f: fn(&K) -> bool| log.iter().filter(|e| f(&e.kind)).count();
        assert_eq!(count(|k| matches!(k, K::ErrorSent { .. })), 0, "{log:?}");
        assert!(count(|k| matches!(k, K::Truncated { .. })) >= 1, "{log:?}");
        assert!(count(|k| matches!(k, K::ResponseDone { status, .. } if status == "cancelled")) >= 1);
    }
}
