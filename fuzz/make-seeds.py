#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ and fuzz/dicts/<target>.dict from the project's own fixtures.

Sources: fixtures/twilio/*.json, fixtures/signalwire/*.json, fixtures/speech/*.ulaw and the
Realtime server-event samples in src/core/realtime/server/tests.rs. Standard library only.
The output is committed (small: keep it under 200 KiB); rerun after fixtures change:

    python3 fuzz/make-seeds.py
"""

import base64
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
FIX = ROOT / "fixtures"


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def fixture(provider, name):
    return (FIX / provider / name).read_text().strip()


def speech(name, offset, length):
    return (FIX / "speech" / name).read_bytes()[offset : offset + length]


def realtime_samples():
    """Single-line JSON literals from the Realtime decoder's unit tests, by const name or index."""
    src = (ROOT / "src/core/realtime/server/tests.rs").read_text()
    named = {}
    for m in re.finditer(r'const ([A-Z_]+): &str = r#"(\{.*?\})"#;', src):
        named[m.group(1)] = m.group(2)
    inline = []
    for m in re.finditer(r'r#"(\{"[^\n]*?)"#', src):
        if m.group(1) not in named.values() and m.group(1) not in inline:
            inline.append(m.group(1))
    return named, inline


def provider_seeds():
    for provider, target in (("twilio", "provider_twilio"), ("signalwire", "provider_signalwire")):
        for f in sorted((FIX / provider).glob("*.json")):
            write(target, f.stem, f.read_text().strip())
    # A few frames the fixtures lack: numbers for the string counters, A-law, no mediaFormat.
    start = json.loads(fixture("signalwire", "start_pcmu.json"))
    del start["start"]["mediaFormat"]
    write("provider_signalwire", "start_no_format", compact(start))
    media = json.loads(fixture("twilio", "media.json"))
    media["media"]["chunk"] = 7
    media["media"]["timestamp"] = 140.0
    write("provider_twilio", "media_numbers", compact(media))
    start = json.loads(fixture("twilio", "start.json"))
    start["start"]["mediaFormat"]["encoding"] = "audio/x-alaw"
    write("provider_twilio", "start_alaw", compact(start))


def realtime_seeds(named, inline):
    for name, text in named.items():
        write("realtime_server", name.lower(), text)
    for i, text in enumerate(inline):
        write("realtime_server", f"inline_{i:02}", text)


def audio_seeds():
    ulaw = speech("caller_question.ulaw", 8000, 160)
    write("g711", "speech_ulaw_20ms", ulaw)
    write("g711", "all_codes", bytes(range(256)))
    l16 = base64.b64decode(json.loads(fixture("signalwire", "media_l16_16k.json"))["media"]["payload"])
    write("l16", "le_16k_20ms", b"\x00" + l16)
    write("l16", "be_split_odd", b"\x0b" + l16[:161])
    # transcode: [provider, model, chunk1, chunk2] + audio (see FORMATS in fuzz/src/lib.rs).
    pcm24 = base64.b64decode(json.loads(fixture("signalwire", "media_l16_24k.json"))["media"]["payload"])
    for (p, m, c1, c2, audio, name) in [
        (0, 2, 53, 31, ulaw * 2, "pcmu_to_pcm24k"),
        (2, 0, 159, 63, pcm24, "pcm24k_to_pcmu"),
        (1, 2, 26, 6, ulaw, "pcma_to_pcm24k"),
        (4, 2, 106, 127, l16, "l16_16k_to_pcm24k"),
        (5, 6, 3, 200, l16, "l16be_16k_to_32k"),
        (7, 0, 255, 1, pcm24, "l16_48k_to_pcmu"),
        (0, 0, 10, 10, ulaw, "passthrough"),
        (10, 2, 1, 1, ulaw[:40], "unsupported_rate"),
    ]:
        write("transcode", name, bytes([p, m, c1, c2]) + audio)


def config_seeds():
    full = {
        "HOST": "0.0.0.0",
        "PORT": "8080",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_REALTIME_URL": "wss://api.openai.com/v1/realtime",
        "OPENAI_REALTIME_MODEL": "gpt-realtime",
        "OPENAI_AUTH": "bearer",
        "AGENT_INSTRUCTIONS": 'You answer the phone for "Acme".\\tBe brief.',
        "AGENT_VOICE": "marin",
        "AUDIO_MODE": "passthrough",
        "TURN_DETECTION": "server_vad",
        "VAD_THRESHOLD": "0.5",
        "VAD_SILENCE_MS": "500",
        "VAD_PREFIX_PADDING_MS": "300",
        "INTERRUPT_RESPONSE": "true",
        "TRANSCRIPTION_MODEL": "gpt-4o-mini-transcribe",
        "TRANSCRIPTION_LANGUAGE": "en",
        "NOISE_REDUCTION": "near_field",
        "MAX_CALLS": "1000",
        "MAX_MESSAGE_BYTES": "65536",
        "START_TIMEOUT": "10s",
        "UPSTREAM_CONNECT_TIMEOUT": "10s",
        "UPGRADE_TIMEOUT": "10s",
        "DRAIN_TIMEOUT": "30s",
        "MAX_LEAD_MS": "300",
        "MARK_INTERVAL_MS": "100",
        "LOG_FORMAT": "json",
    }
    # EXTRA_CONFIG_VARS in fuzz/src/lib.rs, in the same order.
    extra = {
        "CALLBRIDGE_DATA_DIR": "./data",
        "SUPABASE_URL": "https://abcdefgh.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "service-role-not-a-secret",
        "SUPABASE_REST_PATH": "/rest/v1",
        "SUPABASE_RETRY_FIRST": "1s",
        "SUPABASE_RETRY_MAX": "60s",
        "LEAD_TABLE": "leads",
        "SUMMARY_MODEL": "gpt-4.1-mini",
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "API_TOKEN": "api-token-not-a-secret",
        "PUBLIC_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
        "TWILIO_AUTH_TOKEN": "auth-token-not-a-secret",
        "TWILIO_VALIDATE_SIGNATURE": "true",
        "TWILIO_API_BASE": "https://api.twilio.com",
        "SIGNALWIRE_SPACE": "example",
        "SIGNALWIRE_PROJECT_ID": "b1c2d3e4-0000-4000-8000-000000000001",
        "SIGNALWIRE_API_TOKEN": "PT-not-a-secret",
        "SIGNALWIRE_SIGNING_KEY": "PSK-not-a-secret",
        "STREAM_TOKEN_KEY": "0123456789abcdef0123456789abcdef",
        "STREAM_TOKEN_TTL": "60s",
        "UPGRADES_PER_IP_PER_MINUTE": "60",
        "CLIENT_IP_HEADER": "fly-client-ip",
        "MACHINE_DETECTION": "off",
    }
    lines = lambda env: "\n".join(f"{k}={v}" for k, v in env.items())
    write("config", "all_defaults", lines({**full, **extra}))
    write("config", "key_only", "OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false")
    azure = {
        "OPENAI_API_KEY": "k",
        "SIGNALWIRE_SIGNING_KEY": "PSK-not-a-secret",
        "MACHINE_DETECTION": "detect_message_end",
        "OPENAI_REALTIME_URL": "wss://example-resource.openai.azure.com/openai/v1/realtime",
        "AUDIO_MODE": "transcode",
        "TURN_DETECTION": "semantic_vad",
        "TRANSCRIPTION_MODEL": "off",
        "NOISE_REDUCTION": "far_field",
        "LOG_FORMAT": "pretty",
        "START_TIMEOUT": "2m",
        "DRAIN_TIMEOUT": "500ms",
    }
    write("config", "azure_semantic", lines(azure))
    # Numeric names stand for CONFIG_VARS[i] (fuzz/src/lib.rs): short for the fuzzer to mutate.
    numbered = list(full.values()) + list(extra.values())
    write("config", "numeric_names", "\n".join(f"{i}={v}" for i, v in enumerate(numbered)))
    write(
        "config",
        "invalid",
        "OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=maybe\nTURN_DETECTION=none\nVAD_THRESHOLD=2\nMAX_LEAD_MS=5",
    )


def call_seeds(named):
    tw = {n: fixture("twilio", f"{n}.json") for n in ("connected", "start", "dtmf", "stop")}
    media = json.loads(fixture("twilio", "media.json"))
    caller = (FIX / "speech" / "caller_question.ulaw").read_bytes()

    def twilio_media(i, prefix="t", frame=None):
        m = json.loads(json.dumps(media))
        m["sequenceNumber"] = str(i + 2)
        m["media"]["chunk"] = str(i + 1)
        m["media"]["timestamp"] = str(20 * i)
        m["media"]["payload"] = base64.b64encode(frame or caller[160 * i : 160 * (i + 1)]).decode()
        return prefix + compact(m)

    sw_start = fixture("signalwire", "start_l16_16k.json")
    sw_media = json.loads(fixture("signalwire", "media_l16_16k.json"))

    def sw_l16_media(i):
        m = json.loads(json.dumps(sw_media))
        m["media"]["chunk"] = str(i + 1)
        m["media"]["timestamp"] = str(20 * i)
        return "s" + compact(m)

    delta = json.loads(named["AUDIO_DELTA"])
    reply = (FIX / "speech" / "agent_reply_1.ulaw").read_bytes()

    def r_delta(i, n=800):
        d = dict(delta)
        d["delta"] = base64.b64encode(reply[n * i : n * (i + 1)]).decode()
        return "r" + compact(d)

    r = lambda name: "r" + named[name]
    scripts = {
        "passthrough_turn": [
            "t" + tw["connected"], "t" + tw["start"], *[twilio_media(i) for i in range(3)], "c",
            r("SESSION_UPDATED_PCMU"), r("SPEECH_STARTED"), *[twilio_media(i) for i in range(3, 6)],
            r("SPEECH_STOPPED"), r("COMMITTED"), r("RESPONSE_CREATED"), r_delta(0), r_delta(1), "k", "+100",
            r_delta(2), r("TRANSCRIPT_DELTA"), "K", r("AUDIO_DONE"), r("TRANSCRIPT_DONE"), r("RESPONSE_DONE"), "K",
            r("INPUT_TRANSCRIPTION_COMPLETED"), "t" + tw["dtmf"], "t" + tw["stop"], "+2000",
        ],
        "barge_in": [
            "t" + tw["start"], "c", r("RESPONSE_CREATED"), *["aresp_001/item_004"] * 5, "+20", "k", "+40",
            r("SPEECH_STARTED"), "aresp_001/item_004", "K", r("RESPONSE_DONE_CANCELLED"), r("ERROR"),
            r("FUNCTION_CALL_DONE"), r("ITEM_TRUNCATED"), "h",
        ],
        "signalwire_l16": [
            "s" + sw_start, *[sw_l16_media(i) for i in range(3)], "c", *["ar1/i1"] * 4, "k", "k",
            r("AUDIO_DONE").replace("item_004", "i1"), "K", "s" + fixture("signalwire", "dtmf.json"),
            "s" + fixture("signalwire", "stop.json"),
        ],
        "forced_transcode": [
            "#transcode", "#lead=100", "#mark=20", "#buffer=400", "t" + tw["start"], twilio_media(0), "c",
            twilio_media(2), twilio_media(1), *["ar/a"] * 6, "K", "ar/b", "+20", "K", r("RESPONSE_DONE"), "x",
        ],
        "start_timeout": ["t" + tw["connected"], twilio_media(0), "+10000", "t" + tw["start"]],
        "connect_timeout": ["t" + tw["start"], *[twilio_media(i) for i in range(4)], "+10001", "c"],
        "draining": [
            "#linger=300", "t" + tw["start"], "c", r("SPEECH_STARTED"), r("SPEECH_STOPPED"), "t" + tw["stop"],
            "+100", r("INPUT_TRANSCRIPTION_FAILED"), "+1000",
        ],
        "fatal_error": ["t" + tw["start"], "c", r("SESSION_CREATED"), "r" + named_error_expired(), "z"],
    }
    for name, steps in scripts.items():
        write("call", name, "\n".join(steps) + "\n")


def named_error_expired():
    return compact(
        {
            "type": "error",
            "event_id": "event_1",
            "error": {"type": "invalid_request_error", "code": "session_expired", "message": "expired"},
        }
    )


def dict_entry(token):
    out = []
    for b in token.encode():
        if b in (0x22, 0x5C) or b < 0x20 or b >= 0x7F:
            out.append(f"\\x{b:02X}")
        else:
            out.append(chr(b))
    return '"' + "".join(out) + '"'


def dictionaries(named):
    """libFuzzer dictionaries (fuzz/dicts/<target>.dict): names the fuzzer cannot find by itself
    (hash-map keys, event names, environment variables) and edge-case numbers."""
    numbers = ["0", "-1", "20", "8000", "16000", "24000", "4294967296", "9007199254740993",
               "18446744073709551615", "18446744073709551616", "1e400", "0.5", "20.0"]
    provider = ["event", "streamSid", "sequenceNumber", "protocol", "version", "start", "accountSid",
                "callSid", "tracks", "customParameters", "mediaFormat", "encoding", "sampleRate",
                "channels", "media", "track", "chunk", "timestamp", "payload", "mark", "name", "dtmf",
                "digit", "duration", "connected", "stop", "clear", "inbound", "outbound", "audio/x-mulaw",
                "audio/x-alaw", "audio/x-L16", "Call", "1.0.0", "0.2.0"]
    realtime_types = set()
    realtime_keys = set()
    for text in named.values():
        obj = json.loads(text)

        def walk(v):
            if isinstance(v, dict):
                for k, x in v.items():
                    realtime_keys.add(k)
                    if k == "type" and isinstance(x, str):
                        realtime_types.add(x)
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(obj)
    realtime_types |= {"response.audio.delta", "response.audio.done", "response.audio_transcript.delta",
                       "response.audio_transcript.done", "g711_ulaw", "g711_alaw", "pcm16"}
    realtime = sorted(realtime_types | realtime_keys)
    src = (ROOT / "fuzz/src/lib.rs").read_text()
    env = re.findall(r'config::ENV_([A-Z_]+)', src)
    extra_block = src[src.index("EXTRA_CONFIG_VARS: [&str"):]
    env_names = [e for e in env] + re.findall(r'^    "([A-Z_]+)",$', extra_block[: extra_block.index("];")], re.M)
    config_values = ["true", "false", "10s", "500ms", "2m", "off", "none", "json", "pretty", "bearer",
                     "api-key", "passthrough", "transcode", "server_vad", "semantic_vad", "near_field",
                     "far_field", "ws://", "wss://", "https://", ".azure.com", "enable", "detect_message_end"]
    call_ops = ["\nt", "\ns", "\nr", "\nc\n", "\nk\n", "\nK\n", "\n+20\n", "\n+10000\n", "\nh\n",
                "\nx\n", "\ne\n", "\nz\n", "\n!\n", "\naresp_001/item_004\n", "#transcode\n", "#lead=",
                "#mark=", "#buffer=", "#pending=", "#gap=", "#linger="]
    dicts = {
        "provider_twilio": provider + numbers,
        "provider_signalwire": provider + numbers,
        "realtime_server": realtime + numbers,
        "config": env_names + config_values + numbers + [f"{n}s" for n in numbers[:10]] + ["\n", "="],
        "call": provider + realtime + numbers + call_ops,
    }
    d = ROOT / "fuzz" / "dicts"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    for target, tokens in dicts.items():
        seen = []
        for t in tokens:
            if t not in seen:
                seen.append(t)
        (d / f"{target}.dict").write_text("".join(dict_entry(t) + "\n" for t in seen))


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    named, inline = realtime_samples()
    provider_seeds()
    realtime_seeds(named, inline)
    audio_seeds()
    config_seeds()
    call_seeds(named)
    dictionaries(named)
    total = sum(f.stat().st_size for f in SEEDS.rglob("*") if f.is_file())
    count = sum(1 for f in SEEDS.rglob("*") if f.is_file())
    print(f"{count} seed files, {total} bytes in {SEEDS.relative_to(ROOT)}")
    assert total < 200 * 1024, "seed set over 200 KiB"


if __name__ == "__main__":
    main()
