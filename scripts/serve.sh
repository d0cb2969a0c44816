#!/usr/bin/env bash
# Sets up, builds, and serves the default model (stories260K) on
# http://127.0.0.1:8080 with the experts in experts/. Extra arguments go to
# `t2 serve`, e.g. --port 9000 --dispatch prompt --api-key sk-...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p experts
exec build/t2 serve --model "${T2_MODEL:-models/stories260K}" --experts-dir "${T2_EXPERTS_DIR:-experts}" \
  --host "${T2_HOST:-127.0.0.1}" --port "${T2_PORT:-8080}" "$@"
