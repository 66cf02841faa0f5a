"""Every public curvature function, as a careless or hostile user calls it (issue 24, item 3).

The functions are found by introspection of ``manual_bp.curvature`` (``tests/hostile_entries.py``);
:data:`ENTRIES` says how to call each and which kind of value each argument takes, and
``test_every_public_curvature_function_is_covered`` fails when a function is added without
an entry. The catalogues of hostile values are walked exhaustively, and hypothesis draws
further ones (a NaN or an infinity at a random entry, a random wrong shape, a random
non-float dtype; scalar arguments on both sides of and at every edge). Directions: ``None``,
complex, integer, NaN/inf, a wrong count or shape are refused naming ``v``; iteration counts
≤ 0, negative or NaN tolerances, seeds of the wrong kind are named; models the sweeps cannot
use (a convolution, dropout in training mode, NaN weights) are named.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp.curvature
from manual_bp import Dense, Network, Sequential
from manual_bp.curvature import ggn_matrix
from manual_bp.layers import Dropout
from manual_bp.layers.base import Layer
from tests.hostile_entries import (
    ACCEPT,
    MODELS,
    REFUSE,
    SCALAR_RULES,
    SCALARS,
    Accept,
    Either,
    Entry,
    Refuse,
    Same,
    call,
    catalogue_cases,
    check_hostile,
    hostile_counts,
    hostile_flags,
    hostile_optional_counts,
    hostile_positives,
    hostile_sample_counts,
    hostile_seeds,
    hostile_tolerances,
    hostile_widths,
    public_functions,
)

CURVATURE = public_functions(manual_bp.curvature)

#: Building blocks over a :class:`~manual_bp.curvature.chain.Chain` and arrays that a public
#: entry has already validated (``as_chain`` + ``Chain.data``); their first argument is a
#: Chain, which no user holds without ``as_chain``. Listed so that a new function must be
#: classified: a model-level function belongs in :data:`ENTRIES`.
CHAIN_LEVEL = {
    "diagonal.backpropagate_factor",
    "loss.factor_columns",
    "loss.output_factor",
    "loss.output_gradient",
    "loss.output_hessian",
    "loss.output_hessian_composed",
    "loss.row_weights",
    "loss.sample_targets",
    "loss.sampled_factor",
}


def _flat_direction(model, seed=4):
    size = sum(p.size for p in model.parameter_arrays())
    return np.random.default_rng(seed).standard_normal(size)


def _list_direction(model, seed=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape) for p in model.parameter_arrays()]


# --------------------------------------------------------------------------- hostile values
def _nan_model():
    net = Network([2, 3, 2], "tanh", "quadratic", seed=0)
    net.parameter_arrays()[0][1, 0] = np.nan
    return net


class _NoProducts(Layer):
    """A layer without V-axis products: a model with it has no curvature walk."""

    def forward(self, x):
        return x, None


def hostile_models(_, model=None):
    yield Refuse, None
    yield Refuse, "a network"
    yield Refuse, Sequential([Dense(2, 2), _NoProducts(), Dense(2, 2)], "quadratic")
    yield Refuse, Sequential([Dense(2, 3), Dropout(0.5), Dense(3, 2)], "quadratic")
    yield Refuse, _nan_model()


def hostile_inputs(x, model=None):
    """``x`` of a model: ``(batch, features)``."""
    yield Refuse, None
    yield Refuse, x * 1j
    yield Refuse, x + 0j  # a complex dtype even without an imaginary part
    yield Refuse, np.where(np.arange(x.size).reshape(x.shape) == 1, np.nan, x)
    yield Refuse, np.full_like(x, np.inf)
    yield Refuse, x[:0]
    yield Refuse, x[0]
    yield Refuse, x[:, :1]
    yield Refuse, x[None]
    yield Refuse, x > 0
    yield Refuse, x.astype(object)
    yield Refuse, x.astype(str)
    yield Refuse, [[1.0, 2.0], [3.0]]
    yield Refuse, "x"
    yield Same(x), x.tolist()
    yield Same(x.astype(np.float32).astype(np.float64)), x.astype(np.float32)
    yield Same(np.round(x * 4).astype(float)), np.round(x * 4).astype(int)
    yield Same(x), np.asfortranarray(x)
    readonly = x.copy()
    readonly.flags.writeable = False
    yield Same(x), readonly
    yield Either, x * 1e300


def hostile_targets(y, model=None):
    """Targets: rows (regression) or integer labels (classifier)."""
    yield Refuse, None
    yield Refuse, y * 1j if y.dtype.kind == "f" else y + 0j
    yield Refuse, y[:-1]
    yield Refuse, y[None]
    yield Refuse, "y"
    yield Same(y), y.tolist()
    if y.dtype.kind == "f":
        yield Refuse, np.full_like(y, np.nan)
        yield Refuse, y[:, :1]
        yield Refuse, y > 0
        yield Either, y * 1e300
    else:
        yield Refuse, y.astype(float)  # float class labels
        yield Refuse, np.where(y == 1, 7, y)  # a label out of range
        yield Refuse, np.where(y == 1, -1, y)
        yield Refuse, y.astype(bool)


def hostile_directions(_, model):
    flat, listed = _flat_direction(model), _list_direction(model)
    yield Refuse, None
    yield Refuse, np.where(np.arange(flat.size) == 3, np.nan, flat)
    yield Refuse, np.where(np.arange(flat.size) == 0, -np.inf, flat)
    yield Refuse, flat * 1j
    yield Refuse, flat + 0j
    yield Refuse, flat.astype(int)
    yield Refuse, flat > 0
    yield Refuse, flat.astype(object)
    yield Refuse, flat.astype(str)
    yield Refuse, flat[:-1]
    yield Refuse, np.append(flat, 1.0)
    yield Refuse, flat[:, None]
    yield Refuse, flat[:0]
    yield Refuse, 3.0
    yield Refuse, "v"
    yield Refuse, {"0.weight": listed[0]}
    yield Refuse, (a for a in listed)
    yield Refuse, [None, *listed[1:]]
    yield Refuse, listed[:-1]
    yield Refuse, [*listed, listed[-1]]
    yield Refuse, [listed[0].T, *listed[1:]]
    yield Refuse, [listed[0][None], *listed[1:]]
    yield Refuse, [listed[0] * 1j, *listed[1:]]
    yield Refuse, [listed[0].astype(int), *listed[1:]]
    yield Refuse, [np.full_like(listed[0], np.nan), *listed[1:]]
    yield Refuse, [listed[0].astype(str), *listed[1:]]
    yield Same(listed), [a.tolist() for a in listed]
    yield Same(listed), tuple(listed)
    sizes = [p.size for p in model.parameter_arrays()]
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    shapes = [p.shape for p in model.parameter_arrays()]
    yield Same(flat), [p.reshape(s) for p, s in zip(pieces, shapes, strict=True)]
    yield Same(flat.astype(np.float32).astype(np.float64)), flat.astype(np.float32)
    yield Same(flat), flat[::-1].copy()[::-1]  # a negative-stride view
    readonly = flat.copy()
    readonly.flags.writeable = False
    yield Same(flat), readonly
    yield Either, flat * 1e300


def hostile_matrices(_, model=None):
    yield Same("hessian"), "hessian"
    for value in ("Hessian", "", "fisher", 3, None):
        yield Refuse, value


def hostile_layers(_, model=None):
    yield Same(1), np.int64(1)
    yield Same(1), -1
    yield Same(0), -2
    for value in (2, -3, 1.0, True, None, "0"):
        yield Refuse, value


def hostile_ggn(G, model=None):
    yield Refuse, None
    yield Refuse, G[:-1]
    yield Refuse, G[:, :-1]
    yield Refuse, G.ravel()
    yield Refuse, np.where(np.eye(len(G), dtype=bool), np.nan, G)
    yield Refuse, G * 1j
    yield Refuse, G.astype(str)
    yield Same(G), G.tolist()
    yield Accept, G.astype(np.float32)


def _model_xy(model, x, y):
    return {"model": model, "x": x, "y": y}


XY = {"model": "model", "x": "inputs", "y": "targets"}


def _entry(name: str, extra=None, kinds=None, **options) -> Entry:
    extra = extra or (lambda model, x, y: {})
    return Entry(
        CURVATURE[name], lambda m, x, y: {**_model_xy(m, x, y), **extra(m, x, y)},
        {**XY, **(kinds or {})}, **options,
    )  # fmt: skip


PER_SAMPLE = {"per_sample": "flag"}
MC = {"per_sample": "flag", "rng": "seed", "n_samples": "count"}

ENTRIES: dict[str, Entry] = {
    "rop.gradient": _entry("rop.gradient"),
    "rop.hvp": _entry("rop.hvp", lambda m, x, y: {"v": _flat_direction(m)}, {"v": "direction"}),
    "rop.ggnvp": _entry("rop.ggnvp", lambda m, x, y: {"v": _list_direction(m)}, {"v": "direction"}),
    "rop.hessian_matrix": _entry("rop.hessian_matrix", models=("regression",)),
    "rop.ggn_matrix": _entry("rop.ggn_matrix", models=("regression",)),
    "diagonal.diag_ggn": _entry(
        "diagonal.diag_ggn", lambda m, x, y: {"per_sample": False}, PER_SAMPLE
    ),
    "diagonal.diag_ggn_readable": _entry(
        "diagonal.diag_ggn_readable", lambda m, x, y: {"per_sample": True}, PER_SAMPLE
    ),
    "diagonal.diag_hessian": _entry(
        "diagonal.diag_hessian", lambda m, x, y: {"per_sample": True}, PER_SAMPLE
    ),
    "diagonal.diag_hessian_readable": _entry(
        "diagonal.diag_hessian_readable", lambda m, x, y: {"per_sample": False}, PER_SAMPLE
    ),
    "diagonal.diag_ggn_mc": _entry(
        "diagonal.diag_ggn_mc",
        lambda m, x, y: {"per_sample": False, "rng": 5, "n_samples": 2},
        MC,
    ),
    "eigen.top_eigenvalue": _entry(
        "eigen.top_eigenvalue",
        lambda m, x, y: {"max_iter": 2, "tol": 1e-3, "rng": 5, "matrix": "hessian"},
        {"max_iter": "count", "tol": "tolerance", "rng": "seed", "matrix": "matrix"},
        models=("regression",),
    ),
    "kfac.kflr": _entry("kfac.kflr"),
    "kfac.kfac": _entry(
        "kfac.kfac",
        lambda m, x, y: {"rng": 5, "n_samples": 1},
        {"rng": "seed", "n_samples": "count"},
    ),
    "stats.batch_gradient": _entry("stats.batch_gradient"),
    "stats.grad_norms": _entry("stats.grad_norms"),
    "stats.grad_variance": _entry("stats.grad_variance"),
    "stats.sum_grad_squared": _entry("stats.sum_grad_squared"),
    "kfac.ggn_block": Entry(
        CURVATURE["kfac.ggn_block"],
        lambda m, x, y: {"model": m, "G": ggn_matrix(m, x, y), "layer": 1},
        {"model": "model", "G": "ggn", "layer": "layer"},
        models=("regression",),
    ),
    "chain.as_chain": Entry(
        CURVATURE["chain.as_chain"], lambda m, x, y: {"model": m}, {"model": "model"}
    ),
    "chain.flatten": Entry(
        CURVATURE["chain.flatten"],
        lambda m, x, y: {"arrays": _list_direction(m)},
        {"arrays": "arrays"},
    ),
}


def _restoring(function):
    """``function`` with its model's parameters restored afterwards: an in-place step leaves
    the shared :data:`MODELS` (and the clean call a ``Same`` verdict makes) untouched. A
    refusal that changed them first is an error (the checks come before any work)."""

    @functools.wraps(function)
    def restoring(model, *args, **kwargs):
        arrays = model.parameter_arrays() if hasattr(model, "parameter_arrays") else []
        saved = [p.copy() for p in arrays]
        try:
            return function(model, *args, **kwargs)
        except (TypeError, ValueError):
            pairs = zip(arrays, saved, strict=True)
            if any(not np.array_equal(p, s, equal_nan=True) for p, s in pairs):
                raise RuntimeError("the parameters changed before the refusal") from None
            raise
        finally:
            for p, s in zip(arrays, saved, strict=True):
                p[...] = s

    return restoring


def _values_of(function):
    """``function`` returning a dict, as the list of its values (what the property reads)."""

    @functools.wraps(function)
    def values(*args, **kwargs):
        return list(function(*args, **kwargs).values())

    return values


def _kflr(m, x, y):
    return CURVATURE["kfac.kflr"](m, x, y)


NODES = np.array([[-1.0, 0.5, 2.0], [0.0, 1.0, 3.0]])
WEIGHTS = np.array([[0.2, 0.2, 0.1], [0.25, 0.15, 0.1]])
MATRIX_MC = {"matrix": "matrix", "n_samples": "sample_count", "rng": "seed"}
DP = {
    "max_grad_norm": "positive", "noise_multiplier": "tolerance", "noise": "noise",
    "rng": "seed", "expected_batch_size": "optional_count",
}  # fmt: skip


def _dp(m, x, y):
    return {"max_grad_norm": 0.7, "noise_multiplier": 1.1, "noise": _flat_direction(m)}


ENTRIES.update(
    {
        "per_sample.per_sample_gradients": _entry("per_sample.per_sample_gradients"),
        "per_sample.per_sample_norms": Entry(
            CURVATURE["per_sample.per_sample_norms"],
            lambda m, x, y: {"gradients": CURVATURE["per_sample.per_sample_gradients"](m, x, y)},
            {"gradients": "batch_arrays"},
        ),
        "per_sample.by_name": Entry(
            _values_of(CURVATURE["per_sample.by_name"]),
            lambda m, x, y: {"model": m, "arrays": _list_direction(m)},
            {"model": "model", "arrays": "arrays"},
        ),
        "conventions.to_backpack_batch_grad": Entry(
            CURVATURE["conventions.to_backpack_batch_grad"],
            lambda m, x, y: {"gradients": CURVATURE["per_sample.per_sample_gradients"](m, x, y)},
            {"gradients": "batch_arrays"},
        ),
        "conventions.to_backpack_sum_grad_squared": Entry(
            CURVATURE["conventions.to_backpack_sum_grad_squared"],
            lambda m, x, y: {"sgs": _list_direction(m), "n": 4},
            {"sgs": "arrays", "n": "count"},
        ),
        "conventions.to_backpack_variance": Entry(
            CURVATURE["conventions.to_backpack_variance"],
            lambda m, x, y: {"variance": _list_direction(m), "n": 4},
            {"variance": "arrays", "n": "count"},
        ),
        "conventions.to_backpack_kron": Entry(
            CURVATURE["conventions.to_backpack_kron"],
            lambda m, x, y: {"model": m, "factors": _kflr(m, x, y)},
            {"model": "model", "factors": "factors"},
        ),
        "fisher.efvp": _entry(
            "fisher.efvp", lambda m, x, y: {"v": _flat_direction(m)}, {"v": "direction"}
        ),
        "fisher.ef_diagonal": _entry("fisher.ef_diagonal"),
        "fisher.ef_matrix": _entry("fisher.ef_matrix"),
        "sqrt_ggn.sqrt_ggn": _entry("sqrt_ggn.sqrt_ggn"),
        "sqrt_ggn.sqrt_ggn_mc": _entry(
            "sqrt_ggn.sqrt_ggn_mc",
            lambda m, x, y: {"rng": 5, "n_samples": 2},
            {"rng": "seed", "n_samples": "count"},
        ),
        "hutchinson.hutchinson_trace": _entry(
            "hutchinson.hutchinson_trace",
            lambda m, x, y: {"matrix": "hessian", "n_samples": 2, "rng": 5},
            MATRIX_MC,
        ),
        "hutchinson.hutchinson_diagonal": _entry(
            "hutchinson.hutchinson_diagonal",
            lambda m, x, y: {"matrix": "hessian", "n_samples": 2, "rng": 5},
            MATRIX_MC,
        ),
        "lanczos.lanczos_eigenvalues": _entry(
            "lanczos.lanczos_eigenvalues",
            lambda m, x, y: {"k": 1, "matrix": "hessian", "n_iter": 3, "rng": 5},
            {"k": "count", "matrix": "matrix", "n_iter": "optional_count", "rng": "seed"},
            models=("regression",),
        ),
        "lanczos.spectral_density": _entry(
            "lanczos.spectral_density",
            lambda m, x, y: {"matrix": "hessian", "n_iter": 3, "n_vectors": 2, "rng": 5},
            {"matrix": "matrix", "n_iter": "count", "n_vectors": "count", "rng": "seed"},
            models=("regression",),
        ),
        "lanczos.density_on_grid": Entry(
            CURVATURE["lanczos.density_on_grid"],
            lambda m, x, y: {
                "nodes": NODES,
                "weights": WEIGHTS,
                "grid": np.linspace(-2, 4, 7),
                "sigma": 0.3,
            },
            {"nodes": "vector", "weights": "vector", "grid": "vector", "sigma": "width"},
            models=("regression",),
        ),
        "kfac_inverse.kfac_inverse_product": Entry(
            CURVATURE["kfac_inverse.kfac_inverse_product"],
            lambda m, x, y: {
                "model": m,
                "factors": _kflr(m, x, y),
                "v": _list_direction(m),
                "damping": 1e-3,
                "mode": "factors",
                "min_damping": 1e-8,
            },
            {
                "model": "model",
                "factors": "factors",
                "v": "direction",
                "damping": "tolerance",
                "mode": "mode",
                "min_damping": "tolerance",
            },
        ),
        "kfac_inverse.ekfac": _entry("kfac_inverse.ekfac"),
        "kfac_inverse.ekfac_product": Entry(
            CURVATURE["kfac_inverse.ekfac_product"],
            lambda m, x, y: {
                "model": m,
                "factors": CURVATURE["kfac_inverse.ekfac"](m, x, y),
                "v": _flat_direction(m),
                "damping": 0.0,
            },
            {"model": "model", "factors": "factors", "v": "direction", "damping": "tolerance"},
        ),
        "dp.dp_gradient": _entry("dp.dp_gradient", _dp, DP),
        "dp.dp_sgd_step": Entry(
            _restoring(CURVATURE["dp.dp_sgd_step"]),
            lambda m, x, y: {**_model_xy(m, x, y), **_dp(m, x, y), "lr": 0.1},
            {**XY, **DP, "lr": "positive"},
        ),
    }
)


def hostile_batch_arrays(arrays, model=None):
    """Per-sample arrays ``(n, *p)``: a common non-empty leading axis."""
    yield from hostile_arrays(arrays, model)
    yield Refuse, [arrays[0][:-1], *arrays[1:]]
    yield Refuse, [a[:0] for a in arrays]
    yield Refuse, [np.float64(1.0), *arrays[1:]]
    yield Refuse, [np.where(np.arange(arrays[0].size).reshape(arrays[0].shape) == 1, np.inf,
                            arrays[0]), *arrays[1:]]  # fmt: skip
    yield Refuse, [a.astype(int) for a in arrays]


def hostile_factors(factors, model=None):
    """Kronecker factors ``[(A, B)]`` (or EKFAC's ``[(Q_A, Q_B, s)]``) per layer."""
    first = factors[0]
    yield Refuse, None
    yield Refuse, []
    yield Refuse, "factors"
    yield Refuse, factors[:-1]
    yield Refuse, [*factors, factors[-1]]
    yield Refuse, [first[:-1], *factors[1:]]
    yield Refuse, [(None, *first[1:]), *factors[1:]]
    yield Refuse, [(first[0] * 1j, *first[1:]), *factors[1:]]
    yield Refuse, [(first[0].astype(int), *first[1:]), *factors[1:]]
    yield Refuse, [(np.full_like(first[0], np.nan), *first[1:]), *factors[1:]]
    yield Refuse, [(first[0][:-1], *first[1:]), *factors[1:]]
    yield Refuse, [(first[0][None], *first[1:]), *factors[1:]]
    yield Refuse, [(first[0].astype(str), *first[1:]), *factors[1:]]
    yield Refuse, [np.stack(first[:2]), *factors[1:]]
    yield Same(factors), tuple(factors)
    yield Same(factors), [[a.tolist() for a in f] for f in factors]


def hostile_modes(_, model=None):
    yield Same("factors"), "factors"
    yield Accept, "heuristic"
    yield Accept, "exact"
    for value in ("Factors", "", "kfac", 3, None, ("factors",)):
        yield Refuse, value


def hostile_noise(noise, model):
    """DP-SGD's noise ``ξ``: a direction, or None (drawn from ``rng``)."""
    for verdict, value in hostile_directions(noise, model):
        yield (Accept, None) if value is None else (verdict, value)


def hostile_vectors(v, model=None):
    """Real arrays of any shape (nodes, weights, a grid)."""
    yield Refuse, None
    yield Refuse, v * 1j
    yield Refuse, np.where(np.arange(v.size).reshape(v.shape) == 1, np.nan, v)
    yield Refuse, np.full_like(v, np.inf)
    yield Refuse, v[:0]
    yield Refuse, v > 0
    yield Refuse, v.astype(object)
    yield Refuse, v.astype(str)
    yield Refuse, "v"
    yield Same(v), v.tolist()
    yield Same(np.round(v * 4) / 4), np.round(v * 4) / 4
    yield Same(v.astype(np.float32).astype(np.float64)), v.astype(np.float32)


def hostile_arrays(arrays, model=None):
    yield Refuse, None
    yield Refuse, []
    yield Refuse, "arrays"
    yield Refuse, [None, *arrays[1:]]
    yield Refuse, [arrays[0] * 1j, *arrays[1:]]
    yield Same(arrays), tuple(arrays)
    yield Same(arrays), [a.tolist() for a in arrays]


HOSTILE = {
    "model": hostile_models,
    "inputs": hostile_inputs,
    "targets": hostile_targets,
    "direction": hostile_directions,
    "flag": hostile_flags,
    "count": hostile_counts,
    "tolerance": hostile_tolerances,
    "seed": hostile_seeds,
    "matrix": hostile_matrices,
    "layer": hostile_layers,
    "ggn": hostile_ggn,
    "arrays": hostile_arrays,
    "batch_arrays": hostile_batch_arrays,
    "sample_count": hostile_sample_counts,
    "optional_count": hostile_optional_counts,
    "positive": hostile_positives,
    "width": hostile_widths,
    "factors": hostile_factors,
    "mode": hostile_modes,
    "noise": hostile_noise,
    "vector": hostile_vectors,
}


def test_every_public_curvature_function_is_covered():
    """The registry test: a public function without an entry (or a stale entry) fails."""
    assert set(CURVATURE) == set(ENTRIES) | CHAIN_LEVEL
    assert not set(ENTRIES) & CHAIN_LEVEL
    for name in CHAIN_LEVEL:
        assert next(iter(inspect.signature(CURVATURE[name]).parameters)) == "chain", name
    for name, entry in ENTRIES.items():  # every argument of every entry is drawn hostile
        assert set(entry.kinds) >= set(inspect.signature(entry.function).parameters), name
    # the package-level names are these same functions
    exported = {getattr(manual_bp.curvature, n) for n in manual_bp.curvature.__all__}
    assert exported <= set(CURVATURE.values())


@pytest.mark.parametrize(
    ("key", "model_key", "argument", "verdict", "value"), catalogue_cases(ENTRIES, HOSTILE)
)
def test_curvature_function_under_hostile_argument(key, model_key, argument, verdict, value):
    check_hostile(ENTRIES[key], model_key, argument, verdict, value)


# --------------------------------------------------------------------------- drawn values
@st.composite
def drawn_hostile(draw):
    """A random entry and argument of an array kind, made hostile at a random place: a NaN
    or ±inf at a random entry, a random wrong shape, or a random non-float dtype."""
    array_kinds = {"inputs", "targets", "direction", "ggn"}
    choices = [
        (key, model_key, argument, kind)
        for key, entry in ENTRIES.items()
        for model_key in entry.models
        for argument, kind in entry.kinds.items()
        if kind in array_kinds
    ]
    key, model_key, argument, kind = draw(st.sampled_from(choices))
    entry = ENTRIES[key]
    model, x, y = MODELS[model_key]
    base = _flat_direction(model) if kind == "direction" else entry.build(model, x, y)[argument]
    base = np.asarray(base)
    if kind == "targets" and base.dtype.kind == "i":
        how = draw(st.sampled_from(["label", "dtype", "shape"]))
    else:
        how = draw(st.sampled_from(["nonfinite", "dtype", "shape"]))
    value = base.copy()
    if how == "nonfinite":
        value = value.astype(float)
        index = draw(st.integers(0, value.size - 1))
        value.reshape(-1)[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "label":
        index = draw(st.integers(0, value.size - 1))
        value[index] = draw(st.sampled_from([-2, -1, 3, 4, 2**40]))
    elif how == "dtype":
        dtype = draw(st.sampled_from([np.complex64, np.complex128, bool, object, "U3", "S3"]))
        if kind == "direction":  # a direction must be floating point, integers too
            dtype = draw(st.sampled_from([dtype, np.int8, np.int64, np.uint16]))
        value = value.astype(dtype)
    else:
        axis = draw(st.integers(0, value.ndim - 1))
        delta = draw(st.sampled_from([-1, 1]))
        if value.shape[axis] + delta < 1 or (kind == "targets" and value.ndim == 1):
            delta = 1
        shape = list(value.shape)
        shape[axis] += delta
        value = np.resize(value, shape)
    names = ("x", "y") if how == "shape" and kind in ("inputs", "targets") and axis == 0 else ()
    return key, model_key, argument, value, names


@settings(max_examples=60, deadline=None)
@given(case=drawn_hostile())
def test_drawn_hostile_arrays_are_refused_by_name(case):
    """Random hostile arrays: always refused (every one of them is wrong)."""
    key, model_key, argument, value, names = case
    check_hostile(ENTRIES[key], model_key, argument, REFUSE, value, names)


def test_curvature_never_warns_on_huge_finite_inputs():
    """Inputs whose products overflow give a result or one error naming them — no
    RuntimeWarning, no inf/NaN result (``_checks.entry``)."""
    net, x, y = MODELS["regression"]
    linear = Network([2, 2], "identity", "quadratic", seed=0)
    for function in (CURVATURE["diagonal.diag_ggn"], CURVATURE["stats.grad_norms"]):
        _, error, caught = call(
            Entry(function, None, {}), {"model": linear, "x": x * 1e200, "y": y}
        )
        assert not caught
        assert isinstance(error, ValueError), error
        assert "x and y are too large" in str(error)
    _, error, caught = call(
        Entry(CURVATURE["rop.hvp"], None, {}),
        {"model": net, "x": x, "y": y, "v": np.full(_flat_direction(net).size, 1.7e308)},
    )
    assert not caught and isinstance(error, ValueError) and "v are too large" in str(error)


@st.composite
def drawn_scalar(draw):
    choices = [
        (key, argument, kind)
        for key, entry in ENTRIES.items()
        for argument, kind in entry.kinds.items()
        if kind in SCALAR_RULES
    ]
    key, argument, kind = draw(st.sampled_from(choices))
    return key, argument, kind, draw(SCALARS)


@settings(max_examples=100, deadline=None)
@given(case=drawn_scalar())
def test_drawn_scalar_arguments_are_accepted_or_refused_by_rule(case):
    """Iteration counts, tolerances, seeds and flags: accepted exactly when the rule says
    (:data:`~tests.hostile_entries.SCALAR_RULES`), otherwise refused naming the argument."""
    key, argument, kind, value = case
    verdict = ACCEPT if SCALAR_RULES[kind](value) else REFUSE
    if argument == "max_iter" and verdict is ACCEPT:
        value = min(int(value), 3)  # the power iteration's cost grows with it
    check_hostile(ENTRIES[key], ENTRIES[key].models[0], argument, verdict, value)
