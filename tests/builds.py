"""The builds of the kernels (baseline, AVX2, AVX-512) a test can run here, and the reason
one cannot: a test of a build this machine does not run is skipped saying so."""

import pytest

from optimisers import _kernels as baseline
from optimisers import _native

__all__ = ["BUILDS", "ISAS", "WIDER_ISAS", "build_or_skip", "runs_here"]

BUILDS = _native.builds()  # {isa: module} of the builds this machine runs
ISAS = _native.ISAS  # every build, narrowest first
WIDER_ISAS = ISAS[1:]  # the builds that are compared with the baseline


def runs_here():
    return ", ".join(BUILDS)


def build_or_skip(isa):
    """The kernel module of build ``isa``, or a skip that says why this machine has none."""
    module = BUILDS.get(isa)
    if module is None:
        if not baseline.cpu_runs(isa):
            why = f"this processor does not run the {isa} build's instructions"
        else:
            why = f"the {isa} build is not installed (another platform or compiler)"
        pytest.skip(f"{why}: its kernels are not tested here (this machine runs {runs_here()})")
    return module
