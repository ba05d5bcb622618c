"""The rules the benchmark knows, read from the library's registry, and the bytes each
one must move.

Every built-in rule class (``optimisers.RULES``) that builds with no arguments is a rule
of the benchmark, named by its class name in lower case (``Adam`` -> ``"adam"``), at its
default hyper-parameters (:data:`SETTINGS` lists the few the benchmark changes).  A rule
added to the library appears here with nothing to edit.  ``"a+b"`` names the chain
``OptimiserChain(A(), B())`` of any of them; :data:`CHAINS` are the chains the benchmark
lists (``--list``).

A rule's *minimal memory traffic* is what any implementation of its step has to read and
write per parameter element, however it is written.  It is a list of *passes* over
memory, each pass a pair ``(read_only, updated)``:

* ``read_only`` streams are read and never written (the gradient ``g``);
* ``updated`` streams are read and written back in place (the parameter ``x`` and every
  state array).

A pass costs ``read_only + 2 * updated`` arrays of the parameter's itemsize per element.
The step is one fused pass that reads ``g`` and updates ``x`` and every state array of
the parameter's size, counted in the state ``rule.init(x)`` builds (a chain's states
together); a rule of :data:`NORM_PASS` first reads ``g`` once more for its norm, and
one of :data:`PRE_PASS` reads its arrays once more for its whole-array reductions.  The
probe (``optimisers._probe``) measures the machine's bandwidth on exactly these passes.
Adam (``m`` and ``v``) in float32: (1 + 2 * 3) arrays x 4 bytes = 28 bytes per element.

>>> get("adam").passes, get("clipnorm+adamw").passes
(((1, 3),), ((1, 0), (1, 3)))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import optimisers as opt

__all__ = [
    "RuleSpec",
    "SETTINGS",
    "CHAINS",
    "NORM_PASS",
    "PRE_PASS",
    "get",
    "names",
    "arrays_per_element",
    "bytes_per_step",
    "state_arrays",
]

# Hyper-parameters the benchmark sets where a rule's default would time another
# computation: AdamW's default decay is 0, which makes its step Adam's.  (0.01 is
# PyTorch's default.)
SETTINGS = {
    "adamw": {"lambda_": 1e-2},
    # the rules that wrap another rule: around Adam, at their own defaults
    "lookahead": {"rule": opt.Adam()},
    "ema": {"rule": opt.Adam()},
}

# Rules that read the whole gradient before their element-wise step (ClipNorm's norm of
# g, ClipGlobalNorm's and SkipNonFinite's partial of it): a pass the state does not show.
NORM_PASS = ("clipnorm", "clipglobalnorm", "skipnonfinite")

# Rules whose step first reads whole arrays once more, writing nothing (rules_factored.pxi):
# Adafactor reads g, v and x (its update's RMS and the parameter's, on a vector), LAMB
# reads g, m, v and x (both norms of its trust ratio).  Arrays read by that pass.
PRE_PASS = {"adafactor": 3, "lamb": 4}

# The chains --list shows and the comparisons with torch know (any "a+b" runs).
CHAINS = ("clipnorm+adamw", "clipglobalnorm+adamw", "clipgrad+adam", "weightdecay+adam")

# A parameter of this many elements is what the state arrays are counted on: a size no
# per-array scalar of a state (Adam's beta^t) has.
_PROBE_SIZE = 7


@dataclass(frozen=True)
class RuleSpec:
    """A rule of the benchmark: a built-in rule class or a chain of them.

    ``classes`` the rule classes (one, or a chain's in order); ``passes`` its minimal
    traffic (see the module docstring).
    """

    name: str
    classes: tuple
    passes: tuple

    def rule(self, eta=None):
        """The rule at the benchmark's settings; ``eta`` (not None) replaces the learning
        rate of the last rule of a chain that has one."""
        parts = [_build(cls) for cls in self.classes]
        if eta is not None:
            k = max((i for i, r in enumerate(parts) if hasattr(r, "eta")), default=None)
            if k is not None:
                parts[k] = _build(self.classes[k], eta=eta)
            elif hasattr(parts[-1], "rule"):  # Lookahead, EMA: their inner rule's
                parts[-1] = opt.adjust(parts[-1], eta=eta)
        return parts[0] if len(parts) == 1 else opt.OptimiserChain(*parts)

    @property
    def doc(self):
        """The rule as the benchmark builds it (its repr)."""
        if self.matrix_only:
            return f"{self.rule()!r} on matrices, AdamW on the rest"
        return repr(self.rule())

    @property
    def matrix_only(self):
        """Whether a rule of the spec trains matrices only (``setup`` refuses a vector:
        Muon): its speed cases are matrices, and in the quality problems the arrays that
        are not matrices are trained by AdamW (:meth:`for_model`)."""
        return any(_refuses_vectors(cls) for cls in self.classes)

    def for_model(self, eta=None):
        """What ``setup`` gets: the rule, or for a matrix-only rule ``setup(rule_for,
        model)``'s function giving it the matrices and AdamW (same ``eta``) the rest."""
        rule = self.rule(eta)
        if not self.matrix_only:
            return rule
        rest = opt.AdamW() if eta is None else opt.AdamW(eta)
        return lambda path, x: rule if x.ndim == 2 else rest


def _refuses_vectors(cls):
    try:
        _build(cls).check_param(np.zeros(4))
    except ValueError:
        return True
    return False


def _name(cls):
    return cls.__name__.lower()


def _build(cls, **extra):
    return cls(**{**SETTINGS.get(_name(cls), {}), **extra})


def state_arrays(tree):
    """The distinct numpy arrays a state (or a whole state tree, with its ``Leaf``s and
    their per-leaf buffers) holds, at any nesting."""
    seen, todo = {}, [tree]
    while todo:
        s = todo.pop()
        if isinstance(s, np.ndarray):
            seen.setdefault(id(s), s)
        elif isinstance(s, opt.Leaf):
            todo += [s.state, getattr(s, "_scratch", None)]
        elif isinstance(s, dict):
            todo += list(s.values())
        elif isinstance(s, (list, tuple)):
            todo += list(s)
    return list(seen.values())


def _passes(rule, classes):
    x = np.zeros(_PROBE_SIZE)
    states = sum(a.size == x.size for a in state_arrays(rule.init(x)))
    norms = ((1, 0),) if any(_name(c) in NORM_PASS for c in classes) else ()
    pre = tuple((PRE_PASS[_name(c)], 0) for c in classes if _name(c) in PRE_PASS)
    return norms + pre + ((1, 1 + states),)


@functools.cache
def _single_rules():
    """The built-in rule classes that build with no arguments: name ->
    class, in the registry's order.  OptimiserChain is left out: chains are named by
    their parts ("a+b")."""
    out = {}
    for cls in opt.RULES:
        if issubclass(cls, opt.OptimiserChain):
            continue
        try:
            _build(cls)
        except TypeError:  # needs arguments (AccumGrad(n), MixedPrecision)
            continue
        out[_name(cls)] = cls
    return out


@functools.cache
def _spec(key):
    singles = _single_rules()
    parts = key.split("+")
    unknown = [p for p in parts if p not in singles]
    if unknown:
        raise KeyError(
            f"unknown rule {unknown[0]!r}; known rules: {', '.join(singles)} "
            f"and chains of them joined by '+' (e.g. {CHAINS[0]})"
        )
    classes = tuple(singles[p] for p in parts)
    spec = RuleSpec(key, classes, ())
    return RuleSpec(key, classes, _passes(spec.rule(), classes))


def names():
    """Every rule name, in the registry's order, then :data:`CHAINS`."""
    return list(_single_rules()) + list(CHAINS)


def get(name):
    """The :class:`RuleSpec` called ``name`` (case-insensitive, ``"a+b"`` for a chain);
    ``KeyError`` lists the rules."""
    return _spec("+".join(p.strip() for p in name.strip().lower().split("+")))


def arrays_per_element(passes):
    """How many arrays of the parameter's itemsize the ``passes`` move per element.

    >>> arrays_per_element(get("adam").passes), arrays_per_element(get("clipnorm+adamw").passes)
    (7, 8)
    """
    return sum(r + 2 * u for r, u in passes)


def bytes_per_step(passes, size, itemsize):
    """The minimal bytes one step moves over ``size`` elements."""
    return arrays_per_element(passes) * size * itemsize
