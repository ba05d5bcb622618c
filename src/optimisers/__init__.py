"""optimisers: gradient-based optimisation rules for nested numpy models.

The Python heir of Julia's Optimisers.jl: explicit state (``setup`` once, ``update`` every
step), every rule of the seed, and fused OpenMP kernels that run at memory bandwidth.

>>> import numpy as np, optimisers as opt
>>> model = {"w": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32), "act": np.tanh}
>>> state = opt.setup(opt.Adam(1e-3), model)
>>> grads = {"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
>>> state, model = opt.update_(state, model, grads)
>>> model["b"]
array([-0.001, -0.001, -0.001], dtype=float32)
"""

from importlib import metadata as _metadata

# the build of the kernels in use (see _native): its thread and ISA controls
from ._native import (
    get_parallel_threshold,
    kernel_isa,
    max_threads,
    openmp_enabled,
    set_parallel_threshold,
)
from ._functor import functor, trainable
from ._keypath import KeyPath, getkeypath, haskeypath
from ._leaf import Leaf
from ._rule import Rule, builtin_rules, init

# the rule classes (each module's __all__): they register themselves in _rule's registry
from ._rules_sgd import *  # noqa: F403
from ._rules_adam import *  # noqa: F403
from ._rules_torchlike import *  # noqa: F403
from ._rules_adaptive import *  # noqa: F403
from ._rules_transform import *  # noqa: F403
from ._rules_muon import *  # noqa: F403
from ._rules_factored import *  # noqa: F403
from ._global import global_norm
from ._composite import *  # noqa: F403
from ._rules_averaged import *  # noqa: F403
from ._tree import isnumeric, maywrite, setup, trainables
from ._adjust import adjust, adjust_, freeze_, hyperparameters, thaw_
from ._engine import apply_, update, update_
from ._destructure import Restructure, destructure
from ._checkpoint import CheckpointError, load_state, save_state
from ._averaged import averaged
from . import schedules
from .schedules import Schedule

# The release, from the installed package's metadata: meson-python writes there the one
# version of the project, meson.build's (tests/test_version.py checks they agree).
try:
    __version__ = _metadata.version(__name__)
except _metadata.PackageNotFoundError:  # imported from a build that was never installed
    __version__ = "0+unknown"

#: every built-in rule class (the registry of _rule.builtin_rules)
RULES = builtin_rules()

__all__ = [
    "setup",
    "update",
    "update_",
    "adjust",
    "adjust_",
    "hyperparameters",
    "freeze_",
    "thaw_",
    "destructure",
    "Restructure",
    "trainables",
    "trainable",
    "isnumeric",
    "maywrite",
    "KeyPath",
    "getkeypath",
    "haskeypath",
    "Leaf",
    "init",
    "apply_",
    "Rule",
    "functor",
    "openmp_enabled",
    "max_threads",
    "get_parallel_threshold",
    "set_parallel_threshold",
    "kernel_isa",
    "save_state",
    "load_state",
    "CheckpointError",
    "RULES",
    "schedules",
    "Schedule",
    "global_norm",
    "averaged",
]
# the rule classes, by name (a separate statement: type checkers read the literal list above
# as the names this package exports, and the star imports export the rules)
__all__ += [r.__name__ for r in RULES]
