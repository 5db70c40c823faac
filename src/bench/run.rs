//! One load run: build the shared frames, spawn the shards, wait for every connect, time the
//! hold window (server CPU and RSS at its edges), then collect the shards' reports.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use super::latency::Percentiles;
use super::probe::{self, Sample, ServerProbe};
use super::report::{BargeInFigures, HarnessFigures, RunReport, ServerFigures};
use super::shard::{self, CLOSE_TIMEOUT, CONNECT_TIMEOUT, FRAME, GRACE, Plan, ShardReport, Window};
use super::soak::{self, ServerSample};
use super::wire::{self, BargeIn, BenchProvider};

/// Delay between building the plan and the first call, so every shard is waiting when it starts.
const START_DELAY: Duration = Duration::from_millis(100);

/// Extra time, beyond every phase's own bound, before the run is abandoned.
const RUN_SLACK: Duration = Duration::from_secs(10);

/// What one run does.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    /// Media-stream URL (loopback).
    pub url: String,
    /// Dialect and format.
    pub provider: BenchProvider,
    /// Concurrent calls.
    pub calls: usize,
    /// Hold time after the ramp and the settle time.
    pub hold: Duration,
    /// `--settle`: between the ramp and the hold, calls stream unmeasured this long.
    pub settle: Duration,
    /// Calls started per second.
    pub ramp_per_s: f64,
    /// Calls per shard task.
    pub shard_size: usize,
    /// `--barge-in`: alternate speech and silence and time each onset's `clear`.
    pub barge_in: Option<BargeIn>,
    /// `--call-duration`: calls hang up after a duration from this range and are replaced.
    pub call_duration: Option<(Duration, Duration)>,
    /// `--redial`: refused or failed lines dial again after this long, until the hold ends.
    pub redial: Option<Duration>,
    /// `--expect-refusals`: refused dials are not failures.
    pub expect_refusals: bool,
    /// `--server-samples`: sample the server (`--server-pid`) this often and judge its drift.
    pub samples: Option<Sampling>,
}

/// `--server-samples` settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampling {
    /// Sampling period.
    pub every: Duration,
    /// `--drift-limit`: allowed growth per 10 minutes, percent of the mean.
    pub limit_pct: f64,
    /// `--warm-up`: start of the hold left out of the verdict (default: its first half).
    pub warm_up: Option<Duration>,
}

/// A run's report, and its server samples if asked for.
pub(crate) struct RunOutcome {
    pub report: RunReport,
    pub samples: Vec<ServerSample>,
}

/// Runs one load run against `cfg.url`, reading the server through `server`.
///
/// # Errors
/// If the options are out of range, the fixtures are broken, or the shards do not finish
/// within their bound.
pub(crate) async fn run_once(cfg: &RunConfig, server: &ServerProbe) -> anyhow::Result<RunOutcome> {
    if cfg.calls == 0 || !(cfg.ramp_per_s.is_finite() && cfg.ramp_per_s > 0.0) || cfg.shard_size == 0 {
        bail!("need calls ≥ 1, a positive ramp and a shard size ≥ 1");
    }
    let ramp_interval = Duration::from_secs_f64(1.0 / cfg.ramp_per_s);
    let ramp_span = ramp_interval.mul_f64((cfg.calls - 1) as f64);
    // The controller starts the hold once every connect resolved, at the latest here.
    let connect_bound = START_DELAY + ramp_span + CONNECT_TIMEOUT + Duration::from_secs(1);
    // A call sends at most from t_start to the end of the latest possible hold.
    let frame_count = ((connect_bound + cfg.settle + cfg.hold).as_millis() / FRAME.as_millis()) as usize + 2;
    let audio = wire::caller_audio(cfg.provider)?;
    let frames = match cfg.barge_in {
        Some(pattern) => wire::barge_in_frames(cfg.provider, &audio, pattern, frame_count)?,
        None => wire::media_frames(cfg.provider, &audio, frame_count),
    };

    let idle = server.sample().await;
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let t_created = Instant::now();
    let plan = Arc::new(Plan {
        url: cfg.url.clone(),
        provider: cfg.provider,
        frames,
        connected: wire::connected(cfg.provider),
        barge_in: cfg.barge_in,
        call_duration: cfg.call_duration,
        redial: cfg.redial,
        seed,
        t_start: t_created + START_DELAY,
        ramp_interval,
        window: OnceLock::new(),
        resolved: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        completed: AtomicU64::new(0),
    });
    let stop_sampling = CancellationToken::new();
    let sampler = match (cfg.samples, server.pid) {
        (Some(s), Some(pid)) => Some(tokio::spawn(soak::sample_until(
            pid,
            s.every,
            server.clone(),
            plan.clone(),
            stop_sampling.clone(),
        ))),
        _ => None,
    };
    let shards = cfg.calls.div_ceil(cfg.shard_size);
    let mut handles = Vec::with_capacity(shards);
    for s in 0..shards {
        // Lines s, s + shards, s + 2·shards, …: whichever lines end up live (with refusals,
        // the first ones dialled), they are spread over every shard.
        let lines = shard::Lines { offset: s, stride: shards, count: (cfg.calls - s).div_ceil(shards) };
        // Spread the shards' ticks over the 20 ms period instead of sending in one burst.
        let phase = FRAME.mul_f64(s as f64 / shards as f64);
        handles.push(tokio::spawn(shard::run(plan.clone(), lines, phase)));
    }

    // Ramp: wait until every line's first dial has succeeded, failed or been refused.
    let connect_deadline = t_created + connect_bound;
    while plan.resolved.load(Ordering::Relaxed) < cfg.calls && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp_end = Instant::now();
    // Calls stream a while before anything is measured (`--settle`).
    tokio::time::sleep(cfg.settle).await;
    let hold_start = Instant::now();
    let hold_end = hold_start + cfg.hold;
    let live_at_start = plan.live.load(Ordering::Relaxed);
    // Set once, here; the shards only read it.
    let _ = plan.window.set(Window { hold_start, hold_end });
    let (s0, h0) = (server.sample().await, probe::own_sample());
    tokio::time::sleep_until(hold_end.into()).await;
    let (s1, h1) = (server.sample().await, probe::own_sample());
    let hold_s = hold_start.elapsed().as_secs_f64();
    let live_at_end = plan.live.load(Ordering::Relaxed);

    let mut total = ShardReport::new();
    let finish_by = tokio::time::Instant::now() + GRACE + CLOSE_TIMEOUT + RUN_SLACK;
    for h in handles {
        let shard = tokio::time::timeout_at(finish_by, h)
            .await
            .context("the harness's shards did not finish in time")?
            .context("a shard task panicked")?;
        total.merge(&shard);
    }
    stop_sampling.cancel();
    let samples = match sampler {
        Some(task) => task.await.context("the sampler panicked")?,
        None => Vec::new(),
    };
    let soak = cfg.samples.filter(|_| !samples.is_empty()).map(|s| {
        let since_start = |t: Instant| t.saturating_duration_since(plan.t_start).as_secs_f64();
        let hold = [since_start(hold_start), since_start(hold_end)];
        soak::drift(&samples, s.every, hold, s.warm_up, s.limit_pct)
    });
    let mut failures = total.failed;
    if !cfg.expect_refusals {
        for (reason, n) in &total.refused {
            *failures.entry(format!("refused: {reason}")).or_default() += n;
        }
    }

    let call_seconds = live_at_start as f64 * hold_s;
    let server_figures =
        server.enabled().then(|| server_figures(server.source(), idle, s0, s1, live_at_start, call_seconds));
    let harness_cpu_ms = cpu_ms(h0, h1);
    let frame_bytes = cfg.provider.frame_bytes() as u64;
    let bytes_per_ms = cfg.provider.format().bytes_per_ms().max(1) as u64;
    let report = RunReport {
        calls: cfg.calls,
        provider: cfg.provider,
        ramp_per_s: cfg.ramp_per_s,
        ramp_s: ramp_end.saturating_duration_since(plan.t_start).as_secs_f64(),
        settle_s: (hold_start - ramp_end).as_secs_f64(),
        hold_s,
        calls_started: total.started,
        calls_completed: total.completed,
        calls_failed: failures.values().sum(),
        failures,
        refusals_expected: cfg.expect_refusals,
        calls_refused: total.refused.values().sum(),
        refused_first_dial: total.refused_first,
        refusals: total.refused,
        refusal_us: Percentiles::of(&total.refusal),
        redials: total.redials,
        call_duration_ms: cfg.call_duration.map(|(a, b)| [a.as_millis() as u64, b.as_millis() as u64]),
        redial_ms: cfg.redial.map(|d| d.as_millis() as u64),
        calls_live_at_hold_start: live_at_start as u64,
        calls_live_at_hold_end: live_at_end as u64,
        frames_sent: total.frames_sent,
        frames_received: total.frames_received,
        frames_lost: total.frames_lost,
        audio_sent_ms: total.bytes_sent / bytes_per_ms,
        audio_received_ms: total.bytes_received / bytes_per_ms,
        frames_unmatched: total.unmatched,
        marks_received: total.marks_received,
        marks_echoed: total.marks_echoed,
        clears: total.clears,
        unexpected_messages: total.unexpected,
        close_timeouts: total.close_timeouts,
        latency_us: Percentiles::of(&total.latency),
        send_lag_us: Percentiles::of(&total.lag),
        barge_in: cfg.barge_in.map(|b| BargeInFigures {
            speech_ms: b.speech_frames as u64 * FRAME.as_millis() as u64,
            silence_ms: b.silence_frames as u64 * FRAME.as_millis() as u64,
            onsets: total.barge_in_onsets,
            no_clear_within_2s: total.barge_in_missed,
            reaction_us: Percentiles::of(&total.barge_in),
        }),
        server: server_figures,
        soak,
        harness: HarnessFigures {
            cpu_ms_hold: harness_cpu_ms,
            cpu_ms_per_call_second: harness_cpu_ms.and_then(|c| per(c, call_seconds)),
            rss_kib: h1.rss_kib,
            shard_size: cfg.shard_size,
            frame_bytes,
        },
    };
    Ok(RunOutcome { report, samples })
}

fn cpu_ms(a: Sample, b: Sample) -> Option<f64> {
    Some((b.cpu_s? - a.cpu_s?) * 1000.0)
}

fn per(value: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| value / denominator)
}

/// Server CPU over the hold and RSS growth from idle, per call.
pub(crate) fn server_figures(
    source: &'static str,
    idle: Sample,
    hold_start: Sample,
    hold_end: Sample,
    calls: usize,
    call_seconds: f64,
) -> ServerFigures {
    let cpu_ms_hold = cpu_ms(hold_start, hold_end);
    let rss_growth = match (idle.rss_kib, hold_end.rss_kib) {
        (Some(a), Some(b)) => Some(b as f64 - a as f64),
        _ => None,
    };
    ServerFigures {
        source,
        cpu_ms_hold,
        rss_idle_kib: idle.rss_kib,
        rss_hold_kib: hold_end.rss_kib,
        cpu_ms_per_call_second: cpu_ms_hold.and_then(|c| per(c, call_seconds)),
        kib_per_call: rss_growth.and_then(|g| per(g, calls as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_figures_per_call() {
        let s = |cpu: f64, rss: u64| Sample { cpu_s: Some(cpu), rss_kib: Some(rss), active_calls: None };
        let f = server_figures("proc", s(1.0, 10_000), s(2.0, 30_000), s(6.0, 60_000), 100, 100.0 * 20.0);
        assert_eq!(f.cpu_ms_hold, Some(4000.0));
        assert_eq!(f.cpu_ms_per_call_second, Some(2.0));
        assert_eq!(f.kib_per_call, Some(500.0), "(60000 - 10000) / 100");
        let none = server_figures("metrics", Sample::default(), Sample::default(), Sample::default(), 0, 0.0);
        assert_eq!((none.cpu_ms_per_call_second, none.kib_per_call), (None, None));
    }
}
