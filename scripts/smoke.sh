#!/usr/bin/env bash
# Smoke test of a running callbridge: one line per check, a one-line reason per failure, exit 1
# if any check failed.
#
#   scripts/smoke.sh http://127.0.0.1:8080
#   scripts/smoke.sh https://callbridge.fly.dev
#   SMOKE_TWILIO_AUTH_TOKEN=... scripts/smoke.sh https://callbridge.fly.dev
#
# Checks:
#   healthz        GET /healthz answers 200
#   readyz         GET /readyz answers 200 (503 means the instance is draining)
#   twiml-unsigned POST /twiml without X-Twilio-Signature answers 403
#   twiml-signed   (only with SMOKE_TWILIO_AUTH_TOKEN) a correctly signed POST /twiml answers 200
#                  with a <Stream url=...>. The signature covers the public URL Twilio would
#                  call: SMOKE_PUBLIC_URL (default: the base URL) + /twiml.
#   call           with SMOKE_TWILIO_AUTH_TOKEN: one call placed the way Twilio places it
#                  (`callbridge call`: signed webhook, then the signed stream with the answer's
#                  stream token); passes when the agent answered and the call closed normally.
#                  Against a real deployment the call reaches the configured Realtime API.
#                  Without the token (a server with TWILIO_VALIDATE_SIGNATURE=false): one call of
#                  SMOKE_CALL_DURATION (default 5s) with `callbridge bench`, loopback only.
#   metrics        GET /metrics answers 200 with callbridge_* metrics (checked last: the server
#                  shows them once something was counted, e.g. the call above)
#
# The call check needs the callbridge binary: CALLBRIDGE_BIN, else target/release/callbridge,
# else it is built with `cargo build --release --locked`.
set -uo pipefail
if [[ -n "${CALLBRIDGE_BIN:-}" && "$CALLBRIDGE_BIN" != /* ]]; then
    CALLBRIDGE_BIN="$PWD/$CALLBRIDGE_BIN"
fi
cd "$(dirname "$0")/.." || exit 2

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: scripts/smoke.sh <base-url>   (e.g. http://127.0.0.1:8080)" >&2
    exit 2
fi
base=${1%/}
if [[ ! "$base" =~ ^(https?)://([^/]+)$ ]]; then
    echo "smoke: base URL must be http(s)://host[:port] with no path, not '$1'" >&2
    exit 2
fi
scheme=${BASH_REMATCH[1]}
authority=${BASH_REMATCH[2]}
command -v curl >/dev/null 2>&1 || {
    echo "smoke: curl is required" >&2
    exit 2
}

passed=0
failed=0
pass() {
    printf 'PASS %-15s %s\n' "$1" "$2"
    passed=$((passed + 1))
}
fail() {
    printf 'FAIL %-15s %s\n' "$1" "$2"
    failed=$((failed + 1))
}
skip() {
    printf 'SKIP %-15s %s\n' "$1" "$2"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# http NAME CURL-ARGS...: the body goes to $tmp/NAME; sets $code (000: no HTTP answer).
http() {
    local name=$1
    shift
    code=$(curl -sS --max-time 10 -o "$tmp/$name" -w '%{http_code}' "$@" 2>"$tmp/$name.err") || true
    [[ -n "$code" ]] || code=000
}
answered() { # name: "answered CODE", or "got no answer (curl's reason)"
    if [[ "$code" == 000 ]]; then
        echo "got no answer ($(head -n 1 "$tmp/$1.err" | sed 's/^curl: ([0-9]*) //'))"
    else
        echo "answered $code"
    fi
}

# --- health, readiness -------------------------------------------------------------
http healthz "$base/healthz"
if [[ "$code" == 200 ]]; then
    pass healthz "GET /healthz 200"
else
    fail healthz "GET /healthz $(answered healthz), expected 200"
fi

http readyz "$base/readyz"
if [[ "$code" == 200 ]]; then
    pass readyz "GET /readyz 200"
elif [[ "$code" == 503 ]]; then
    fail readyz "GET /readyz answered 503: the instance is draining"
else
    fail readyz "GET /readyz $(answered readyz), expected 200"
fi

# --- voice webhook --------------------------------------------------------------------------
# A ringing inbound call as Twilio posts it (fake SIDs and numbers). Values are form-encoded in
# the body and signed decoded.
form_names=(AccountSid CallSid CallStatus Direction From To)
form_values=(AC00000000000000000000000000000000 CA0000000000000000000000000000smoke ringing inbound
    +15550100001 +15550100002)
body=""
for i in "${!form_names[@]}"; do
    body+="${body:+&}${form_names[$i]}=${form_values[$i]//+/%2B}"
done

http twiml-unsigned -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data "$body" "$base/twiml"
if [[ "$code" == 403 ]]; then
    pass twiml-unsigned "POST /twiml without signature 403"
else
    fail twiml-unsigned "POST /twiml without signature $(answered twiml-unsigned), expected 403"
fi

# X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each name and value, names sorted
# byte-wise)).
twilio_signature() { # url; reads the token from SMOKE_TWILIO_AUTH_TOKEN
    local data=$1 pair
    while IFS= read -r pair; do
        data+=$pair
    done < <(for i in "${!form_names[@]}"; do
        printf '%s%s\n' "${form_names[$i]}" "${form_values[$i]}"
    done | LC_ALL=C sort)
    printf '%s' "$data" | openssl dgst -sha1 -hmac "$SMOKE_TWILIO_AUTH_TOKEN" -binary | openssl base64 -A
}

if [[ -z "${SMOKE_TWILIO_AUTH_TOKEN:-}" ]]; then
    skip twiml-signed "SMOKE_TWILIO_AUTH_TOKEN not set"
elif ! command -v openssl >/dev/null 2>&1; then
    fail twiml-signed "openssl is required to sign the request"
else
    signed_url="${SMOKE_PUBLIC_URL:-$base}"
    signed_url="${signed_url%/}/twiml"
    sig=$(twilio_signature "$signed_url")
    http twiml-signed -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
        -H "X-Twilio-Signature: $sig" --data "$body" "$base/twiml"
    if [[ "$code" != 200 ]]; then
        fail twiml-signed "signed POST /twiml (signed for $signed_url) $(answered twiml-signed), expected 200"
    elif grep -q '<Stream url=' "$tmp/twiml-signed"; then
        pass twiml-signed "signed POST /twiml 200 with <Stream url=...>"
    else
        fail twiml-signed "signed POST /twiml 200 but no <Stream url=...> in the answer"
    fi
fi

# --- one simulated call ---------------------------------------------------------------------
host=${authority%:*}
if [[ "$authority" == \[* ]]; then
    host=${authority%%]*}]
fi
case $host in
    localhost | 127.* | \[::1\]) loopback=1 ;;
    *) loopback=0 ;;
esac
ws_scheme=ws
[[ "$scheme" == https ]] && ws_scheme=wss
media_url="$ws_scheme://$authority/media/twilio"
duration=${SMOKE_CALL_DURATION:-5s}

find_bin() {
    if [[ -n "${CALLBRIDGE_BIN:-}" ]]; then
        [[ -x "$CALLBRIDGE_BIN" ]] || return 1
        bin=$CALLBRIDGE_BIN
    elif [[ -x target/release/callbridge ]]; then
        bin=target/release/callbridge
    else
        echo "smoke: building target/release/callbridge for the call check" >&2
        cargo build --release --locked --quiet >&2 || return 1
        bin=target/release/callbridge
    fi
}

if [[ -n "${SMOKE_TWILIO_AUTH_TOKEN:-}" ]]; then
    # The whole provider dance: signed webhook, then the signed stream with the answer's token.
    if ! find_bin; then
        fail call "no callbridge binary (CALLBRIDGE_BIN='${CALLBRIDGE_BIN:-}', build failed?)"
    elif out=$(timeout 120 "$bin" call --webhook "${SMOKE_PUBLIC_URL:-$base}/twiml" --connect "$media_url" 2>"$tmp/call.err"); then
        pass call "signed webhook + stream via $media_url: $out"
    else
        fail call "signed call via $media_url: $(tail -n 1 "$tmp/call.err") $out"
    fi
elif [[ "$loopback" != 1 ]]; then
    skip call "$host is not loopback: callbridge bench only loads servers on this machine"
elif ! find_bin; then
    fail call "no callbridge binary (CALLBRIDGE_BIN='${CALLBRIDGE_BIN:-}', build failed?)"
else
    report="$tmp/call.json"
    limit=()
    command -v timeout >/dev/null 2>&1 && limit=(timeout 180)
    if ! "${limit[@]}" "$bin" bench --url "$media_url" --calls 1 --ramp 1 --duration "$duration" --json "$report" \
        >"$tmp/call.out" 2>"$tmp/call.err"; then
        fail call "callbridge bench failed: $(grep -v '^bench: ' "$tmp/call.err" | tail -n 1)"
    elif [[ ! -s "$report" ]]; then
        fail call "callbridge bench wrote no report"
    else
        field() { # top-level integer field of the report
            sed -n "s/^  \"$1\": \([0-9][0-9]*\),\{0,1\}\$/\1/p" "$report" | head -n 1
        }
        completed=$(field calls_completed)
        failed_calls=$(field calls_failed)
        frames_sent=$(field frames_sent)
        frames_received=$(field frames_received)
        if [[ "$completed" == 1 && "$failed_calls" == 0 ]]; then
            pass call "1 call of $duration via $media_url completed ($frames_sent frames sent, $frames_received received)"
        else
            reasons=$(awk '/"failures": \{\}/ { exit } /"failures": \{/ { f = 1; next }
                f && /^  \}/ { exit } f { sub(/^ +/, ""); printf "%s ", $0 }' "$report")
            reasons=${reasons% }
            fail call "call via $media_url: completed=${completed:-?} failed=${failed_calls:-?}${reasons:+ ($reasons)}"
        fi
    fi
fi

# --- metrics (after the call, which creates most of them) -----------------------------------
http metrics "$base/metrics"
if [[ "$code" != 200 ]]; then
    fail metrics "GET /metrics $(answered metrics), expected 200"
else
    n=$(grep -c '^callbridge_' "$tmp/metrics" || true)
    if [[ "$n" -gt 0 ]]; then
        pass metrics "GET /metrics 200, $n callbridge_* sample line(s)"
    else
        fail metrics "GET /metrics 200 but no callbridge_* metrics (the server shows none before its first call)"
    fi
fi

echo "smoke: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
