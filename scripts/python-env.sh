#!/usr/bin/env bash
# Creates (once) the Python virtualenv used to validate our wire JSON against the official
# `openai` Python SDK's pydantic models and our webhook signatures against the official `twilio`
# helper library, and prints the venv's python on its last line.
#
#   py=$(scripts/python-env.sh | tail -n 1)
#   "$py" scripts/check-client-events.py target/client-events
#   "$py" scripts/check-signatures.py target/signatures
#
# Idempotent: an existing venv with both pinned SDK versions importable is reused without touching
# the network. Only PyPI is needed (pip's default index); nothing else is downloaded.
set -euo pipefail

OPENAI_VERSION="3.52.0"
TWILIO_VERSION="9.13.0"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${CALLBRIDGE_PYENV:-$root/target/pyenv}"
py="$venv/bin/python"

have_sdk() {
    [ -x "$py" ] && "$py" - "$OPENAI_VERSION" "$TWILIO_VERSION" <<'PY' >/dev/null 2>&1
import sys
import openai
import twilio
sys.exit(0 if (openai.__version__, twilio.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

if ! have_sdk; then
    if [ ! -x "$py" ]; then
        echo "creating venv at $venv" >&2
        python3 -m venv "$venv"
    fi
    echo "installing openai==$OPENAI_VERSION twilio==$TWILIO_VERSION into $venv" >&2
    "$py" -m pip install --quiet --disable-pip-version-check \
        "openai==$OPENAI_VERSION" "twilio==$TWILIO_VERSION" >&2
    have_sdk || {
        echo "openai==$OPENAI_VERSION or twilio==$TWILIO_VERSION is not importable from $py" >&2
        exit 1
    }
fi

echo "$py"
