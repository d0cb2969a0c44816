#!/usr/bin/env bash
# Sets up, builds, and generates a story with the default model (stories260K).
# Extra arguments go to `t2 generate`, e.g. --prompt "Tom and his dog" --temperature 0.8
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/t2 generate --model "${T2_MODEL:-models/stories260K}" --prompt "Once upon a time" "$@"
