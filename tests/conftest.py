"""Shared test setup: make tests/ importable (reference.py, registry.py) under
--import-mode=importlib, and offer thread-count fixtures."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# OpenMP threads that find no work sleep at once instead of spinning (libgomp spins up to
# 300,000 rounds after each parallel region by default).  The suite runs thousands of
# small kernels between stretches of Python (the reference, the checks), and on a busy
# machine the spinning thread takes the core the test itself needs: the suite took 84 s
# instead of 33 s on this project's 2-core machine at load 4.  Results are the same bits;
# set before the kernels load libgomp, and an OMP_WAIT_POLICY of your own wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from threadpoolctl import threadpool_limits

import optimisers  # (loads the OpenMP runtime before threadpoolctl looks)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    """Run the test body with OpenMP limited to 1 and to 2 threads."""
    with threadpool_limits(limits=request.param, user_api="openmp"):
        yield request.param


@pytest.fixture
def small_parallel_threshold():
    """Lower the parallel threshold so that modest arrays take the OpenMP path."""
    old = optimisers.get_parallel_threshold()
    optimisers.set_parallel_threshold(4096)
    yield 4096
    optimisers.set_parallel_threshold(old)
