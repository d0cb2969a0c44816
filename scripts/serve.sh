#!/usr/bin/env bash
# Sets up, builds, and serves the default model (models/stories260K, in the
# repository) on http://127.0.0.1:8080 with the experts in experts/ and
# two-pass dispatch (configs/server.json). Every argument goes to `t2 serve`
# and wins over the defaults here, e.g. --port 9000 --dispatch prompt --api-key sk-...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Defaults as environment variables, so the user's own flags override them
# (flags > T2_* > config file); configs/server.json listens on 0.0.0.0 for containers.
export T2_HOST="${T2_HOST:-127.0.0.1}"
exec build/t2 serve --config configs/server.json "$@"
