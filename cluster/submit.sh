#!/usr/bin/env bash
# Submit a memsel command to a Ray cluster as a Ray job, and follow its logs until it ends.
#   cluster/submit.sh [--no-wait] -- pipeline --config configs/quickstart.yaml --run-dir /shared/runs/x
# The memsel arguments after `--` run on the cluster with --ray-address auto (the job joins the
# cluster). Environment: RAY_JOBS_ADDRESS (the head's dashboard, default http://127.0.0.1:8265),
# RAY_AUTH_TOKEN (else the token file ~/.ray/auth_token is read), MEMSEL_VENV.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${MEMSEL_VENV:-$REPO/.venv}/bin"
WAIT=1
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --no-wait) WAIT=0; shift ;;
    *) echo "submit.sh: unknown option $1 (memsel arguments go after --)" >&2; exit 2 ;;
  esac
done
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { echo "usage: cluster/submit.sh [--no-wait] -- MEMSEL_COMMAND [ARGS...]" >&2; exit 2; }
# Ray 2.60 clients in another process must ask for token auth explicitly (see STACK-NOTES).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
ARGS=(job submit --address "${RAY_JOBS_ADDRESS:-http://127.0.0.1:8265}" --entrypoint-num-cpus 0)
[ "$WAIT" = 1 ] || ARGS+=(--no-wait)
# Entry-point gets 0 CPUs so that the job's trials can use every core of the cluster.
exec "$BIN/ray" "${ARGS[@]}" -- "$BIN/memsel" "$@" --ray-address auto
