#!/usr/bin/env bash
# Deploys callbridge to Fly.io: sets every variable of a .env file as an app secret, then runs
# `fly deploy` with fly.toml (remote build of the Dockerfile).
#
#   scripts/deploy-fly.sh                 # reads .env
#   scripts/deploy-fly.sh prod.env        # another file
#   scripts/deploy-fly.sh .env --remote-only --strategy bluegreen   # extra args go to fly deploy
#   FLY_APP=my-bridge scripts/deploy-fly.sh   # app other than fly.toml's `app`
#
# .env format: NAME=VALUE lines; blank lines, `# comments` and an `export ` prefix are fine,
# values may be wrapped in single or double quotes; no multi-line values. Secret values are never
# printed, only their names. Secrets are staged (`fly secrets import --stage`) so the machines
# restart once, with the deploy.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "deploy-fly: $*" >&2
    exit 1
}

env_file=${1:-.env}
if [[ $# -gt 0 ]]; then
    shift
fi

fly=""
for candidate in fly flyctl; do
    if command -v "$candidate" >/dev/null 2>&1; then
        fly=$candidate
        break
    fi
done
[[ -n "$fly" ]] || die "the Fly CLI (fly or flyctl) is not installed; see https://fly.io/docs/flyctl/install/"
[[ -f fly.toml ]] || die "fly.toml not found in $(pwd)"
[[ -f "$env_file" ]] || die "env file '$env_file' not found (start from .env.example: cp .env.example .env)"
[[ -r "$env_file" ]] || die "env file '$env_file' is not readable"

app_args=()
if [[ -n "${FLY_APP:-}" ]]; then
    app_args=(--app "$FLY_APP")
fi

tag=deploy-fly
# shellcheck source=scripts/lib/dotenv.sh
source scripts/lib/dotenv.sh
read_env_file
[[ ${#names[@]} -gt 0 ]] || die "$env_file sets no variables"

# `fly secrets import` reads NAME=VALUE lines and, depending on the flyctl version, trims or
# unquotes some values; refuse the few forms it could alter rather than store a wrong secret.
for i in "${!names[@]}"; do
    v=${values[$i]}
    if [[ "$v" == \"* || "$v" == *\" || "$v" == *" #"* || "$v" =~ ^[[:space:]] ]]; then
        die "${names[$i]}: its value starts or ends with a quote, or contains ' #'; set it by hand with 'fly secrets set' (this script does not print values)"
    fi
done

if ! "$fly" auth whoami >/dev/null 2>&1; then
    die "not logged in to Fly.io; run '$fly auth login' first"
fi

echo "== staging ${#names[@]} secret(s) from $env_file: ${names[*]}"
for i in "${!names[@]}"; do
    printf '%s=%s\n' "${names[$i]}" "${values[$i]}"
done | "$fly" secrets import --stage "${app_args[@]}" >/dev/null \
    || die "fly secrets import failed"

echo "== fly deploy"
"$fly" deploy "${app_args[@]}" "$@"
