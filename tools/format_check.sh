#!/usr/bin/env bash
# The formatting check that CI does not run yet: ruff's import order ("I") and `ruff format`.
# They rewrap most files (see [tool.ruff.format] in pyproject.toml), so they are applied once,
# by the integrator, after the open branches have merged:
#
#     bash tools/format_check.sh --apply     # rewrites the files: commit that alone
#     bash tools/format_check.sh             # checks, changes nothing (exit 1 if not formatted)
#
# then CI turns it on: add `bash tools/format_check.sh` to the checks stage of .ci/run, and
# "I" to [tool.ruff.lint] select in pyproject.toml.
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
