"""Torch oracles, drawn geometries, stack blocks and verify checks of the N-d pooling family
(``docs/pooling.md``): MaxPool1d/3d, AvgPool1d/3d, AdaptiveAvgPool1d/3d,
AdaptiveMaxPool1d/2d/3d, LPPool1d/2d/3d and FractionalMaxPool2d/3d (the 2-d originals keep
their checks in ``checks_convolution.py``).

Every check compares output, ∂C/∂x (random upstream gradient) and, through
:func:`reference.products.product_comparisons`, the V-axis products against ``torch.func``
in float64; max-type layers are drawn on small integers half the time (ties: torch's first
maximum).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import Reshape
from manual_bp.layers._unbatched import UnbatchedCache
from manual_bp.layers.pooling import AvgPool1d, AvgPool3d, MaxPool1d, MaxPool3d
from manual_bp.layers.pooling_adaptive import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
from manual_bp.layers.pooling_fractional import FractionalMaxPool2d, FractionalMaxPool3d
from manual_bp.layers.pooling_geometry import pool_output_size, window_misses_input
from manual_bp.layers.pooling_lp import LPPool1d, LPPool2d, LPPool3d

# the module, not its function: checks_convolution may be mid-import (it loads every check)
from reference import checks_convolution as conv
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import product_comparisons
from reference.stack import register_block, register_torch

__all__ = [
    "adaptive_case",
    "draw_nd_pool_kwargs",
    "fractional_case",
    "lppool_case",
    "nd_pool_case",
    "pool_input",
]

MAX_POOL = {1: MaxPool1d, 3: MaxPool3d}
AVG_POOL = {1: AvgPool1d, 3: AvgPool3d}
ADAPTIVE_AVG = {1: AdaptiveAvgPool1d, 3: AdaptiveAvgPool3d}
ADAPTIVE_MAX = {1: AdaptiveMaxPool1d, 2: AdaptiveMaxPool2d, 3: AdaptiveMaxPool3d}
LP_POOL = {1: LPPool1d, 2: LPPool2d, 3: LPPool3d}
FRACTIONAL = {2: FractionalMaxPool2d, 3: FractionalMaxPool3d}


# ----------------------------------------------------------------------------- torch forms
def _torch_max(layer, params, buffers, x, cache):
    function = {1: F.max_pool1d, 3: F.max_pool3d}[layer.dims]
    return function(
        x, layer.kernel, layer.strides, layer.pads, layer.dilation_pair, layer.ceil_mode
    )


def _torch_avg(layer, params, buffers, x, cache):
    if layer.dims == 1:
        return F.avg_pool1d(
            x, layer.kernel, layer.strides, layer.pads, layer.ceil_mode, layer.count_include_pad
        )
    return F.avg_pool3d(
        x,
        layer.kernel,
        layer.strides,
        layer.pads,
        layer.ceil_mode,
        layer.count_include_pad,
        layer.divisor_override,
    )


def _torch_adaptive_avg(layer, params, buffers, x, cache):
    function = {1: F.adaptive_avg_pool1d, 3: F.adaptive_avg_pool3d}[layer.dims]
    return function(x, layer.output_size)


def _torch_adaptive_max(layer, params, buffers, x, cache):
    function = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
    return function[layer.dims](x, layer.output_size)


def _torch_lp(layer, params, buffers, x, cache):
    function = {1: F.lp_pool1d, 2: F.lp_pool2d, 3: F.lp_pool3d}[layer.dims]
    kernel = layer.kernel[0] if layer.dims == 1 else layer.kernel  # lp_pool1d multiplies by it
    return function(x, layer.norm_type, kernel, layer.stride, layer.ceil_mode)


def _torch_fractional(layer, params, buffers, x, cache):
    """torch's kernel with the samples the forward used (the cache's)."""
    inner = cache.inner if isinstance(cache, UnbatchedCache) else cache
    samples = torch.as_tensor(inner.samples[0])
    if x.dim() == layer.dims + 1:  # unbatched: torch takes (1, C, D) samples
        samples = samples[:1]
    function = {2: F.fractional_max_pool2d, 3: F.fractional_max_pool3d}[layer.dims]
    return function(
        x,
        layer.kernel,
        output_size=layer.sizes,
        output_ratio=layer.ratios,
        _random_samples=samples.to(x.dtype),
    )


for _classes, _form in (
    (MAX_POOL, _torch_max),
    (AVG_POOL, _torch_avg),
    (ADAPTIVE_AVG, _torch_adaptive_avg),
    (ADAPTIVE_MAX, _torch_adaptive_max),
    (LP_POOL, _torch_lp),
    (FRACTIONAL, _torch_fractional),
):
    for _cls in _classes.values():
        register_torch(_cls)(_form)


# ----------------------------------------------------------------------------- cases
def draw_nd_pool_kwargs(rng: np.random.Generator, kind: str, dims: int) -> dict[str, Any]:
    """Valid sliding-window arguments on ``dims`` axes and an input ``size`` (kernel ≤ padded
    input, padding ≤ k/2, no window of padding only)."""
    size = [int(rng.integers(1, 9 if dims == 1 else 6)) for _ in range(dims)]
    dilation = [1 if kind == "avg" else int(rng.integers(1, 3)) for _ in range(dims)]
    kernel, padding = [], []
    for a in range(dims):
        k = int(rng.integers(1, min(4, (size[a] + 1) // dilation[a] + 1) + 1))
        p = int(rng.integers(0, k // 2 + 1))
        if kind == "avg" and dims == 3:
            k = min(k, size[a])  # torch's avg_pool3d: no axis shorter than the kernel
            p = min(p, k // 2)
        while dilation[a] * (k - 1) + 1 > size[a] + 2 * p:
            k -= 1
            p = min(p, k // 2)
        kernel.append(k)
        padding.append(p)
    stride = None if rng.random() < 0.3 else tuple(int(rng.integers(1, 4)) for _ in range(dims))
    ceil_mode = bool(rng.random() < 0.4)
    for a in range(dims):
        s = kernel[a] if stride is None else stride[a]
        out = pool_output_size(size[a], kernel[a], s, padding[a], dilation[a], ceil_mode)
        if window_misses_input(size[a], kernel[a], s, padding[a], dilation[a], out):
            dilation[a] = 1
    kwargs: dict[str, Any] = {
        "kernel_size": tuple(kernel),
        "stride": stride,
        "padding": tuple(padding),
        "ceil_mode": ceil_mode,
        "size": tuple(size),
    }
    if kind == "max":
        kwargs["dilation"] = tuple(dilation)
        kwargs["return_indices"] = bool(rng.integers(2))
    else:
        kwargs["count_include_pad"] = bool(rng.random() < 0.5)
        if dims != 1:
            kwargs["divisor_override"] = None if rng.random() < 0.7 else int(rng.integers(1, 10))
    return kwargs


def pool_input(rng: np.random.Generator, shape: tuple[int, ...], ties: bool) -> np.ndarray:
    """Normal values, or small integers (many ties) when ``ties``."""
    if ties:
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    return rng.standard_normal(shape)


def nd_pool_case(rng: np.random.Generator, kind: str, dims: int | None = None):
    """A MaxPool1d/3d or AvgPool1d/3d and an input (batched or not, maybe an empty batch)."""
    dims = dims or int(rng.choice([1, 3]))
    kwargs = draw_nd_pool_kwargs(rng, kind, dims)
    size = kwargs.pop("size")
    if kind == "max":
        layer = MAX_POOL[dims](**kwargs, implementation=str(rng.choice(["fast", "readable"])))
    else:
        layer = AVG_POOL[dims](**kwargs)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 3)), *size)
    return layer, pool_input(rng, shape, kind == "max" and bool(rng.integers(2)))


def adaptive_case(rng: np.random.Generator, kind: str, dims: int | None = None):
    """An adaptive average (1-d/3-d) or max (1/2/3-d) pooling and an input: output sizes
    above, at and below the input's (overlapping windows), ``None`` entries."""
    dims = dims or int(rng.choice([1, 3] if kind == "avg" else [1, 2, 3]))
    size = tuple(int(rng.integers(1, 8 if dims == 1 else 6)) for _ in range(dims))
    sizes: list[int | None] = [int(rng.integers(1, s + 3)) for s in size]
    if dims > 1 and rng.random() < 0.3:
        sizes[int(rng.integers(dims))] = None
    output = sizes[0] if rng.random() < 0.3 and sizes[0] is not None else tuple(sizes)
    if kind == "avg":
        layer = ADAPTIVE_AVG[dims](output)
    else:
        layer = ADAPTIVE_MAX[dims](output, return_indices=bool(rng.integers(2)))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 3)), *size)
    return layer, pool_input(rng, shape, kind == "max" and bool(rng.integers(2)))


def lppool_case(
    rng: np.random.Generator,
    dims: int | None = None,
    positive: bool = True,
    several: bool = False,
):
    """An LPPool1d/2d/3d (p ∈ {1, 1.5, 2, 3}, stride, ceil_mode) and an input: positive (a
    fractional power of a negative number is NaN, in torch as here), or any sign for p = 2,
    with a window of zeros now and then (the gradient's edge). ``several``: every window
    holds two elements or more (a one-element window is ``K^{1/p}|x|``, whose Hessian is
    exactly 0 here and rounding noise in torch.func's double backward)."""
    dims = dims or int(rng.integers(1, 4))
    while True:
        size = tuple(int(rng.integers(1, 8 if dims == 1 else 6)) for _ in range(dims))
        kernel = tuple(int(rng.integers(1, s + 1)) for s in size)
        stride = None if rng.random() < 0.4 else tuple(int(rng.integers(1, 3)) for _ in range(dims))
        p = float(rng.choice([1.0, 1.5, 2.0, 3.0])) if positive else 2.0
        layer = LP_POOL[dims](p, kernel, stride, bool(rng.random() < 0.4))
        if not several or layer.average.divisor(size).min() > 1:
            break
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 3)), *size)
    x = rng.standard_normal(shape)
    x = np.abs(x) + 0.1 if positive else x
    if rng.random() < 0.3:
        x[(0, 0, *(slice(0, k) for k in kernel))] = 0.0  # a window of zeros
    return layer, x


def fractional_case(rng: np.random.Generator, dims: int | None = None):
    """A FractionalMaxPool2d/3d (output size or ratio, explicit samples or the seeded
    generator) and an input (ties half the time)."""
    dims = dims or int(rng.choice([2, 3]))
    slack = dims - 2  # torch: O + k − 1 ≤ S in 2-d, < S in 3-d
    size = tuple(int(rng.integers(2, 9 if dims == 2 else 6)) for _ in range(dims))
    kernel = tuple(int(rng.integers(1, min(s - slack, 3) + 1)) for s in size)
    batch, channels = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    pairs = list(zip(size, kernel, strict=True))
    ratio = float(rng.uniform(0.3, 0.95))
    if rng.random() < 0.5 and all(1 <= int(s * ratio) <= s - k + 1 - slack for s, k in pairs):
        target: dict[str, Any] = {"output_ratio": ratio}
    else:
        target = {"output_size": tuple(int(rng.integers(1, s - k + 2 - slack)) for s, k in pairs)}
    samples = rng.random((batch, channels, dims)) if rng.random() < 0.5 else None
    layer = FRACTIONAL[dims](
        kernel,
        **target,
        return_indices=bool(rng.integers(2)),
        _random_samples=samples,
        seed=int(rng.integers(2**31)),
    )
    shape = (batch, channels, *size)
    return layer, pool_input(rng, shape, bool(rng.integers(2)))


# ----------------------------------------------------------------------------- checks
def _both(layer, x, rng: np.random.Generator, integer: bool = False) -> list[Comparison]:
    """The layer alone (output, ∂C/∂x) and its products against torch.func."""
    comparisons = conv.layer_comparisons(layer, x, rng, integer_inputs=integer)
    return comparisons + product_comparisons(layer, x, rng)


@register_check("maxpool-nd-layer")
def maxpool_nd_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.maxpool-nd, PROD.maxpool-nd.*: F.max_pool1d/3d, drawn geometry, ties."""
    layer, x = nd_pool_case(rng, "max")
    return _both(layer, x, rng)


@register_check("avgpool-nd-layer")
def avgpool_nd_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.avgpool-nd, PROD.avgpool-nd.*: F.avg_pool1d/3d (count_include_pad, ceil_mode,
    divisor_override)."""
    layer, x = nd_pool_case(rng, "avg")
    return _both(layer, x, rng)


@register_check("adaptive-pool-nd-layer")
def adaptive_nd_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.adaptive-avgpool-nd, LAYER.adaptive-maxpool and their products."""
    return _both(*adaptive_case(rng, "avg"), rng) + _both(*adaptive_case(rng, "max"), rng)


@register_check("lppool-layer")
def lppool_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.lppool, PROD.lppool.*: F.lp_pool1d/2d/3d on positive inputs (any p) and signed
    ones (p = 2); the products away from zero windows (torch.func's second derivative there
    is 0·∞) and on windows of two elements or more (see :func:`lppool_case`)."""
    layer, x = lppool_case(rng, positive=bool(rng.integers(2)))
    comparisons = conv.layer_comparisons(layer, x, rng)
    layer, x = lppool_case(rng, positive=bool(rng.integers(2)), several=True)
    return comparisons + product_comparisons(layer, np.where(x == 0, 0.5, x), rng)


@register_check("fractional-maxpool-layer")
def fractional_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.fractional-maxpool, PROD.fractional-maxpool.*: F.fractional_max_pool2d/3d with
    the samples the layer used."""
    layer, x = fractional_case(rng)
    return _both(layer, x, rng)


# ----------------------------------------------------------------------------- stack blocks
@register_block("sequences", "pool1d")
def _pool1d_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """A 1-d max, average, adaptive or LP pooling over the sequence's last axis."""
    _, length = shape
    kind = str(rng.choice(["max", "avg", "adaptive-avg", "adaptive-max", "lp"]))
    k = int(rng.integers(1, min(length, 3) + 1))
    if kind == "max":
        layer: Any = MaxPool1d(k, 1, k // 2, ceil_mode=bool(rng.integers(2)))
    elif kind == "avg":
        layer = AvgPool1d(k, 1, k // 2, count_include_pad=bool(rng.integers(2)))
    elif kind == "adaptive-avg":
        layer = AdaptiveAvgPool1d(int(rng.integers(1, length + 2)))
    elif kind == "adaptive-max":
        layer = AdaptiveMaxPool1d(int(rng.integers(1, length + 2)))
    elif length >= 2:  # windows of two (one-element ones: see lppool_case)
        layer = LPPool1d(2.0, 2, 1)
    else:
        layer = AdaptiveMaxPool1d(1)
    return [layer], layer.output_shape(shape)


@register_block("images", "pool-select")
def _pool_select_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Adaptive max, fractional max (explicit samples) or LP (p = 2) pooling on images."""
    _, h, w = shape
    kind = str(rng.choice(["adaptive-max", "fractional", "lp"]))
    if kind == "adaptive-max":
        layer: Any = AdaptiveMaxPool2d((int(rng.integers(1, h + 2)), int(rng.integers(1, w + 2))))
    elif kind == "fractional":
        k = (min(h, 2), min(w, 2))
        out = (int(rng.integers(1, h - k[0] + 2)), int(rng.integers(1, w - k[1] + 2)))
        # explicit samples (rows for any batch a stack draws): the same windows at every
        # forward, so finite differences and repeated passes see one function
        samples = rng.random((64, shape[0], 2))
        layer = FractionalMaxPool2d(k, output_size=out, _random_samples=samples)
    elif max(h, w) >= 2:  # windows of two or more (one-element ones: see lppool_case)
        layer = LPPool2d(2.0, (min(h, 2), min(w, 2)), 1)
    else:
        layer = AdaptiveMaxPool2d(1)
    return [layer], layer.output_shape(shape)


@register_block("images", "pool3d")
def _pool3d_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """A 3-d pooling of the image seen as one channel of a (C, H, W) volume, reshaped back:
    ``Reshape(1, C, H, W) → pool3d → Reshape(D', H', W')``."""
    c, h, w = shape
    volume = (1, c, h, w)
    kind = str(rng.choice(["max", "avg", "adaptive-avg", "adaptive-max", "lp", "fractional"]))
    k = tuple(int(rng.integers(1, min(s, 2) + 1)) for s in volume[1:])
    if kind == "max":
        layer: Any = MaxPool3d(k, 1, tuple(i // 2 for i in k), ceil_mode=bool(rng.integers(2)))
    elif kind == "avg":
        layer = AvgPool3d(k, 1, tuple(i // 2 for i in k), count_include_pad=bool(rng.integers(2)))
    elif kind in ("adaptive-avg", "adaptive-max"):
        out = tuple(int(rng.integers(1, s + 2)) for s in volume[1:])
        layer = AdaptiveAvgPool3d(out) if kind == "adaptive-avg" else AdaptiveMaxPool3d(out)
    elif kind == "lp" and max(volume[1:]) >= 2:  # windows of two or more
        layer = LPPool3d(2.0, tuple(min(s, 2) for s in volume[1:]), 1)
    elif kind == "lp":
        layer = AdaptiveMaxPool3d(1)
    else:
        # torch's 3-d rule O + k − 1 < S: k ≤ S − 1 (no 3-d fractional pooling of a
        # one-wide axis: a 1-channel image is pooled by adaptive max pooling instead)
        if min(volume[1:]) < 2:
            layer = AdaptiveMaxPool3d(1)
        else:
            k = tuple(min(i, s - 1) for s, i in zip(volume[1:], k, strict=True))
            out = tuple(int(rng.integers(1, s - i + 1)) for s, i in zip(volume[1:], k, strict=True))
            layer = FractionalMaxPool3d(k, output_size=out, _random_samples=rng.random((64, 1, 3)))
    pooled = layer.output_shape(volume)
    return [Reshape(*volume), layer, Reshape(*pooled[1:])], pooled[1:]
