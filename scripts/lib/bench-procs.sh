# Sourced by scripts/bench.sh and scripts/bench-baselines.sh: the open-file limit, free loopback
# ports, waiting for a background process to come up, and stopping background processes.
# The caller sets $logs (wait_for's failure message points there).

# 1000+ calls need about three descriptors each (harness, server, server→simulator).
raise_fd_limit() {
    local hard
    hard=$(ulimit -Hn)
    if [[ "$hard" == unlimited ]]; then
        ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
    else
        ulimit -n "$hard" 2>/dev/null || true
    fi
}

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

# Stops the given background processes (empty arguments are skipped): SIGTERM to all, then each
# gets about 5 s to drain before SIGKILL, and is reaped.
stop_pids() {
    local pid
    for pid in "$@"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "$@"; do
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

# Starts `callbridge serve` for a load run: 127.0.0.1:PORT, the Realtime simulator at URL,
# signatures off, per-IP upgrade budget off unless set, no summaries, MAX_CALLS (default 5000)
# and any other server variable from the environment. Sets server_pid.
start_callbridge() { # binary, port, Realtime URL, data dir, log file
    HOST=127.0.0.1 PORT="$2" \
        OPENAI_API_KEY=sim-key-not-a-secret \
        OPENAI_REALTIME_URL="$3" \
        MAX_CALLS="${MAX_CALLS:-5000}" LOG_FORMAT=json RUST_LOG=warn \
        UPGRADES_PER_IP_PER_MINUTE="${UPGRADES_PER_IP_PER_MINUTE:-0}" \
        TWILIO_VALIDATE_SIGNATURE=false CALLBRIDGE_DATA_DIR="$4" SUMMARY_MODEL=off \
        "$1" serve >"$5" 2>&1 &
    server_pid=$!
}

# Puts the callbridge binary a load run uses at DIR/callbridge: a copy of $BENCH_BIN if set,
# else of a fresh release build. A private copy, so other builds in the shared target/ cannot
# swap it mid-run.
private_callbridge() { # dir
    if [[ -n "${BENCH_BIN:-}" ]]; then
        cp "$BENCH_BIN" "$1/callbridge"
    else
        echo "== cargo build --release"
        cargo build --release --locked
        cp target/release/callbridge "$1/callbridge"
    fi
}
