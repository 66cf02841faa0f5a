"""Torch oracles, random geometries, stack blocks and checks for convolution and pooling.

``draw_conv_geometry`` draws VALID geometries directly (kernel up to the padded input,
stride not dividing the span, padding 0 … 3 or "same", dilation, groups dividing both
channel counts), so no case is filtered away. Each check returns comparisons against
torch autograd in float64 with a random upstream gradient; the magnitude scale of each
quantity is the same computation on absolute values (``Σ|terms|``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer
from manual_bp.layers.convolution import Conv1d, Conv2d, Conv3d
from manual_bp.layers.convolution_transpose import (
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)
from manual_bp.layers.padding import pad_indices
from manual_bp.layers.pooling import (
    AvgPool2d,
    GlobalAvgPool2d,
    MaxPool2d,
    pool_output_size,
    window_misses_input,
)
from manual_bp.layers.pooling_adaptive import AdaptiveAvgPool2d
from reference.checks import register_check
from reference.compare import Comparison
from reference.stack import register_block, register_torch

__all__ = [
    "conv_layer_comparisons",
    "draw_conv_kwargs",
    "draw_pool_kwargs",
    "layer_comparisons",
]


# ----------------------------------------------------------------------------- torch forwards
@register_torch(Conv1d)
@register_torch(Conv2d)
@register_torch(Conv3d)
def _conv(layer, params, buffers, x, cache):
    """torch's module forward: a padding mode other than zeros is ``F.pad`` (torch's
    ``_reversed_padding_repeated_twice``, last axis first) and an unpadded convolution."""
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[layer.dims]
    padding = layer.padding
    if layer.padding_mode != "zeros":
        x = F.pad(x, _torch_pads(layer), mode=layer.padding_mode)
        padding = 0
    return convolve(
        x,
        params["weight"],
        params.get("bias"),
        layer.stride,
        padding,
        layer.dilation,
        layer.groups,
    )


def _torch_pads(layer) -> list[int]:
    """torch's ``_reversed_padding_repeated_twice`` (``_ConvNd.__init__``'s rule restated
    from torch, not taken from the layer; a module built here would draw random numbers,
    which vmap forbids): last axis first, ``'same'`` with ``⌊d(k−1)/2⌋`` in front."""
    from torch.nn.modules.utils import _ntuple, _reverse_repeat_tuple

    ntuple = _ntuple(layer.dims)
    if layer.padding == "valid":
        return [0, 0] * layer.dims
    if layer.padding != "same":
        return list(_reverse_repeat_tuple(ntuple(layer.padding), 2))
    pads = [0, 0] * layer.dims
    kernel, dilation = ntuple(layer.kernel_size), ntuple(layer.dilation)
    for d, k, i in zip(dilation, kernel, range(layer.dims - 1, -1, -1), strict=True):
        total = d * (k - 1)
        pads[2 * i], pads[2 * i + 1] = total // 2, total - total // 2
    return pads


@register_torch(ConvTranspose1d)
@register_torch(ConvTranspose2d)
@register_torch(ConvTranspose3d)
def _conv_transpose2d(layer, params, buffers, x, cache):
    convolve = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
    return convolve[layer.dims](
        x,
        params["weight"],
        params.get("bias"),
        layer.stride,
        layer.padding,
        layer.output_padding,
        layer.groups,
        layer.dilation,
    )


@register_torch(MaxPool2d)
def _maxpool2d(layer, params, buffers, x, cache):
    return F.max_pool2d(
        x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    )


@register_torch(AvgPool2d)
def _avgpool2d(layer, params, buffers, x, cache):
    return F.avg_pool2d(
        x,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.ceil_mode,
        layer.count_include_pad,
        layer.divisor_override,
    )


@register_torch(GlobalAvgPool2d)
def _global_avgpool2d(layer, params, buffers, x, cache):
    return F.adaptive_avg_pool2d(x, 1)


@register_torch(AdaptiveAvgPool2d)
def _adaptive_avgpool2d(layer, params, buffers, x, cache):
    return F.adaptive_avg_pool2d(x, layer.output_size)


# ----------------------------------------------------------------------------- geometries
def _pair(rng: np.random.Generator, low: int, high: int, square: bool) -> Any:
    a = int(rng.integers(low, high + 1))
    return a if square else (a, int(rng.integers(low, high + 1)))


def draw_conv_kwargs(
    rng: np.random.Generator, dims: int = 2, transpose: bool = False
) -> dict[str, Any]:
    """A valid geometry: ``{"in_channels", "out_channels", "kernel_size", ..., "size"}``.

    Sizes are drawn first; the kernel is drawn up to the dilated span the padded input
    allows, so every draw is valid (kernel = input, output size 1, 1×1 kernels included).
    ``dims`` 1, 2 or 3 (3-D: sizes up to 6 and kernels up to 4 per axis, so a case stays
    small; tuples of ``dims`` entries, ints in 1-D).
    """
    groups = int(rng.choice([1, 1, 2, 3]))
    c_in = groups * int(rng.integers(1, max(2, 6 // groups + 1)))
    c_out = groups * int(rng.integers(1, max(2, 6 // groups + 1)))
    axes = dims
    largest, kernel_cap = (13, 7) if dims < 3 else (7, 4)
    size = [int(rng.integers(1, largest)) for _ in range(axes)]
    same = not transpose and rng.random() < 0.15
    stride = [1] * axes if same else [int(rng.integers(1, 5)) for _ in range(axes)]
    dilation = [int(rng.integers(1, 4)) for _ in range(axes)]
    padding = [int(rng.integers(0, 4)) for _ in range(axes)]
    kernel = []
    for a in range(axes):
        padded = size[a] + (0 if same else 2 * padding[a])
        if transpose:
            padded = 12  # any kernel works for a transposed convolution; keep it small
        kmax = min(kernel_cap, (padded - 1) // dilation[a] + 1)
        kernel.append(int(rng.integers(1, kmax + 1)))
    kwargs: dict[str, Any] = {
        "in_channels": c_in,
        "out_channels": c_out,
        "kernel_size": tuple(kernel) if dims > 1 else kernel[0],
        "stride": tuple(stride) if dims > 1 else stride[0],
        "padding": "same" if same else (tuple(padding) if dims > 1 else padding[0]),
        "dilation": tuple(dilation) if dims > 1 else dilation[0],
        "groups": groups,
        "bias": bool(rng.random() < 0.8),
        "size": tuple(size),
    }
    if not transpose:
        kwargs["padding_mode"] = _draw_padding_mode(rng, kwargs, size, kernel, dilation)
    if transpose:
        # output size must be ≥ 1 after removing 2p: shrink padding where needed
        pads, out_pads = [], []
        for a in range(axes):
            out_pad = int(rng.integers(0, max(stride[a], dilation[a])))
            full = (size[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + out_pad + 1
            pads.append(min(padding[a], (full - 1) // 2))
            out_pads.append(out_pad)
        kwargs["padding"], kwargs["output_padding"] = tuple(pads), tuple(out_pads)
    return kwargs


def _draw_padding_mode(
    rng: np.random.Generator, kwargs: dict[str, Any], size: list, kernel: list, dilation: list
) -> str:
    """torch's padding modes, zeros half the time; a mode the sizes do not allow (reflect:
    padding < size; circular: ≤ size) falls back to zeros. Drawn last: the geometry of a
    seed is the one drawn before padding modes existed."""
    mode = str(rng.choice(["zeros", "zeros", "zeros", "reflect", "replicate", "circular"]))
    if mode == "zeros":
        return mode
    padding = kwargs["padding"]
    for a in range(len(size)):
        if padding == "same":
            total = dilation[a] * (kernel[a] - 1)
            before, after = total // 2, total - total // 2
        else:
            before = after = padding[a] if isinstance(padding, tuple) else padding
        try:
            pad_indices(size[a], before, after, mode)
        except ValueError:
            return "zeros"
    return mode


def draw_pool_kwargs(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    """Valid pooling arguments for input ``size`` (kernel ≤ padded input, padding ≤ k/2)."""
    size = (int(rng.integers(1, 13)), int(rng.integers(1, 13)))
    dilation = [1, 1] if kind == "avg" else [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    kernel, padding = [], []
    for a in range(2):
        k = int(rng.integers(1, min(7, (size[a] + 1) // dilation[a] + 1) + 1))
        p = int(rng.integers(0, k // 2 + 1))
        while dilation[a] * (k - 1) + 1 > size[a] + 2 * p:  # shrink to fit the padded input
            k -= 1
            p = min(p, k // 2)
        kernel.append(k)
        padding.append(p)
    stride = None if rng.random() < 0.3 else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    ceil_mode = bool(rng.random() < 0.3)
    for a in range(2):
        s = kernel[a] if stride is None else stride[a]
        out = pool_output_size(size[a], kernel[a], s, padding[a], dilation[a], ceil_mode)
        if window_misses_input(size[a], kernel[a], s, padding[a], dilation[a], out):
            dilation[a] = 1  # a window of padding only (dilation skipping the input) is invalid
    kwargs: dict[str, Any] = {
        "kernel_size": tuple(kernel),
        "stride": stride,
        "padding": tuple(padding),
        "ceil_mode": ceil_mode,
        "size": size,
    }
    if kind == "max":
        kwargs["dilation"] = tuple(dilation)
    else:
        kwargs["count_include_pad"] = bool(rng.random() < 0.5)
        kwargs["divisor_override"] = None if rng.random() < 0.8 else int(rng.integers(1, 10))
    return kwargs


# ----------------------------------------------------------------------------- comparisons
def _abs_params(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().abs().requires_grad_(True) for k, v in params.items()}


def layer_comparisons(
    layer, x: np.ndarray, rng: np.random.Generator, *, integer_inputs: bool = False
) -> list[Comparison]:
    """One layer alone: output, ∂C/∂x and ∂C/∂params for ``C = Σ u ⊙ out``, u random.

    Each scale is the same computation with |x|, |θ|, |u| (the Σ|terms| of every sum).
    """
    from reference.stack import torch_layer_forward

    out, cache = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    if integer_inputs:
        upstream = np.round(upstream * 4)
    dx, grads = layer.backward(upstream, cache)
    runs = []
    for absolute in (False, True):
        xt = torch.tensor(np.abs(x) if absolute else x, requires_grad=True)
        params = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in layer.params.items()}
        if absolute:
            params = _abs_params(params)
        ot = torch_layer_forward(layer, params, {}, xt, cache)
        ot.backward(torch.tensor(np.abs(upstream) if absolute else upstream))
        runs.append(
            (ot.detach().numpy(), xt.grad.numpy(), {k: v.grad.numpy() for k, v in params.items()})
        )
    (o_ref, dx_ref, g_ref), (o_abs, dx_abs, g_abs) = runs
    eq = layer.equation
    result = [
        Comparison(eq, "output", out, o_ref, scale=o_abs),
        Comparison(eq, "∂C/∂x", dx, dx_ref, scale=dx_abs),
    ]
    result += [Comparison(eq, f"∂C/∂{k}", grads[k], g_ref[k], scale=g_abs[k]) for k in g_ref]
    return result


_CLASSES = {1: Conv1d, 2: Conv2d, 3: Conv3d}
_TRANSPOSED = {1: ConvTranspose1d, 2: ConvTranspose2d, 3: ConvTranspose3d}


def build_conv(
    kwargs: dict[str, Any], dims: int = 2, transpose: bool = False, **extra
) -> tuple[Any, tuple]:
    kwargs = dict(kwargs)
    size = kwargs.pop("size")
    cls = _TRANSPOSED[dims] if transpose else _CLASSES[dims]
    return cls(**kwargs, **extra), size


def conv_layer_comparisons(
    rng: np.random.Generator, dims: int = 2, transpose: bool = False
) -> list[Comparison]:
    kwargs = draw_conv_kwargs(rng, dims, transpose)
    layer, size = build_conv(kwargs, dims, transpose, seed=int(rng.integers(2**31)))
    batch = int(rng.integers(1, 5))
    x = rng.standard_normal((batch, layer.in_channels, *size))
    return layer_comparisons(layer, x, rng)


@register_check("conv2d-layer")
def conv2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv2d: a random valid geometry, random upstream gradient, against F.conv2d."""
    return conv_layer_comparisons(rng, 2)


_RETAG = {"output": "CONV.forward", "∂C/∂x": "CONV.input", "∂C/∂weight": "CONV.weight"}


@register_check("conv-equations")
def conv_equations_check(rng: np.random.Generator) -> list[Comparison]:
    """CONV.forward/.input/.weight (readable form) and CONV.fast (fast form) against torch.

    One geometry, both forms with the same parameters; each quantity is tagged with the
    equation that produced it (the bias gradient is LAYER.conv2d's).
    """
    kwargs = draw_conv_kwargs(rng)
    seed, batch = int(rng.integers(2**31)), int(rng.integers(1, 5))
    out: list[Comparison] = []
    for implementation in ("readable", "fast"):
        layer, size = build_conv(kwargs, seed=seed, implementation=implementation)
        x = np.random.default_rng(seed).standard_normal((batch, layer.in_channels, *size))
        for comparison in layer_comparisons(layer, x, np.random.default_rng(seed + 1)):
            if implementation == "fast":
                comparison.equation = "CONV.fast"
            else:
                comparison.equation = _RETAG.get(comparison.name, comparison.equation)
            out.append(comparison)
    return out


@register_check("conv1d-layer")
def conv1d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv1d against F.conv1d."""
    return conv_layer_comparisons(rng, 1)


@register_check("conv-transpose2d-layer")
def conv_transpose2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.conv-transpose2d against F.conv_transpose2d."""
    return conv_layer_comparisons(rng, 2, transpose=True)


def pool_layer(rng: np.random.Generator, kind: str) -> tuple[Any, tuple]:
    kwargs = draw_pool_kwargs(rng, kind)
    size = kwargs.pop("size")
    return (MaxPool2d if kind == "max" else AvgPool2d)(**kwargs), size


@register_check("maxpool2d-layer")
def maxpool2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.maxpool2d against F.max_pool2d on small-integer inputs (many ties)."""
    layer, size = pool_layer(rng, "max")
    x = rng.integers(-2, 3, size=(int(rng.integers(1, 5)), int(rng.integers(1, 4)), *size)).astype(
        np.float64
    )
    return layer_comparisons(layer, x, rng, integer_inputs=True)


@register_check("avgpool2d-layer")
def avgpool2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.avgpool2d against F.avg_pool2d (count_include_pad, ceil_mode, divisor_override)."""
    layer, size = pool_layer(rng, "avg")
    x = rng.standard_normal((int(rng.integers(1, 5)), int(rng.integers(1, 4)), *size))
    return layer_comparisons(layer, x, rng)


@register_check("global-avgpool2d-layer")
def global_avgpool2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.global-avgpool2d against F.adaptive_avg_pool2d(x, 1)."""
    size = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    x = rng.standard_normal((int(rng.integers(1, 5)), int(rng.integers(1, 5)), *size))
    return layer_comparisons(GlobalAvgPool2d(), x, rng)


# ----------------------------------------------------------------------------- stack blocks
@register_block("images", "conv-act")
def _conv_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Conv2d (random geometry that fits ``shape``) followed by a random activation."""
    channels, h, w = shape
    groups = int(rng.choice([g for g in (1, 2, 3) if channels % g == 0]))
    c_out = groups * int(rng.integers(1, 4))
    dilation = int(rng.integers(1, 3))
    padding = int(rng.integers(0, 3))
    kmax = max(1, min(4, (min(h, w) + 2 * padding - 1) // dilation + 1))
    kernel = int(rng.integers(1, kmax + 1))
    layer = Conv2d(channels, c_out, kernel, int(rng.integers(1, 3)), padding, dilation, groups)
    activation = str(rng.choice(["tanh", "relu", "sigmoid"]))
    return [layer, ActivationLayer(activation)], layer.output_shape(shape)


@register_block("images", "pool")
def _pool_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Max, average or global-average pooling that fits ``shape``."""
    _, h, w = shape
    kind = str(rng.choice(["max", "avg", "global"]))
    if kind == "global":
        layer = GlobalAvgPool2d()
    else:
        k = int(rng.integers(1, min(3, h, w) + 1))
        cls = MaxPool2d if kind == "max" else AvgPool2d
        layer = cls(k, int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1)))
    return [layer], layer.output_shape(shape)


@register_block("images", "adaptive-pool")
def _adaptive_pool_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """Adaptive average pooling to a drawn size (an int, a pair, a None entry)."""
    _, h, w = shape
    sizes = [int(rng.integers(1, h + 2)), int(rng.integers(1, w + 2))]
    if rng.random() < 0.3:
        sizes[int(rng.integers(2))] = None
    output_size = sizes[0] if rng.random() < 0.3 and sizes[0] is not None else tuple(sizes)
    layer = AdaptiveAvgPool2d(output_size)
    return [layer], layer.output_shape(shape)
