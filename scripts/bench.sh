#!/usr/bin/env bash
# Load test of the bridge on this machine: builds the release binary, starts the Realtime
# simulator in echo mode and `callbridge serve` on free loopback ports, then runs
# `callbridge bench` against it with the server's pid (CPU, RSS) and /metrics (active calls, to
# let the server settle between sweep runs). Extra arguments go to `callbridge bench`, e.g.
#
#   scripts/bench.sh --calls 200 --duration 20s --json out/bench-200.json
#   scripts/bench.sh --sweep 50,100,200 --duration 10s --chart out/bench.svg
#   AUDIO_MODE=transcode scripts/bench.sh --calls 100
#   scripts/bench.sh --provider signalwire-l16 --calls 100      # uses /media/signalwire
#   scripts/bench.sh --calls 100 --barge-in   # simulator gets --echo-vad; times speech → clear
#   MAX_CALLS=200 scripts/bench.sh --calls 400 --expect-refusals   # overload: 200 refused
#
# AUDIO_MODE, MAX_CALLS (default here 5000) and any other server variable not set below reach
# the server from your environment. The harness dials every call from 127.0.0.1, so the
# per-IP upgrade budget is off (UPGRADES_PER_IP_PER_MINUTE=0) unless you set it.
#
#   BENCH_BIN=path    use this callbridge binary instead of building one (scripts/overload.sh
#                     and scripts/soak.sh build once and pass a private copy)
#   BENCH_LOGS=dir    where the server and simulator logs go (default out/bench-logs)
#
# Both background processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# raise_fd_limit, free_port, stop_pids, wait_for
source scripts/lib/bench-procs.sh

raise_fd_limit
echo "== open-file limit: $(ulimit -n)"

if [[ -n "${BENCH_BIN:-}" ]]; then
    bin=$BENCH_BIN
    [[ -x "$bin" ]] || { echo "BENCH_BIN=$bin is not an executable" >&2; exit 2; }
else
    echo "== cargo build --release"
    cargo build --release --locked
    bin=target/release/callbridge
fi

logs=${BENCH_LOGS:-out/bench-logs}
mkdir -p "$logs"

sim_pid=""
server_pid=""
cleanup() {
    stop_pids "$server_pid" "$sim_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --barge-in needs speech_started from the simulator: echo mode with its VAD on.
sim_flags=(--echo)
for arg in "$@"; do
    if [[ "$arg" == --barge-in ]]; then
        sim_flags+=(--echo-vad)
    fi
done

sim_port=$(free_port)
echo "== Realtime simulator (${sim_flags[*]#--}) on 127.0.0.1:$sim_port"
RUST_LOG=warn "$bin" sim-realtime "${sim_flags[@]}" --listen "127.0.0.1:$sim_port" >"$logs/sim.log" 2>&1 &
sim_pid=$!
wait_for "the simulator" bash -c "exec 3<>/dev/tcp/127.0.0.1/$sim_port"

port=$(free_port)
max_calls=${MAX_CALLS:-5000}
echo "== callbridge serve on 127.0.0.1:$port, MAX_CALLS=$max_calls${AUDIO_MODE:+ (AUDIO_MODE=$AUDIO_MODE)}"
start_callbridge "$bin" "$port" "ws://127.0.0.1:$sim_port/v1/realtime" "$logs/data" "$logs/server.log"
wait_for "the server" curl -fsS "http://127.0.0.1:$port/healthz"

path=/media/twilio
prev=""
for arg in "$@"; do
    if [[ "$arg" == "--provider=signalwire-l16" || ("$prev" == "--provider" && "$arg" == signalwire-l16) ]]; then
        path=/media/signalwire
    fi
    prev=$arg
done

echo "== callbridge bench → ws://127.0.0.1:$port$path (server pid $server_pid)"
"$bin" bench --url "ws://127.0.0.1:$port$path" --server-pid "$server_pid" \
    --metrics-url "http://127.0.0.1:$port/metrics" "$@"
