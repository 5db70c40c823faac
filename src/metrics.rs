//! Every metric, declared once. Names follow `callbridge_<name>_<unit>`, counters end in
//! `_total`, labels are enums (never a call SID or a phone number), and every dropped item is
//! counted with a reason.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: calls with an open media stream.
pub const ACTIVE_CALLS: &str = "callbridge_active_calls";
/// Counter: calls ended, labelled `reason` ([`crate::core::call::EndReason::as_str`]).
pub const CALLS_TOTAL: &str = "callbridge_calls_total";
/// Counter: media streams refused before a call began, labelled `reason` ([`RefuseReason`]).
pub const CALLS_REFUSED_TOTAL: &str = "callbridge_calls_refused_total";
/// Counter: caller media frames received from the provider, labelled `provider`.
pub const FRAMES_IN_TOTAL: &str = "callbridge_frames_in_total";
/// Counter: agent media frames sent to the provider, labelled `provider`.
pub const FRAMES_OUT_TOTAL: &str = "callbridge_frames_out_total";
/// Counter: caller barge-ins that interrupted agent audio.
pub const BARGE_INS_TOTAL: &str = "callbridge_barge_ins_total";
/// Counter: malformed or unexpected provider messages, labelled `provider` and `kind`.
pub const PROVIDER_ERRORS_TOTAL: &str = "callbridge_provider_errors_total";
/// Counter: errors from the Realtime API or its socket, labelled `kind`.
pub const UPSTREAM_ERRORS_TOTAL: &str = "callbridge_upstream_errors_total";
/// Counter: items dropped on purpose, labelled `reason`; `outbound_overflow` counts 20 ms
/// frames of agent audio, every other reason counts messages.
pub const DROPPED_TOTAL: &str = "callbridge_dropped_total";
/// Counter: silence inserted for gaps in caller audio (ms).
pub const GAP_FILL_MS_TOTAL: &str = "callbridge_gap_fill_ms_total";
/// Histogram: from the caller's end of speech to the first agent frame sent (seconds).
pub const FIRST_AUDIO_LATENCY_SECONDS: &str = "callbridge_first_audio_latency_seconds";
/// Histogram: from reading `speech_started` to writing the `clear` to the provider (seconds).
pub const BARGE_IN_REACTION_SECONDS: &str = "callbridge_barge_in_reaction_seconds";

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns the handle `/metrics` renders.
/// Safe to call from several threads and several times.
///
/// Errors: another global `metrics` recorder was installed first.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE.get_or_init(build).clone()
}

fn build() -> Result<PrometheusHandle, String> {
    let latency_buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let reaction_buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(FIRST_AUDIO_LATENCY_SECONDS.into()), &latency_buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BARGE_IN_REACTION_SECONDS.into()), &reaction_buckets)
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(ACTIVE_CALLS, "Calls with an open media stream.");
    describe_counter!(CALLS_TOTAL, "Calls ended, by end reason.");
    describe_counter!(CALLS_REFUSED_TOTAL, "Media streams refused before a call began, by reason.");
    describe_counter!(FRAMES_IN_TOTAL, "Caller media frames received from the provider.");
    describe_counter!(FRAMES_OUT_TOTAL, "Agent media frames sent to the provider.");
    describe_counter!(BARGE_INS_TOTAL, "Caller barge-ins that interrupted agent audio.");
    describe_counter!(PROVIDER_ERRORS_TOTAL, "Malformed or unexpected provider messages, by kind.");
    describe_counter!(UPSTREAM_ERRORS_TOTAL, "Errors from the Realtime API or its socket, by kind.");
    describe_counter!(DROPPED_TOTAL, "Items dropped on purpose, by reason.");
    describe_counter!(GAP_FILL_MS_TOTAL, Unit::Milliseconds, "Silence inserted for gaps in caller audio.");
    describe_histogram!(
        FIRST_AUDIO_LATENCY_SECONDS,
        Unit::Seconds,
        "From the caller's end of speech to the first agent frame sent."
    );
    describe_histogram!(
        BARGE_IN_REACTION_SECONDS,
        Unit::Seconds,
        "From speech_started to the clear sent to the provider."
    );
}

/// Why a stream was refused (label of [`CALLS_REFUSED_TOTAL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The concurrent-call cap ([`crate::config::ENV_MAX_CALLS`]) is reached.
    MaxCalls,
    /// The server is shutting down.
    Draining,
}

impl RefuseReason {
    /// The label value: `max_calls` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::MaxCalls => "max_calls",
            RefuseReason::Draining => "draining",
        }
    }
}

/// Counts a new call in [`ACTIVE_CALLS`]; [`call_ended_label`] takes it off.
pub fn call_started() {
    gauge!(ACTIVE_CALLS).increment(1.0);
}

/// `reason` is a [`crate::core::call::EndReason::as_str`] label.
pub fn call_ended_label(reason: &'static str) {
    gauge!(ACTIVE_CALLS).decrement(1.0);
    counter!(CALLS_TOTAL, "reason" => reason).increment(1);
}

/// Counts a refused stream in [`CALLS_REFUSED_TOTAL`].
pub fn call_refused(reason: RefuseReason) {
    counter!(CALLS_REFUSED_TOTAL, "reason" => reason.as_str()).increment(1);
}

/// The caller-frames counter for one provider (resolve once per call, then increment).
pub fn frames_in_counter(provider: &'static str) -> metrics::Counter {
    counter!(FRAMES_IN_TOTAL, "provider" => provider)
}

/// The agent-frames counter for one provider (resolve once per call, then increment).
pub fn frames_out_counter(provider: &'static str) -> metrics::Counter {
    counter!(FRAMES_OUT_TOTAL, "provider" => provider)
}

/// Counts a barge-in and records its reaction time in [`BARGE_IN_REACTION_SECONDS`].
pub fn barge_in(reaction: Duration) {
    counter!(BARGE_INS_TOTAL).increment(1);
    histogram!(BARGE_IN_REACTION_SECONDS).record(reaction.as_secs_f64());
}

/// Records a first-audio latency in [`FIRST_AUDIO_LATENCY_SECONDS`].
pub fn first_audio(latency: Duration) {
    histogram!(FIRST_AUDIO_LATENCY_SECONDS).record(latency.as_secs_f64());
}

/// `kind` is a fixed label such as a decode error kind, `binary_frame` or `media_before_start`.
pub fn provider_error(provider: &'static str, kind: &'static str) {
    counter!(PROVIDER_ERRORS_TOTAL, "provider" => provider, "kind" => kind).increment(1);
}

/// `kind` is a fixed label: `connect`, `closed`, `decode_*`, `api_fatal`, `api_recoverable`.
pub fn upstream_error(kind: &'static str) {
    counter!(UPSTREAM_ERRORS_TOTAL, "kind" => kind).increment(1);
}

/// `reason` is a fixed label such as a [`crate::core::call::DropReason`] or `records_overflow`.
pub fn dropped(reason: &'static str, n: u64) {
    counter!(DROPPED_TOTAL, "reason" => reason).increment(n);
}

/// Adds inserted silence (ms) to [`GAP_FILL_MS_TOTAL`].
pub fn gap_filled(ms: u64) {
    counter!(GAP_FILL_MS_TOTAL).increment(ms);
}
