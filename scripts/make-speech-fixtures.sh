#!/usr/bin/env bash
# Synthesizes the speech fixtures in fixtures/speech/: raw G.711 μ-law, 8000 Hz, mono,
# plus manifest.json and README.md. Idempotent: re-running rewrites the same files.
# espeak-ng output is deterministic for a given version, so the clips only change
# when the tool versions do (the README records them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/fixtures/speech"

CALLER_VOICE="en-us"
AGENT_VOICE="en-us+f3"
SPEED_WPM=160

# Install the tools only when missing (apt-based images).
if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y espeak-ng sox
fi

# name|speaker|text (texts contain no '|').
CLIPS=(
    "caller_question|caller|Hi, this is Sam. I'm calling about my order from last week. Can you tell me when it will arrive?"
    "caller_followup|caller|Great, thanks. And can I still change the delivery address?"
    "caller_interrupt|caller|Sorry to cut in. Could you just text me the tracking link instead?"
    "agent_reply_1|agent|Thanks for calling, Sam. Your order shipped on Tuesday, and it should arrive by Friday afternoon."
    "agent_reply_2|agent|Yes, you can change the address until the parcel leaves the local depot. To do that, I will need the new street address, the city, and the postal code. Let me walk you through each of those, one at a time, starting with the street."
    "agent_reply_3|agent|Of course. I have just sent the tracking link to the number on file."
    "agent_goodbye|agent|Thanks for calling. Goodbye!"
    "agent_filler|agent|One moment while I check that for you."
    "apology|agent|Sorry, something went wrong. Please call back later."
)

# sox effects: trim leading/trailing silence (below 0.1 % for 20 ms), re-pad to 100 ms
# each side, resample to 8 kHz, then normalise the peak to -3 dBFS so levels match.
SOX_EFFECTS=(silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse pad 0.1 0.1 rate 8000 gain -n -3)

json_escape() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '%s' "$s"
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

mkdir -p "$OUT"

manifest="{\"clips\":["
first=1
for entry in "${CLIPS[@]}"; do
    IFS='|' read -r name speaker text <<<"$entry"
    if [ "$speaker" = "caller" ]; then voice="$CALLER_VOICE"; else voice="$AGENT_VOICE"; fi
    espeak-ng -v "$voice" -s "$SPEED_WPM" -w "$TMP/$name.wav" "$text"
    sox -R -D "$TMP/$name.wav" -t raw -e mu-law -b 8 -r 8000 -c 1 "$OUT/$name.ulaw" "${SOX_EFFECTS[@]}"
    bytes=$(wc -c <"$OUT/$name.ulaw")
    duration_ms=$((bytes / 8))
    if [ "$first" -eq 0 ]; then manifest+=","; fi
    first=0
    manifest+="{\"name\":\"$name\",\"file\":\"$name.ulaw\",\"speaker\":\"$speaker\",\"text\":\"$(json_escape "$text")\",\"duration_ms\":$duration_ms}"
    echo "$name: $bytes bytes, $duration_ms ms"
done
manifest+="]}"
printf '%s\n' "$manifest" >"$OUT/manifest.json"

ESPEAK_VERSION="$(espeak-ng --version)"
SOX_VERSION="$(sox --version)"

cat >"$OUT/README.md" <<EOF
# Speech fixtures

These clips are **synthesized speech** (espeak-ng), not recordings of real people.
They give the tests and the simulator realistic speech-shaped audio: voiced and
unvoiced segments, pauses between words, and natural level changes.

Regenerate with \`scripts/make-speech-fixtures.sh\` (installs \`espeak-ng\` and \`sox\`
with apt-get if they are missing). Output is deterministic for the same tool versions.

## Format

Raw, headerless G.711 μ-law (PCMU), 8000 Hz, mono: 1 byte per sample,
**8 bytes per ms**, 160 bytes per 20 ms frame. \`duration_ms\` in \`manifest.json\`
is \`bytes / 8\`.

Play or inspect one with:

    play -t raw -e mu-law -b 8 -r 8000 -c 1 caller_question.ulaw
    sox -t raw -e mu-law -b 8 -r 8000 -c 1 caller_question.ulaw -n stat

## Tools

- \`espeak-ng --version\`: ${ESPEAK_VERSION}
- \`sox --version\`: ${SOX_VERSION}

## Commands

Caller clips use voice \`${CALLER_VOICE}\` (male US English), agent clips \`${AGENT_VOICE}\`
(female variant), both at ${SPEED_WPM} words per minute. For each clip:

    espeak-ng -v <voice> -s ${SPEED_WPM} -w <name>.wav "<text>"
    sox -R -D <name>.wav -t raw -e mu-law -b 8 -r 8000 -c 1 <name>.ulaw ${SOX_EFFECTS[*]}

\`-R -D\` make sox repeatable and skip dither, so the padding is digital silence (0xFF)
and re-running gives identical bytes. The effects trim leading and trailing silence,
pad 100 ms of silence on each side, resample to 8 kHz and normalise the peak to -3 dBFS.

## Clips

See \`manifest.json\` for name, file, speaker (\`caller\` or \`agent\`), text and duration.
\`agent_reply_2\` is deliberately long (about 14 s) so a caller clip can barge in mid-reply.
\`agent_goodbye\` is what the simulator says after an \`end_call\` tool result, and
\`agent_filler\` is the short aside it speaks for an out-of-band \`response.create\` (a
"one moment" filler while a tool runs).
\`apology\` is not a simulator clip: the bridge embeds it (\`src/core/call/reconnect.rs\`) and
plays it before hanging up when the voice model cannot be reached (a non-retryable error, or
reconnecting gave up).
EOF

echo "wrote $OUT"
