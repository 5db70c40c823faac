//! `--server-samples`: the server process sampled every few seconds through a run (RSS, open
//! descriptors, threads, CPU, and the harness's own call counts), written as CSV, with a drift
//! verdict and an SVG chart.
//!
//! The verdict looks at the hold after a warm-up (`--warm-up`, by default its first half: the
//! allocator's pools, caches filling, the first churn of calls): the least-squares slope of RSS and of open
//! descriptors against time there, per minute. RSS passes when its growth over 10 minutes at that
//! slope is below the limit (`--drift-limit`, percent of its mean in the window). Descriptors
//! pass under the same rule, or when they grow by less than one per 100 calls completed in the
//! window (a count of a few hundred jitters by a few descriptors as calls come and go, which a
//! short window turns into a slope; a leak of one descriptor per call is far above either bound).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use plotters::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::probe::ServerProbe;
use super::shard::Plan;

/// Fraction of the hold treated as warm-up (not analysed) without `--warm-up`.
const WARM_UP: f64 = 0.5;

/// Fewest samples in the analysed window for a verdict.
const MIN_WINDOW_SAMPLES: usize = 5;

/// Descriptors may also grow by this many per call completed in the window.
const FDS_PER_CALL: f64 = 0.01;

/// One reading of the server (and of the harness's calls).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ServerSample {
    /// Seconds since the first dial (negative before it).
    pub t_s: f64,
    /// `VmRSS` (KiB).
    pub rss_kib: Option<u64>,
    /// Entries of `/proc/PID/fd`.
    pub fds: Option<u64>,
    /// `Threads` of `/proc/PID/status`.
    pub threads: Option<u64>,
    /// User + system CPU since the server started (s).
    pub cpu_s: Option<f64>,
    /// `callbridge_active_calls` from `/metrics`, if given.
    pub server_calls: Option<f64>,
    /// Calls the harness is streaming.
    pub live: u64,
    /// Calls the harness has hung up so far.
    pub completed: u64,
}

/// Samples `pid` every `every` until `stop`, then once more.
pub(crate) async fn sample_until(
    pid: u32,
    every: Duration,
    probe: ServerProbe,
    plan: Arc<Plan>,
    stop: CancellationToken,
) -> Vec<ServerSample> {
    let mut out = Vec::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => out.push(take(pid, &probe, &plan).await),
            () = stop.cancelled() => {
                out.push(take(pid, &probe, &plan).await);
                return out;
            }
        }
    }
}

async fn take(pid: u32, probe: &ServerProbe, plan: &Plan) -> ServerSample {
    let now = Instant::now();
    let t_s = if now >= plan.t_start {
        (now - plan.t_start).as_secs_f64()
    } else {
        -(plan.t_start - now).as_secs_f64()
    };
    let s = probe.sample().await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    ServerSample {
        t_s,
        rss_kib: s.rss_kib,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64),
        threads: status.as_deref().and_then(|t| status_field(t, "Threads:")),
        cpu_s: s.cpu_s,
        server_calls: s.active_calls,
        live: plan.live.load(Ordering::Relaxed) as u64,
        completed: plan.completed.load(Ordering::Relaxed),
    }
}

/// The first number after `name` on its line of `/proc/PID/status`.
pub(crate) fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The samples as CSV, one row each; empty cells for values that could not be read.
pub(crate) fn csv(samples: &[ServerSample]) -> String {
    fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map_or_else(String::new, |v| v.to_string())
    }
    let mut out = String::from(
        "t_s,rss_kib,fds,threads,cpu_s,server_active_calls,harness_live_calls,calls_completed\n",
    );
    for s in samples {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:.3},{},{},{},{},{},{},{}",
            s.t_s,
            cell(s.rss_kib),
            cell(s.fds),
            cell(s.threads),
            cell(s.cpu_s.map(|c| format!("{c:.2}"))),
            cell(s.server_calls),
            s.live,
            s.completed
        );
    }
    out
}

/// How one series moved over the analysed window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    /// Samples with a value in the window.
    pub samples: usize,
    /// Mean in the window.
    pub mean: f64,
    /// Smallest and largest value in the window.
    pub min: f64,
    /// Largest value in the window.
    pub max: f64,
    /// Least-squares slope in the window, per minute.
    pub slope_per_min: f64,
    /// Growth over 10 minutes at that slope, in percent of the mean.
    pub pct_per_10min: f64,
    /// Largest slope that passes, per minute.
    pub allowed_per_min: f64,
    /// `slope_per_min ≤ allowed_per_min`; `None` with too few samples.
    pub pass: Option<bool>,
}

/// The drift verdict of a run with `--server-samples`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoakFigures {
    /// Sampling period (s).
    pub sample_every_s: f64,
    /// Samples taken.
    pub samples: usize,
    /// Analysed window: the hold after the warm-up (s since the first dial).
    pub window_s: [f64; 2],
    /// Calls hung up within the window.
    pub calls_completed_in_window: u64,
    /// `--drift-limit`: allowed growth per 10 minutes, percent of the mean.
    pub limit_pct_per_10min: f64,
    /// Server RSS (KiB).
    pub rss_kib: Drift,
    /// Server open file descriptors.
    pub fds: Drift,
    /// Both pass; `None` if either has too few samples.
    pub pass: Option<bool>,
}

/// Judges `samples` over the hold (`hold_s`, seconds since the first dial) after `warm_up` (by
/// default half the hold).
pub(crate) fn drift(
    samples: &[ServerSample],
    every: Duration,
    hold_s: [f64; 2],
    warm_up: Option<Duration>,
    limit_pct: f64,
) -> SoakFigures {
    let skip = warm_up.map_or((hold_s[1] - hold_s[0]) * WARM_UP, |w| w.as_secs_f64());
    let from = (hold_s[0] + skip).min(hold_s[1]);
    let window: Vec<&ServerSample> = samples.iter().filter(|s| s.t_s >= from && s.t_s <= hold_s[1]).collect();
    let completed = match (window.first(), window.last()) {
        (Some(a), Some(b)) => b.completed.saturating_sub(a.completed),
        _ => 0,
    };
    let span_min = (hold_s[1] - from) / 60.0;
    let per_call = if span_min > 0.0 { completed as f64 / span_min * FDS_PER_CALL } else { 0.0 };
    let series = |f: fn(&ServerSample) -> Option<u64>| -> Vec<(f64, f64)> {
        window.iter().filter_map(|s| Some((s.t_s / 60.0, f(s)? as f64))).collect()
    };
    let rss = judge(&series(|s| s.rss_kib), limit_pct, 0.0);
    let fds = judge(&series(|s| s.fds), limit_pct, per_call);
    let pass = match (rss.pass, fds.pass) {
        (Some(a), Some(b)) => Some(a && b),
        _ => None,
    };
    SoakFigures {
        sample_every_s: every.as_secs_f64(),
        samples: samples.len(),
        window_s: [from, hold_s[1]],
        calls_completed_in_window: completed,
        limit_pct_per_10min: limit_pct,
        rss_kib: rss,
        fds,
        pass,
    }
}

/// Slope and verdict of `(minutes, value)` points: passes if the slope is at most `limit_pct` %
/// of the mean per 10 minutes, or at most `floor` per minute.
fn judge(points: &[(f64, f64)], limit_pct: f64, floor: f64) -> Drift {
    let n = points.len();
    let mean = if n == 0 { 0.0 } else { points.iter().map(|p| p.1).sum::<f64>() / n as f64 };
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let slope = slope(points);
    let allowed = (limit_pct / 100.0 * mean / 10.0).max(floor);
    Drift {
        samples: n,
        mean,
        min: if n == 0 { 0.0 } else { min },
        max: if n == 0 { 0.0 } else { max },
        slope_per_min: slope.unwrap_or(0.0),
        pct_per_10min: match slope {
            Some(s) if mean > 0.0 => s * 10.0 / mean * 100.0,
            _ => 0.0,
        },
        allowed_per_min: allowed,
        pass: slope.filter(|_| n >= MIN_WINDOW_SAMPLES).map(|s| s <= allowed),
    }
}

/// Least-squares slope of `y` on `x`; `None` with fewer than two distinct `x`.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `PASS`, `FAIL` or `n/a`.
pub(crate) fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a (too few samples)",
    }
}

/// The verdict as text lines for stdout.
pub(crate) fn summary(f: &SoakFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "soak: {} samples every {:.0} s; analysed {:.0}–{:.0} s after the first call (the hold after its warm-up: {} samples, {} calls completed)",
        f.samples,
        f.sample_every_s,
        f.window_s[0],
        f.window_s[1],
        f.rss_kib.samples,
        f.calls_completed_in_window
    );
    let _ = writeln!(
        out,
        "  server RSS  mean {:>8.0} KiB (min {:.0}, max {:.0}), slope {:+.1} KiB/min = {:+.2} % per 10 min (allowed ≤ {:.1} KiB/min): {}",
        f.rss_kib.mean,
        f.rss_kib.min,
        f.rss_kib.max,
        f.rss_kib.slope_per_min,
        f.rss_kib.pct_per_10min,
        f.rss_kib.allowed_per_min,
        verdict(f.rss_kib.pass)
    );
    let _ = writeln!(
        out,
        "  server fds  mean {:>8.1}     (min {:.0}, max {:.0}), slope {:+.2} /min = {:+.2} % per 10 min (allowed ≤ {:.2} /min): {}",
        f.fds.mean,
        f.fds.min,
        f.fds.max,
        f.fds.slope_per_min,
        f.fds.pct_per_10min,
        f.fds.allowed_per_min,
        verdict(f.fds.pass)
    );
    let _ =
        writeln!(out, "soak: {} (limit {} % of the mean per 10 min)", verdict(f.pass), f.limit_pct_per_10min);
    out
}

/// Chart size (px).
const SIZE: (u32, u32) = (1000, 700);

/// Writes the soak chart: RSS over time with the fitted line over the analysed window on top;
/// open descriptors (left axis) and the harness's live calls (right axis) below.
///
/// # Errors
/// If there are no samples or the file cannot be written.
pub(crate) fn write_svg(path: &Path, samples: &[ServerSample], f: &SoakFigures) -> anyhow::Result<()> {
    if samples.is_empty() {
        return Err(anyhow!("no samples to chart"));
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "callbridge soak: server RSS and descriptors ({}; RSS {:+.2} %, fds {:+.2} % per 10 min)",
        verdict(f.pass),
        f.rss_kib.pct_per_10min,
        f.fds.pct_per_10min
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let t_min = samples.iter().map(|s| s.t_s / 60.0).fold(f64::INFINITY, f64::min).min(0.0);
    let t_max = samples.iter().map(|s| s.t_s / 60.0).fold(0.0, f64::max).max(t_min + 0.1);
    let x = t_min..t_max;
    let shade = RGBColor(255, 235, 190).filled();
    let window = (f.window_s[0] / 60.0, f.window_s[1] / 60.0);

    let rss: Vec<(f64, f64)> =
        samples.iter().filter_map(|s| Some((s.t_s / 60.0, s.rss_kib? as f64 / 1024.0))).collect();
    let rss_max = rss.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("server RSS (shaded: analysed window, red: least-squares fit)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(x.clone(), 0f64..(rss_max * 1.15).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("minutes since the first call")
        .y_desc("RSS (MiB)")
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(window.0, 0.0), (window.1, (rss_max * 1.15).max(1.0))],
        shade,
    )))?;
    chart.draw_series(LineSeries::new(rss.iter().copied(), BLUE.stroke_width(2)))?;
    let fit = fit_line(&rss, window);
    chart.draw_series(LineSeries::new(fit, RED.stroke_width(2)))?;

    let fds: Vec<(f64, f64)> = samples.iter().filter_map(|s| Some((s.t_s / 60.0, s.fds? as f64))).collect();
    let live: Vec<(f64, f64)> = samples.iter().map(|s| (s.t_s / 60.0, s.live as f64)).collect();
    let fd_max = fds.iter().map(|p| p.1).fold(0.0, f64::max);
    let live_max = live.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("server open descriptors (left) and harness calls streaming (right)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(x.clone(), 0f64..(fd_max * 1.15).max(1.0))?
        .set_secondary_coord(x, 0f64..(live_max * 1.15).max(1.0));
    chart
        .configure_mesh()
        .x_desc("minutes since the first call")
        .y_desc("open descriptors")
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.configure_secondary_axes().y_desc("calls streaming").draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(window.0, 0.0), (window.1, (fd_max * 1.15).max(1.0))],
        shade,
    )))?;
    let green = RGBColor(0, 140, 70);
    chart
        .draw_series(LineSeries::new(fds.iter().copied(), green.stroke_width(2)))?
        .label("open descriptors (left)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(2)));
    chart.draw_series(LineSeries::new(fit_line(&fds, window), RED.stroke_width(2)))?;
    let purple = RGBColor(120, 60, 170);
    chart
        .draw_secondary_series(LineSeries::new(live.iter().copied(), purple.stroke_width(1)))?
        .label("calls streaming (right)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], purple.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The least-squares line of the `points` inside `window` (x range), as its two end points.
fn fit_line(points: &[(f64, f64)], window: (f64, f64)) -> Vec<(f64, f64)> {
    let inside: Vec<(f64, f64)> =
        points.iter().copied().filter(|p| p.0 >= window.0 && p.0 <= window.1).collect();
    let Some(b) = slope(&inside) else { return Vec::new() };
    let n = inside.len() as f64;
    let mx = inside.iter().map(|p| p.0).sum::<f64>() / n;
    let my = inside.iter().map(|p| p.1).sum::<f64>() / n;
    vec![(window.0, my + b * (window.0 - mx)), (window.1, my + b * (window.1 - mx))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, rss: u64, fds: u64, completed: u64) -> ServerSample {
        ServerSample { t_s, rss_kib: Some(rss), fds: Some(fds), completed, ..ServerSample::default() }
    }

    #[test]
    fn slopes() {
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None, "no spread in x");
        let s = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((s - 2.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn a_flat_server_passes_and_a_leaking_one_fails() {
        // 10 minutes of hold, a sample every 10 s; 2 calls complete per sample.
        let flat: Vec<ServerSample> =
            (0..=60).map(|k| at(k as f64 * 10.0, 30_000 + (k % 3) * 50, 400 + (k % 2), k * 2)).collect();
        let f = drift(&flat, Duration::from_secs(10), [0.0, 600.0], None, 1.0);
        assert_eq!(f.window_s, [300.0, 600.0]);
        assert_eq!(f.rss_kib.samples, 31);
        assert_eq!(f.calls_completed_in_window, 60);
        assert_eq!(f.pass, Some(true), "{f:#?}");
        assert!(f.rss_kib.slope_per_min.abs() < 10.0, "{f:#?}");

        // RSS grows 100 KiB a minute: 1000 KiB per 10 min on 30 MB is 3 % (limit 1 %).
        let leak: Vec<ServerSample> =
            (0..=60).map(|k| at(k as f64 * 10.0, 30_000 + k * 100 / 6, 400, k * 2)).collect();
        let f = drift(&leak, Duration::from_secs(10), [0.0, 600.0], None, 1.0);
        assert_eq!(f.rss_kib.pass, Some(false), "{f:#?}");
        assert!((f.rss_kib.slope_per_min - 100.0).abs() < 2.0, "{f:#?}");
        assert_eq!(f.fds.pass, Some(true));
        assert_eq!(f.pass, Some(false));

        // One descriptor per completed call: 12 a minute, far above both bounds.
        let fd_leak: Vec<ServerSample> =
            (0..=60).map(|k| at(k as f64 * 10.0, 30_000, 400 + k * 2, k * 2)).collect();
        let f = drift(&fd_leak, Duration::from_secs(10), [0.0, 600.0], None, 1.0);
        assert_eq!((f.rss_kib.pass, f.fds.pass), (Some(true), Some(false)), "{f:#?}");
        // 1 % of the mean per 10 minutes, or the per-call floor (12 calls a minute: 0.12).
        assert!((f.fds.allowed_per_min - (f.fds.mean / 1000.0).max(0.12)).abs() < 1e-9, "{f:#?}");

        // A warm-up of 450 s leaves the last 150 s (16 samples).
        let late = drift(&flat, Duration::from_secs(10), [0.0, 600.0], Some(Duration::from_secs(450)), 1.0);
        assert_eq!((late.window_s, late.rss_kib.samples), ([450.0, 600.0], 16));

        let few = drift(&flat[..3], Duration::from_secs(10), [0.0, 20.0], None, 1.0);
        assert_eq!(few.pass, None);
        assert!(summary(&few).contains("n/a"));
        assert!(summary(&f).contains("FAIL"));
    }

    #[test]
    fn csv_and_status_fields() {
        let mut s = at(1.5, 1234, 17, 3);
        s.threads = Some(4);
        s.live = 9;
        let text = csv(&[s, ServerSample { t_s: -0.1, ..ServerSample::default() }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "t_s,rss_kib,fds,threads,cpu_s,server_active_calls,harness_live_calls,calls_completed"
        );
        assert_eq!(lines[1], "1.500,1234,17,4,,,9,3");
        assert_eq!(lines[2], "-0.100,,,,,,0,0");
        assert_eq!(status_field("Name:\tx\nThreads:\t12\n", "Threads:"), Some(12));
        assert_eq!(status_field("Name:\tx\n", "Threads:"), None);
    }

    #[test]
    fn chart_is_written() {
        let dir = std::env::temp_dir().join(format!("callbridge-soak-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("soak.svg");
        let samples: Vec<ServerSample> = (0..=30).map(|k| at(k as f64 * 10.0, 30_000, 400, k)).collect();
        let f = drift(&samples, Duration::from_secs(10), [0.0, 300.0], None, 1.0);
        write_svg(&path, &samples, &f).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("RSS (MiB)") && svg.contains("open descriptors"));
        assert!(write_svg(&path, &[], &f).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
