#!/usr/bin/env bash
# The formatting check CI runs (.ci/run, the checks stage): ruff's import order ("I") and
# `ruff format`, as configured in pyproject.toml.
#
#     bash tools/format_check.sh             # checks, changes nothing (exit 1 if not formatted)
#     bash tools/format_check.sh --apply     # rewrites the files to the format
set -euo pipefail
cd "$(dirname "$0")/.."
RUFF=${RUFF:-ruff}

if [ "${1:-}" = "--apply" ]; then
    "$RUFF" check --select I --fix .
    "$RUFF" format .
else
    "$RUFF" check --select I .
    "$RUFF" format --check .
fi
