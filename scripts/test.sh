#!/usr/bin/env bash
# Every test of the project, as CI runs it: format, lints, docs, unit/scenario/end-to-end tests,
# and the check of every Realtime client event the server sent against the official OpenAI
# Python SDK's models. Installs what it needs (a Python venv with the SDK) idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python venv with the official openai SDK"
py=$(scripts/python-env.sh | tail -n 1)

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet

echo "== cargo deny (offline advisories, licences, duplicates)"
scripts/deny.sh

echo "== PostgreSQL + postrust-server for the store tests"
scripts/supabase-local.sh >/dev/null

echo "== cargo test"
rm -rf target/client-events target/server-events target/signatures
cargo test --locked --all-targets

echo "== wire JSON and signatures vs the official OpenAI and Twilio SDKs"
"$py" scripts/check-client-events.py target/client-events
"$py" scripts/check-client-events.py --server target/server-events
"$py" scripts/check-signatures.py target/signatures
