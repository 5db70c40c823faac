#!/usr/bin/env python3
"""Cross-checks our Twilio request signatures against the official `twilio` helper library.

    py=$(scripts/python-env.sh | tail -n 1)
    "$py" scripts/check-signatures.py target/signatures      # check vectors written by Rust tests
    "$py" scripts/check-signatures.py --make-fixture         # rewrite fixtures/signatures/twilio.json

Check mode reads every `*.jsonl` file in the directory (written by `tests/signatures.rs`). Each
line is one vector:

    {"url": "...", "params": {"Name": "value"} | [["Name", "value"], ...],
     "auth_token": "...", "signature": "...", "expect_valid": true}

or, for a request with a JSON body, `"body": "<raw body>"` instead of `params`. `expect_valid` is
what our validator (`server::auth::validate_twilio` / `validate_twilio_json`) said; the vector
passes when `RequestValidator(auth_token).validate(url, params_or_body, signature)` says the same.
Exits non-zero on any disagreement, on a malformed line, or when there are no vectors at all.

Fixture mode writes vectors whose signatures are computed by the library's `compute_signature`,
for `src/server/auth.rs` to reproduce exactly. All tokens and identifiers in it are fake.
"""

import json
import pathlib
import sys

import twilio
from twilio.request_validator import RequestValidator

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "signatures" / "twilio.json"


class Pairs:
    """Form parameters with repeated names, in the shape the validator reads from Flask's MultiDict:
    iterating yields names, `getall(name)` every value sent under that name."""

    def __init__(self, pairs):
        self.pairs = [(str(k), str(v)) for k, v in pairs]

    def __iter__(self):
        return iter([k for k, _ in self.pairs])

    def __len__(self):
        return len(self.pairs)

    def getall(self, name):
        return [v for k, v in self.pairs if k == name]


def params_of(vector):
    """The validator's `params` argument for one vector: a dict, a Pairs, or the raw body."""
    if "body" in vector:
        return vector["body"]
    params = vector.get("params", {})
    if isinstance(params, dict):
        return {str(k): str(v) for k, v in params.items()}
    if isinstance(params, list):
        return Pairs(params)
    raise ValueError("params must be an object or a list of [name, value] pairs")


def check(directory):
    files = sorted(pathlib.Path(directory).glob("*.jsonl"))
    total = valid = 0
    failures = []
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                v = json.loads(line)
                ours = v["expect_valid"]
                theirs = RequestValidator(v["auth_token"]).validate(v["url"], params_of(v), v["signature"])
            except (KeyError, TypeError, ValueError) as e:
                failures.append(f"{where}: malformed vector: {e!r}")
                continue
            total += 1
            valid += bool(theirs)
            if bool(theirs) != bool(ours):
                failures.append(f"{where}: we say valid={ours}, twilio {twilio.__version__} says {theirs}: {line}")
    for f in failures:
        print(f, file=sys.stderr)
    if total == 0:
        print(f"check-signatures: no vectors in {directory}/*.jsonl", file=sys.stderr)
        return 1
    if failures:
        print(f"check-signatures: {len(failures)} of {total} vectors disagree with twilio {twilio.__version__}",
              file=sys.stderr)
        return 1
    print(f"check-signatures: {total} vectors agree with twilio {twilio.__version__} "
          f"({valid} valid, {total - valid} invalid)")
    return 0


# Inputs for the fixture: (name, url, [(name, value), ...], auth_token). Fake tokens and SIDs only.
VOICE = [
    ("AccountSid", "AC00000000000000000000000000000001"),
    ("CallSid", "CA00000000000000000000000000000002"),
    ("CallStatus", "ringing"),
    ("From", "+15550100001"),
    ("To", "+15550100002"),
]
FIXTURE_INPUTS = [
    ("reference voice webhook (§7.1)", "https://bridge.example.net/twilio/voice", VOICE, "test-auth-token"),
    ("query string kept as is", "https://bridge.example.net/twiml?lead=42&campaign=spring%20sale&a=", VOICE, "12345"),
    ("https with a port", "https://bridge.example.net:8443/twilio/status",
     VOICE + [("CallDuration", "17"), ("Direction", "outbound-api")], "12345"),
    ("http with a port", "http://127.0.0.1:8080/twilio/voice", VOICE, "12345"),
    ("no parameters", "https://bridge.example.net/twilio/voice", [], "12345"),
    ("unicode values and path", "https://bridge.example.net/caf%C3%A9/voice",
     [("CallerName", "Zoë Ünïcode ☎ 😀"), ("FromCity", "MÜNCHEN"), ("SpeechResult", "こんにちは")], "12345"),
    ("case-sensitive name order", "https://bridge.example.net/twilio/status",
     [("b", "1"), ("B", "2"), ("a", "3"), ("A", "4"), ("_", "5"), ("Z", "6"), ("z", "7")], "12345"),
    ("repeated and empty values", "https://bridge.example.net/twilio/status",
     [("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"), ("Digits", ""),
      ("StatusCallbackEvent", "answered"), ("StatusCallbackEvent", "completed"), ("Empty", "")], "12345"),
    ("values with separators", "https://bridge.example.net/twilio/voice",
     [("Body", "a=b&c=d+e f\nline2"), ("Name", "O'Brien \"Bob\" <b>"), ("Pct", "100%")], "12345"),
    ("media stream upgrade (§7.2)", "wss://bridge.example.net/twilio/media", [], "test-auth-token"),
    ("media stream upgrade, trailing slash (§7.2)", "wss://bridge.example.net/twilio/media/", [], "test-auth-token"),
    ("media stream upgrade, our route", "wss://bridge.example.net/media/twilio", [], "12345"),
]


def make_fixture():
    vectors = []
    for name, url, pairs, token in FIXTURE_INPUTS:
        signature = RequestValidator(token).compute_signature(url, Pairs(pairs))
        vectors.append({"name": name, "url": url, "params": [list(p) for p in pairs],
                        "auth_token": token, "signature": signature})
    doc = {
        "generator": f"twilio=={twilio.__version__} "
                     "twilio.request_validator.RequestValidator.compute_signature "
                     "(scripts/check-signatures.py --make-fixture)",
        "vectors": vectors,
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    # One vector per line: readable diffs when the library or the inputs change.
    lines = [json.dumps(v, ensure_ascii=False) for v in vectors]
    text = ('{\n  "generator": ' + json.dumps(doc["generator"]) + ',\n  "vectors": [\n    '
            + ",\n    ".join(lines) + "\n  ]\n}\n")
    json.loads(text)
    FIXTURE.write_text(text, encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {FIXTURE.relative_to(ROOT)}")
    return 0


def main(argv):
    if argv == ["--make-fixture"]:
        return make_fixture()
    if len(argv) == 1 and not argv[0].startswith("-"):
        return check(argv[0])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
