"""Every public curvature function and gradient checker, as a careless or hostile user calls it
(issue 24, item 3).

The functions are found by introspection (every public submodule's ``__all__`` in
``manual_bp.curvature`` and ``manual_bp.gradcheck``); :data:`ENTRIES` says how to call each
and which of its arguments take which kind of value, and ``test_every_public_function_is_
covered`` fails when a function is added without an entry. Each argument kind has a
catalogue of hostile values (:data:`HOSTILE`), each with a verdict: ``Same(clean)`` — torch
accepts it and the result must equal the function's own result on the clean value;
``Accept`` — accepted, any finite result; ``Refuse`` — one ``ValueError``/``TypeError`` whose
one-line message names the argument; ``Either`` — one of the last two (e.g. a finite value
so large that the result overflows). Never a warning, never a NaN result, never a NumPy- or
Python-internal message. The catalogue is walked exhaustively, and a hypothesis strategy
draws further hostile values (a NaN or an infinity at a random entry, a random wrong shape,
a random non-float dtype) on top.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp.curvature
import manual_bp.gradcheck
from manual_bp import Dense, Network, Sequential
from manual_bp.curvature import ggn_matrix
from manual_bp.gradcheck import GradcheckReport
from manual_bp.layers import ActivationLayer, Conv2d, Dropout, Flatten


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Same:
    """Accepted; the result equals the function's own on ``clean``."""

    clean: Any


class Accept:
    """Accepted; any result without NaN."""


class Refuse:
    """One ValueError/TypeError naming the argument."""


class Either:
    """Accepted (no NaN) or refused as :class:`Refuse`."""


ACCEPT, REFUSE, EITHER = Accept(), Refuse(), Either()


# --------------------------------------------------------------------------- introspection
def _public(package) -> dict[str, Any]:
    """``{module.name: function}`` for every function in a public submodule's ``__all__``."""
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[f"{info.name}.{name}"] = obj
    return found


CURVATURE = _public(manual_bp.curvature)
GRADCHECK = _public(manual_bp.gradcheck)

#: Building blocks over a :class:`~manual_bp.curvature.chain.Chain` and arrays that a public
#: entry has already validated (``as_chain`` + ``Chain.data``); their first argument is a
#: Chain, which no user holds without ``as_chain``. Listed so that a new function must be
#: classified: a model-level function belongs in :data:`ENTRIES`.
CHAIN_LEVEL = {
    "diagonal.backpropagate_factor",
    "loss.output_factor",
    "loss.output_gradient",
    "loss.output_hessian",
    "loss.output_hessian_composed",
    "loss.sample_targets",
    "loss.sampled_factor",
}


# --------------------------------------------------------------------------- the models
def _regression():
    net = Network([2, 3, 2], "tanh", "quadratic", seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((4, 2)), rng.standard_normal((4, 2))


def _classifier():
    model = Sequential(
        [Dense(2, 3), ActivationLayer("sigmoid"), Dense(3, 3), ActivationLayer("softmax")],
        "log-likelihood",
        seed=2,
    )
    rng = np.random.default_rng(3)
    return model, rng.standard_normal((5, 2)), np.array([0, 2, 1, 1, 0])


MODELS = {"regression": _regression(), "classifier": _classifier()}


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


def hostile_models(_, model=None):
    yield Refuse, None
    yield Refuse, "a network"
    yield Refuse, Sequential([Conv2d(1, 1, 1), Flatten(), Dense(1, 2)], "quadratic")
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


def hostile_flags(_, model=None):
    yield Same(True), np.True_
    yield Same(False), np.False_
    for value in (1, 0, None, "yes", 1.0, np.array([True])):
        yield Refuse, value


def hostile_counts(_, model=None):
    yield Same(2), np.int64(2)
    yield Same(1), np.uint8(1)
    for value in (0, -1, 2.0, np.float64(2), True, "2", None, [2]):
        yield Refuse, value


def hostile_tolerances(_, model=None):
    yield Accept, 0.0
    yield Accept, 1
    yield Same(float(np.float32(1e-3))), np.float32(1e-3)
    for value in (-1e-9, -1, np.nan, np.inf, "1e-3", None, True, [1e-3]):
        yield Refuse, value


def hostile_optional_tolerances(_, model=None):
    yield Accept, None
    for verdict, value in hostile_tolerances(_):
        if value is not None:
            yield verdict, value


def hostile_seeds(_, model=None):
    yield Same(5), np.int64(5)
    yield Same(5), np.random.default_rng(5)
    yield Same(5), np.random.SeedSequence(5)
    yield Accept, None
    for value in (-1, 1.5, "5", True, [1.5], object(), np.float64(5)):
        yield Refuse, value


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


# --------------------------------------------------------------------------- entries
@dataclass
class Entry:
    """How to call a public function: ``build(model, x, y) -> kwargs`` of valid arguments,
    and for each argument its kind (a key of :data:`HOSTILE`)."""

    function: Any
    build: Any
    kinds: dict[str, str]
    models: tuple[str, ...] = ("regression", "classifier")
    asserts: bool = False  # an AssertionError is a result (the comparison failed)


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


def hostile_arrays(arrays, model=None):
    yield Refuse, None
    yield Refuse, []
    yield Refuse, "arrays"
    yield Refuse, [None, *arrays[1:]]
    yield Refuse, [arrays[0] * 1j, *arrays[1:]]
    yield Same(arrays), tuple(arrays)
    yield Same(arrays), [a.tolist() for a in arrays]


# --------------------------------------------------------------------------- gradcheck entries
class _Doubler:
    """A parameter-free layer of the protocol: ``out = 2x``."""

    params: dict = {}

    def forward(self, x):
        return 2 * x, None

    def backward(self, dout, cache):
        return 2 * dout, {}


def _layer_x(seed=6):
    return Dense(3, 2, seed=0), np.random.default_rng(seed).standard_normal((4, 3))


def _arrays(seed=7):
    rng = np.random.default_rng(seed)
    expected = rng.standard_normal((3, 2))
    return expected * (1 + 1e-15), expected


def _fd_x():
    return np.linspace(-1.0, 1.0, 5)


def _build_check_layer(_m, _x, _y):
    layer, x = _layer_x()
    return {"layer": layer, "x": x, "seed": 0, "h": 1e-6, "rtol": 1e-6, "atol": 1e-8, "c": 64.0}


def _build_check_vjp(_m, _x, _y):
    return {
        "function": np.tanh, "vjp": lambda d, z: d * (1 - np.tanh(z) ** 2),
        "x": np.linspace(-2, 2, 8).reshape(2, 4), "seed": 1, "c": 64.0,
    }  # fmt: skip


def _build_compare(_m, _x, _y):
    actual, expected = _arrays()
    return {"actual": actual, "expected": expected, "c": 64.0, "rtol": 1e-12, "atol": 1e-12}


GRADCHECK_ENTRIES: dict[str, Entry] = {
    "layers.check_layer": Entry(
        GRADCHECK["layers.check_layer"],
        _build_check_layer,
        {
            "layer": "protocol_layer",
            "x": "layer_input",
            "upstream": "upstream",
            "seed": "seed",
            "torch_forward": "callable_or_none",
            "h": "step",
            "rtol": "tolerance",
            "atol": "tolerance",
            "c": "positive",
        },
        models=("regression",),
    ),
    "layers.check_vjp": Entry(
        GRADCHECK["layers.check_vjp"],
        _build_check_vjp,
        {
            "function": "callable",
            "vjp": "callable",
            "x": "layer_input",
            "seed": "seed",
            "torch_function": "callable_or_none",
            "c": "positive",
        },
        models=("regression",),
    ),
    "compare.assert_gradients_close": Entry(
        GRADCHECK["compare.assert_gradients_close"],
        lambda m, x, y: {**_build_compare(m, x, y), "name": "g", "dtype": np.float64},
        {
            "actual": "compared",
            "expected": "compared",
            "name": "name",
            "dtype": "dtype",
            "c": "positive",
            "rtol": "optional_tolerance",
            "atol": "bound",
            "scale": "bound",
        },
        models=("regression",),
        asserts=True,
    ),
    "compare.bound_ratio": Entry(
        GRADCHECK["compare.bound_ratio"],
        _build_compare,
        {
            "actual": "compared",
            "expected": "compared",
            "dtype": "dtype",
            "c": "positive",
            "rtol": "optional_tolerance",
            "atol": "bound",
            "scale": "bound",
        },
        models=("regression",),
    ),
    "compare.normalised_error": Entry(
        GRADCHECK["compare.normalised_error"],
        lambda m, x, y: dict(zip(("actual", "expected"), _arrays(), strict=True)),
        {"actual": "compared", "expected": "compared"},
        models=("regression",),
    ),
    "compare.tolerance": Entry(
        GRADCHECK["compare.tolerance"],
        lambda m, x, y: {"dtype": np.float32, "c": 8.0},
        {"dtype": "dtype", "c": "positive"},
        models=("regression",),
    ),
    "compare.finite_difference_gradient": Entry(
        GRADCHECK["compare.finite_difference_gradient"],
        lambda m, x, y: {"f": lambda: 1.0, "x": _fd_x(), "h": 1e-6, "return_error": False},
        {"f": "objective", "x": "fd_point", "h": "step", "return_error": "flag"},
        models=("regression",),
    ),
}


def hostile_protocol_layers(_, model=None):
    class ParamsList(_Doubler):
        params = [np.zeros(2)]

    class Int32Params(_Doubler):
        params = {"w": np.zeros(2, np.int32)}

    for value in (None, object(), "Dense", ParamsList(), Int32Params()):
        yield Refuse, value
    yield Accept, _Doubler()


def hostile_layer_inputs(x, model=None):
    yield Refuse, None
    yield Refuse, x * 1j
    yield Refuse, np.full_like(x, np.nan)
    yield Refuse, x[:0]
    yield Refuse, x.astype(str)
    yield Refuse, x > 0
    yield Refuse, [[1.0], [2.0, 3.0]]
    yield Accept, x.tolist()
    yield Accept, np.asfortranarray(x)


def hostile_upstreams(_, model=None):
    yield Accept, None
    shape = (4, 2)
    yield Accept, np.random.default_rng(8).standard_normal(shape)
    for value in (np.ones((4, 3)), np.ones(shape) * 1j, np.full(shape, np.nan), np.ones(shape) > 0,
                  "abc"):  # fmt: skip
        yield Refuse, value


def hostile_callables(_, model=None):
    for value in (None, 3, "tanh"):
        yield Refuse, value


def hostile_callables_or_none(_, model=None):
    for value in (3, "torch.tanh"):
        yield Refuse, value


def hostile_steps(_, model=None):
    yield Accept, 1e-5
    for value in (0, 1, -1e-6, np.nan, np.inf, True, "1e-6", None):
        yield Refuse, value


def hostile_positives(_, model=None):
    yield Accept, 1
    yield Accept, np.float32(8)
    for value in (0, -1.0, np.nan, np.inf, "64", None, True):
        yield Refuse, value


def hostile_bounds(_, model=None):
    yield Accept, None
    yield Accept, 0.0
    yield Accept, np.full((3, 2), 1e-9)
    yield Accept, np.full((1, 2), 1e-9)
    for value in (-1.0, np.nan, np.inf, np.ones(4), np.full((3, 2), -1.0), np.ones((3, 2)) * 1j,
                  "1e-9", np.full((3, 2), np.nan)):  # fmt: skip
        yield Refuse, value


def hostile_compared(a, model=None):
    yield Refuse, None
    yield Refuse, a * 1j
    yield Refuse, a.astype(str)
    yield Refuse, a > 0
    yield Refuse, [[1.0], [2.0, 3.0]]
    yield Either, a[:, :1]  # bound_ratio: inf; the others: refused by name
    yield Either, np.full_like(a, np.nan)  # documented: an infinite error (or assertion)
    yield Same(a), a.tolist()


def hostile_names(_, model=None):
    for value in (3, None, b"g"):
        yield Refuse, value


def hostile_dtypes(_, model=None):
    yield Same(np.float64), "float64"
    yield Accept, np.float16
    for value in (np.int64, int, bool, np.complex128, "abc", object, "str"):
        yield Refuse, value


def hostile_objectives(_, model=None):
    yield Accept, lambda: np.float32(2.0)
    yield Accept, lambda: np.array(2.0)
    for value in (None, 3.0, lambda: "a", lambda: np.ones(2), lambda: float("nan"),
                  lambda: None, lambda: 1j, lambda: True):  # fmt: skip
        yield Refuse, value


def hostile_fd_points(x, model=None):
    yield Refuse, x.tolist()
    yield Refuse, x.astype(np.float32)
    yield Refuse, x.astype(int)
    yield Refuse, x * 1j
    yield Refuse, np.full_like(x, np.nan)
    yield Accept, x[::2]  # a 1-D strided view is perturbed in place through itself
    yield Refuse, np.arange(12.0).reshape(3, 4)[:, :3]  # reshape(-1) would copy
    yield Refuse, None
    yield Accept, x.reshape(5, 1)


HOSTILE = {
    "model": hostile_models,
    "inputs": hostile_inputs,
    "targets": hostile_targets,
    "direction": hostile_directions,
    "flag": hostile_flags,
    "count": hostile_counts,
    "tolerance": hostile_tolerances,
    "optional_tolerance": hostile_optional_tolerances,
    "seed": hostile_seeds,
    "matrix": hostile_matrices,
    "layer": hostile_layers,
    "ggn": hostile_ggn,
    "arrays": hostile_arrays,
    "protocol_layer": hostile_protocol_layers,
    "layer_input": hostile_layer_inputs,
    "upstream": hostile_upstreams,
    "callable": hostile_callables,
    "callable_or_none": hostile_callables_or_none,
    "step": hostile_steps,
    "positive": hostile_positives,
    "bound": hostile_bounds,
    "compared": hostile_compared,
    "name": hostile_names,
    "dtype": hostile_dtypes,
    "objective": hostile_objectives,
    "fd_point": hostile_fd_points,
}

#: Fragments of messages that come from NumPy or Python internals, not from the library.
INTERNAL = (
    "ufunc", "casting rule", "could not broadcast", "operands could not", "could not convert",
    "object is not", "not subscriptable", "index out of", "list index", "SeedSequence",
    "not inexact", "unsupported operand", "can't multiply", "'NoneType'", "has no attribute",
    "cannot be interpreted", "setting an array element", "expected non-negative integer",
)  # fmt: skip


# --------------------------------------------------------------------------- the property
def _values(result) -> list[np.ndarray]:
    """Every number of a result as float64 arrays (reports: their measured errors)."""
    if isinstance(result, GradcheckReport):
        return [np.array(list(result.finite_differences.values()), dtype=float)]
    if isinstance(result, (list, tuple)):
        return [a for item in result for a in _values(item)]
    if result is None:
        return []
    if hasattr(result, "links"):  # a Chain
        return [np.array([len(result.links)], dtype=float)]
    return [np.asarray(result, dtype=float)]


def _call(entry: Entry, kwargs: dict):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = entry.function(**kwargs), None
        except Exception as exc:  # judged below
            result, error = None, exc
    return result, error, [str(w.message) for w in caught]


def _names(message: str, argument: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?![\w])", message) is not None


def check_hostile(entry: Entry, model_key: str, argument: str, verdict, value, names=()) -> None:
    """The property; ``names``: the arguments a refusal may name (default ``argument``)."""
    model, x, y = MODELS[model_key]
    kwargs = entry.build(model, x, y)
    clean_kwargs = dict(kwargs)
    kwargs[argument] = value
    result, error, caught = _call(entry, kwargs)
    where = f"{entry.function.__name__}({argument}={value!r:.80})"
    assert not caught, f"{where} warned: {caught}"
    if error is not None and entry.asserts and type(error) is AssertionError:
        assert isinstance(verdict, Either), f"{where}: {error!r}"
        return
    if error is not None:
        message = str(error)
        assert isinstance(verdict, (Refuse, Either)), (
            f"{where} refused an accepted input: {error!r}"
        )
        assert type(error) in (ValueError, TypeError), f"{where} raised {error!r}"
        assert "\n" not in message, f"{where}: a message of several lines: {message!r}"
        named = any(_names(message, name) for name in names or (argument,))
        assert named, f"{where}: the message does not name it: {message!r}"
        assert not any(f in message for f in INTERNAL), f"{where}: internal message {message!r}"
        # a hostile input is refused before any work, not found by the result's check
        late = "the result is not finite" in message
        assert isinstance(verdict, Either) or not late, f"{where}: refused only after the work"
        return
    assert not isinstance(verdict, Refuse), f"{where} accepted a hostile input"
    values = _values(result)
    assert not any(np.isnan(v).any() for v in values), f"{where}: NaN in the result"
    if entry.function.__module__.startswith("manual_bp.curvature"):
        assert all(np.isfinite(v).all() for v in values), f"{where}: a non-finite result"
    if isinstance(verdict, Same):
        clean_kwargs[argument] = verdict.clean
        expected, error, _ = _call(entry, clean_kwargs)
        assert error is None, f"{where}: the clean call raised {error!r}"
        for got, want in zip(values, _values(expected), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=where)


def _catalogue(entries: dict[str, Entry]):
    for key, entry in entries.items():
        for model_key in entry.models:
            model, x, y = MODELS[model_key]
            valid = entry.build(model, x, y)
            for argument, kind in entry.kinds.items():
                base = valid.get(argument)
                for verdict, value in HOSTILE[kind](base, model):
                    verdict = verdict() if isinstance(verdict, type) else verdict
                    yield key, model_key, argument, verdict, value


def _cases(entries):
    return [
        pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[2]}-{i}")
        for i, case in enumerate(_catalogue(entries))
    ]


def test_every_public_function_is_covered():
    """The registry test: a public function without an entry (or a stale entry) fails."""
    assert set(CURVATURE) == set(ENTRIES) | CHAIN_LEVEL
    assert not set(ENTRIES) & CHAIN_LEVEL
    for name in CHAIN_LEVEL:
        assert next(iter(inspect.signature(CURVATURE[name]).parameters)) == "chain", name
    for name, entry in ENTRIES.items():  # every argument of every entry is drawn hostile
        assert set(entry.kinds) >= set(inspect.signature(entry.function).parameters), name
    assert set(GRADCHECK) == set(GRADCHECK_ENTRIES)
    # the package-level names are these same functions
    exported = {getattr(manual_bp.curvature, n) for n in manual_bp.curvature.__all__}
    assert exported <= set(CURVATURE.values())


@pytest.mark.parametrize(("key", "model_key", "argument", "verdict", "value"), _cases(ENTRIES))
def test_curvature_function_under_hostile_argument(key, model_key, argument, verdict, value):
    check_hostile(ENTRIES[key], model_key, argument, verdict, value)


@pytest.mark.parametrize(
    ("key", "model_key", "argument", "verdict", "value"), _cases(GRADCHECK_ENTRIES)
)
def test_gradient_checker_under_hostile_argument(key, model_key, argument, verdict, value):
    check_hostile(GRADCHECK_ENTRIES[key], model_key, argument, verdict, value)


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
        _, error, caught = _call(
            Entry(function, None, {}), {"model": linear, "x": x * 1e200, "y": y}
        )
        assert not caught
        assert isinstance(error, ValueError), error
        assert "x and y are too large" in str(error)
    _, error, caught = _call(
        Entry(CURVATURE["rop.hvp"], None, {}),
        {"model": net, "x": x, "y": y, "v": np.full(_flat_direction(net).size, 1.7e308)},
    )
    assert not caught and isinstance(error, ValueError) and "v are too large" in str(error)


def _real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


#: Which drawn scalars each kind accepts (both sides of, and exactly at, every edge).
SCALAR_RULES = {
    "count": lambda v: _real(v) and isinstance(v, (int, np.integer)) and v >= 1,
    "tolerance": lambda v: _real(v) and np.isfinite(v) and v >= 0,
    "positive": lambda v: _real(v) and np.isfinite(v) and v > 0,
    "step": lambda v: _real(v) and 0 < v < 1,
    "seed": lambda v: v is None or (_real(v) and isinstance(v, (int, np.integer)) and v >= 0),
    "flag": lambda v: isinstance(v, (bool, np.bool_)),
}

SCALARS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([np.int64(0), np.int64(1), np.uint8(2), np.float32(0.5), np.float64(1.0)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 5e-324, 1 - 2**-53, np.nextafter(0, 1), np.nan]),
    st.booleans(),
    st.sampled_from([np.True_, np.False_]),
    st.none(),
    st.text(max_size=2),
)


@st.composite
def drawn_scalar(draw):
    choices = [
        (entries, key, argument, kind)
        for entries in (ENTRIES, GRADCHECK_ENTRIES)
        for key, entry in entries.items()
        for argument, kind in entry.kinds.items()
        if kind in SCALAR_RULES
    ]
    entries, key, argument, kind = draw(st.sampled_from(choices))
    return entries, key, argument, kind, draw(SCALARS)


@settings(max_examples=150, deadline=None)
@given(case=drawn_scalar())
def test_drawn_scalar_arguments_are_accepted_or_refused_by_rule(case):
    """Iteration counts, tolerances, steps, seeds and flags: accepted exactly when the rule
    says (an integer ≥ 1; a finite number ≥ 0 or > 0; a step in (0, 1); a non-negative
    integer seed or None; a bool), otherwise refused naming the argument."""
    entries, key, argument, kind, value = case
    verdict = ACCEPT if SCALAR_RULES[kind](value) else REFUSE
    if kind == "count" and argument == "max_iter" and verdict is ACCEPT:
        value = min(int(value), 3)  # the power iteration's cost grows with it
    entry = entries[key]
    check_hostile(entry, entry.models[0], argument, verdict, value)
