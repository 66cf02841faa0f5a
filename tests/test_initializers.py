"""INIT.schemes: each scheme's moments vs its derived variance and vs torch.nn.init.

Statistical tests are seeded (derandomised draws) and bounded at 6 standard errors of the
sample moments (``reference.checks_layers.moment_comparisons``), so they are not flaky.
Every registered layer class with a ``weight_init`` hyperparameter is covered
automatically (its weights are drawn through the layer and compared with torch.nn.init
on the same shape).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.initializers import SCHEMES, calculate_gain, fans, initialize
from manual_bp.layers import LAYERS
from reference.checks_initializers import init_schemes_check, moment_comparisons, torch_init

seeds = st.integers(0, 2**31 - 1)

#: (per-sample input shape, positional args) tried in turn to build a layer from a spec
RECIPES = [
    ((40,), (48,)), ((6, 9, 9), (8, 3)), ((6, 12), (8, 3)), ((7, 40), (32,)),
    ((6, 5, 5, 5), (8, 3)),
]  # fmt: skip


@settings(max_examples=40)
@given(seeds)
def test_scheme_moments_match_derivation_and_torch(seed):
    """INIT.schemes: mean and variance of ≥ 20 000 draws vs the derived variance, and the
    variance of the same scheme drawn by torch.nn.init on the same shape."""
    for comparison in init_schemes_check(np.random.default_rng(seed)):
        comparison.check()


def _weight_init_layers():
    return [cls for cls in LAYERS.classes() if "weight_init" in cls.hyperparameters]


def _build(cls, spec):
    errors = []
    for shape, args in RECIPES:
        try:
            return cls.from_shape(shape, *args, weight_init=spec)
        except (ValueError, TypeError) as error:
            errors.append(f"{shape} {args}: {error}")
    pytest.fail(f"{cls.__name__}: add a construction recipe to RECIPES ({errors})")


SPECS = [
    ("xavier-uniform", {"nonlinearity": "tanh"}),
    ("xavier-normal", {}),
    ("kaiming-uniform", {}),
    ("kaiming-normal", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming-uniform", {"nonlinearity": "leaky_relu", "param": 0.2}),
    ("nielsen", {}),
    ("torch", {}),
]


@pytest.mark.parametrize("cls", _weight_init_layers(), ids=lambda c: c.name)
@pytest.mark.parametrize("name, options", SPECS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SPECS)])
def test_layer_weight_init_matches_torch(cls, name, options):
    """INIT.schemes through every layer with ``weight_init`` (Dense, conv, ... as they are
    registered): weight moments vs the derivation and vs torch.nn.init on the same shape."""
    layer = _build(cls, {"name": name, **options})
    weights = {k: v for k, v in layer.params.items() if k.startswith("weight")}
    assert weights, f"{cls.__name__} has a weight_init but no weight parameter"
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    gain = (
        calculate_gain(options.get("nonlinearity", "leaky_relu"), options.get("param", 0.0))
        if name.startswith("kaiming")
        else calculate_gain(options.get("nonlinearity", "linear"))
    )
    for key, array in weights.items():
        reps = max(1, 20_000 // array.size)
        ours, theirs = [], []
        for _ in range(reps):
            layer.reset_parameters(rng)
            ours.append(layer.params[key].ravel().copy())
            theirs.append(torch_init(name, array.shape, gain, options).ravel())
        fan_in, fan_out = fans(array.shape)
        mode = options.get("mode", "fan_in")
        label = f"{cls.name}.{key} {array.shape}"
        moment_comparisons(
            name, np.concatenate(ours), fan_in, fan_out, gain, mode, label, np.concatenate(theirs)
        ).check()


@pytest.mark.parametrize(
    "nonlinearity, param",
    [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("selu", None),
     ("leaky_relu", None), ("leaky_relu", 0.2), ("conv2d", None), ("conv_transpose1d", None)],
)  # fmt: skip
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15
    )


@given(st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_fans_match_torch(shape):
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert fans(shape) == expected


@pytest.mark.parametrize("named", [False, True])
def test_kaiming_default_gain_is_sqrt2(named):
    """torch's kaiming_* default a=0, leaky_relu → gain √2 exactly, also when leaky_relu is
    named (calculate_gain's own default slope 0.01 would give √(2/1.0001): too close for
    moments, so the draw is compared value for value with U(±√2·√(3/fan_in)))."""
    spec = {"name": "kaiming-uniform", "nonlinearity": "leaky_relu"} if named else "kaiming-uniform"
    w = initialize(spec, np.random.default_rng(5), (20, 50))
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 50)
    np.testing.assert_allclose(
        w, np.random.default_rng(5).uniform(-bound, bound, (20, 50)), rtol=1e-15, atol=0
    )
    w = initialize(
        {"name": "kaiming-normal", "mode": "fan_out"}, np.random.default_rng(6), (20, 50)
    )
    expected = np.random.default_rng(6).standard_normal((20, 50)) * math.sqrt(2.0 / 20)
    np.testing.assert_allclose(w, expected, rtol=1e-15, atol=0)


def test_uniform_bounds_are_exact():
    rng = np.random.default_rng(1)
    w = initialize("xavier-uniform", rng, (300, 100))
    assert np.abs(w).max() <= math.sqrt(6 / 400) and np.abs(w).max() > 0.999 * math.sqrt(6 / 400)
    b = initialize("torch", rng, (5000,), fan_in=16)
    assert np.abs(b).max() <= 0.25 and np.abs(b).max() > 0.249


def test_constants_dtype_and_errors():
    rng = np.random.default_rng(2)
    assert set(SCHEMES) >= {"zeros", "ones", "nielsen", "torch"}
    assert not initialize("zeros", rng, (3, 2)).any()
    assert (initialize("ones", rng, (3,)) == 1).all()
    assert initialize("normal", rng, (2, 2), dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="unknown initializer"):
        initialize("glorot", rng, (2, 2))
    with pytest.raises(ValueError, match="mode"):
        initialize({"name": "kaiming-normal", "mode": "fan"}, rng, (2, 2))
    with pytest.raises(ValueError, match="no option"):
        initialize({"name": "xavier-normal", "slope": 1}, rng, (2, 2))
    with pytest.raises(ValueError, match="nonlinearity"):
        calculate_gain("swish")
