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

/// Gauge: outbox rows waiting for Supabase, labelled `state` (`pending` or `parked`).
pub const OUTBOX_DEPTH: &str = "callbridge_outbox_depth";
/// Counter: outbox rows Supabase accepted, labelled `table`.
pub const OUTBOX_DELIVERED_TOTAL: &str = "callbridge_outbox_delivered_total";
/// Counter: failed deliveries that will be retried, labelled `table` and `reason`
/// (`http_5xx`, `http_408`, `http_429`, `timeout`, `connect`, `other`).
pub const OUTBOX_RETRIES_TOTAL: &str = "callbridge_outbox_retries_total";
/// Counter: rows Supabase rejected for good (4xx other than 408/429), kept as `parked`,
/// labelled `table`.
pub const OUTBOX_PARKED_TOTAL: &str = "callbridge_outbox_parked_total";
/// Histogram: from a row's enqueueing to its delivery (seconds).
pub const OUTBOX_DELIVERY_SECONDS: &str = "callbridge_outbox_delivery_seconds";
/// Counter: local store (SQLite) failures, labelled `op`.
pub const STORE_ERRORS_TOTAL: &str = "callbridge_store_errors_total";
/// Counter: post-call summaries, labelled `result` (`ok`, `skipped`, `failed`).
pub const SUMMARIES_TOTAL: &str = "callbridge_summaries_total";

/// Counter: HTTP API requests refused, labelled `reason` (`unauthorized`, `bad_signature`, …).
pub const API_REFUSED_TOTAL: &str = "callbridge_api_refused_total";

/// Counter: media streams refused for authentication, labelled `reason` (`bad_signature`,
/// `rate_limited`, or a stream-token error such as `replayed`).
pub const STREAMS_REFUSED_TOTAL: &str = "callbridge_streams_refused_total";

/// Counter: Realtime sessions replaced mid-call, labelled `reason` (`closed`,
/// `error_session_expired`, `session_cap`).
pub const UPSTREAM_RECONNECTS_TOTAL: &str = "callbridge_upstream_reconnects_total";

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
    let delivery_buckets = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(FIRST_AUDIO_LATENCY_SECONDS.into()), &latency_buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BARGE_IN_REACTION_SECONDS.into()), &reaction_buckets)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(OUTBOX_DELIVERY_SECONDS.into()), &delivery_buckets)
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
    describe_gauge!(OUTBOX_DEPTH, "Outbox rows waiting for Supabase, by state.");
    describe_counter!(OUTBOX_DELIVERED_TOTAL, "Outbox rows Supabase accepted, by table.");
    describe_counter!(OUTBOX_RETRIES_TOTAL, "Failed deliveries to be retried, by table and reason.");
    describe_counter!(OUTBOX_PARKED_TOTAL, "Rows Supabase rejected for good (kept, not deleted), by table.");
    describe_histogram!(OUTBOX_DELIVERY_SECONDS, Unit::Seconds, "From enqueueing a row to its delivery.");
    describe_counter!(STORE_ERRORS_TOTAL, "Local store (SQLite) failures, by operation.");
    describe_counter!(SUMMARIES_TOTAL, "Post-call summaries, by result.");
    describe_counter!(API_REFUSED_TOTAL, "HTTP API requests refused, by reason.");
    describe_counter!(STREAMS_REFUSED_TOTAL, "Media streams refused for authentication, by reason.");
    describe_counter!(UPSTREAM_RECONNECTS_TOTAL, "Realtime sessions replaced mid-call, by reason.");
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

/// Sets [`OUTBOX_DEPTH`] from a count of the store's rows.
pub fn outbox_depth(pending: u64, parked: u64) {
    gauge!(OUTBOX_DEPTH, "state" => "pending").set(pending as f64);
    gauge!(OUTBOX_DEPTH, "state" => "parked").set(parked as f64);
}

/// Counts a delivered row and its time in the outbox.
pub fn outbox_delivered(table: &str, waited: Duration) {
    counter!(OUTBOX_DELIVERED_TOTAL, "table" => table.to_owned()).increment(1);
    histogram!(OUTBOX_DELIVERY_SECONDS).record(waited.as_secs_f64());
}

/// Counts a delivery to retry; `reason` is a fixed label (see [`OUTBOX_RETRIES_TOTAL`]).
pub fn outbox_retried(table: &str, reason: &'static str) {
    counter!(OUTBOX_RETRIES_TOTAL, "table" => table.to_owned(), "reason" => reason).increment(1);
}

/// Counts a parked row.
pub fn outbox_parked(table: &str) {
    counter!(OUTBOX_PARKED_TOTAL, "table" => table.to_owned()).increment(1);
}

/// `op` is a fixed label such as `write`, `read` or `open`.
pub fn store_error(op: &'static str) {
    counter!(STORE_ERRORS_TOTAL, "op" => op).increment(1);
}

/// `result` is `ok`, `skipped` or `failed`.
pub fn summary(result: &'static str) {
    counter!(SUMMARIES_TOTAL, "result" => result).increment(1);
}

/// `reason` is a fixed label such as `unauthorized`.
pub fn api_refused(reason: &'static str) {
    counter!(API_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// `reason` is a fixed label (see [`STREAMS_REFUSED_TOTAL`]).
pub fn stream_refused(reason: &'static str) {
    counter!(STREAMS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// `reason` is a [`crate::core::call::LossReason::as_str`] label.
pub fn upstream_reconnect(reason: &'static str) {
    counter!(UPSTREAM_RECONNECTS_TOTAL, "reason" => reason).increment(1);
}
