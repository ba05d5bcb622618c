"""Every ```python block of README.md runs, each in a fresh namespace, and checks something.

A block that prints a loss (``loss 0.1234``) must end lower than it starts: the block is
run a second time with ``update``/``update_`` doing nothing, which prints the starting
loss.  A block that calls ``update``/``update_`` must change the parameters it trains.  A
block that does neither must ``assert`` what it shows; a block that checks nothing fails.
A block that imports a package that is not installed is skipped with a reason (the
package's dependencies, numpy and threadpoolctl, are always there; torch or scipy in a
README example are optional).

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

import numpy as np
import pytest

import optimisers

README = Path(
    os.environ.get("OPTIMISERS_README", Path(__file__).resolve().parent.parent / "README.md")
)
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
            return sys.modules[name] is None  # None: imports of it are blocked
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


def asserts(source):
    """Whether ``source`` has an ``assert`` statement of its own."""
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))


class Training:
    """Wraps ``optimisers.update``/``update_`` to see what a block trains: copies of the
    parameters at its first call, the model its last call returned."""

    def __init__(self, monkeypatch):
        self.start = self.model = None
        for fname in ("update", "update_"):
            monkeypatch.setattr(optimisers, fname, self._wrap(getattr(optimisers, fname)))

    def _wrap(self, update):
        def wrapped(tree, model, *grads):
            if self.start is None:
                self.start = [a.copy() for a in optimisers.trainables(model)]
            tree, self.model = update(tree, model, *grads)
            return tree, self.model

        return wrapped

    def changed(self):
        end = optimisers.trainables(self.model)
        return len(end) == len(self.start) and not all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(end, self.start)
        )


BLOCKS = python_blocks(README.read_text(encoding="utf-8")) if README.exists() else []


def test_readme_has_python_blocks():
    assert README.exists(), README
    assert BLOCKS, f"{README} has no ```python block"


@pytest.mark.parametrize("line, source", BLOCKS, ids=[f"line{ln}" for ln, _ in BLOCKS])
def test_readme_block_runs(line, source, monkeypatch, tmp_path):
    missing = missing_modules(source)
    if missing:
        pytest.skip(f"README block at line {line} needs {', '.join(missing)} (not installed)")
    monkeypatch.chdir(tmp_path)  # files a block writes land here
    name = f"{README.name}:{line}"
    with monkeypatch.context() as m:
        training = Training(m)
        printed = run_block(source, name)
    if training.start is not None:
        assert training.changed(), f"{name}: update/update_ left the parameters unchanged"
    losses = [float(x) for x in LOSS.findall(printed)]
    if not losses:
        assert training.start is not None or asserts(source), (
            f"{name} checks nothing: it prints no loss, trains nothing and asserts nothing"
        )
        return
    final = losses[-1]
    # the same block with training switched off prints the starting loss
    monkeypatch.setattr(optimisers, "update_", lambda tree, model, *grads: (tree, model))
    monkeypatch.setattr(optimisers, "update", lambda tree, model, *grads: (tree, model))
    start = [float(x) for x in LOSS.findall(run_block(source, name))][-1]
    assert final < start, f"{name}: the loss went from {start} to {final}"
