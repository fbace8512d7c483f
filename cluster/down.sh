#!/usr/bin/env bash
# Stop exactly the processes that cluster/up.sh started and recorded in the state folder (Ray nodes,
# whatever they started, a running job's driver included, and the MLflow server): SIGTERM, a grace
# period, SIGKILL, by recorded PID and process session. Never `ray stop`, which ends every Ray on the machine.
#   cluster/down.sh [--state DIR] [--grace SECONDS]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${MEMSEL_VENV:-$REPO/.venv}/bin/python"
[ -x "$PY" ] || { echo "down.sh: $PY not found; run 'make install' first (or set MEMSEL_VENV)" >&2; exit 2; }
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m memsel.standing_cluster down --state "$REPO/.cluster" "$@"
