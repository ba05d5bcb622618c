#!/usr/bin/env bash
# Build the documentation into docs/_build/html, warnings as errors.
#
#   bash docs/build.sh [PYTHON]
#
# PYTHON (default: $PYTHON, else python3) must have optimisers installed (pip install .):
# the API pages are read from the installed package's docstrings.  The doc tools of
# docs/requirements.txt are installed into the same environment, the code of the pages
# (docs/snippets/*.py) is run, and sphinx-build writes the HTML; open
# docs/_build/html/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python3}}

if ! "$PY" -c "import optimisers" 2>/dev/null; then
    echo "docs: $PY cannot import optimisers; install the package first (pip install .)" >&2
    exit 1
fi
"$PY" -m pip install -q -r docs/requirements.txt

echo "== docs: the code shown on the pages"
for snippet in docs/snippets/*.py; do
    if grep -q '^import torch' "$snippet" && ! "$PY" -c "import torch" 2>/dev/null; then
        echo "$snippet: skipped (torch is not installed)"
        continue
    fi
    echo -n "$snippet: "
    "$PY" "$snippet"
done

echo "== docs: sphinx-build (warnings are errors)"
"$PY" -m sphinx -W --keep-going -b html docs docs/_build/html
echo "docs: $(pwd)/docs/_build/html/index.html"
