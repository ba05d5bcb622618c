"""Every rule class of the library (opt.RULES), once at its defaults and once with
hyper-parameters that make the arithmetic non-trivial, plus the chains of the seed's test
list.  The defaults are read from opt.RULES; the tuned rows and the chains are written by
hand, and the checks at the end ask a new rule class for its rows.

``RULES`` is a list of ``(id, rule)``; tests parametrise over it (``ids=RULE_IDS``).
``COMPLEX_OK`` / ``COMPLEX_REFUSED`` name the rule classes that must accept / refuse
complex parameters (API.md "Departures", conventions §1 and §4).
"""

from __future__ import annotations

import numpy as np

import optimisers as opt
from optimisers import (
    EMA,
    LAMB,
    AccumGrad,
    AdaBelief,
    AdaDelta,
    Adafactor,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    ClipGlobalNorm,
    ClipGrad,
    ClipNorm,
    Descent,
    Lion,
    Lookahead,
    MixedPrecision,
    Momentum,
    Muon,
    NAdam,
    Nesterov,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    ScheduleFreeAdamW,
    SignDecay,
    SkipNonFinite,
    TorchAdamax,
    TorchNAdam,
    TorchRAdam,
    WeightDecay,
)

__all__ = [
    "RULES",
    "RULE_IDS",
    "SINGLE_RULES",
    "DEFAULT_RULES",
    "COMPLEX_OK",
    "COMPLEX_REFUSED",
    "SPECS",
    "CONVERGENCE",
    "rule_classes_in",
    "LEAF_CLASSES",
    "MATRIX_ONLY",
    "MATRIX_RULES",
    "MATRIX_CONVERGENCE",
]

# One entry per rule class at its defaults, read from the library's registry (opt.RULES:
# every built-in Rule subclass), so that a new rule is tested at its defaults without a line
# here.  A class that cannot be made without arguments is named in _AT_DEFAULTS; the
# composites wrap other rules and are tested through CHAINS.
_COMPOSITES = (OptimiserChain, MixedPrecision, Lookahead, EMA)
_AT_DEFAULTS = {AccumGrad: ("AccumGrad1", lambda: AccumGrad(1))}  # no default n
# Rules for 2-D parameters whose step runs through BLAS (Muon): they cannot train the 1-D
# arrays of the generic lists, and match their float64 reference closely, not bit for bit.
# They have rows of their own (MATRIX_RULES, MATRIX_CONVERGENCE, below), which
# tests/test_muon.py runs with the same checks at a tolerance.
MATRIX_ONLY = (Muon,)


def _at_defaults(cls):
    name, make = _AT_DEFAULTS.get(cls, (cls.__name__, cls))
    try:
        return name, make()
    except TypeError as e:
        raise AssertionError(
            f"the rule class {cls.__name__} cannot be made at its defaults "
            f"({e}): give it an entry in registry._AT_DEFAULTS"
        ) from None


DEFAULT_RULES = [
    _at_defaults(c) for c in opt.RULES if c not in _COMPOSITES and c not in MATRIX_ONLY
]

# non-default hyper-parameters: larger steps, other decays, so every term matters (written
# by hand: a new rule adds its rows here, which the checks at the end of this module ask for)
TUNED_RULES = [
    ("Descent-0.37", Descent(0.37)),
    ("Momentum-0.05-0.7", Momentum(0.05, 0.7)),
    ("Nesterov-0.02-0.8", Nesterov(0.02, 0.8)),
    ("Rprop-0.01", Rprop(0.01, (0.4, 1.3), (1e-4, 0.05))),
    ("RMSProp-0.01-0.8", RMSProp(0.01, 0.8, 1e-6)),
    ("RMSProp-centred", RMSProp(centred=True)),
    ("RMSProp-centred-0.01", RMSProp(0.01, 0.85, 1e-7, centred=True)),
    ("Adam-0.05", Adam(0.05, (0.8, 0.99), 1e-6)),
    ("RAdam-0.05", RAdam(0.05, (0.8, 0.95), 1e-6)),  # rectified from t = 3
    ("AdaMax-0.05", AdaMax(0.05, (0.8, 0.99), 1e-6)),
    ("OAdam-0.05", OAdam(0.05, (0.6, 0.95), 1e-6)),
    ("AdaGrad-0.5", AdaGrad(0.5, 1e-6)),
    ("AdaDelta-0.5", AdaDelta(0.5, 1e-4)),
    ("AMSGrad-0.05", AMSGrad(0.05, (0.8, 0.95), 1e-6)),
    ("NAdam-0.05", NAdam(0.05, (0.8, 0.99), 1e-6)),
    ("AdamW-decoupled", AdamW(couple=False, lambda_=0.1)),
    ("AdamW-lambda", AdamW(lambda_=0.1)),
    ("AdamW-0.05", AdamW(0.05, (0.8, 0.99), 0.3, 1e-6)),
    ("AdaBelief-0.05", AdaBelief(0.05, (0.8, 0.99), 1e-10)),
    ("Lion-0.05", Lion(0.05, (0.8, 0.95))),
    ("WeightDecay-0.3", WeightDecay(0.3)),
    ("SignDecay-0.3", SignDecay(0.3)),
    ("ClipGrad-0.5", ClipGrad(0.5)),
    ("ClipNorm-1.5", ClipNorm(1.5)),
    ("ClipNorm-p1", ClipNorm(3.0, 1.0)),
    ("ClipNorm-pinf", ClipNorm(0.5, np.inf)),
    ("ClipNorm-p3", ClipNorm(2.0, 3.0)),
    ("AccumGrad3", AccumGrad(3)),
    ("ClipGlobalNorm-1.5", ClipGlobalNorm(1.5)),
    ("ClipGlobalNorm-p1", ClipGlobalNorm(3.0, 1.0)),
    ("ClipGlobalNorm-pinf", ClipGlobalNorm(0.5, np.inf)),
    ("ClipGlobalNorm-p3", ClipGlobalNorm(2.0, 3.0)),
    ("SkipNonFinite-3", SkipNonFinite(3)),
    ("ScheduleFreeAdamW-0.05", ScheduleFreeAdamW(0.05, (0.8, 0.95), 1e-6, 0.1, 3, 0.5, 1.5)),
    ("Adafactor-tuned", Adafactor(0.05, -0.5, (1e-20, 1e-2), 2.0, 0.1)),
    ("Adafactor-d-eps", Adafactor(0.5, -0.3, (1e-6, 0.5), 1.0)),  # clipping by RMS(u)
    ("LAMB-0.05", LAMB(0.05, (0.8, 0.95), 1e-8, 0.1)),
    ("TorchAdamax-0.05", TorchAdamax(0.05, (0.8, 0.99), 1e-6)),
    ("TorchAdamax-0.7", TorchAdamax(0.05, (0.3, 0.9), 1e-3)),  # lerp's far branch (w > 0.5)
    ("TorchRAdam-0.05", TorchRAdam(0.05, (0.8, 0.95), 1e-6)),  # rectified from t = 6
    ("TorchNAdam-0.05", TorchNAdam(0.05, (0.8, 0.99), 1e-6, 0.05)),
]

CHAINS = [
    ("Chain-WeightDecay-Adam", OptimiserChain(WeightDecay(), Adam())),
    ("Chain-ClipGrad-Momentum", OptimiserChain(ClipGrad(0.5), Momentum())),
    ("Chain-WeightDecay-OAdam-ClipGrad", OptimiserChain(WeightDecay(), OAdam(), ClipGrad(1))),
    ("Chain-ClipNorm-AdamW", OptimiserChain(ClipNorm(1.0), AdamW(lambda_=0.1))),
    # a leading ClipNorm folded into a component-wise rule (complex parameters too)
    ("Chain-ClipNorm-p1-Nesterov", OptimiserChain(ClipNorm(2.0, 1.0), Nesterov(0.05, 0.8))),
    # ... and into an AccumGrad that stops the program on its first gradient of two
    ("Chain-ClipNorm-AccumGrad-Adam", OptimiserChain(ClipNorm(1.0), AccumGrad(2), Adam(0.05))),
    ("Chain-SignDecay-Descent", OptimiserChain(SignDecay(1e-3), Descent(0.1))),
    ("Chain-AccumGrad-Adam", OptimiserChain(AccumGrad(3), Adam())),
    ("Chain-Momentum-ClipNorm", OptimiserChain(Momentum(0.1), ClipNorm(0.5))),  # norm mid-chain
    (
        "Chain-nested",
        OptimiserChain(
            ClipGrad(2.0),
            OptimiserChain(WeightDecay(0.01), Nesterov(0.05)),
            OptimiserChain(ClipNorm(3.0), OptimiserChain()),
        ),
    ),
    ("Chain-empty", OptimiserChain()),
    # the global norm folded into AdamW; SkipNonFinite and ClipGlobalNorm sharing one stage
    ("Chain-ClipGlobalNorm-AdamW", OptimiserChain(ClipGlobalNorm(1.0), AdamW(lambda_=0.1))),
    (
        "Chain-Skip-ClipGlobalNorm-Adam",
        OptimiserChain(SkipNonFinite(), ClipGlobalNorm(2.0, 1.0), Adam(0.05)),
    ),
    ("Chain-Skip-Nesterov", OptimiserChain(SkipNonFinite(2), Nesterov(0.05, 0.8))),
    (
        "Mixed-ClipGlobalNorm-Momentum",
        MixedPrecision(OptimiserChain(ClipGlobalNorm(3.0), Momentum(0.05))),
    ),
    ("Mixed-Adam", MixedPrecision(Adam())),
    (
        "Mixed-f64-ClipGrad-Momentum",
        MixedPrecision(np.float64, OptimiserChain(ClipGrad(1.0), Momentum())),
    ),
    # the rules with a second copy of the parameters (issue 17): Lookahead synchronising on
    # steps 3 and 6, EMA's two forms of lerp (weight below and above 1/2), nested, after a
    # leading ClipNorm (folded into the inner rule, not into the AFTER_STEP stage), around
    # an AccumGrad, inside MixedPrecision
    ("Lookahead-Adam", Lookahead(Adam(0.05), k=3, alpha=0.4)),
    ("EMA-Momentum", EMA(Momentum(0.05, 0.7), decay=0.8)),
    ("EMA-far-Descent", EMA(Descent(0.1), decay=0.3)),
    (
        "EMA-Lookahead-chain",
        EMA(Lookahead(OptimiserChain(ClipGrad(1.0), AdamW(0.05, lambda_=0.1)), k=2), decay=0.6),
    ),
    ("Chain-ClipNorm-Lookahead", OptimiserChain(ClipNorm(1.0), Lookahead(Nesterov(0.05), k=2))),
    ("Lookahead-ClipNorm", Lookahead(ClipNorm(1.0), k=2, alpha=0.3)),
    ("Lookahead-AccumGrad", Lookahead(OptimiserChain(AccumGrad(2), Adam(0.05)), k=2)),
    ("Mixed-EMA", MixedPrecision(EMA(Adam(0.05), decay=0.7))),
    ("EMA-ScheduleFree", EMA(ScheduleFreeAdamW(0.05, warmup_steps=3), decay=0.5)),
    # the whole-array reductions of Adafactor and LAMB read the output of earlier rules
    ("Chain-ClipGrad-Adafactor", OptimiserChain(ClipGrad(0.5), Adafactor(lambda_=0.1))),
    (
        "Chain-ClipNorm-LAMB-ClipGrad",
        OptimiserChain(ClipNorm(1.0), LAMB(0.05, lambda_=0.01), ClipGrad(0.01)),
    ),
]

SINGLE_RULES = DEFAULT_RULES + TUNED_RULES
RULES = SINGLE_RULES + CHAINS
RULE_IDS = [name for name, _ in RULES]

assert len(set(RULE_IDS)) == len(RULE_IDS)

# rule classes that train complex parameters (the seed's tested complex rules, component-wise
# or with a real |g|^2 moment; WeightDecay, AccumGrad, ClipNorm -- conventions §7 defines its
# complex norm -- and the composites too)
COMPLEX_OK = (
    Descent,
    Momentum,
    Nesterov,
    RMSProp,
    Adam,
    RAdam,
    OAdam,
    AdaGrad,
    AdaDelta,
    NAdam,
    AdamW,
    AdaBelief,
    WeightDecay,
    ClipNorm,
    AccumGrad,
    OptimiserChain,
    MixedPrecision,
    ClipGlobalNorm,
    SkipNonFinite,
    Lookahead,
    EMA,
    ScheduleFreeAdamW,
    LAMB,
    TorchAdamax,
    TorchRAdam,
    TorchNAdam,
)  # component-wise, as torch steps them
# rule classes that order values: TypeError at setup (API.md, Departures; the brief)
COMPLEX_REFUSED = (Rprop, AdaMax, AMSGrad, ClipGrad, Lion, SignDecay, Muon, Adafactor)


def _check_complex_spec():
    """COMPLEX_OK and COMPLEX_REFUSED are this suite's own statement of which classes take
    complex parameters (what the library is checked against): every class of opt.RULES is
    in exactly one of them."""
    for cls in opt.RULES:
        if cls not in COMPLEX_OK and cls not in COMPLEX_REFUSED:
            raise AssertionError(
                f"the rule class {cls.__name__} is in neither COMPLEX_OK nor "
                f"COMPLEX_REFUSED (tests/registry.py): say whether it "
                f"trains complex parameters"
            )
    for cls in set(COMPLEX_OK) & set(COMPLEX_REFUSED):
        raise AssertionError(f"{cls.__name__} is in both COMPLEX_OK and COMPLEX_REFUSED")
    for cls in (set(COMPLEX_OK) | set(COMPLEX_REFUSED)) - set(opt.RULES):
        raise AssertionError(f"{cls.__name__} is not a class of opt.RULES")


_check_complex_spec()

# API.md's fields of each rule class, this suite's own statement of them (what the library's
# constructors, reprs and checks are tested against, tests/test_hyperparameters.py):
ADAM_DEFAULTS = {"eta": 1e-3, "beta": (0.9, 0.999), "epsilon": 1e-8}

# class -> (field names in positional order with API.md's defaults, non-default values)
SPECS = {
    Descent: ({"eta": 0.1}, (0.25,)),
    Momentum: ({"eta": 0.01, "rho": 0.9}, (0.02, 0.8)),
    Nesterov: ({"eta": 0.001, "rho": 0.9}, (0.02, 0.8)),
    Rprop: (
        {"eta": 1e-3, "ell": (0.5, 1.2), "gamma": (1e-6, 50.0)},
        (0.01, (0.4, 1.3), (1e-5, 10.0)),
    ),
    RMSProp: (
        {"eta": 1e-3, "rho": 0.9, "epsilon": 1e-8, "centred": False},
        (0.01, 0.8, 1e-6, True),
    ),
    Adam: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    RAdam: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    AdaMax: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    AMSGrad: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    NAdam: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    OAdam: ({"eta": 1e-3, "beta": (0.5, 0.9), "epsilon": 1e-8}, (0.01, (0.8, 0.99), 1e-6)),
    AdaGrad: ({"eta": 0.1, "epsilon": 1e-8}, (0.2, 1e-6)),
    AdaDelta: ({"rho": 0.9, "epsilon": 1e-8}, (0.8, 1e-6)),
    AdamW: (
        {"eta": 1e-3, "beta": (0.9, 0.999), "lambda_": 0.0, "epsilon": 1e-8, "couple": True},
        (0.01, (0.8, 0.99), 0.1, 1e-6, False),
    ),
    AdaBelief: ({"eta": 1e-3, "beta": (0.9, 0.999), "epsilon": 1e-16}, (0.01, (0.8, 0.99), 1e-10)),
    Lion: ({"eta": 1e-3, "beta": (0.9, 0.999)}, (0.01, (0.8, 0.99))),
    WeightDecay: ({"lambda_": 5e-4}, (0.1,)),
    SignDecay: ({"lambda_": 1e-3}, (0.1,)),
    ClipGrad: ({"delta": 10.0}, (2.0,)),
    ClipNorm: ({"omega": 10.0, "p": 2.0, "throw": True}, (2.0, 1.0, False)),
    AccumGrad: ({"n": None}, (4,)),  # n has no default
    ClipGlobalNorm: ({"omega": 1.0, "p": 2.0, "throw": True}, (2.0, 1.0, False)),
    SkipNonFinite: ({"max_consecutive": None}, (3,)),
    Muon: (
        {
            "eta": 1e-3,
            "lambda_": 0.1,
            "mu": 0.95,
            "nesterov": True,
            "ns_coefficients": (3.4445, -4.775, 2.0315),
            "epsilon": 1e-7,
            "ns_steps": 5,
            "adjust_lr_fn": None,
        },
        (0.02, 0.0, 0.9, False, (3.0, -3.2, 1.2), 1e-6, 3, "match_rms_adamw"),
    ),
    ScheduleFreeAdamW: (
        {
            "eta": 2.5e-3,
            "beta": (0.9, 0.999),
            "epsilon": 1e-8,
            "lambda_": 0.0,
            "warmup_steps": 0,
            "r": 0.0,
            "weight_lr_power": 2.0,
        },
        (0.01, (0.8, 0.99), 1e-6, 0.1, 5, 0.5, 1.0),
    ),
    Adafactor: (
        {"eta": 1e-2, "beta2_decay": -0.8, "epsilon": (None, 1e-3), "d": 1.0, "lambda_": 0.0},
        (0.05, -0.5, (1e-20, 1e-2), 2.0, 0.1),
    ),
    LAMB: (
        {"eta": 1e-3, "beta": (0.9, 0.999), "epsilon": 1e-6, "lambda_": 0.0},
        (0.01, (0.8, 0.99), 1e-8, 0.1),
    ),
    # torch.optim's defaults
    TorchAdamax: ({"eta": 2e-3, "beta": (0.9, 0.999), "epsilon": 1e-8}, (0.01, (0.8, 0.99), 1e-6)),
    TorchRAdam: (ADAM_DEFAULTS, (0.01, (0.8, 0.99), 1e-6)),
    TorchNAdam: (
        {"eta": 2e-3, "beta": (0.9, 0.999), "epsilon": 1e-8, "momentum_decay": 4e-3},
        (0.01, (0.8, 0.99), 1e-6, 0.01),
    ),
}


# Convergence on a quadratic and on Rosenbrock's function (tests/test_rules.py), with
# learning rates tuned for each rule:
# name -> (rule for the quadratic, rule for Rosenbrock, Rosenbrock steps)
# transformations (clipping, decay, accumulation) run in a chain with a descent rule
CONVERGENCE = {
    "Descent": (Descent(0.5), Descent(1e-3), 3000),
    "Momentum": (Momentum(0.1), Momentum(5e-4, 0.9), 3000),
    "Nesterov": (Nesterov(0.1), Nesterov(5e-4), 3000),
    "Rprop": (Rprop(0.1), Rprop(0.01), 3000),
    "RMSProp": (RMSProp(0.01), RMSProp(1e-3), 3000),
    "RMSProp-centred": (RMSProp(0.01, centred=True), RMSProp(1e-3, centred=True), 3000),
    "Adam": (Adam(0.05), Adam(0.02), 3000),
    "RAdam": (RAdam(0.05), RAdam(2e-3), 6000),
    "AdaMax": (AdaMax(0.05), AdaMax(0.05), 3000),
    "OAdam": (OAdam(0.05), OAdam(0.01), 3000),
    "AdaGrad": (AdaGrad(0.5), AdaGrad(0.5), 3000),
    "AdaDelta": (AdaDelta(0.9, 1e-4), AdaDelta(), 4000),
    "AMSGrad": (AMSGrad(0.05), AMSGrad(0.02), 3000),
    "NAdam": (NAdam(0.05), NAdam(0.02), 3000),
    "AdamW": (AdamW(0.05, lambda_=1e-3), AdamW(0.02, lambda_=1e-4), 3000),
    "AdamW-decoupled": (
        AdamW(0.05, lambda_=1e-4, couple=False),
        AdamW(0.02, lambda_=1e-5, couple=False),
        3000,
    ),
    "AdaBelief": (AdaBelief(0.05), AdaBelief(0.01), 3000),
    "Lion": (Lion(0.01), Lion(1e-3), 3000),
    "WeightDecay": (
        OptimiserChain(WeightDecay(1e-3), Descent(0.5)),
        OptimiserChain(WeightDecay(1e-4), Descent(1e-3)),
        3000,
    ),
    "SignDecay": (
        OptimiserChain(SignDecay(1e-4), Descent(0.5)),
        OptimiserChain(SignDecay(1e-4), Descent(1e-3)),
        3000,
    ),
    "ClipGrad": (
        OptimiserChain(ClipGrad(0.1), Descent(0.5)),
        OptimiserChain(ClipGrad(10.0), Descent(1e-3)),
        3000,
    ),
    "ClipNorm": (
        OptimiserChain(ClipNorm(1.0), Descent(0.5)),
        OptimiserChain(ClipNorm(10.0), Descent(1e-3)),
        3000,
    ),
    "AccumGrad": (
        OptimiserChain(AccumGrad(3), Adam(0.05)),
        OptimiserChain(AccumGrad(2), Adam(0.03)),
        4000,
    ),
    "ClipGlobalNorm": (
        OptimiserChain(ClipGlobalNorm(1.0), Descent(0.5)),
        OptimiserChain(ClipGlobalNorm(10.0), Descent(1e-3)),
        3000,
    ),
    "SkipNonFinite": (
        OptimiserChain(SkipNonFinite(), Adam(0.05)),
        OptimiserChain(SkipNonFinite(), Adam(0.02)),
        3000,
    ),
    "MixedPrecision": (MixedPrecision(Adam(0.05)), MixedPrecision(np.float64, Adam(0.02)), 3000),
    "ScheduleFreeAdamW": (ScheduleFreeAdamW(0.05), ScheduleFreeAdamW(0.05, warmup_steps=50), 3000),
    "Lookahead": (Lookahead(Adam(0.05)), Lookahead(Adam(0.02), k=5, alpha=0.5), 3000),
    "EMA": (EMA(Adam(0.05), decay=0.9), EMA(Adam(0.02), decay=0.99), 3000),
    "Adafactor": (Adafactor(0.1), Adafactor(0.01), 3000),
    "LAMB": (LAMB(0.05), LAMB(0.005), 6000),
    "TorchAdamax": (TorchAdamax(0.05), TorchAdamax(0.05), 3000),
    "TorchRAdam": (TorchRAdam(0.05), TorchRAdam(2e-3), 6000),
    "TorchNAdam": (TorchNAdam(0.05), TorchNAdam(0.02), 3000),
}


def _check_specs():
    _converging = set()
    for rq, rr, _ in CONVERGENCE.values():
        _converging |= rule_classes_in(rq) | rule_classes_in(rr) | {type(rq), type(rr)}
    for cls in opt.RULES:
        if cls not in SPECS and cls not in _COMPOSITES:
            raise AssertionError(
                f"the rule class {cls.__name__} has no row in registry.SPECS "
                f"(its fields with their defaults, and other values)"
            )
        if cls not in _converging and cls not in MATRIX_ONLY:
            raise AssertionError(
                f"the rule class {cls.__name__} has no row in "
                f"registry.CONVERGENCE (rules that train a quadratic and "
                f"Rosenbrock's function)"
            )


LEAF_CLASSES = tuple(c for c in opt.RULES if c not in _COMPOSITES)


def rule_classes_in(rule):
    """The set of leaf rule classes a (possibly composite) rule contains."""
    if isinstance(rule, OptimiserChain):
        out = set()
        for r in rule.opts:
            out |= rule_classes_in(r)
        return out
    if isinstance(rule, MixedPrecision):
        return rule_classes_in(rule.rule)
    if isinstance(rule, (Lookahead, EMA)):
        return rule_classes_in(rule.rule) | {type(rule)}
    return {type(rule)}


def _check_coverage():
    """The registry covers every class of opt.RULES and no other: the defaults by
    construction, and the hand-written rows too -- each leaf class has a row of
    TUNED_RULES, each composite a row of CHAINS."""
    tuned = {type(r) for _, r in TUNED_RULES}
    tuned |= {type(r) for _, r in MATRIX_RULES}
    for cls in LEAF_CLASSES:
        if cls not in tuned:
            raise AssertionError(
                f"the rule class {cls.__name__} has no row in TUNED_RULES "
                f"(tests/registry.py): add one with non-default "
                f"hyper-parameters"
            )
    for cls in _COMPOSITES:
        if not any(type(r) is cls for _, r in CHAINS):
            raise AssertionError(f"no row of CHAINS is a {cls.__name__} (tests/registry.py)")
    covered = set()
    for _, r in RULES + MATRIX_RULES:
        covered |= rule_classes_in(r) | {type(r)}
    assert covered == set(opt.RULES), covered ^ set(opt.RULES)


# Muon's rows: at its defaults, tuned, and in the chains it is meant for (after the
# global-norm rules, an AccumGrad, under MixedPrecision)
MATRIX_RULES = [_at_defaults(c) for c in MATRIX_ONLY] + [
    ("Muon-tuned", Muon(0.05, 0.2, 0.8, False, (3.0, -3.2, 1.2), 1e-6, 3, "match_rms_adamw")),
    ("Muon-plain", Muon(0.02, lambda_=0.0, mu=0.5)),
    (
        "Chain-Skip-ClipGlobalNorm-Muon",
        OptimiserChain(SkipNonFinite(), ClipGlobalNorm(2.0), Muon(0.05)),
    ),
    ("Chain-ClipNorm-Muon", OptimiserChain(ClipNorm(1.0), Muon(0.02, lambda_=0.3))),
    ("Chain-AccumGrad-Muon", OptimiserChain(AccumGrad(2), Muon(0.05))),
    ("Chain-Muon-ClipGrad", OptimiserChain(Muon(0.05), ClipGrad(1e-3))),
    ("Mixed-f64-Muon", MixedPrecision(np.float64, Muon(0.05))),
]
# name -> (rule, steps): each trains tests/test_muon.py's matrix least-squares problem
MATRIX_CONVERGENCE = {
    "Muon": (Muon(0.05, lambda_=0.0), 300),
    "Muon-chain": (OptimiserChain(ClipGlobalNorm(1.0), Muon(0.05, lambda_=0.0)), 300),
}

_check_coverage()


_check_specs()
