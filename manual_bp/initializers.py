"""Weight initialisers: Nielsen's two (ch. 3) and torch's schemes, by name.

Network-level (Nielsen): ``default`` fills ``Wˡ ~ N(0, 1/n_{l−1})`` and ``bˡ ~ N(0, 1)``
(equation ``INIT.default``); ``large`` fills both with ``N(0, 1)`` (ch. 1).

Per tensor (any layer): :func:`initialize` draws one array of a given shape under a
named scheme, with fans computed as torch's ``_calculate_fan_in_and_fan_out``
(``fan_in = shape[1]·receptive field``, ``fan_out = shape[0]·receptive field``) and gains
as ``torch.nn.init.calculate_gain``. Each scheme's variance is derived in
``docs/layers.md#INIT.schemes``:

============== ==============================================================
scheme          distribution
============== ==============================================================
nielsen         N(0, 1/fan_in)
normal          N(0, 1)                            (Nielsen's ``large``)
xavier-uniform  U(−a, a),  a = gain·√(6/(fan_in + fan_out))
xavier-normal   N(0, gain²·2/(fan_in + fan_out))
kaiming-uniform U(−a, a),  a = gain·√(3/fan)       (fan = fan_in or fan_out)
kaiming-normal  N(0, gain²/fan)
torch           U(−1/√fan_in, 1/√fan_in)           (Linear/Conv default: kaiming-uniform,
                                                    a = √5; and their bias)
zeros, ones     constants
============== ==============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "INITIALIZERS",
    "SCHEMES",
    "calculate_gain",
    "default_initializer",
    "fans",
    "get_initializer",
    "initialize",
    "large_initializer",
]

Initializer = Callable[[np.random.Generator, Sequence[np.ndarray], Sequence[np.ndarray]], None]


def default_initializer(
    rng: np.random.Generator, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]
) -> None:
    """Fill in place: ``W ~ N(0, 1)/√n_in``, ``b ~ N(0, 1)``. Equation ``INIT.default``."""
    for W, b in zip(weights, biases, strict=True):
        W[...] = rng.standard_normal(W.shape) / np.sqrt(W.shape[1])
        b[...] = rng.standard_normal(b.shape)


def large_initializer(
    rng: np.random.Generator, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]
) -> None:
    """Fill in place: ``W, b ~ N(0, 1)`` (Nielsen's ch. 1 initialiser)."""
    for W, b in zip(weights, biases, strict=True):
        W[...] = rng.standard_normal(W.shape)
        b[...] = rng.standard_normal(b.shape)


INITIALIZERS: dict[str, Initializer] = {
    "default": default_initializer,
    "large": large_initializer,
}


def get_initializer(name: str) -> Initializer:
    """The network initialiser registered under ``name``; ``ValueError`` listing valid names."""
    if not isinstance(name, str):
        raise TypeError(
            f"initializer must be a name, got {type(name).__name__}; valid names: "
            f"{', '.join(sorted(INITIALIZERS))}"
        )
    try:
        return INITIALIZERS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; valid names: {', '.join(sorted(INITIALIZERS))}"
        ) from None


# ---------------------------------------------------------------------- per tensor
def calculate_gain(nonlinearity: str = "linear", param: float | None = None) -> float:
    """torch's ``calculate_gain``: the factor that keeps activations' variance near one."""
    if not isinstance(nonlinearity, str):
        raise TypeError(f"nonlinearity must be a name, got {type(nonlinearity).__name__}")
    if param is not None and (
        isinstance(param, bool)
        or not isinstance(param, (int, float, np.integer, np.floating))
        or not math.isfinite(param)
    ):
        raise ValueError(f"param (the negative slope) must be a finite number, got {param!r}")
    name = nonlinearity.strip().lower().replace("-", "_")
    if name in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        return 1.0
    if name == "tanh":
        return 5.0 / 3.0
    if name == "relu":
        return math.sqrt(2.0)
    if name == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if name == "selu":
        return 3.0 / 4.0
    raise ValueError(
        f"unknown nonlinearity {nonlinearity!r} for calculate_gain; valid: linear, sigmoid, "
        f"tanh, relu, leaky_relu, selu, conv*/conv_transpose*"
    )


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as torch computes them; 1-D arrays have fan_in = fan_out = n.

    ``shape``: a sequence of non-negative integers (a tuple, list or array shape); anything
    else is one ``TypeError``/``ValueError`` naming ``shape``.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise TypeError(f"shape must be a sequence of integers, got {type(shape).__name__}")
    shape = tuple(shape)
    for size in shape:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"shape must hold integers, got {type(size).__name__} {size!r:.40}")
        if size < 0:
            raise ValueError(f"shape must hold sizes >= 0, got {size}")
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _uniform(rng: np.random.Generator, shape, bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape)


def initialize(
    spec: str | dict[str, Any],
    rng: np.random.Generator,
    shape: Sequence[int],
    *,
    fan_in: int | None = None,
    fan_out: int | None = None,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Draw an array of ``shape`` under scheme ``spec`` (equation ``INIT.schemes``).

    ``spec`` is a name or ``{"name": ..., "gain": g, "mode": "fan_in"|"fan_out",
    "nonlinearity": "relu", "param": slope}``. ``fan_in``/``fan_out`` override the fans
    computed from ``shape`` (a bias uses its weight's fan_in, as torch does).
    """
    if not isinstance(spec, (str, dict)):
        raise TypeError(
            f"initializer spec must be a name or a dict, got {type(spec).__name__}; "
            f"valid names: {', '.join(SCHEMES)}"
        )
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = str(options.pop("name", "")).strip().lower().replace("_", "-")
    shape = _check_shape(shape)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"initializer dtype must be a float dtype, got {np.dtype(dtype)}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)  # a seed (int) is accepted, as elsewhere
    computed_in, computed_out = fans(shape)
    fan_in = computed_in if fan_in is None else fan_in
    fan_out = computed_out if fan_out is None else fan_out
    gain = options.pop("gain", None)
    nonlinearity = options.pop("nonlinearity", None)
    param = options.pop("param", None)
    mode = options.pop("mode", "fan_in")
    if options:
        raise ValueError(f"initializer {name!r} has no option(s) {sorted(options)}")
    if gain is not None and (
        isinstance(gain, bool)
        or not isinstance(gain, (int, float, np.integer, np.floating))
        or not math.isfinite(gain)
    ):
        raise ValueError(f"gain must be a finite number, got {gain!r}")
    if name in _FAN_SCALED and min(fan_in, fan_out) < 1:
        if not math.prod(shape):
            return np.zeros(shape, dtype)  # nothing to draw, no scale needed
        raise ValueError(
            f"initializer {name!r} scales by the fans, which are fan_in={fan_in}, "
            f"fan_out={fan_out} for shape {shape}; they must be >= 1"
        )
    explicit_gain = gain
    if gain is None:
        gain = calculate_gain(nonlinearity or "linear", param)
    if name == "nielsen":
        values = rng.standard_normal(shape) / math.sqrt(fan_in)
    elif name in ("normal", "nielsen-large"):
        values = rng.standard_normal(shape)
    elif name == "xavier-uniform":
        values = _uniform(rng, shape, gain * math.sqrt(6.0 / (fan_in + fan_out)))
    elif name == "xavier-normal":
        values = rng.standard_normal(shape) * (gain * math.sqrt(2.0 / (fan_in + fan_out)))
    elif name in ("kaiming-uniform", "kaiming-normal"):
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"kaiming mode must be 'fan_in' or 'fan_out', got {mode!r}")
        fan = fan_in if mode == "fan_in" else fan_out
        if explicit_gain is None:
            # torch.nn.init.kaiming_*: a=0, nonlinearity="leaky_relu" by default, and the
            # slope ``a`` defaults to 0 even when "leaky_relu" is named (gain √2), unlike
            # calculate_gain("leaky_relu") whose default slope is 0.01.
            gain = calculate_gain(nonlinearity or "leaky_relu", 0.0 if param is None else param)
        std = gain / math.sqrt(fan)
        if name == "kaiming-uniform":
            values = _uniform(rng, shape, math.sqrt(3.0) * std)
        else:
            values = rng.standard_normal(shape) * std
    elif name == "torch":
        values = _uniform(rng, shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
    elif name == "zeros":
        values = np.zeros(shape)
    elif name == "ones":
        values = np.ones(shape)
    else:
        raise ValueError(f"unknown initializer {name!r}; valid names: {', '.join(SCHEMES)}")
    return values.astype(dtype)


#: Schemes whose scale divides by a fan.
_FAN_SCALED = frozenset(
    {"nielsen", "xavier-uniform", "xavier-normal", "kaiming-uniform", "kaiming-normal", "torch"}
)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative Python ints; ``ValueError`` naming the bad entry."""
    try:
        entries = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of integers, got {shape!r}") from None
    for entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, (int, np.integer)) or entry < 0:
            raise ValueError(
                f"shape entries must be non-negative integers, got {entry!r} in {shape}"
            )
    return tuple(int(e) for e in entries)


#: Names accepted by :func:`initialize`.
SCHEMES = (
    "kaiming-normal",
    "kaiming-uniform",
    "nielsen",
    "normal",
    "ones",
    "torch",
    "xavier-normal",
    "xavier-uniform",
    "zeros",
)
