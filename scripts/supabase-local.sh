#!/usr/bin/env bash
# A local stand-in for a Supabase project's database side, for the store tests: PostgreSQL 15
# (Debian packages) with Supabase's roles, and the PostgREST-compatible `postrust-server`
# 3.1.0 (crates.io) that the tests start and stop themselves on ephemeral ports.
#
#   eval "$(scripts/supabase-local.sh)"   # prints PG_PORT=…, PG_SUPERUSER_URI=…, POSTRUST_BIN=…
#
# Idempotent: installs only what is missing, starts PostgreSQL only if it is not running, and
# reuses the cluster under $CALLBRIDGE_PG_DIR (default /tmp/callbridge-pg-<uid>) between runs.
# Everything listens on 127.0.0.1 only. See shared/reference/supabase-rest.md §6.
set -euo pipefail

POSTRUST_VERSION="3.1.0"
pg_dir="${CALLBRIDGE_PG_DIR:-/tmp/callbridge-pg-$(id -u)}"
log() { echo "supabase-local: $*" >&2; }

# --- PostgreSQL server binaries -------------------------------------------------------------
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
    log "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
command -v psql >/dev/null || { log "psql missing after install"; exit 1; }

# --- postrust-server ------------------------------------------------------------------------
# Its own install root, outside the clone, so a second clone on this machine reuses it.
tools="${CALLBRIDGE_TOOLS:-$HOME/.cache/callbridge-tools}"
postrust="$tools/bin/postrust"
if ! grep -q "\"postrust-server $POSTRUST_VERSION " "$tools/.crates.toml" 2>/dev/null || [ ! -x "$postrust" ]; then
    log "installing postrust-server $POSTRUST_VERSION into $tools (release build, ~5 min on 2 cores)"
    # Not --locked: its lockfile pins a webpki-roots release the index no longer offers.
    cargo install --quiet --root "$tools" postrust-server --version "$POSTRUST_VERSION" >&2
fi

# --- the cluster ----------------------------------------------------------------------------
# initdb and postgres refuse to run as root: use the `postgres` account then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$pg_dir"
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
data="$pg_dir/data"
if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi
port_file="$pg_dir/port"
if ! as_pg "$pg_bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    log "starting PostgreSQL on 127.0.0.1:$port"
    as_pg "$pg_bin/pg_ctl" -D "$data" -l "$pg_dir/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c max_connections=300 -c fsync=off" >/dev/null
    echo "$port" >"$port_file"
fi
port=$(cat "$port_file")

# Supabase's roles (reference §6): the API connects as `authenticator` and switches to the
# JWT's role; service_role bypasses row level security.
psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'authenticator-local-only';
    END IF;
END
$$;
GRANT anon, authenticated, service_role TO authenticator;
SQL

echo "PG_PORT=$port"
echo "PG_SUPERUSER_URI=postgres://postgres@127.0.0.1:$port/postgres"
echo "POSTRUST_BIN=$postrust"
