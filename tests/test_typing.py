"""The package is typed (issue 21, point 1): it ships ``py.typed``, and a user's code type
checks under ``mypy --strict`` as a user would write it, while the mistakes the types
exist to catch are caught.  The mypy run skips, saying so, where mypy is not installed
(CI's checks stage installs it)."""

from __future__ import annotations

import os
import pathlib
import textwrap

import pytest

import optimisers as opt

PACKAGE = pathlib.Path(opt.__file__).parent

USER_CODE = textwrap.dedent("""
    import numpy as np
    import optimisers as opt
    from optimisers import schedules

    model = {"w": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    eta: opt.Schedule = schedules.warmup_cosine_decay(0.0, 1e-3, 10, 100)
    rule = opt.OptimiserChain(opt.SkipNonFinite(), opt.ClipGlobalNorm(1.0),
                              opt.AdamW(eta, beta=(0.9, 0.99), lambda_=0.1))
    state = opt.setup(lambda path, x: rule if x.ndim >= 2 else opt.Adam(), model)
    grads = {"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
    state, model = opt.update_(state, model, grads)
    norm: float = opt.global_norm(grads)
    opt.adjust_(state, 1e-4)
    pairs = opt.trainables(model, path=True)
    path: opt.KeyPath = pairs[0][0]
    flat, re = opt.destructure(model)
    d, s = opt.apply_(opt.Descent(0.1), None, np.ones(2), np.ones(2))
    """)

# each line: a mistake, and the words of the error mypy must give for it
MISTAKES = textwrap.dedent("""
    import numpy as np
    import optimisers as opt
    from optimisers import schedules

    opt.Adam(eta="fast")
    opt.Adam(beta=0.9)
    opt.AccumGrad(n=2.5)
    opt.Descent(0.1).eta = 0.2
    n: int = opt.global_norm({"w": np.ones(2)})
    s: str = schedules.constant(1.0)(3)
    opt.update_()
    """)
EXPECTED = [
    'Argument "eta" to "Adam" has incompatible type "str"',
    'Argument "beta" to "Adam" has incompatible type "float"',
    'Argument "n" to "AccumGrad" has incompatible type "float"',
    'Property "eta" defined in "Descent" is read-only',
    'Incompatible types in assignment (expression has type "float", variable has type "int")',
    'Incompatible types in assignment (expression has type "float", variable has type "str")',
    'Missing positional arguments "tree", "model", "grad" in call to "update_"',
]


def test_the_package_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One cache for the module's mypy runs: the second reads numpy and the package from it."""
    return tmp_path_factory.mktemp("mypy_cache")


def _mypy(tmp_path: pathlib.Path, cache: pathlib.Path, code: str) -> tuple[str, int]:
    api = pytest.importorskip(
        "mypy.api",
        reason="mypy is not installed (CI's checks stage "
        "installs it): the type check of user code "
        "is skipped",
    )
    src = tmp_path / "user.py"
    src.write_text(code)
    env_path = os.environ.get("MYPYPATH")
    # an editable install imports the source tree, where mypy does not look by itself
    if PACKAGE.parent.name == "src":
        os.environ["MYPYPATH"] = str(PACKAGE.parent)
    try:
        out, err, status = api.run(
            [
                "--strict",
                "--no-error-summary",
                "--hide-error-context",
                "--cache-dir",
                str(cache),
                str(src),
            ]
        )
    finally:
        if env_path is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = env_path
    return out + err, status


def test_user_code_type_checks_under_strict_mypy(
    tmp_path: pathlib.Path, mypy_cache: pathlib.Path
) -> None:
    out, status = _mypy(tmp_path, mypy_cache, USER_CODE)
    assert status == 0, out


def test_the_types_catch_what_they_are_for(
    tmp_path: pathlib.Path, mypy_cache: pathlib.Path
) -> None:
    out, status = _mypy(tmp_path, mypy_cache, MISTAKES)
    assert status == 1
    lines = [ln for ln in out.splitlines() if ": error: " in ln]
    for want in EXPECTED:
        assert any(want in ln for ln in lines), f"{want!r} not in:\n{out}"
    assert len(lines) == len(EXPECTED), out
