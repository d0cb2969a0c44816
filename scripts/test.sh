#!/usr/bin/env bash
# Sets up, builds, and runs the whole test suite (GoogleTest through CTest).
# Tests find the shared checkpoints in ../shared/models or $T2_MODELS_DIR; with
# CI=true a missing checkpoint fails its tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
