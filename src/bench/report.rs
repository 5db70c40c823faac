//! What a run reports: the JSON objects and the stdout table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::latency::Percentiles;
use super::soak::SoakFigures;
use super::wire::BenchProvider;

/// One run's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Calls asked for.
    pub calls: usize,
    /// Provider dialect and format.
    pub provider: BenchProvider,
    /// Calls started per second during the ramp.
    pub ramp_per_s: f64,
    /// From the first call's start until every line's first dial resolved (s).
    pub ramp_s: f64,
    /// `--settle`: from the end of the ramp to the start of the hold (s).
    pub settle_s: f64,
    /// Length of the hold window (s).
    pub hold_s: f64,
    /// Dials (connect attempts), redials included.
    pub calls_started: u64,
    /// Calls that streamed to the end and hung up with `stop`.
    pub calls_completed: u64,
    /// Calls that failed (sum of `failures`).
    pub calls_failed: u64,
    /// Failed calls by reason (`connect timeout`, `rejected: HTTP 429`, `closed early (…)`, …);
    /// without `--expect-refusals` refused dials are failures too (`refused: HTTP 503 …`).
    pub failures: BTreeMap<String, u64>,
    /// `--expect-refusals`: refused dials are an expected outcome, not failures.
    pub refusals_expected: bool,
    /// Refused dials: HTTP 503 on the upgrade, or a close 1013/1001 before the bridge's first
    /// message. Counted and timed with or without `--expect-refusals`.
    pub calls_refused: u64,
    /// Refusals of a line's first dial (with every line dialled in the ramp and N admitted,
    /// this is lines − N).
    pub refused_first_dial: u64,
    /// Refused dials by reason (`HTTP 503 max_calls`, `HTTP 503 draining`, …).
    pub refusals: BTreeMap<String, u64>,
    /// Time from starting a dial's connect to learning it was refused (µs).
    pub refusal_us: Percentiles,
    /// Dials after a line's first (`--redial`, `--call-duration`).
    pub redials: u64,
    /// `--call-duration`: the range each call's length is drawn from (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_duration_ms: Option<[u64; 2]>,
    /// `--redial`: delay before a refused or failed line dials again (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redial_ms: Option<u64>,
    /// Calls streaming when the hold started (the per-call denominators use this).
    pub calls_live_at_hold_start: u64,
    /// Calls streaming when the hold ended.
    pub calls_live_at_hold_end: u64,
    /// `media` frames sent (20 ms each).
    pub frames_sent: u64,
    /// `media` messages received.
    pub frames_received: u64,
    /// Frames of completed calls that never came back: (sent − received audio) / 20 ms after the
    /// grace period.
    pub frames_lost: u64,
    /// Audio sent (ms).
    pub audio_sent_ms: u64,
    /// Audio received (ms).
    pub audio_received_ms: u64,
    /// Received frames beyond what was sent (no latency sample).
    pub frames_unmatched: u64,
    /// `mark` messages received.
    pub marks_received: u64,
    /// `mark` echoes sent.
    pub marks_echoed: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Messages other than `media`/`mark`/`clear` text.
    pub unexpected_messages: u64,
    /// Hung-up calls whose server close frame did not arrive within 2 s.
    pub close_timeouts: u64,
    /// Added round-trip latency per received frame during the hold and grace (µs).
    pub latency_us: Percentiles,
    /// The harness's own send-schedule lag, actual − due send time per frame (µs).
    pub send_lag_us: Percentiles,
    /// Barge-in reaction, with `--barge-in` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<BargeInFigures>,
    /// Server figures; absent without `--server-pid` / `--metrics-url`.
    pub server: Option<ServerFigures>,
    /// `--server-samples`: whether the server's RSS and descriptors levelled off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakFigures>,
    /// The harness's own cost.
    pub harness: HarnessFigures,
}

/// `--barge-in`: how fast the bridge reacts to the caller talking over echoed agent audio.
///
/// The reaction of one speech onset is the time from sending its first speech frame (after
/// silence) to receiving the bridge's `clear` for that call. It includes the simulator's VAD,
/// which reports speech after 60 ms of voiced audio (the third voiced frame, sent 40 ms after
/// the first), so about 40 ms of it is the caller's own schedule, not the bridge.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BargeInFigures {
    /// Speech per cycle (ms).
    pub speech_ms: u64,
    /// Silence per cycle (ms).
    pub silence_ms: u64,
    /// Speech onsets sent during the hold and resolved (a `clear` came, or none within 2 s).
    pub onsets: u64,
    /// Onsets that got no `clear` within 2 s.
    pub no_clear_within_2s: u64,
    /// Onset → `clear` (µs), one sample per onset that got one within 2 s.
    pub reaction_us: Percentiles,
}

/// Server resource use over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerFigures {
    /// `proc`, `metrics` or `proc+metrics`.
    pub source: &'static str,
    /// Server CPU time during the hold (ms).
    pub cpu_ms_hold: Option<f64>,
    /// RSS before the ramp (KiB).
    pub rss_idle_kib: Option<u64>,
    /// RSS at the end of the hold (KiB).
    pub rss_hold_kib: Option<u64>,
    /// Server CPU ms per call-second: `cpu_ms_hold / (calls live at hold start × hold s)`.
    pub cpu_ms_per_call_second: Option<f64>,
    /// `(rss_hold − rss_idle) / calls live at hold start` (KiB).
    pub kib_per_call: Option<f64>,
}

/// The harness's own cost over the hold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HarnessFigures {
    /// Harness CPU time during the hold (ms).
    pub cpu_ms_hold: Option<f64>,
    /// Harness CPU ms per call-second.
    pub cpu_ms_per_call_second: Option<f64>,
    /// Harness RSS at the end of the hold (KiB).
    pub rss_kib: Option<u64>,
    /// Calls per shard task.
    pub shard_size: usize,
    /// Audio bytes per 20 ms frame.
    pub frame_bytes: u64,
}

/// The machine and the options, written once per report.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Worker threads of the harness runtime.
    pub harness_threads: usize,
    /// Provider dialect and format.
    pub provider: BenchProvider,
    /// Target URL.
    pub url: String,
    /// The harness's command line.
    pub command_line: String,
}

impl Environment {
    /// Reads the machine's figures.
    pub(crate) fn detect(harness_threads: usize, provider: BenchProvider, url: &str) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            harness_threads,
            provider,
            url: url.to_owned(),
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// A single run's JSON: the run with its environment.
#[derive(Debug, Serialize)]
pub(crate) struct SingleJson<'a> {
    pub environment: &'a Environment,
    #[serde(flatten)]
    pub run: &'a RunReport,
}

/// A sweep's JSON: the environment and one object per run, in order.
#[derive(Debug, Serialize)]
pub(crate) struct SweepJson<'a> {
    pub environment: &'a Environment,
    pub runs: &'a [RunReport],
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The stdout table: one row per run, then failure and refusal reasons if any. With
/// `--barge-in`, a barge-in reaction section is added on the right, and the round-trip latency
/// shows `-` (no samples: barge-ins drop echoed audio, so received bytes no longer match sent
/// ones). With refusals (or `--expect-refusals`), a refusal section is added on the right.
pub(crate) fn table(runs: &[RunReport]) -> String {
    let barge_in = runs.iter().any(|r| r.barge_in.is_some());
    let refusals = runs.iter().any(|r| r.refusals_expected || r.calls_refused > 0);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:>6} {:>6} {:>5} {:>9} {:>9} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} | {:>8} | {:>9} {:>8} | {:>9}",
        "calls",
        "done",
        "fail",
        "frames tx",
        "rx",
        "lost",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max",
        "lag p99",
        "srv CPU",
        "KiB/call",
        "bench CPU"
    );
    if barge_in {
        let _ = write!(
            out,
            " | {:>6} {:>7} {:>7} {:>7} {:>7} {:>6}",
            "onsets", "p50 ms", "p90", "p99", "max", "no clr"
        );
    }
    if refusals {
        let _ = write!(out, " | {:>7} {:>7} {:>7} {:>7}", "refused", "p50 ms", "p99", "max");
    }
    out.push('\n');
    let _ = write!(
        out,
        "{:>6} {:>6} {:>5} {:>9} {:>9} {:>6} | {:>39} | {:>8} | {:>9} {:>8} | {:>9}",
        "", "", "", "", "", "", "added round-trip latency", "ms", "ms/call·s", "", "ms/call·s"
    );
    if barge_in {
        let _ = write!(out, " | {:>45}", "barge-in: speech onset → clear (incl. VAD)");
    }
    if refusals {
        let _ = write!(out, " | {:>31}", "refusals: dial → refused");
    }
    out.push('\n');
    for r in runs {
        let l = &r.latency_us;
        let lat = |us: u64| if l.samples == 0 { "-".to_owned() } else { ms(us) };
        let server = r.server.as_ref();
        let _ = write!(
            out,
            "{:>6} {:>6} {:>5} {:>9} {:>9} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} | {:>8} | {:>9} {:>8} | {:>9}",
            r.calls,
            r.calls_completed,
            r.calls_failed,
            r.frames_sent,
            r.frames_received,
            r.frames_lost,
            lat(l.p50_us),
            lat(l.p90_us),
            lat(l.p99_us),
            lat(l.p999_us),
            lat(l.max_us),
            ms(r.send_lag_us.p99_us),
            opt(server.and_then(|s| s.cpu_ms_per_call_second), 3),
            opt(server.and_then(|s| s.kib_per_call), 1),
            opt(r.harness.cpu_ms_per_call_second, 3),
        );
        if barge_in {
            let cell = |f: fn(&Percentiles) -> u64| match &r.barge_in {
                Some(b) if b.reaction_us.samples > 0 => ms(f(&b.reaction_us)),
                _ => "-".to_owned(),
            };
            let count = |f: fn(&BargeInFigures) -> u64| {
                r.barge_in.as_ref().map_or("-".to_owned(), |b| f(b).to_string())
            };
            let _ = write!(
                out,
                " | {:>6} {:>7} {:>7} {:>7} {:>7} {:>6}",
                count(|b| b.onsets),
                cell(|p| p.p50_us),
                cell(|p| p.p90_us),
                cell(|p| p.p99_us),
                cell(|p| p.max_us),
                count(|b| b.no_clear_within_2s),
            );
        }
        if refusals {
            let p = &r.refusal_us;
            let cell = |us: u64| if p.samples == 0 { "-".to_owned() } else { ms(us) };
            let _ = write!(
                out,
                " | {:>7} {:>7} {:>7} {:>7}",
                r.calls_refused,
                cell(p.p50_us),
                cell(p.p99_us),
                cell(p.max_us)
            );
        }
        out.push('\n');
    }
    for r in runs.iter().filter(|r| !r.failures.is_empty()) {
        let reasons: Vec<String> = r.failures.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "failures at {} calls: {}", r.calls, reasons.join(", "));
    }
    for r in runs.iter().filter(|r| !r.refusals.is_empty()) {
        let reasons: Vec<String> = r.refusals.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            out,
            "refusals at {} calls: {} (first dials: {}; {})",
            r.calls,
            reasons.join(", "),
            r.refused_first_dial,
            if r.refusals_expected { "expected" } else { "counted as failures" }
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_run(calls: usize, server: bool) -> RunReport {
        RunReport {
            calls,
            provider: BenchProvider::Twilio,
            ramp_per_s: 200.0,
            ramp_s: 1.0,
            settle_s: 0.0,
            hold_s: 20.0,
            calls_started: calls as u64,
            calls_completed: calls as u64 - 1,
            calls_failed: 1,
            failures: BTreeMap::from([("connect timeout".to_owned(), 1)]),
            refusals_expected: false,
            calls_refused: 0,
            refused_first_dial: 0,
            refusals: BTreeMap::new(),
            refusal_us: Percentiles::default(),
            redials: 0,
            call_duration_ms: None,
            redial_ms: None,
            calls_live_at_hold_start: calls as u64 - 1,
            calls_live_at_hold_end: calls as u64 - 1,
            frames_sent: 200_000,
            frames_received: 199_990,
            frames_lost: 3,
            audio_sent_ms: 4_000_000,
            audio_received_ms: 3_999_800,
            frames_unmatched: 0,
            marks_received: 40_000,
            marks_echoed: 40_000,
            clears: 0,
            unexpected_messages: 0,
            close_timeouts: 0,
            latency_us: Percentiles {
                samples: 190_000,
                p50_us: 1_250,
                p90_us: 2_000,
                p99_us: 4_321,
                p999_us: 9_000,
                max_us: 25_000,
                mean_us: 1_400.0,
            },
            send_lag_us: Percentiles { samples: 200_000, p99_us: 800, ..Percentiles::default() },
            barge_in: None,
            server: server.then_some(ServerFigures {
                source: "proc",
                cpu_ms_hold: Some(4000.0),
                rss_idle_kib: Some(10_000),
                rss_hold_kib: Some(30_000),
                cpu_ms_per_call_second: Some(1.0),
                kib_per_call: Some(100.0),
            }),
            soak: None,
            harness: HarnessFigures {
                cpu_ms_hold: Some(2000.0),
                cpu_ms_per_call_second: Some(0.5),
                rss_kib: Some(20_000),
                shard_size: 64,
                frame_bytes: 160,
            },
        }
    }

    #[test]
    fn table_has_one_aligned_row_per_run_and_lists_failures() {
        let t = table(&[sample_run(200, true), sample_run(500, false)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert!(lines[0].contains("calls") && lines[0].contains("p99.9") && lines[0].contains("KiB/call"));
        assert!(lines[1].contains("added round-trip latency"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&row[..6], ["200", "199", "1", "200000", "199990", "3"]);
        assert!(lines[2].contains(" 1.2 ") || lines[2].contains(" 1.3 "), "p50 in ms: {}", lines[2]);
        assert!(lines[2].contains("4.3") && lines[2].contains("25.0") && lines[2].contains("1.000"));
        assert!(lines[2].contains("100.0") && lines[2].contains("0.500"));
        assert!(lines[3].contains(" - "), "missing server figures show as '-': {}", lines[3]);
        let widths: Vec<usize> = lines[..4].iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "aligned: {widths:?}\n{t}");
        assert_eq!(lines[4], "failures at 200 calls: connect timeout: 1");
    }

    #[test]
    fn barge_in_adds_a_reaction_section() {
        let mut with = sample_run(100, true);
        with.latency_us = Percentiles::default();
        with.barge_in = Some(BargeInFigures {
            speech_ms: 3000,
            silence_ms: 2000,
            onsets: 380,
            no_clear_within_2s: 2,
            reaction_us: Percentiles {
                samples: 378,
                p50_us: 61_500,
                max_us: 95_000,
                ..Percentiles::default()
            },
        });
        let t = table(&[with.clone(), sample_run(200, false)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("onsets") && lines[0].contains("no clr"), "{t}");
        assert!(lines[1].contains("barge-in"), "{t}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&row[6..11], ["|", "-", "-", "-", "-"], "no latency samples: {t}");
        assert!(lines[2].ends_with("|    380    61.5     0.0     0.0    95.0      2"), "{t}");
        assert!(lines[3].trim_end().ends_with("|      -       -       -       -       -      -"), "{t}");
        let widths: Vec<usize> = lines[..4].iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "aligned: {widths:?}\n{t}");
        let env = Environment::detect(1, BenchProvider::Twilio, "ws://127.0.0.1:1/media/twilio");
        let json = serde_json::to_value(SingleJson { environment: &env, run: &with }).unwrap();
        assert_eq!(json["barge_in"]["reaction_us"]["p50_us"], 61_500);
        assert_eq!(json["barge_in"]["no_clear_within_2s"], 2);
        let plain = sample_run(100, true);
        let json = serde_json::to_value(SingleJson { environment: &env, run: &plain }).unwrap();
        assert!(json.get("barge_in").is_none(), "absent without --barge-in");
    }

    #[test]
    fn refusals_add_a_section_and_a_reason_line() {
        let mut over = sample_run(400, true);
        over.refusals_expected = true;
        over.calls_refused = 200;
        over.refused_first_dial = 200;
        over.refusals = BTreeMap::from([("HTTP 503 max_calls".to_owned(), 200)]);
        over.refusal_us = Percentiles {
            samples: 200,
            p50_us: 1_200,
            p99_us: 4_500,
            max_us: 7_000,
            ..Percentiles::default()
        };
        let t = table(&[over.clone(), sample_run(200, true)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("| refused  p50 ms     p99     max"), "{t}");
        assert!(lines[1].ends_with("refusals: dial → refused"), "{t}");
        assert!(lines[2].ends_with("|     200     1.2     4.5     7.0"), "{t}");
        assert!(lines[3].ends_with("|       0       -       -       -"), "{t}");
        let widths: Vec<usize> = lines[..4].iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "aligned: {widths:?}\n{t}");
        assert!(
            t.contains("refusals at 400 calls: HTTP 503 max_calls: 200 (first dials: 200; expected)"),
            "{t}"
        );
        let env = Environment::detect(1, BenchProvider::Twilio, "ws://127.0.0.1:1/media/twilio");
        let json = serde_json::to_value(SingleJson { environment: &env, run: &over }).unwrap();
        assert_eq!(json["calls_refused"], 200);
        assert_eq!(json["refusal_us"]["p99_us"], 4_500);
        assert_eq!(json["refusals"]["HTTP 503 max_calls"], 200);
        assert_eq!(json["refusals_expected"], true);
        assert!(json.get("call_duration_ms").is_none() && json.get("soak").is_none());
        // No refusals anywhere: no section.
        assert!(!table(&[sample_run(200, true)]).contains("refused"));
    }

    #[test]
    fn json_shapes() {
        let env = Environment::detect(1, BenchProvider::Twilio, "ws://127.0.0.1:1/media/twilio");
        assert!(env.nproc >= 1);
        let run = sample_run(200, true);
        let single: serde_json::Value =
            serde_json::to_value(SingleJson { environment: &env, run: &run }).unwrap();
        assert_eq!(single["calls"], 200);
        assert_eq!(single["provider"], "twilio");
        assert_eq!(single["environment"]["harness_threads"], 1);
        assert_eq!(single["latency_us"]["p99_us"], 4321);
        assert_eq!(single["server"]["kib_per_call"], 100.0);
        assert_eq!(single["failures"]["connect timeout"], 1);
        let runs = [run, sample_run(500, false)];
        let sweep: serde_json::Value =
            serde_json::to_value(SweepJson { environment: &env, runs: &runs }).unwrap();
        assert_eq!(sweep["runs"].as_array().unwrap().len(), 2);
        assert!(sweep["runs"][1]["server"].is_null());
        assert_eq!(sweep["environment"]["url"], "ws://127.0.0.1:1/media/twilio");
    }
}
