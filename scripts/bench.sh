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

# 1000+ calls need about three descriptors each (harness, server, server→simulator).
hard=$(ulimit -Hn)
if [[ "$hard" == unlimited ]]; then
    ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
else
    ulimit -n "$hard" 2>/dev/null || true
fi
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

# A loopback port nothing listens on right now, below the ephemeral range: a port the kernel
# hands to outgoing connections (the harness opens thousands) may be taken by the time we bind.
read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
if ((eph_low > 12000)); then
    port_lo=10000 port_span=$((eph_low - 10000))
else
    port_lo=20000 port_span=40000
fi
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((port_lo + RANDOM % port_span))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

sim_pid=""
server_pid=""
cleanup() {
    local pid
    for pid in "$server_pid" "$sim_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "$server_pid" "$sim_pid"; do
        if [[ -n "$pid" ]]; then
            # Give each a few seconds to drain, then insist.
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() { # description, command...
    local what=$1
    shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "$what did not come up; see $logs/" >&2
    return 1
}

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
HOST=127.0.0.1 PORT="$port" \
    OPENAI_API_KEY=sim-key-not-a-secret \
    OPENAI_REALTIME_URL="ws://127.0.0.1:$sim_port/v1/realtime" \
    MAX_CALLS="$max_calls" LOG_FORMAT=json RUST_LOG=warn \
    UPGRADES_PER_IP_PER_MINUTE="${UPGRADES_PER_IP_PER_MINUTE:-0}" \
    TWILIO_VALIDATE_SIGNATURE=false CALLBRIDGE_DATA_DIR="$logs/data" SUMMARY_MODEL=off \
    "$bin" serve >"$logs/server.log" 2>&1 &
server_pid=$!
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
