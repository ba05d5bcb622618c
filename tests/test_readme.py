"""Every ```python block of README.md runs, each in a fresh namespace.

A block that prints a loss (``loss 0.1234``) must end lower than it starts: the block is
run a second time with ``update``/``update_`` doing nothing, which prints the starting
loss.  A block that imports a package that is not installed is skipped with a reason
(the package's dependencies, numpy and threadpoolctl, are always there; torch or scipy in
a README example are optional).

Set ``OPTIMISERS_README`` to a path to check a draft instead of the repository's README.
"""

import ast
import contextlib
import importlib.util
import io
import linecache
import os
import re
import sys
from pathlib import Path

import pytest

import optimisers

README = Path(os.environ.get("OPTIMISERS_README",
                             Path(__file__).resolve().parent.parent / "README.md"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
LOSS = re.compile(r"\bloss[ =:]+([-+0-9.eE]+|nan|inf)")


def python_blocks(text):
    """``[(line number, source)]`` of the ```python fenced blocks of a markdown text."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def missing_modules(source):
    """Top-level modules that ``source`` imports and that are not installed."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    def missing(name):
        if name in sys.modules:
            return sys.modules[name] is None         # None: imports of it are blocked
        return importlib.util.find_spec(name) is None
    return sorted(n for n in names if missing(n))


def run_block(source, name):
    """Execute ``source`` in a fresh namespace; returns what it printed."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks
    code = compile(source, name, "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__readme__"})
    return out.getvalue()


BLOCKS = python_blocks(README.read_text(encoding="utf-8")) if README.exists() else []


def test_readme_has_python_blocks():
    assert README.exists(), README
    assert BLOCKS, f"{README} has no ```python block"


@pytest.mark.parametrize("line, source", BLOCKS, ids=[f"line{ln}" for ln, _ in BLOCKS])
def test_readme_block_runs(line, source, monkeypatch, tmp_path):
    missing = missing_modules(source)
    if missing:
        pytest.skip(f"README block at line {line} needs {', '.join(missing)} "
                    f"(not installed)")
    monkeypatch.chdir(tmp_path)                      # files a block writes land here
    name = f"{README.name}:{line}"
    printed = run_block(source, name)
    losses = [float(x) for x in LOSS.findall(printed)]
    if not losses:
        return
    final = losses[-1]
    # the same block with training switched off prints the starting loss
    monkeypatch.setattr(optimisers, "update_", lambda tree, model, *grads: (tree, model))
    monkeypatch.setattr(optimisers, "update", lambda tree, model, *grads: (tree, model))
    start = [float(x) for x in LOSS.findall(run_block(source, name))][-1]
    assert final < start, f"{name}: the loss went from {start} to {final}"
