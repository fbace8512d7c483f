#!/usr/bin/env bash
# Join this machine to a running head as a worker node.
#   cluster/start-worker.sh HEAD_HOST:PORT [extra `ray start` options]
# Environment: NUM_CPUS (default: all), MEMSEL_VENV (repo's .venv). memsel must be installed on
# every node at the same path (make install), and data / run directories must be reachable from
# every node (a shared filesystem), since trials may run anywhere.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: cluster/start-worker.sh HEAD_HOST:PORT [ray start options]" >&2; exit 2; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${MEMSEL_VENV:-$REPO/.venv}/bin"
HEAD="$1"; shift
# The head enabled token auth (Ray 2.60's default); a joining node must present the same token:
# ~/.ray/auth_token copied from the head, or RAY_AUTH_TOKEN.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
exec "$BIN/ray" start --address="$HEAD" ${NUM_CPUS:+--num-cpus="$NUM_CPUS"} "$@"
