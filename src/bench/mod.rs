//! `callbridge bench`: a load harness that plays many simulated provider calls against a
//! media-stream endpoint (ours with the Realtime simulator in echo mode, or another bridge) and
//! measures what the bridge adds.
//!
//! Each call connects, sends Twilio (or SignalWire L16) `connected` and `start`, then one
//! `media` frame every 20 ms on an absolute schedule, looping caller speech. What comes back
//! is "played" at 20 ms per tick with `mark` echoes and `clear` handled as the provider does.
//! After the ramp (and `--settle`, unmeasured) the calls are held for `--duration`, then stop
//! sending, wait a 1 s grace for audio in flight, send `stop` and close.
//!
//! `--calls` is the number of *lines*. By default each line places one call. With
//! `--call-duration 30s..60s` calls churn: each hangs up (grace, `stop`, close) after its own
//! duration and its line dials a new call at once, so the concurrency stays at `--calls` while
//! calls come and go. With `--redial D` a line whose call was refused or failed dials again
//! after `D` (1 s by default with `--call-duration`). No line dials after the hold.
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
//! | `soak` | `--server-samples`: periodic server samples, CSV, drift verdict, soak chart |
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
//! * **Refusals**: a dial is refused when the upgrade is answered with HTTP 503 (the body, such
//!   as `max_calls` or `draining`, becomes the reason) or the bridge closes with 1013 (try again
//!   later) or 1001 (going away) before sending anything. Each refusal is timed from the start
//!   of its connect to the moment the harness learns of it, in its own histogram, and counted
//!   apart from failures; without `--expect-refusals` refusals also count as failures.
//! * **Server drift** (`--server-samples`, a soak): RSS, open descriptors, threads and CPU of
//!   `--server-pid` every `--sample-every` into a CSV; the least-squares slopes of RSS and
//!   descriptors over the hold after `--warm-up` (default: its second half) decide PASS/FAIL.
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
mod soak;
mod wire;

use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

pub use latency::Percentiles;
pub use report::{Environment, HarnessFigures, RunReport, ServerFigures};
pub use soak::{Drift, SoakFigures};
pub use wire::BenchProvider;

/// Longest hold a run accepts (the shared frame table grows with it).
const MAX_HOLD: Duration = Duration::from_secs(600);

/// Longest `--settle`.
const MAX_SETTLE: Duration = Duration::from_secs(60);

/// `--redial` with `--call-duration` when not given.
const DEFAULT_CHURN_REDIAL: Duration = Duration::from_secs(1);

/// Options of `callbridge bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Media-stream WebSocket URL of the bridge under test (ws:// or wss://, loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/media/twilio")]
    pub url: String,
    /// Provider the calls play: Twilio μ-law 8 kHz, or SignalWire L16 16 kHz (transcoded).
    #[arg(long, value_enum, default_value_t = BenchProvider::Twilio)]
    pub provider: BenchProvider,
    /// Concurrent calls: lines, each placing one call (or, with --call-duration / --redial,
    /// one after another). Ignored with --sweep.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Hold time after the ramp, e.g. `20s`, `500ms`, `2m` (at most 10 minutes).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Calls started per second during the ramp.
    #[arg(long, default_value_t = 200.0)]
    pub ramp: f64,
    /// After the ramp, let the calls stream this long before the hold starts (nothing is
    /// measured meanwhile), so the last calls' setup is not in the measurement; e.g. `3s`.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
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
    /// Refused dials (HTTP 503 on the upgrade, or a close 1013/1001 before the bridge's first
    /// message) are expected (overload tests), not failures. Refusals are counted and timed
    /// (connect start → refusal known) with or without this flag.
    #[arg(long)]
    pub expect_refusals: bool,
    /// A line whose call was refused or failed dials again after this long, until the hold
    /// ends (keeps offering load during the hold). Default: never; 1s with --call-duration.
    #[arg(long, value_parser = parse_duration)]
    pub redial: Option<Duration>,
    /// Call churn: each call lasts a duration drawn uniformly from this range (`30s..60s`, or
    /// one value), then hangs up and its line dials a new call at once; --calls stays the
    /// concurrency while calls come and go.
    #[arg(long, value_parser = parse_duration_range)]
    pub call_duration: Option<DurationRange>,
    /// Soak: sample the server (--server-pid) every --sample-every into this CSV (RSS, open
    /// descriptors, threads, CPU, calls) and judge whether RSS and descriptors levelled off over
    /// the hold after --warm-up (exit status 1 on FAIL, after writing every output).
    #[arg(long, requires = "server_pid", conflicts_with = "sweep")]
    pub server_samples: Option<PathBuf>,
    /// Period of --server-samples.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// --server-samples verdict: largest allowed growth of RSS and of open descriptors, in
    /// percent of their mean per 10 minutes (descriptors may also grow by < 1 per 100 calls
    /// completed).
    #[arg(long, default_value_t = 1.0)]
    pub drift_limit: f64,
    /// --server-samples verdict: the start of the hold left out as warm-up (default: half the
    /// hold).
    #[arg(long, value_parser = parse_duration, requires = "server_samples")]
    pub warm_up: Option<Duration>,
    /// Write an SVG chart of the --server-samples here.
    #[arg(long, requires = "server_samples")]
    pub samples_chart: Option<PathBuf>,
}

/// `--call-duration`: the range a call's length is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest call.
    pub min: Duration,
    /// Longest call.
    pub max: Duration,
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
    if args.settle > MAX_SETTLE {
        bail!("--settle must be at most {} s", MAX_SETTLE.as_secs());
    }
    if args.redial.is_some_and(|d| d.is_zero()) {
        bail!("--redial must be at least 1 ms");
    }
    if args.call_duration.is_some_and(|r| r.min < Duration::from_secs(1)) {
        bail!("--call-duration must be at least 1 s");
    }
    if args.sample_every < Duration::from_millis(100) {
        bail!("--sample-every must be at least 100 ms");
    }
    if !(args.drift_limit.is_finite() && args.drift_limit > 0.0) {
        bail!("--drift-limit must be a positive percentage");
    }
    if args.warm_up.is_some_and(|w| w >= args.duration) {
        bail!("--warm-up must be shorter than --duration");
    }
    // Churn keeps lines busy after a refusal or failure too, unless told otherwise.
    let redial = args.redial.or(args.call_duration.map(|_| DEFAULT_CHURN_REDIAL));
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
    let mut samples = Vec::new();
    for (i, &calls) in counts.iter().enumerate() {
        if i > 0 {
            probe.settle().await;
        }
        let mut extras = String::new();
        if args.barge_in {
            extras.push_str(", barge-in (3 s speech / 2 s silence)");
        }
        if let Some(r) = args.call_duration {
            extras.push_str(&format!(", calls last {:?}..{:?} and are replaced", r.min, r.max));
        }
        if let Some(d) = redial {
            extras.push_str(&format!(", refused/failed lines redial after {d:?}"));
        }
        if args.expect_refusals {
            extras.push_str(", refusals expected");
        }
        eprintln!(
            "bench: run {}/{}: {calls} calls, {} at {}/s, hold {:?}, {} harness thread(s){extras}",
            i + 1,
            counts.len(),
            args.provider.name(),
            args.ramp,
            args.duration,
            args.threads,
        );
        let cfg = run::RunConfig {
            url: args.url.clone(),
            provider: args.provider,
            calls,
            hold: args.duration,
            settle: args.settle,
            ramp_per_s: args.ramp,
            shard_size: args.shard_size,
            barge_in: args.barge_in.then_some(wire::BargeIn::DEFAULT),
            call_duration: args.call_duration.map(|r| (r.min, r.max)),
            redial,
            expect_refusals: args.expect_refusals,
            samples: args.server_samples.as_ref().map(|_| run::Sampling {
                every: args.sample_every,
                limit_pct: args.drift_limit,
                warm_up: args.warm_up,
            }),
        };
        let outcome = run::run_once(&cfg, &probe).await?;
        if counts.len() > 1 {
            eprint!("{}", report::table(std::slice::from_ref(&outcome.report)));
        }
        runs.push(outcome.report);
        samples = outcome.samples;
    }
    println!("{}", env_line(&env));
    print!("{}", report::table(&runs));
    let soak = runs.first().and_then(|r| r.soak.clone());
    if let Some(f) = &soak {
        print!("{}", soak::summary(f));
    }
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
    if let Some(path) = &args.server_samples {
        create_parent(path)?;
        std::fs::write(path, soak::csv(&samples)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {} ({} samples)", path.display(), samples.len());
    }
    if let (Some(path), Some(f)) = (&args.samples_chart, &soak) {
        create_parent(path)?;
        soak::write_svg(path, &samples, f).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if soak.is_some_and(|f| f.pass == Some(false)) {
        bail!("soak: the server's RSS or descriptors kept growing (see above)");
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

/// Parses `30s..60s` (a range) or `45s` (a fixed duration) for `--call-duration`.
fn parse_duration_range(s: &str) -> Result<DurationRange, String> {
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
        None => {
            let d = parse_duration(s)?;
            (d, d)
        }
    };
    if min > max {
        return Err(format!("bad range {s:?}: the first bound is larger"));
    }
    Ok(DurationRange { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_ranges() {
        let r = |a, b| Ok(DurationRange { min: Duration::from_secs(a), max: Duration::from_secs(b) });
        assert_eq!(parse_duration_range("30s..60s"), r(30, 60));
        assert_eq!(parse_duration_range("1m..90"), r(60, 90));
        assert_eq!(parse_duration_range("45s"), r(45, 45));
        assert!(parse_duration_range("60s..30s").is_err());
        assert!(parse_duration_range("30s..").is_err());
    }

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

    /// Echo simulator (`echo_vad` as given) and the real server in-process on loopback, admitting
    /// at most `max_calls`.
    struct Bridge {
        sim: crate::sim::realtime::SimHandle,
        server: crate::server::ServerHandle,
    }

    impl Bridge {
        async fn start(echo_vad: bool, max_calls: usize) -> Self {
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
                max_calls,
                None,
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let prometheus = crate::metrics::install().unwrap();
            let server = crate::server::start(listener, shared, prometheus, Duration::from_secs(2)).unwrap();
            Self { sim, server }
        }

        /// A run of `calls` lines against it (5 per second, 2 per shard).
        fn config(&self, calls: usize, hold: Duration) -> run::RunConfig {
            run::RunConfig {
                url: format!("ws://{}/media/twilio", self.server.addr),
                provider: BenchProvider::Twilio,
                calls,
                hold,
                settle: Duration::ZERO,
                ramp_per_s: 50.0,
                shard_size: 2,
                barge_in: None,
                call_duration: None,
                redial: None,
                expect_refusals: false,
                samples: None,
            }
        }

        fn probe(&self) -> probe::ServerProbe {
            let metrics_url = format!("http://{}/metrics", self.server.addr);
            probe::ServerProbe {
                pid: Some(std::process::id()),
                metrics: Some(probe::parse_metrics_url(&metrics_url).unwrap()),
            }
        }

        async fn run(&self, cfg: &run::RunConfig) -> run::RunOutcome {
            run::run_once(cfg, &self.probe()).await.unwrap()
        }

        /// Stops both; returns the simulator's log.
        async fn stop(self) -> Vec<crate::sim::realtime::SimLogEntry> {
            self.server.shutdown(Duration::from_secs(2)).await;
            let log = self.sim.log();
            self.sim.shutdown().await;
            log
        }
    }

    /// One 5-call run through a fresh [`Bridge`]; also returns the simulator's log.
    async fn five_call_run(
        echo_vad: bool,
        hold: Duration,
        barge_in: Option<wire::BargeIn>,
    ) -> (RunReport, Vec<crate::sim::realtime::SimLogEntry>) {
        let bridge = Bridge::start(echo_vad, 100).await;
        let cfg = run::RunConfig { barge_in, ..bridge.config(5, hold) };
        let r = bridge.run(&cfg).await.report;
        (r, bridge.stop().await)
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

    /// Twice as many lines as the server admits: the excess is refused with HTTP 503
    /// `max_calls`, timed, and (with `--expect-refusals`) not counted as failures; admitted
    /// calls stream normally.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_excess_over_max_calls_is_refused_and_timed() {
        let bridge = Bridge::start(false, 3).await;
        let cfg = run::RunConfig { expect_refusals: true, ..bridge.config(6, Duration::from_secs(1)) };
        let r = bridge.run(&cfg).await.report;
        assert_eq!(r.calls_failed, 0, "{:?}", r.failures);
        assert_eq!((r.calls_started, r.calls_completed, r.calls_refused), (6, 3, 3), "{r:?}");
        assert_eq!(r.refused_first_dial, 3);
        assert_eq!(r.refusals.get("HTTP 503 max_calls"), Some(&3), "{:?}", r.refusals);
        assert_eq!(r.refusal_us.samples, 3);
        assert!(r.refusal_us.max_us < 2_000_000, "{:?}", r.refusal_us);
        assert_eq!(r.calls_live_at_hold_start, 3);
        assert!(r.latency_us.samples > 0, "{r:?}");
        assert!(report::table(std::slice::from_ref(&r)).contains("refusals at 6 calls"));

        // Without --expect-refusals the same refusals are failures too.
        let cfg = run::RunConfig { expect_refusals: false, ..cfg };
        let r = bridge.run(&cfg).await.report;
        assert_eq!((r.calls_refused, r.calls_failed), (3, 3), "{r:?}");
        assert_eq!(r.failures.get("refused: HTTP 503 max_calls"), Some(&3), "{:?}", r.failures);
        bridge.stop().await;
    }

    /// `--redial`: refused lines keep dialling through the hold (and are refused each time).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_lines_redial_until_the_hold_ends() {
        let bridge = Bridge::start(false, 2).await;
        let cfg = run::RunConfig {
            expect_refusals: true,
            redial: Some(Duration::from_millis(200)),
            ..bridge.config(4, Duration::from_millis(1500))
        };
        let r = bridge.run(&cfg).await.report;
        assert_eq!(r.calls_failed, 0, "{:?}", r.failures);
        assert_eq!((r.calls_completed, r.refused_first_dial), (2, 2), "{r:?}");
        assert!(r.calls_refused >= 8, "2 lines × ~1.5 s / 200 ms: {r:?}");
        assert_eq!(r.redials, r.calls_started - 4);
        assert_eq!(r.calls_refused, r.calls_started - 2);
        assert_eq!(r.redial_ms, Some(200));
        bridge.stop().await;
    }

    /// A draining server refuses with HTTP 503 `draining`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_draining_server_refuses_every_dial() {
        let bridge = Bridge::start(false, 100).await;
        bridge.server.shared().begin_drain();
        let cfg = run::RunConfig { expect_refusals: true, ..bridge.config(2, Duration::from_millis(200)) };
        let r = bridge.run(&cfg).await.report;
        assert_eq!((r.calls_refused, r.calls_failed, r.calls_completed), (2, 0, 0), "{r:?}");
        assert_eq!(r.refusals.get("HTTP 503 draining"), Some(&2), "{:?}", r.refusals);
        bridge.stop().await;
    }

    /// `--call-duration`: calls hang up after their duration and their lines dial new ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_churn_with_a_call_duration() {
        let bridge = Bridge::start(false, 100).await;
        let cfg = run::RunConfig {
            call_duration: Some((Duration::from_millis(700), Duration::from_millis(900))),
            redial: Some(Duration::from_secs(1)),
            samples: Some(run::Sampling { every: Duration::from_millis(200), limit_pct: 1.0, warm_up: None }),
            ..bridge.config(3, Duration::from_secs(3))
        };
        let out = bridge.run(&cfg).await;
        let r = out.report;
        assert_eq!(r.calls_failed, 0, "{:?}", r.failures);
        // Each call: ~0.8 s of media + 1 s grace + close, over ~3 s: at least one replacement.
        assert!(r.calls_completed >= 6, "{r:?}");
        assert!(r.redials >= 3, "{r:?}");
        assert_eq!(r.calls_started, r.calls_completed, "{r:?}");
        assert_eq!(r.close_timeouts, 0);
        assert!(r.latency_us.samples > 0);
        assert_eq!(r.call_duration_ms, Some([700, 900]));
        // Server samples (this process) came along.
        assert!(out.samples.len() >= 10, "{}", out.samples.len());
        assert!(out.samples.iter().all(|s| s.rss_kib.is_some() && s.fds.is_some()));
        assert!(out.samples.last().is_some_and(|s| s.completed == r.calls_completed));
        let soak = r.soak.as_ref().unwrap();
        assert!(soak.rss_kib.samples >= 5, "{soak:?}");
        bridge.stop().await;
    }

    /// A bridge that accepts the upgrade and closes at once with `code`, before any message.
    async fn closing_bridge(code: u16) -> std::net::SocketAddr {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use futures_util::StreamExt as _;
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                    let frame = CloseFrame { code: CloseCode::from(code), reason: "full".into() };
                    let _ = ws.close(Some(frame)).await;
                    while ws.next().await.is_some() {}
                });
            }
        });
        addr
    }

    /// A close 1013 (try again later) before the bridge's first message is a refusal, timed
    /// from the dial; a close 1011 is a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_early_close_1013_is_a_refusal_and_1011_a_failure() {
        for (code, refused) in [(1013u16, true), (1011, false)] {
            let addr = closing_bridge(code).await;
            let cfg = run::RunConfig {
                url: format!("ws://{addr}/media/twilio"),
                provider: BenchProvider::Twilio,
                calls: 2,
                hold: Duration::from_millis(200),
                settle: Duration::ZERO,
                ramp_per_s: 50.0,
                shard_size: 2,
                barge_in: None,
                call_duration: None,
                redial: None,
                expect_refusals: true,
                samples: None,
            };
            let r = run::run_once(&cfg, &probe::ServerProbe::default()).await.unwrap().report;
            if refused {
                assert_eq!((r.calls_refused, r.calls_failed), (2, 0), "{r:?}");
                assert_eq!(r.refusals.get("close 1013 before any message"), Some(&2), "{:?}", r.refusals);
                assert_eq!(r.refusal_us.samples, 2);
            } else {
                assert_eq!((r.calls_refused, r.calls_failed), (0, 2), "{r:?}");
                assert_eq!(r.failures.get("closed early (close 1011)"), Some(&2), "{:?}", r.failures);
            }
        }
    }
}
