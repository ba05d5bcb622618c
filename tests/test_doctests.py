"""Run the docstring examples of every public module of the installed package."""

import doctest
import importlib
import pkgutil

import pytest

import optimisers
from optimisers import _rule

# Modules whose docstrings are prose only (private machinery; the kernels are compiled).
WITHOUT_EXAMPLES = {
    "optimisers._kernels",
    "optimisers._kernels_avx2",
    "optimisers._kernels_avx512",
    "optimisers._program",
    "optimisers._probe",
}

# Modules that import an optional package (skipped, with the reason, where it is absent).
NEEDS = {
    "optimisers.torch": "torch",
    "optimisers._torch_views": "torch",
    "optimisers._torch_groups": "torch",
    "optimisers._torch_plan": "torch",
    "optimisers._torch_state": "torch",
}

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(optimisers.__path__, "optimisers.")
    if not name.endswith("__main__")
) + ["optimisers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    # a class an example defines in a package module's namespace registers as a built-in
    # rule (Rule.__init_subclass__): keep it out of the registry the other tests read
    monkeypatch.setattr(_rule, "_BUILTIN", dict(_rule._BUILTIN))
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name} needs {NEEDS[name]} (optional)")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name not in WITHOUT_EXAMPLES:
        assert result.attempted > 0, f"{name} has no docstring examples"
