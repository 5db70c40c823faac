#!/usr/bin/env bash
# Supply-chain check with cargo-deny (deny.toml): RustSec advisories from an offline copy of the
# advisory database, licences, banned/duplicate crates and crate sources. The only network use is
# crates.io: the one-time `cargo install` of cargo-deny, and `cargo fetch` of crate sources that
# `cargo metadata` reads for every platform (a no-op once they are in the cargo cache).
#
#   scripts/deny.sh                  # every check (duplicates listed without their dependency trees)
#   scripts/deny.sh check bans       # arguments replace the default, here with the trees
#
# The database comes from ../shared/advisory-db/rustsec-advisory-db.tar.gz (relative to the
# repository; ADVISORY_DB_ARCHIVE overrides it) and is unpacked once into target/advisory-db/.
# cargo-deny is told to use that folder through CARGO_DENY_ADVISORY_DB (see deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds with rustc 1.88 or newer; pinned so every machine checks with the same rules.
CARGO_DENY_VERSION=0.20.2

if ! installed=$(cargo deny --version 2>/dev/null); then
    echo "deny: installing cargo-deny $CARGO_DENY_VERSION (once; a few minutes)"
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
    installed=$(cargo deny --version)
fi
if [[ "$installed" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    echo "deny: note: $installed is installed; this script is tested with $CARGO_DENY_VERSION" >&2
fi

db_root=target/advisory-db
# The archive's top folder is the name cargo-deny derives from the default database URL.
db_name=advisory-db-3157b0e258782691
if [[ ! -d "$db_root/$db_name/crates" ]]; then
    archive=""
    for candidate in "${ADVISORY_DB_ARCHIVE:-}" ../shared/advisory-db/rustsec-advisory-db.tar.gz \
        /work/shared/advisory-db/rustsec-advisory-db.tar.gz; do
        if [[ -n "$candidate" && -f "$candidate" ]]; then
            archive=$candidate
            break
        fi
    done
    if [[ -z "$archive" ]]; then
        echo "deny: no offline RustSec database: expected ../shared/advisory-db/rustsec-advisory-db.tar.gz" >&2
        exit 1
    fi
    echo "deny: unpacking $archive into $db_root/"
    rm -rf "$db_root.tmp"
    mkdir -p "$db_root.tmp"
    tar -xzf "$archive" -C "$db_root.tmp"
    if [[ ! -d "$db_root.tmp/$db_name/crates" ]]; then
        echo "deny: $archive does not hold $db_name/crates/" >&2
        exit 1
    fi
    rm -rf "$db_root"
    mv "$db_root.tmp" "$db_root"
fi

# cargo-deny --offline runs `cargo metadata --offline`, which needs the sources of every crate in
# the lock file, including ones a build on this platform never downloads.
cargo fetch --locked --quiet

export CARGO_DENY_ADVISORY_DB="$PWD/$db_root"
if [[ $# -eq 0 ]]; then
    set -- check --hide-inclusion-graph
fi
exec cargo deny --offline --locked "$@"
