#!/usr/bin/env bash
# Soak test of the bridge on this machine (loopback only): a steady load with call churn for a
# bounded time, watching whether the server's memory and descriptors level off.
#
#   scripts/soak.sh [duration] [calls]      # defaults: 10m, 200 (duration at most 10m)
#
# Builds the release binary once (a private copy under target/soak/), then runs scripts/bench.sh
# (a fresh Realtime simulator in echo mode and `callbridge serve`, separate processes) with
# `callbridge bench --calls N --duration D --call-duration 30s..60s`: N lines, each call lasting
# 30–60 s, then hanging up (`stop`, close) and replaced at once, so the server sees churn
# (about N / 45 new calls a second), not only long calls. The harness samples the *server*
# process (`--server-pid`: /proc/PID/status VmRSS and Threads, /proc/PID/fd, CPU) every
# $SAMPLE_EVERY into a CSV and judges the hold after a warm-up ($WARM_UP; default its first half):
# the least-squares slope of RSS and of open descriptors, PASS when the growth over 10 minutes
# at that slope stays under $DRIFT_LIMIT % of the mean (descriptors: or under 1 per 100 calls
# completed). Exit status 1 on FAIL.
#
# Outputs in target/soak/: soak-N-D.csv (samples), soak-N-D.svg (chart), soak-N-D.json (bench
# report with the verdict under "soak"), soak-N-D.txt (bench output), logs/.
#
# Environment: CALL_DURATION (30s..60s), SAMPLE_EVERY (5s), DRIFT_LIMIT (1, percent of the mean
# per 10 minutes), WARM_UP (half the duration), MAX_CALLS (5000: no refusals wanted here),
# RAMP (calls/s, 200).
set -euo pipefail
cd "$(dirname "$0")/.."
# private_callbridge
source scripts/lib/bench-procs.sh

duration=${1:-10m}
calls=${2:-200}
if ! [[ "$calls" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/soak.sh [duration] [calls]" >&2
    exit 2
fi
call_duration=${CALL_DURATION:-30s..60s}
sample_every=${SAMPLE_EVERY:-5s}
drift_limit=${DRIFT_LIMIT:-1}
ramp=${RAMP:-200}
out=target/soak
mkdir -p "$out"
name="soak-$calls-$duration"

private_callbridge "$out"

echo "== soak: $calls calls for $duration, each call $call_duration, samples every $sample_every → $out/$name.*"
status=0
BENCH_BIN="$out/callbridge" BENCH_LOGS="$out/logs" MAX_CALLS="${MAX_CALLS:-5000}" \
    scripts/bench.sh --calls "$calls" --duration "$duration" --ramp "$ramp" \
    --call-duration "$call_duration" \
    --server-samples "$out/$name.csv" --sample-every "$sample_every" --drift-limit "$drift_limit" \
    ${WARM_UP:+--warm-up "$WARM_UP"} \
    --samples-chart "$out/$name.svg" --json "$out/$name.json" 2>&1 | tee "$out/$name.txt" || status=$?

if [[ ! -s "$out/$name.json" ]]; then
    echo "soak: the run did not finish (exit status $status); see $out/$name.txt" >&2
    exit 1
fi
jq -r '
  "soak: \(.calls) lines, \(.calls_completed) calls completed, \(.calls_failed) failed, \(.close_timeouts) close timeouts; added latency p50 \(.latency_us.p50_us / 1000) ms, p99 \(.latency_us.p99_us / 1000) ms",
  "soak: RSS \(.soak.rss_kib.slope_per_min * 10 | round / 10) KiB/min (\(.soak.rss_kib.pct_per_10min * 100 | round / 100) % per 10 min), fds \(.soak.fds.slope_per_min * 100 | round / 100) /min (\(.soak.fds.pct_per_10min * 100 | round / 100) % per 10 min): \(if .soak.pass == true then "PASS" elif .soak.pass == false then "FAIL" else "n/a" end)"
' "$out/$name.json"
echo "== outputs: $out/$name.{csv,svg,json,txt}"
exit "$status"
