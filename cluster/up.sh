#!/usr/bin/env bash
# Start a Ray cluster on this machine (a head and N worker nodes) and an MLflow server, everything on
# 127.0.0.1, token authentication on; their PIDs go to the state folder (default .cluster/ in the repo).
#   cluster/up.sh [--workers N] [--cpus-per-node C] [--dashboard-port D] [--mlflow-port P] [--port GCS] [--state DIR]
# Defaults: 1 worker, 1 CPU per node, dashboard/Jobs API 8265, MLflow 5000, GCS a free port.
# Stop with cluster/down.sh (same --state). Environment: MEMSEL_VENV (default: the repo's .venv).
# A thin wrapper of `python -m memsel.standing_cluster up` (see that module's docstring).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${MEMSEL_VENV:-$REPO/.venv}/bin/python"
[ -x "$PY" ] || { echo "up.sh: $PY not found; run 'make install' first (or set MEMSEL_VENV)" >&2; exit 2; }
# This checkout's memsel, for this command and for the nodes (and so the jobs' Ray workers).
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m memsel.standing_cluster up --state "$REPO/.cluster" "$@"
