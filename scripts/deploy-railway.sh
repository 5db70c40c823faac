#!/usr/bin/env bash
# Deploys callbridge to Railway: sets every variable of a .env file as a service variable, then
# uploads and deploys this directory with `railway up` (Dockerfile build, railway.json settings).
#
#   scripts/deploy-railway.sh                 # reads .env
#   scripts/deploy-railway.sh prod.env        # another file
#   scripts/deploy-railway.sh .env --detach   # extra args go to railway up (default: --ci)
#   RAILWAY_SERVICE=callbridge RAILWAY_ENVIRONMENT=production scripts/deploy-railway.sh
#
# The directory must be linked to a project first (`railway link`). .env format: NAME=VALUE
# lines; blank lines, `# comments` and an `export ` prefix are fine, values may be wrapped in
# single or double quotes; no multi-line values. Values are passed on stdin when the CLI
# supports it and are never printed, only their names. Variables are set with --skip-deploys so
# the service deploys once, from `railway up`.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "deploy-railway: $*" >&2
    exit 1
}

env_file=${1:-.env}
if [[ $# -gt 0 ]]; then
    shift
fi

command -v railway >/dev/null 2>&1 \
    || die "the Railway CLI (railway) is not installed; see https://docs.railway.com/guides/cli"
[[ -f railway.json ]] || die "railway.json not found in $(pwd)"
[[ -f "$env_file" ]] || die "env file '$env_file' not found (start from .env.example: cp .env.example .env)"
[[ -r "$env_file" ]] || die "env file '$env_file' is not readable"

target_args=()
if [[ -n "${RAILWAY_SERVICE:-}" ]]; then
    target_args+=(--service "$RAILWAY_SERVICE")
fi
if [[ -n "${RAILWAY_ENVIRONMENT:-}" ]]; then
    target_args+=(--environment "$RAILWAY_ENVIRONMENT")
fi

tag=deploy-railway
# shellcheck source=scripts/lib/dotenv.sh
source scripts/lib/dotenv.sh
read_env_file
[[ ${#names[@]} -gt 0 ]] || die "$env_file sets no variables"

if ! railway whoami >/dev/null 2>&1; then
    die "not logged in to Railway; run 'railway login' first"
fi
if ! railway status >/dev/null 2>&1; then
    die "this directory is not linked to a Railway project; run 'railway link' first"
fi

# Newer CLIs read a value from stdin (`railway variable set NAME --stdin`), some older ones have
# `railway variables --set-from-stdin NAME`; the oldest only take NAME=VALUE as an argument,
# which other local users could see in the process list for a moment.
if railway variable set --help 2>/dev/null | grep -q -- '--stdin'; then
    mode=stdin
elif railway variables --help 2>/dev/null | grep -q -- '--set-from-stdin'; then
    mode=set-from-stdin
else
    mode=argv
    echo "deploy-railway: this railway CLI cannot read values from stdin; passing them as arguments" >&2
fi

echo "== setting ${#names[@]} variable(s) from $env_file: ${names[*]}"
for i in "${!names[@]}"; do
    name=${names[$i]}
    case $mode in
        stdin)
            printf '%s' "${values[$i]}" \
                | railway variable set "$name" --stdin --skip-deploys "${target_args[@]}" >/dev/null
            ;;
        set-from-stdin)
            printf '%s' "${values[$i]}" \
                | railway variables --set-from-stdin "$name" --skip-deploys "${target_args[@]}" >/dev/null
            ;;
        argv)
            railway variables --set "$name=${values[$i]}" --skip-deploys "${target_args[@]}" >/dev/null
            ;;
    esac || die "setting $name failed"
done

up_args=("$@")
if [[ ${#up_args[@]} -eq 0 ]]; then
    # Stream the build logs and exit with the build's result instead of following the logs.
    up_args=(--ci)
fi
echo "== railway up ${up_args[*]}"
railway up "${target_args[@]}" "${up_args[@]}"
