"""The catalogues of hostile values for tests/test_hostile_curvature.py, one generator per
kind of argument (:data:`HOSTILE`): ``(verdict, value)`` pairs, every one a wrong or an
awkward-but-valid value of that kind (``tests/hostile_entries.py`` holds the kinds shared
with the layers' hostile tests, and the verdicts)."""

from __future__ import annotations

import numpy as np

from manual_bp import Dense, Network, Sequential
from manual_bp.layers import Dropout
from manual_bp.layers.base import Layer
from tests.hostile_entries import (
    Accept,
    Either,
    Refuse,
    Same,
    hostile_counts,
    hostile_flags,
    hostile_optional_counts,
    hostile_positives,
    hostile_sample_counts,
    hostile_seeds,
    hostile_tolerances,
    hostile_widths,
)


def flat_direction(model, seed=4):
    """A random flat direction in parameter space."""
    size = sum(p.size for p in model.parameter_arrays())
    return np.random.default_rng(seed).standard_normal(size)


def list_direction(model, seed=5):
    """A random direction as one array per parameter."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape) for p in model.parameter_arrays()]


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
    flat, listed = flat_direction(model), list_direction(model)
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
