"""Small random models with one layer family in the middle of a stack, for the curvature
oracles (``tests/test_curvature_layers.py``, the table in ``docs/curvature.md``).

Every family is ``build(rng) -> (model, x, y)``: a trainable layer below the family (so
the family's input products and residual are walked), the family, a nonlinearity, and a
dense head with a cost. Sizes are tiny: the oracles form dense Hessians.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from manual_bp import Sequential
from manual_bp import layers as L

__all__ = ["COUPLED", "FAMILIES", "build"]


def _labels(rng, n, classes, *lead):
    return rng.integers(0, classes, (n, *lead))


def _conv1d(rng):
    m = Sequential(
        [
            L.Conv1d(2, 2, 2),
            "tanh",
            L.Conv1d(2, 2, 2, padding=1),
            L.Flatten(),
            L.Dense(8, 3),
            "softmax",
        ],
        "log-likelihood",
        input_shape=(2, 4),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((3, 2, 4)), _labels(rng, 3, 3)


def _conv2d(rng):
    m = Sequential(
        [L.Conv2d(1, 2, 2), "sigmoid", L.Conv2d(2, 2, 2, stride=1), L.Flatten(), L.Dense(8, 2)],
        "quadratic",
        input_shape=(1, 4, 4),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((3, 1, 4, 4)), rng.standard_normal((3, 2))


def _conv3d(rng):
    m = Sequential(
        [L.Conv3d(1, 2, 2), "tanh", L.Flatten(), L.Dense(16, 2)],
        "quadratic",
        input_shape=(1, 3, 3, 3),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((2, 1, 3, 3, 3)), rng.standard_normal((2, 2))


def _conv_transpose(rng):
    m = Sequential(
        [L.Conv2d(1, 2, 2), "tanh", L.ConvTranspose2d(2, 1, 2), "tanh", L.Flatten(), L.Dense(9, 2)],
        "quadratic",
        input_shape=(1, 3, 3),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((3, 1, 3, 3)), rng.standard_normal((3, 2))


def _pool(pool, shape, flat):
    def build(rng):
        conv = L.Conv2d(1, 2, 2) if len(shape) == 3 else L.Conv1d(1, 2, 2)
        m = Sequential(
            [conv, "tanh", pool(), "sigmoid", L.Flatten(), L.Dense(flat, 3), "softmax"],
            "log-likelihood",
            input_shape=shape,
            seed=int(rng.integers(1 << 30)),
        )
        return m, rng.standard_normal((3, *shape)), _labels(rng, 3, 3)

    return build


def _norm(norm, *, train=False, conv=False):
    def build(rng):
        first = L.Conv1d(2, 4, 2) if conv else L.Dense(3, 4)
        shape = (2, 4) if conv else (3,)
        tail = [L.Flatten(), L.Dense(12, 2)] if conv else [L.Dense(4, 2)]
        m = Sequential(
            [first, norm(), "tanh", *tail],
            "quadratic",
            input_shape=shape,
            seed=int(rng.integers(1 << 30)),
        )
        layer = m.layers[1]
        for name, p in layer.params.items():  # γ, β away from their 1, 0 initialisation
            scale = rng.uniform(0.5, 1.5, p.shape)
            p[...] = scale if name == "weight" else rng.normal(0, 1, p.shape)
        for name, b in layer.buffers.items():
            if name == "running_mean":
                b[...] = rng.normal(size=b.shape)
            elif name == "running_var":
                b[...] = rng.uniform(0.5, 2, b.shape)
        m.train(train)
        return m, rng.standard_normal((4, *shape)), rng.standard_normal((4, 2))

    return build


def _embedding(ignore: bool):
    def build(rng):
        m = Sequential(
            [L.Embedding(5, 3), L.Dense(3, 4), "tanh", L.Dense(4, 3), "softmax"],
            "log-likelihood",
            input_shape=(3,),
            seed=int(rng.integers(1 << 30)),
            ignore_index=-100 if ignore else None,
        )
        y = _labels(rng, 3, 3, 3)
        if ignore:
            y[0, 1] = y[2, 0] = -100
        return m, rng.integers(0, 5, (3, 3)), y

    return build


def _recurrent(cls):
    def build(rng):
        m = Sequential(
            [L.Dense(2, 3), "tanh", cls(3, 3, batch_first=True), L.Dense(3, 2)],
            "quadratic",
            input_shape=(3, 2),
            seed=int(rng.integers(1 << 30)),
        )
        return m, rng.standard_normal((3, 3, 2)), rng.standard_normal((3, 3, 2))

    return build


def _attention(rng):
    m = Sequential(
        [L.Dense(2, 4), "tanh", L.MultiheadAttention(4, 2, batch_first=True), L.Dense(4, 2)],
        "quadratic",
        input_shape=(3, 2),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 2))


def _transformer(rng):
    layer = L.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True)
    m = Sequential(
        [L.Dense(2, 4), layer, L.Dense(4, 2)],
        "quadratic",
        input_shape=(3, 2),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 2))


def _residual(rng):
    m = Sequential(
        [L.Dense(3, 3), L.Residual([L.Dense(3, 3), "tanh"]), "sigmoid", L.Dense(3, 2)],
        "quadratic",
        input_shape=(3,),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((4, 3)), rng.standard_normal((4, 2))


def _padding(pad, shape, flat):
    def build(rng):
        conv = L.Conv2d(1, 1, 2) if len(shape) == 3 else L.Conv1d(1, 2, 2)
        m = Sequential(
            [conv, pad(), "tanh", L.Flatten(), L.Dense(flat, 2)],
            "quadratic",
            input_shape=shape,
            seed=int(rng.integers(1 << 30)),
        )
        return m, rng.standard_normal((3, *shape)), rng.standard_normal((3, 2))

    return build


def _dense_sequence(rng):
    m = Sequential(
        [L.Dense(2, 3), "tanh", L.Dense(3, 3), "softmax"],
        "log-likelihood",
        input_shape=(4, 2),
        seed=int(rng.integers(1 << 30)),
    )
    return m, rng.standard_normal((3, 4, 2)), _labels(rng, 3, 3, 4)


#: family -> builder; COUPLED: families whose per-sample quantities are refused.
FAMILIES: dict[str, Callable[[np.random.Generator], tuple[Any, Any, Any]]] = {
    "Conv1d": _conv1d,
    "Conv2d": _conv2d,
    "Conv3d": _conv3d,
    "ConvTranspose2d": _conv_transpose,
    "MaxPool2d": _pool(lambda: L.MaxPool2d(2), (1, 5, 5), 8),
    "AvgPool1d": _pool(lambda: L.AvgPool1d(2), (1, 7), 6),
    "AdaptiveAvgPool2d": _pool(lambda: L.AdaptiveAvgPool2d(2), (1, 5, 5), 8),
    "AdaptiveMaxPool1d": _pool(lambda: L.AdaptiveMaxPool1d(3), (1, 7), 6),
    "LPPool2d": _pool(lambda: L.LPPool2d(2, 2), (1, 5, 5), 8),
    "BatchNorm1d (eval)": _norm(lambda: L.BatchNorm1d(4)),
    "BatchNorm1d (train)": _norm(lambda: L.BatchNorm1d(4), train=True),
    "BatchNorm1d on (N, C, L) (train)": _norm(lambda: L.BatchNorm1d(4), train=True, conv=True),
    "LayerNorm": _norm(lambda: L.LayerNorm(4)),
    "GroupNorm": _norm(lambda: L.GroupNorm(2, 4), conv=True),
    "InstanceNorm1d": _norm(lambda: L.InstanceNorm1d(4, affine=True), conv=True),
    "RMSNorm": _norm(lambda: L.RMSNorm(4)),
    "Embedding": _embedding(False),
    "Embedding + ignore_index": _embedding(True),
    "Dense on (N, T, D)": _dense_sequence,
    "RNN": _recurrent(L.RNN),
    "LSTM": _recurrent(L.LSTM),
    "GRU": _recurrent(L.GRU),
    "MultiheadAttention": _attention,
    "TransformerEncoderLayer": _transformer,
    "Residual": _residual,
    "ReflectionPad1d": _padding(lambda: L.ReflectionPad1d(1), (1, 5), 12),
    "ZeroPad2d": _padding(lambda: L.ZeroPad2d(1), (1, 3, 3), 16),
}

COUPLED = frozenset({"BatchNorm1d (train)", "BatchNorm1d on (N, C, L) (train)"})


def build(family: str, seed: int) -> tuple[Any, Any, Any]:
    """``(model, x, y)`` of ``family`` from ``seed``."""
    return FAMILIES[family](np.random.default_rng(seed))
