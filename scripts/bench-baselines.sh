#!/usr/bin/env bash
# Side-by-side baselines: the same `callbridge bench` run against three bridges on this machine,
# in the same session, so their costs compare directly (docs/perf/baselines.md):
#
#   callbridge  `callbridge serve`, configured exactly as scripts/bench.sh configures it
#   floor       examples/relay_floor.rs: the least a tokio + tokio-tungstenite bridge must do
#   node        bench/baselines/node-bridge: the common Node.js `ws` + JSON bridge
#
# Builds the release binary and the floor (private copies under target/baselines/, so builds by
# others in the shared target/ do not swap them mid-run), runs `npm ci` for the Node bridge
# (skipped, with a message, without node/npm), and starts ONE Realtime simulator in echo mode.
# Then, REPEATS times (default 3), each bridge is started fresh on a free loopback port and
# loaded by the same harness invocation with --server-pid pointing at it, writing
# out/baselines/<name>-<round>.json; the order of the three rotates from round to round to
# spread machine noise. Finally a table of medians over the rounds (server CPU per call-second
# and its ratio to callbridge's, p50/p99 added round trip, lost frames, failed calls, KiB per
# call) is printed and written to out/baselines/summary.md.
#
#   scripts/bench-baselines.sh                                   # --calls 200 --duration 15s
#   scripts/bench-baselines.sh --calls 400 --duration 15s
#   REPEATS=5 scripts/bench-baselines.sh --calls 200 --ramp 100
#
# Arguments go to every `callbridge bench` run; --calls and --duration default to 200 and 15s.
# The script sets --url, --server-pid and --json itself. Only the plain Twilio μ-law echo path
# is comparable (the baselines do no transcoding, barge-in or refusals), so --provider,
# --barge-in, --sweep, --metrics-url and the soak options are refused.
#
#   REPEATS=n        rounds (default 3)
#   BASELINES="callbridge floor node"   which bridges, in round-1 order
#   BENCH_BIN=path   callbridge binary to use instead of building one
#   FLOOR_BIN=path   relay_floor binary to use instead of building one
#   BENCH_LOGS=dir   bridge, simulator and harness logs (default out/baselines/logs)
#   QUIET_PCT=10 QUIET_WAIT=120   before each run, wait up to QUIET_WAIT s until processes
#                    other than ours use at most QUIET_PCT % of the machine (shared machines)
#   NOISY_PCT=15 NOISY_RETRIES=2  rerun a run during which they used more than NOISY_PCT %
#
# MAX_CALLS (default 5000), UPGRADES_PER_IP_PER_MINUTE (default 0) and AUDIO_MODE reach
# callbridge as with scripts/bench.sh. Every background process is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# raise_fd_limit, free_port, stop_pids, wait_for
source scripts/lib/bench-procs.sh

repeats=${REPEATS:-3}
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "REPEATS must be a positive integer" >&2; exit 2; }
read -r -a bridges <<<"${BASELINES:-callbridge floor node}"
for b in "${bridges[@]}"; do
    case "$b" in
    callbridge | floor | node) ;;
    *) echo "BASELINES: unknown bridge '$b' (callbridge, floor, node)" >&2; exit 2 ;;
    esac
done

bench_args=("$@")
has_calls=false has_duration=false
for arg in "$@"; do
    case "$arg" in
    --calls | --calls=*) has_calls=true ;;
    --duration | --duration=*) has_duration=true ;;
    --url | --url=* | --server-pid | --server-pid=* | --json | --json=*)
        echo "$arg is set by this script" >&2
        exit 2
        ;;
    --provider | --provider=* | --barge-in | --sweep | --sweep=* | --chart | --chart=* | \
        --metrics-url | --metrics-url=* | --server-samples | --server-samples=* | --expect-refusals)
        echo "$arg is not comparable across the baselines; use scripts/bench.sh for it" >&2
        exit 2
        ;;
    esac
done
$has_calls || bench_args=(--calls 200 "${bench_args[@]}")
$has_duration || bench_args=(--duration 15s "${bench_args[@]}")

raise_fd_limit
echo "== open-file limit: $(ulimit -n)"

out=out/baselines
logs=${BENCH_LOGS:-$out/logs}
bindir=target/baselines
mkdir -p "$out" "$logs" "$bindir"
rm -f "$out"/*.json "$out/runs.tsv" "$out/summary.md"

if [[ -n "${BENCH_BIN:-}" && -n "${FLOOR_BIN:-}" ]]; then
    bin=$BENCH_BIN floor=$FLOOR_BIN
else
    # Two builds: an example brings in dev-dependencies, whose features would otherwise be
    # unified into the server binary and make it differ from scripts/bench.sh's.
    echo "== cargo build --release"
    cargo build --release --locked
    echo "== cargo build --release --example relay_floor"
    cargo build --release --locked --example relay_floor
    cp target/release/callbridge "$bindir/callbridge"
    cp target/release/examples/relay_floor "$bindir/relay_floor"
    bin=${BENCH_BIN:-$bindir/callbridge} floor=${FLOOR_BIN:-$bindir/relay_floor}
fi
for f in "$bin" "$floor"; do
    [[ -x "$f" ]] || { echo "$f is not an executable" >&2; exit 2; }
done

node_dir=bench/baselines/node-bridge
node_skipped=""
if [[ " ${bridges[*]} " == *" node "* ]]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        node_skipped="node/npm not found"
    elif ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$logs/npm-ci.log" 2>&1; then
        node_skipped="npm ci failed (see $logs/npm-ci.log)"
    fi
    if [[ -n "$node_skipped" ]]; then
        echo "== SKIPPING the Node.js bridge: $node_skipped; running the others" >&2
        kept=()
        for b in "${bridges[@]}"; do [[ "$b" == node ]] || kept+=("$b"); done
        bridges=("${kept[@]}")
    else
        echo "== node $(node --version), ws $(node -p "require('./$node_dir/node_modules/ws/package.json').version")"
    fi
fi
((${#bridges[@]} > 0)) || { echo "no bridge left to measure" >&2; exit 2; }

sim_pid=""
bridge_pid=""
cleanup() {
    stop_pids "$bridge_pid" "$sim_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sim_port=$(free_port)
echo "== Realtime simulator (echo) on 127.0.0.1:$sim_port"
RUST_LOG=warn "$bin" sim-realtime --echo --listen "127.0.0.1:$sim_port" >"$logs/sim.log" 2>&1 &
sim_pid=$!
wait_for "the simulator" bash -c "exec 3<>/dev/tcp/127.0.0.1/$sim_port"
upstream="ws://127.0.0.1:$sim_port/v1/realtime"

# Starts bridge $1 (round $2) on a free port; sets bridge_pid and url.
start_bridge() {
    local name=$1 round=$2 port
    port=$(free_port)
    local log="$logs/$name-$round.log"
    case "$name" in
    callbridge)
        start_callbridge "$bin" "$port" "$upstream" "$logs/data" "$log"
        bridge_pid=$server_pid
        url="ws://127.0.0.1:$port/media/twilio"
        wait_for "callbridge" curl -fsS "http://127.0.0.1:$port/healthz"
        ;;
    floor)
        OPENAI_API_KEY=sim-key-not-a-secret \
            "$floor" --listen "127.0.0.1:$port" --upstream "$upstream?model=gpt-realtime" >"$log" 2>&1 &
        bridge_pid=$!
        url="ws://127.0.0.1:$port/media"
        wait_for "the relay floor" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
        ;;
    node)
        HOST=127.0.0.1 PORT="$port" OPENAI_API_KEY=sim-key-not-a-secret OPENAI_REALTIME_URL="$upstream" \
            node "$node_dir/bridge.js" >"$log" 2>&1 &
        bridge_pid=$!
        url="ws://127.0.0.1:$port/media"
        wait_for "the Node.js bridge" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
        ;;
    esac
}

# CPU ticks (USER_HZ) the whole machine spent busy, excluding steal; and those of one process.
machine_ticks() {
    local _ user nice system idle iowait irq softirq
    read -r _ user nice system idle iowait irq softirq _ </proc/stat
    echo $((user + nice + system + irq + softirq))
}
proc_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat") 2>/dev/null || { echo 0; return; }
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}
nproc=$(nproc)

# Other people's builds on a shared machine skew every figure. Before a run: wait up to
# QUIET_WAIT seconds (default 120) until processes other than ours have used at most QUIET_PCT
# percent (default 10) of the machine for 3 s in a row. After a run: if other processes used
# more than NOISY_PCT percent (default 15) of the machine during it, run it again, at most
# NOISY_RETRIES times (default 2). The figure is shown per run in the summary.
wait_quiet() {
    local deadline=$((SECONDS + ${QUIET_WAIT:-120})) quiet=0 said=false b0 s0 p0 b1 s1 p1 pct
    while ((quiet < 3)); do
        b0=$(machine_ticks) s0=$(proc_ticks "$sim_pid") p0=$(proc_ticks "$bridge_pid")
        sleep 1
        b1=$(machine_ticks) s1=$(proc_ticks "$sim_pid") p1=$(proc_ticks "$bridge_pid")
        pct=$(((b1 - b0 - (s1 - s0) - (p1 - p0)) / nproc))
        if ((pct <= ${QUIET_PCT:-10})); then
            quiet=$((quiet + 1))
            continue
        fi
        quiet=0
        if ((SECONDS >= deadline)); then
            echo "== the machine is still busy (other processes: ${pct}% of it); going on" >&2
            return 0
        fi
        $said || echo "== waiting for the machine to quiet down (other processes: ${pct}% of it)" >&2
        said=true
    done
}

# One run of bridge $1 in round $2: a fresh bridge, the harness, the bridge stopped. Appends
# "name round wall_s machine_ticks sim_ticks bridge_ticks harness_cpu_s" to run_line and sets
# other_pct (share of the machine other processes used meanwhile). Fails if the bridge did not
# start or the harness failed.
run_one() {
    local name=$1 round=$2 json="$out/$1-$2.json" t0 t1 b0 b1 s0 s1 p0 p1 hu hs ok=0
    rm -f "$json"
    other_pct=0 run_line=""
    if ! start_bridge "$name" "$round"; then
        stop_pids "$bridge_pid"
        bridge_pid=""
        return 1
    fi
    wait_quiet
    echo "== $name (pid $bridge_pid) ← callbridge bench ${bench_args[*]} --url $url"
    t0=$EPOCHREALTIME b0=$(machine_ticks) s0=$(proc_ticks "$sim_pid") p0=$(proc_ticks "$bridge_pid")
    TIMEFORMAT='%3U %3S'
    { time "$bin" bench --url "$url" --server-pid "$bridge_pid" --json "$json" "${bench_args[@]}" \
        2>"$logs/bench-$name-$round.log"; } 2>"$logs/time-$name-$round" || ok=1
    t1=$EPOCHREALTIME b1=$(machine_ticks) s1=$(proc_ticks "$sim_pid") p1=$(proc_ticks "$bridge_pid")
    stop_pids "$bridge_pid"
    bridge_pid=""
    read -r hu hs <"$logs/time-$name-$round" || hu=0 hs=0
    run_line=$(awk -v n="$name" -v r="$round" -v t0="${t0/,/.}" -v t1="${t1/,/.}" -v b=$((b1 - b0)) \
        -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v h="${hu:-0}+${hs:-0}" \
        'BEGIN { split(h, x, "+"); printf "%s\t%s\t%.3f\t%d\t%d\t%d\t%.3f", n, r, t1 - t0, b, s, p, x[1] + x[2] }')
    other_pct=$(awk -v l="$run_line" -v c="$nproc" 'BEGIN {
        split(l, f, "\t"); o = f[4] / 100 - (f[5] + f[6]) / 100 - f[7]
        printf "%d", (o > 0 ? o : 0) / (f[3] * c) * 100 }')
    return $ok
}

runs_tsv=$out/runs.tsv
: >"$runs_tsv"

failed_runs=()
n=${#bridges[@]}
for ((round = 1; round <= repeats; round++)); do
    # Rotate the order each round: every bridge runs first, second, … equally often.
    order=()
    for ((i = 0; i < n; i++)); do
        order+=("${bridges[$(((i + round - 1) % n))]}")
    done
    echo "== round $round/$repeats: ${order[*]}"
    for name in "${order[@]}"; do
        for ((try = 0; ; try++)); do
            if ! run_one "$name" "$round"; then
                failed_runs+=("$name-$round (see $logs/$name-$round.log, $logs/bench-$name-$round.log)")
                break
            fi
            if ((other_pct <= ${NOISY_PCT:-15} || try >= ${NOISY_RETRIES:-2})); then
                break
            fi
            echo "== other processes used ${other_pct}% of the machine during that run; once more" >&2
            sleep 2
        done
        [[ -n "$run_line" ]] && echo "$run_line" >>"$runs_tsv"
        # Let the simulator close the last sessions before the next bridge starts.
        sleep 2
    done
done

echo "== summary (medians over $repeats round(s))"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || commit+=" with uncommitted changes to src/"
python3 - "$out" "$repeats" "$nproc" "$commit" "${node_skipped:-}" "${bridges[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path

out, repeats, nproc, commit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
node_skipped, names = sys.argv[5], sys.argv[6:]
# Share of the machine used by other processes (not the bridge, simulator or harness) per run.
other = {}
for line in (out / "runs.tsv").read_text().splitlines():
    name, rnd, wall, machine, sim, bridge, harness = line.split("\t")
    ours = (int(sim) + int(bridge)) / 100 + float(harness)
    other[(name, int(rnd))] = max(0.0, int(machine) / 100 - ours) / (float(wall) * nproc) * 100
labels = {
    "callbridge": "callbridge serve",
    "floor": "Rust relay floor",
    "node": "Node.js ws bridge",
}
runs, env = {}, None
for name in names:
    runs[name] = []
    for r in range(1, repeats + 1):
        p = out / f"{name}-{r}.json"
        if p.exists():
            j = json.loads(p.read_text())
            j["_other_pct"] = other.get((name, r))
            env = env or j["environment"]
            runs[name].append(j)

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fig(name, f):
    return med([f(j) for j in runs[name]])

def server(key):
    return lambda j: (j.get("server") or {}).get(key)

def fmt(v, d):
    return "-" if v is None else f"{v:.{d}f}"

cpu = {n: fig(n, server("cpu_ms_per_call_second")) for n in names}
base = cpu.get("callbridge")
lines = []
if env:
    j0 = next(j for n in names for j in runs[n])
    lines.append(
        f"{env['cpu_model']} × {env['nproc']} CPUs; harness {env['harness_threads']} thread(s); "
        f"{j0['calls']} calls, hold {j0['hold_s']:.0f} s, ramp {j0['ramp_per_s']:g}/s; "
        f"medians over {repeats} round(s); bridges, harness and simulator share the same CPUs; "
        f"commit {commit}."
    )
    lines.append("")
lines.append(
    "| bridge | runs | server CPU ms/call·s | × callbridge CPU | p50 RTT ms | p99 RTT ms "
    "| lost frames | failed calls | KiB/call | harness lag p99 ms | other load % |"
)
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in names:
    c = cpu[n]
    ratio = "-" if c is None or not base else f"{c / base:.2f}"
    p50 = fig(n, lambda j: j["latency_us"]["p50_us"] / 1000 if j["latency_us"]["samples"] else None)
    p99 = fig(n, lambda j: j["latency_us"]["p99_us"] / 1000 if j["latency_us"]["samples"] else None)
    lines.append(
        f"| {labels[n]} | {len(runs[n])}/{repeats} | {fmt(c, 3)} | {ratio} | {fmt(p50, 1)} | {fmt(p99, 1)} "
        f"| {fmt(fig(n, lambda j: j['frames_lost']), 0)} | {fmt(fig(n, lambda j: j['calls_failed']), 0)} "
        f"| {fmt(fig(n, server('kib_per_call')), 1)} "
        f"| {fmt(fig(n, lambda j: j['send_lag_us']['p99_us'] / 1000), 1)} "
        f"| {fmt(fig(n, lambda j: j['_other_pct']), 0)} |"
    )
if node_skipped:
    lines.append("")
    lines.append(f"Node.js ws bridge: skipped ({node_skipped}).")
lines.append("")
lines.append(
    "Per run, in round order (server CPU ms/call·s / p99 ms / lost frames / failed calls / "
    "other load %). Other load: CPU used by processes other than the bridge, simulator and "
    "harness during the run, in % of the whole machine (other people's builds skew a run)."
)
lines.append("")
for n in names:
    cells = []
    for j in runs[n]:
        s = j.get("server") or {}
        cells.append(
            f"{fmt(s.get('cpu_ms_per_call_second'), 3)} / {j['latency_us']['p99_us'] / 1000:.1f} / "
            f"{j['frames_lost']} / {j['calls_failed']} / {fmt(j['_other_pct'], 0)}"
        )
    lines.append(f"- {labels[n]}: " + ("; ".join(cells) if cells else "no report"))
failures = sorted({k for n in names for j in runs[n] for k in j.get("failures", {})})
if failures:
    lines.append("")
    lines.append("Failure reasons seen: " + ", ".join(failures))
text = "\n".join(lines) + "\n"
print(text, end="")
(out / "summary.md").write_text(text)
print(f"(written to {out / 'summary.md'})")
PY

if ((${#failed_runs[@]} > 0)); then
    echo "== runs that failed: ${failed_runs[*]}" >&2
    exit 1
fi
