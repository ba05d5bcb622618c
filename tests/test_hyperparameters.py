"""Rules as values: constructors, equality, repr, pickle, validation, adjust.

The expected defaults and field names are those of API.md's table; the validation ranges
are API.md's ("betas outside [0, 1), negative epsilon/lambda/delta/omega, n < 1").
"""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

import optimisers as opt
from optimisers import (
    AccumGrad,
    Adam,
    AdamW,
    AMSGrad,
    ClipGrad,
    ClipNorm,
    Descent,
    MixedPrecision,
    Momentum,
    NAdam,
    Nesterov,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    WeightDecay,
)
from registry import SPECS

VALUE_CLASSES = list(SPECS)


def cls_id(c):
    return c.__name__


def tuned(cls):
    fields, values = SPECS[cls]
    return cls(*values)


def default(cls):
    return cls(1) if cls is AccumGrad else cls()


def namespace():
    ns = {name: getattr(opt, name) for name in opt.__all__}
    ns.update(np=np, inf=math.inf, nan=math.nan)
    return ns


# ---------------------------------------------------------------------------------------
# constructors, fields, defaults


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_defaults_are_the_api_table(cls):
    fields, _ = SPECS[cls]
    r = default(cls)
    for name, value in fields.items():
        if value is None:
            continue
        got = getattr(r, name)
        assert got == value and type(got) is type(value), (name, got, value)


def test_descent_default_is_exactly_point_one():
    # departure from the seed: the float64 0.1, not float32(0.1)
    assert Descent().eta == 0.1
    assert Descent().eta != float(np.float32(0.1))


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_positional_and_keyword_constructors_agree(cls):
    fields, values = SPECS[cls]
    names = list(fields)
    pos = cls(*values)
    kw = cls(**dict(zip(names, values)))
    assert pos == kw
    assert hash(pos) == hash(kw)
    for name, value in zip(names, values):
        assert getattr(pos, name) == value, name
    # mixed: first positionally, the rest by keyword, in reverse order
    mixed = cls(values[0], **dict(reversed(list(zip(names[1:], values[1:])))))
    assert mixed == pos
    assert pos != default(cls)


def test_rmsprop_centered_spelling():
    assert RMSProp(centered=True) == RMSProp(centred=True)
    assert RMSProp(centered=True).centred is True
    assert RMSProp().centred is False
    assert RMSProp(centered=True) != RMSProp()


def test_numbers_are_normalised():
    # an int or numpy scalar is stored as a Python float; a list pair as a tuple
    assert Adam(1) == Adam(1.0)
    assert type(Adam(1).eta) is float
    assert Adam(np.float64(0.5)) == Adam(0.5)
    assert type(Adam(np.float64(0.5)).eta) is float
    assert Adam(beta=[0.8, 0.9]) == Adam(beta=(0.8, 0.9))
    assert isinstance(Adam(beta=[0.8, 0.9]).beta, tuple)
    assert AccumGrad(np.int64(3)) == AccumGrad(3)
    assert type(AccumGrad(np.int64(3)).n) is int


# ---------------------------------------------------------------------------------------
# equality by value


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_equality_by_value(cls):
    fields, values = SPECS[cls]
    a, b = tuned(cls), tuned(cls)
    assert a is not b
    assert a == b
    assert (a != b) is False
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    # changing any one field makes it unequal
    names = list(fields)
    base = dict(zip(names, values))
    for name in names:
        dflt = fields[name]
        if dflt is None or dflt == base[name]:
            continue
        other = cls(**{**base, name: dflt})
        assert other != a, name
    assert a != "not a rule" and a != None  # noqa: E711


def test_equality_distinguishes_classes():
    # same fields and values, different rules
    assert Adam() != NAdam()
    assert Adam() != RAdam()
    assert Adam() != AMSGrad()
    assert WeightDecay(0.1) != SignDecay(0.1)
    assert OptimiserChain(Adam()) != Adam()


def test_composite_equality():
    a = OptimiserChain(ClipGrad(1.0), OptimiserChain(Adam(0.1)))
    b = OptimiserChain(ClipGrad(1.0), OptimiserChain(Adam(0.1)))
    assert a == b and hash(a) == hash(b)
    assert a != OptimiserChain(ClipGrad(1.0), OptimiserChain(Adam(0.2)))
    assert a != OptimiserChain(OptimiserChain(Adam(0.1)), ClipGrad(1.0))
    assert OptimiserChain() == OptimiserChain()
    assert MixedPrecision(Adam()) == MixedPrecision(np.float32, Adam())
    assert MixedPrecision(Adam()) != MixedPrecision(np.float64, Adam())
    assert MixedPrecision(Adam()) != MixedPrecision(Adam(0.1))
    assert AccumGrad(2) != AccumGrad(3)


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_rules_are_immutable(cls):
    r = tuned(cls)
    name = next(iter(SPECS[cls][0]))
    with pytest.raises(AttributeError):
        setattr(r, name, 0.5)
    assert r == tuned(cls)


# ---------------------------------------------------------------------------------------
# repr and pickle


def test_repr_format():
    assert repr(Adam()) == "Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-08)"
    assert repr(Descent()) == "Descent(eta=0.1)"
    assert (
        repr(AdamW(lambda_=0.1))
        == "AdamW(eta=0.001, beta=(0.9, 0.999), lambda_=0.1, epsilon=1e-08, couple=True)"
    )
    assert (
        repr(RMSProp(centered=True)) == "RMSProp(eta=0.001, rho=0.9, epsilon=1e-08, centred=True)"
    )
    assert repr(AccumGrad(3)) == "AccumGrad(n=3)"
    assert repr(ClipNorm(1.0, math.inf)) == "ClipNorm(omega=1.0, p=inf, throw=True)"
    assert (
        repr(OptimiserChain(ClipGrad(1.0), Descent(0.1)))
        == "OptimiserChain(ClipGrad(delta=1.0), Descent(eta=0.1))"
    )


ROUND_TRIP = (
    [tuned(c) for c in VALUE_CLASSES]
    + [default(c) for c in VALUE_CLASSES]
    + [
        ClipNorm(1.0, math.inf),
        ClipNorm(1.0, -math.inf, False),
        OptimiserChain(),
        OptimiserChain(WeightDecay(), OAdam(), ClipGrad(1)),
        OptimiserChain(ClipGrad(2.0), OptimiserChain(WeightDecay(0.01), Nesterov(0.05))),
        MixedPrecision(Adam()),
        MixedPrecision(np.float64, OptimiserChain(ClipGrad(1.0), Momentum())),
    ]
)


@pytest.mark.parametrize("rule", ROUND_TRIP, ids=repr)
def test_repr_round_trips_via_eval(rule):
    back = eval(repr(rule), namespace())
    assert back == rule
    assert type(back) is type(rule)
    assert repr(back) == repr(rule)


@pytest.mark.parametrize("rule", ROUND_TRIP, ids=repr)
def test_pickle_round_trip(rule):
    back = pickle.loads(pickle.dumps(rule))
    assert back == rule and type(back) is type(rule)
    assert hash(back) == hash(rule)
    assert repr(back) == repr(rule)


# ---------------------------------------------------------------------------------------
# validation

NAN = float("nan")

# (class, field, bad value, exception, text that names the value in the message)
_NEG = [
    (c, f)
    for c in VALUE_CLASSES
    for f in ("eta", "epsilon", "lambda_", "delta", "omega")
    if f in SPECS[c][0] and not isinstance(SPECS[c][0][f], tuple)
]  # Adafactor's pair
_BETA = [c for c in VALUE_CLASSES if "beta" in SPECS[c][0]]
_RHO = [c for c in VALUE_CLASSES if "rho" in SPECS[c][0]]

BAD = (
    [(c, f, -0.5, ValueError, "-0.5") for c, f in _NEG]
    + [(c, f, -1e-300, ValueError, "-1e-300") for c, f in _NEG if f == "eta"]
    + [(c, f, NAN, ValueError, "nan") for c, f in _NEG]
    + [(c, f, "0.1", TypeError, "'0.1'") for c, f in _NEG]
    + [(c, f, None, TypeError, "None") for c, f in _NEG]
    + [(c, f, 1 + 2j, TypeError, "(1+2j)") for c, f in _NEG if f == "eta"]
    + [
        (c, "beta", beta, ValueError, text)
        for c in _BETA
        for beta, text in [
            ((0.9, 1.0), "1.0"),
            ((1.0, 0.9), "1.0"),
            ((-0.1, 0.9), "-0.1"),
            ((0.9, 1.5), "1.5"),
            ((NAN, 0.9), "nan"),
            ((0.9, NAN), "nan"),
        ]
    ]
    + [
        (c, "beta", beta, TypeError, text)
        for c in _BETA
        for beta, text in [
            (0.9, "0.9"),
            ((0.9,), "(0.9,)"),
            ((0.9, 0.99, 0.999), "0.999"),
            (("a", 0.9), "'a'"),
        ]
    ]
    + [
        (c, "rho", rho, ValueError, text)
        for c in _RHO
        for rho, text in [(1.0, "1.0"), (-0.1, "-0.1"), (NAN, "nan"), (2.0, "2.0")]
    ]
    + [(c, "rho", "0.9", TypeError, "'0.9'") for c in _RHO]
    + [
        (AccumGrad, "n", 0, ValueError, "0"),
        (AccumGrad, "n", -3, ValueError, "-3"),
        (AccumGrad, "n", 2.5, TypeError, "2.5"),
        (AccumGrad, "n", "3", TypeError, "'3'"),
        (AccumGrad, "n", True, TypeError, "True"),
    ]
    + [
        (Rprop, "ell", (0.0, 1.2), ValueError, "0.0"),
        (Rprop, "ell", (-0.5, 1.2), ValueError, "-0.5"),
        (Rprop, "ell", (1.5, 1.2), ValueError, "1.5"),
        (Rprop, "ell", (0.5, 0.9), ValueError, "0.9"),
        (Rprop, "ell", 0.5, TypeError, "0.5"),
        (Rprop, "gamma", (-1e-6, 50.0), ValueError, "-1e-06"),
        (Rprop, "gamma", (1.0, 0.5), ValueError, "0.5"),
        (Rprop, "gamma", (1e-6, NAN), ValueError, "nan"),
    ]
    + [(ClipNorm, "p", NAN, ValueError, "nan"), (ClipNorm, "p", "2", TypeError, "'2'")]
)


def _bad_id(case):
    c, f, v, e, _ = case
    return f"{c.__name__}-{f}={v!r}"


@pytest.mark.parametrize("case", BAD, ids=[_bad_id(b) for b in BAD])
def test_out_of_range_is_refused_naming_field_and_value(case):
    cls, field, value, exc, text = case
    with pytest.raises(exc) as info:
        cls(**{field: value})
    msg = str(info.value)
    assert field in msg, msg
    assert text in msg, msg
    assert cls.__name__ in msg, msg


# adjust(rule, eta=None) means "eta not given" (the signature of API.md), so it is left out
ADJUST_BAD = [b for b in BAD if not (b[1] == "eta" and b[2] is None)]


@pytest.mark.parametrize("case", ADJUST_BAD, ids=[_bad_id(b) for b in ADJUST_BAD])
def test_adjust_revalidates(case):
    cls, field, value, exc, text = case
    rule = tuned(cls)
    with pytest.raises(exc) as at_construction:
        cls(**{field: value})
    with pytest.raises(exc) as at_adjust:
        opt.adjust(rule, **{field: value})
    assert str(at_adjust.value) == str(at_construction.value)
    # inside a chain and a MixedPrecision too
    with pytest.raises(exc):
        opt.adjust(OptimiserChain(OptimiserChain(), rule), **{field: value})
    with pytest.raises(exc):
        opt.adjust(MixedPrecision(rule), **{field: value})
    if field == "eta":
        with pytest.raises(exc):
            opt.adjust(rule, value)


def test_adjust_of_a_tree_revalidates_and_changes_nothing():
    model = {"a": np.zeros(3), "b": [np.ones(2)]}
    rule = OptimiserChain(ClipGrad(1.0), Adam(0.1))
    tree = opt.setup(rule, model)
    with pytest.raises(ValueError, match=r"beta\[1\]=2\.0"):
        opt.adjust_(tree, beta=(0.9, 2.0))
    with pytest.raises(ValueError, match=r"delta=-1\.0"):
        opt.adjust(tree, delta=-1.0)
    with pytest.raises(ValueError, match=r"eta=-0\.5"):
        opt.adjust_(tree, -0.5)
    assert tree["a"].rule == rule and tree["b"][0].rule == rule


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_adjust_changes_fields_and_keeps_the_rest(cls):
    fields, values = SPECS[cls]
    base = tuned(cls)
    for name in fields:
        if name == "centred":
            continue
        dflt = fields[name]
        if dflt is None and name != "adjust_lr_fn":  # Muon's None is a choice itself
            dflt = 7
        new = opt.adjust(base, **{name: dflt})
        assert type(new) is cls
        assert getattr(new, name) == dflt
        assert new == cls(*[dflt if n == name else v for n, v in zip(fields, values)])
        assert base == tuned(cls)  # the original is untouched


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=cls_id)
def test_adjust_unknown_name_lists_existing(cls):
    rule = tuned(cls)
    with pytest.raises(TypeError) as info:
        opt.adjust(rule, no_such_field=1.0)
    msg = str(info.value)
    assert "no_such_field" in msg
    for name in SPECS[cls][0]:
        assert name in msg, (name, msg)


def test_adjust_unknown_name_in_a_chain_lists_all_names():
    rule = OptimiserChain(ClipGrad(1.0), Momentum())
    with pytest.raises(TypeError) as info:
        opt.adjust(rule, gamma=0.1)
    msg = str(info.value)
    for name in ("delta", "eta", "rho"):
        assert name in msg
    # a name that some member has is fine, and only that member changes
    assert opt.adjust(rule, rho=0.5) == OptimiserChain(ClipGrad(1.0), Momentum(0.01, 0.5))
    assert opt.adjust(rule, 0.3) == OptimiserChain(ClipGrad(1.0), Momentum(0.3))


@pytest.mark.parametrize("kw", ["centred", "centered"])
@pytest.mark.parametrize("start", [False, True])
def test_rmsprop_centred_cannot_be_adjusted(kw, start):
    rule = RMSProp(0.01, centred=start)
    with pytest.raises(ValueError, match="centred"):
        opt.adjust(rule, **{kw: not start})
    tree = opt.setup(rule, np.zeros(3))
    with pytest.raises(ValueError, match="centred"):
        opt.adjust_(tree, **{kw: not start})
    assert tree.rule == rule
    # other fields adjust and keep the variant
    assert opt.adjust(rule, 0.5) == RMSProp(0.5, centred=start)
    assert opt.adjust(rule, 0.5).centred is start


def test_adjust_needs_something():
    with pytest.raises(TypeError):
        opt.adjust(Adam())


# ---------------------------------------------------------------------------------------
# composites


def test_mixed_precision_constructors():
    a = MixedPrecision(Adam())
    b = MixedPrecision(np.float64, Adam())
    assert a.rule == Adam() and b.rule == Adam()
    assert np.dtype(a.dtype) == np.float32
    assert np.dtype(b.dtype) == np.float64
    assert MixedPrecision(rule=Adam(), dtype=np.float64) == b
    assert opt.adjust(b, 0.1) == MixedPrecision(np.float64, Adam(0.1))
    assert np.dtype(opt.adjust(b, 0.1).dtype) == np.float64
    with pytest.raises(TypeError):
        MixedPrecision(np.int32, Adam())
    with pytest.raises(TypeError):
        MixedPrecision("not a rule")
    with pytest.raises(TypeError):
        MixedPrecision(np.float64, "not a rule")


def test_chain_constructor():
    c = OptimiserChain(ClipGrad(1.0), Adam())
    assert c.opts == (ClipGrad(1.0), Adam())
    assert OptimiserChain().opts == ()
    with pytest.raises(TypeError):
        OptimiserChain(Adam(), "Descent")
    with pytest.raises(ValueError, match="MixedPrecision"):
        OptimiserChain(Adam(), MixedPrecision(Adam()))
    with pytest.raises(AttributeError):
        c.opts = ()


def test_dataclass_rules_reject_unknown_keywords():
    with pytest.raises(TypeError):
        Adam(learning_rate=0.1)
    with pytest.raises(TypeError):
        Descent(0.1, 0.2)


def test_field_lists_match_api():
    for cls in VALUE_CLASSES:
        r = tuned(cls)
        if dataclasses.is_dataclass(r):
            assert tuple(f.name for f in dataclasses.fields(r)) == tuple(SPECS[cls][0])
