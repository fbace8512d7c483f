#!/usr/bin/env bash
# Kept for old habits: a thin wrapper of `memsel submit` (see `memsel submit --help`).
#   cluster/submit.sh [--follow] [--no-wait] [--address URL] -- pipeline --config configs/quickstart.yaml --run-dir /shared/runs/x
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${MEMSEL_VENV:-$REPO/.venv}/bin/python"
[ -x "$PY" ] || { echo "submit.sh: $PY not found; run 'make install' first (or set MEMSEL_VENV)" >&2; exit 2; }
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m memsel.cli submit "$@"
