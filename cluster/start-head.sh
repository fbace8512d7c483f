#!/usr/bin/env bash
# Start a Ray head node with memsel's environment.
#   cluster/start-head.sh [extra `ray start` options]
# Environment: NUM_CPUS (default: all), PORT (GCS, 6379), DASHBOARD_HOST (127.0.0.1; 0.0.0.0 to
# accept job submissions from other machines), DASHBOARD_PORT (8265), MEMSEL_VENV (repo's .venv).
# Ray 2.60 turns token authentication on and writes the token to ~/.ray/auth_token; clients on
# other machines need that token (see submit.sh).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${MEMSEL_VENV:-$REPO/.venv}/bin"
[ -x "$BIN/ray" ] || { echo "start-head.sh: $BIN/ray not found; run 'make install' first" >&2; exit 2; }
exec "$BIN/ray" start --head --port="${PORT:-6379}" \
  --dashboard-host="${DASHBOARD_HOST:-127.0.0.1}" --dashboard-port="${DASHBOARD_PORT:-8265}" \
  --include-dashboard=true ${NUM_CPUS:+--num-cpus="$NUM_CPUS"} "$@"
