"""Checks and stack blocks of the N-d convolutions: Conv3d, ConvTranspose1d/3d (LAYER.*
against torch's functional forms with a random upstream gradient, in float64) and the lazy
convolutions, placed in the middle of image stacks (reshaped into volumes and sequences and
back). Geometries: :func:`reference.checks_convolution.draw_conv_kwargs`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers import ActivationLayer, Flatten, Unflatten
from manual_bp.layers.convolution import Conv3d
from manual_bp.layers.convolution_lazy import (
    LazyConv1d,
    LazyConv2d,
    LazyConv3d,
    LazyConvTranspose1d,
    LazyConvTranspose2d,
    LazyConvTranspose3d,
)
from manual_bp.layers.convolution_transpose import ConvTranspose1d, ConvTranspose3d
from reference.checks import register_check
from reference.compare import Comparison
from reference.stack import register_block


def conv_layer_comparisons(*args: Any, **kwargs: Any) -> list[Comparison]:
    """:func:`reference.checks_convolution.conv_layer_comparisons`, imported when called
    (``reference.checks`` imports this module while ``checks_convolution`` may still be
    importing it)."""
    from reference.checks_convolution import conv_layer_comparisons as compare

    return compare(*args, **kwargs)


__all__: list[str] = []


@register_check("conv3d-layer")
def conv3d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv3d against F.conv3d (padding modes through F.pad, as torch's module)."""
    return conv_layer_comparisons(rng, 3)


@register_check("conv-transpose1d-layer")
def conv_transpose1d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv-transpose1d against F.conv_transpose1d."""
    return conv_layer_comparisons(rng, 1, transpose=True)


@register_check("conv-transpose3d-layer")
def conv_transpose3d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv-transpose3d against F.conv_transpose3d."""
    return conv_layer_comparisons(rng, 3, transpose=True)


def _divisor(rng: np.random.Generator, n: int) -> int:
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


@register_block("images", "conv3d")
def _conv3d_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """The image's rows split into a depth (``Unflatten``), a Conv3d (a random geometry
    fitting that volume, a random padding mode) or a ConvTranspose3d, depth and rows merged
    back (``Flatten(2, 3)``): the 3-D layers in the middle of image stacks."""
    channels, h, w = shape
    depth = _divisor(rng, h)
    volume = (depth, h // depth, w)
    groups = int(rng.choice([g for g in (1, 2, 3) if channels % g == 0]))
    c_out = groups * int(rng.integers(1, 3))
    kernel = tuple(int(rng.integers(1, min(3, s) + 1)) for s in volume)
    if rng.random() < 0.5:
        padding = tuple(int(rng.integers(0, k)) for k in kernel)
        mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
        if mode == "reflect" and any(p >= s for p, s in zip(padding, volume, strict=True)):
            mode = "zeros"
        stride = tuple(int(rng.integers(1, 3)) for _ in volume)
        layer: Any = Conv3d(channels, c_out, kernel, stride, padding, 1, groups, padding_mode=mode)
    else:
        stride = tuple(int(rng.integers(1, 3)) for _ in volume)
        out_pad = tuple(int(rng.integers(0, s)) for s in stride)
        layer = ConvTranspose3d(channels, c_out, kernel, stride, 0, out_pad, groups)
    _, *out = layer.output_shape((channels, *volume))
    layers = [Unflatten(2, (depth, h // depth)), layer, ActivationLayer("tanh"), Flatten(2, 3)]
    return layers, (c_out, out[0] * out[1], out[2])


@register_block("images", "conv-transpose1d")
def _conv_transpose1d_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Rows and columns flattened into one axis (``Flatten(2, 3)``), a ConvTranspose1d,
    the result as an image of height 1 (``Unflatten``)."""
    channels, h, w = shape
    groups = int(rng.choice([g for g in (1, 2) if channels % g == 0]))
    stride = int(rng.integers(1, 4))
    layer = ConvTranspose1d(
        channels,
        groups * int(rng.integers(1, 3)),
        int(rng.integers(1, 4)),
        stride,
        0,
        int(rng.integers(0, stride)),
        groups,
        dilation=int(rng.integers(1, 3)),
    )
    c_out, length = layer.output_shape((channels, h * w))
    layers = [Flatten(2, 3), layer, ActivationLayer("sigmoid"), Unflatten(2, (1, length))]
    return layers, (c_out, 1, length)


@register_block("images", "lazy-conv")
def _lazy_conv_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Every lazy convolution once, materialised by the shape that reaches it (as a
    Sequential needs): LazyConv2d, the image as a volume of depth 1 through LazyConv3d and
    LazyConvTranspose3d, as a sequence through LazyConv1d and LazyConvTranspose1d, and back
    to an image through LazyConvTranspose2d."""

    def small() -> int:
        return int(rng.integers(1, 3))

    seed = int(rng.integers(2**31))
    layers: list[Any] = []

    def add(layer: Any, current: tuple[int, ...]) -> tuple[int, ...]:
        if hasattr(layer, "materialize"):
            layer.materialize(current)
        layers.append(layer)
        return tuple(layer.output_shape(current))

    shape = add(LazyConv2d(small(), 2, padding=1, seed=seed), shape)
    shape = add(ActivationLayer("tanh"), shape)
    shape = add(Unflatten(2, (1, shape[1])), shape)
    shape = add(LazyConv3d(small(), (1, 2, 2), padding=(0, 1, 0), seed=seed), shape)
    shape = add(LazyConvTranspose3d(small(), (1, 1, 2), stride=(1, 1, 2), seed=seed), shape)
    shape = add(Flatten(2, 4), shape)
    shape = add(LazyConv1d(small(), 3, padding=1, seed=seed), shape)
    shape = add(LazyConvTranspose1d(small(), 2, stride=2, output_padding=1, seed=seed), shape)
    shape = add(Unflatten(2, (1, shape[1])), shape)
    shape = add(LazyConvTranspose2d(small(), (2, 1), seed=seed), shape)
    return layers, shape
