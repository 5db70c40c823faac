#!/usr/bin/env bash
# Overload test of the bridge on this machine (loopback only): does a server at MAX_CALLS refuse
# the excess quickly while the calls it admitted keep their latency?
#
#   scripts/overload.sh [max_calls]          # default 200
#
# Builds the release binary once (a private copy under target/overload/, so rebuilds of
# target/ by others do not change it mid-test), then runs scripts/bench.sh, each run with a fresh
# Realtime simulator (echo mode) and `callbridge serve` with MAX_CALLS=N:
#
#   baseline   N lines: every call admitted (the unloaded reference)
#   burst      2N lines dialled within the ramp: N admitted, N refused once (HTTP 503)
#   sustained  2N lines, refused lines redial every $REDIAL through the hold: the server refuses
#              about N streams per redial period *while* the admitted calls are measured
#
# The burst's refusals all happen during the ramp, before the hold in which latency is measured,
# so only the sustained run tests "admitted calls keep their latency under refusals".
# The three runs are interleaved and repeated $REPEATS times; medians are quoted (the machine
# is noisy). Every JSON report, the bench output and the server logs go to
# target/overload/max-N/. Prints refusal latency (dial start → HTTP 503 known), admitted calls'
# added round-trip latency (p50/p99) per run and the p99 ratios against the baseline, then
# PASS/FAIL against the targets: refusal max < 100 ms, admitted p99 within +20 %.
#
# The machine may be shared: before each run the script waits up to $QUIET_WAIT s (60) for the
# CPUs to be less than $QUIET_PCT % (25) busy, and logs what it saw in loadavg.txt.
#
# Every run lets its calls stream $SETTLE (3s) after the ramp before the measured hold starts, so
# the baseline's last calls are not still setting up when latency is sampled (in a 2N run the
# admitted calls are older by the time the refused half has been dialled).
#
# Environment: DURATION (hold, default 20s), REPEATS (3), REDIAL (1s), RAMP (calls/s, 200),
# SETTLE (3s), QUIET_PCT, QUIET_WAIT.
set -euo pipefail
cd "$(dirname "$0")/.."
# private_callbridge
source scripts/lib/bench-procs.sh

n=${1:-200}
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/overload.sh [max_calls]" >&2
    exit 2
fi
duration=${DURATION:-20s}
repeats=${REPEATS:-3}
redial=${REDIAL:-1s}
ramp=${RAMP:-200}
settle=${SETTLE:-3s}
out=target/overload/max-$n
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.txt
echo "$(date -u +%FT%TZ) $(nproc) CPUs, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$out/loadavg.txt"

private_callbridge "$out"

# Percent of CPU time busy over one second (between runs: other work on the machine).
busy_pct() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    local total=0 idle i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Waits up to $QUIET_WAIT s for the machine to be quiet (< $QUIET_PCT % busy); prints the last
# reading.
wait_quiet() {
    local busy waited=0
    busy=$(busy_pct)
    while ((busy >= ${QUIET_PCT:-25} && waited < ${QUIET_WAIT:-60})); do
        busy=$(busy_pct)
        waited=$((waited + 1))
    done
    echo "$busy"
}

# One run: name, bench arguments...
run() {
    local name=$1
    shift
    # Other work on the machine shows here: CPU busy just before the run (after waiting up to
    # $QUIET_WAIT s for it to drop under $QUIET_PCT %) and the load averages.
    local busy
    busy=$(wait_quiet)
    echo "== $name: $* (CPU busy before: $busy %, load average $(cut -d' ' -f1-3 /proc/loadavg))" |
        tee -a "$out/loadavg.txt"
    if ! BENCH_BIN="$out/callbridge" BENCH_LOGS="$out/logs/$name" MAX_CALLS="$n" \
        scripts/bench.sh --duration "$duration" --ramp "$ramp" --settle "$settle" \
        --json "$out/$name.json" "$@" \
        >"$out/$name.txt" 2>&1; then
        echo "run $name failed; the end of $out/$name.txt:" >&2
        tail -20 "$out/$name.txt" >&2
        exit 1
    fi
    # The table (and reasons) without the harness's progress lines.
    grep -v -e '^bench:' -e '^==' "$out/$name.txt" | sed 's/^/   /'
}

# The harness deals lines round-robin to shards (one task and one 20 ms tick phase each). With
# half the shard size, the baseline's N lines get the same shards and phases as the N admitted
# lines of a 2N run, so both send on the same schedule.
for r in $(seq 1 "$repeats"); do
    run "baseline-$r" --calls "$n" --shard-size 8
    run "burst-$r" --calls "$((2 * n))" --shard-size 16 --expect-refusals
    run "sustained-$r" --calls "$((2 * n))" --shard-size 16 --expect-refusals --redial "$redial"
done

# Per-run rows and medians, from the JSON reports (file names: <run>-<repeat>.json).
jq_lib='
  def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def ms: if . == null then "-" else (. / 1000 * 100 | round / 100 | tostring) end;
  def x100: . * 100 | round / 100;
  def runs: [inputs | . + (input_filename | capture("(?<kind>[a-z]+)-(?<rep>[0-9]+)\\.json$")
                           | {kind, rep: (.rep | tonumber)})];
  def of($k): map(select(.kind == $k));
'
{
    echo "MAX_CALLS=$n, ramp $ramp/s, settle $settle, hold $duration, sustained redial $redial; latency = added round trip of admitted calls"
    echo
    jq -n -r "$jq_lib"'
      runs | sort_by(.kind, .rep)
      | (["run", "rep", "lines", "admitted", "refused", "1st-dial", "refusal-p50-ms", "p99", "max",
          "latency-p50-ms", "p99", "failed", "lost"] | @tsv),
        (.[] | [.kind, .rep, .calls, .calls_live_at_hold_start, .calls_refused, .refused_first_dial,
                (if .refusal_us.samples > 0 then (.refusal_us.p50_us | ms) else "-" end),
                (if .refusal_us.samples > 0 then (.refusal_us.p99_us | ms) else "-" end),
                (if .refusal_us.samples > 0 then (.refusal_us.max_us | ms) else "-" end),
                (.latency_us.p50_us | ms), (.latency_us.p99_us | ms), .calls_failed, .frames_lost]
               | @tsv)
    ' "$out"/*.json | column -t -s $'\t'
    echo
    jq -n -r "$jq_lib"'
      runs as $runs
      | ($runs | of("baseline") | map(.latency_us.p99_us) | median) as $base99
      | "medians over \($runs | of("baseline") | length) repeats:",
        (["baseline", "burst", "sustained"][] as $k
         | ($runs | of($k)) as $r
         | ($r | map(.latency_us.p99_us) | median) as $p99
         | "  \($k): admitted p50 \($r | map(.latency_us.p50_us) | median | ms) ms, p99 \($p99 | ms) ms"
           + (if $k == "baseline" then "" else
              " (× \($p99 / $base99 | x100) of the baseline); refused \($r | map(.calls_refused) | median) (first dials \($r | map(.refused_first_dial) | median)), refusal p50 \($r | map(.refusal_us.p50_us) | median | ms) ms, p99 \($r | map(.refusal_us.p99_us) | median | ms) ms, max \($r | map(.refusal_us.max_us) | max | ms) ms (max over runs)" end)),
        "",
        ([$runs[] | select(.kind != "baseline") | .refusal_us.max_us] | max) as $rmax
        | ([$runs[] | select(.kind != "baseline") | .refusal_us.p99_us] | max) as $r99
        | (($runs | of("burst") | map(.latency_us.p99_us) | median) / $base99) as $burst
        | (($runs | of("sustained") | map(.latency_us.p99_us) | median) / $base99) as $sust
        | ([$runs[] | .calls_failed] | add) as $failed
        | "refusals within 100 ms (max over every overloaded run \($rmax | ms) ms, worst p99 \($r99 | ms) ms): \(if $rmax < 100000 then "PASS" else "FAIL" end)",
          "admitted p99 within +20 % of the baseline (burst × \($burst | x100), sustained × \($sust | x100)): \(if $burst <= 1.2 and $sust <= 1.2 then "PASS" else "FAIL" end)",
          "failed calls over all runs: \($failed)\(if $failed == 0 then "" else " (reasons in the JSON reports)" end)"
    ' "$out"/*.json
} | tee "$out/summary.txt"
echo "== reports: $out/ (summary.txt, <run>-<repeat>.json, <run>-<repeat>.txt, logs/)"
