"""Convolution layers ``torch.nn.Conv1d``, ``Conv2d`` and ``Conv3d`` (NCL / NCHW / NCDHW;
unbatched ``(C, L)`` / ``(C, H, W)`` / ``(C, D, H, W)`` too, as torch).

Parameters under torch's names and shapes: ``weight (C_out, C_in/groups, *k)`` and
``bias (C_out,)``. The arithmetic lives in :mod:`manual_bp.layers._im2col`, written once for
any number of spatial axes, in a readable and a fast form; ``implementation="fast"`` (the
default) trains with im2col + GEMM, ``"readable"`` with the loop over kernel offsets that
mirrors the derivation (``docs/convolution.md``). A 1-D convolution is the 2-D one on an
input of height 1; 2-D and 3-D work on their own axes. ``padding_mode``
``'reflect'``/``'replicate'``/``'circular'`` pads with the index map of
:mod:`manual_bp.layers.padding` (``PAD.map``) and convolves the padded input without
padding, as torch does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from manual_bp.initializers import initialize
from manual_bp.layers import _im2col as conv
from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Cache, Layer, check_input, layer_dtype, register_layer
from manual_bp.layers.convolution_fast import ConvStep
from manual_bp.layers.convolution_products import ConvProducts
from manual_bp.layers.padding import PADDING_MODES, PadMap

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvCache", "parse_geometry", "per_sample_form"]


@dataclass
class ConvCache(Cache):
    """``input`` x, the weight used, (fast form) the im2col matrix of x and (a padding mode
    other than zeros) the geometry's view of x padded by its index map."""

    weight: np.ndarray
    cols: np.ndarray | None
    padded: np.ndarray | None = None


def _tuple(value: Any, name: str, dims: int, minimum: int) -> tuple[int, ...]:
    items = (value,) * dims if not isinstance(value, (tuple, list)) else tuple(value)
    if len(items) != dims or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in items
    ):
        raise ValueError(f"{name} must be an integer ≥ {minimum} or {dims} of them, got {value!r}")
    return tuple(int(v) for v in items)


def parse_geometry(
    dims: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any, groups: Any
) -> conv.Geometry:
    """Validate torch-style arguments and return the :class:`Geometry` of ``max(dims, 2)``
    spatial axes (1-D: height 1).

    ``padding`` is an int, a tuple, ``"valid"`` (0) or ``"same"`` (stride 1 only, as torch;
    total ``d(k−1)`` split with the smaller half in front, as ``torch`` does).
    """
    kernel = _tuple(kernel_size, "kernel_size", dims, 1)
    strides = _tuple(stride, "stride", dims, 1)
    dilations = _tuple(dilation, "dilation", dims, 1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = tuple((0, 0) for _ in range(dims))
        elif padding == "same":
            if any(s != 1 for s in strides):
                raise ValueError(f"padding='same' needs stride 1 (as torch), got stride={stride!r}")
            totals = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        else:
            raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    else:
        pads = tuple((p, p) for p in _tuple(padding, "padding", dims, 0))
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if dims == 1:
        kernel, strides, dilations, pads = (
            (1, *kernel),
            (1, *strides),
            (1, *dilations),
            ((0, 0), *pads),
        )
    return conv.Geometry(kernel, strides, pads, dilations, int(groups))


def check_conv_options(
    layer: Layer,
    padding_mode: str,
    bias: Any,
    implementation: str,
    modes: tuple[str, ...] = PADDING_MODES,
) -> None:
    """The options every convolution shares: groups divide both channel counts, one of
    torch's padding modes (``modes``: those the class takes), a boolean bias, a known
    implementation."""
    groups = layer.geometry.groups
    if layer.in_channels % groups or layer.out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={layer.in_channels} and "
            f"out_channels={layer.out_channels}"
        )
    if padding_mode not in modes:
        raise ValueError(
            f"padding_mode must be one of {modes} for {type(layer).__name__} (as torch), "
            f"got {padding_mode!r}"
        )
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    if implementation not in ("fast", "readable"):
        raise ValueError(f"implementation must be 'fast' or 'readable', got {implementation!r}")


def allocate_conv_parameters(
    layer: Layer, weight_shape: tuple[int, ...], dtype: Any, seed: Any
) -> None:
    """Zero ``weight`` (and ``bias``) of ``dtype``, then :func:`reset_conv_parameters`."""
    dtype = np.dtype(dtype)
    layer.params["weight"] = np.zeros(weight_shape, dtype)
    if layer.has_bias:
        layer.params["bias"] = np.zeros(layer.out_channels, dtype)
    layer.reset_parameters(np.random.default_rng(seed))


def reset_conv_parameters(layer: Layer, rng: np.random.Generator) -> None:
    """``weight_init`` for the weight; the bias from torch's fan_in of that weight tensor
    (``weight.shape[1] · Πk`` — for a transposed convolution C_out/G · Πk)."""
    weight = layer.params["weight"]
    weight[...] = initialize(layer.weight_init, rng, weight.shape, dtype=weight.dtype)
    if layer.has_bias:
        fan_in = math.prod(weight.shape[1:])
        scheme = "normal" if layer.bias_init == "nielsen" else layer.bias_init
        layer.params["bias"][...] = initialize(
            scheme, rng, (layer.out_channels,), fan_in=fan_in, dtype=weight.dtype
        )


def per_sample_form(dims: int) -> str:
    """``"(C, L)"``, ``"(C, H, W)"`` or ``"(C, D, H, W)"``: a sample's axes, for messages."""
    return {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}[dims]


class _ConvNd(ConvProducts, Layer):
    """Shared body of Conv1d/2d/3d: the layer works on ``(N, C, *S)`` views of
    ``max(dims, 2)`` spatial axes (the classes take unbatched inputs too:
    :func:`~manual_bp.layers._unbatched.unbatched`)."""

    dims = 2
    decay = ("weight",)
    hyperparameters = (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "padding_mode",
        "weight_init",
        "bias_init",
        "implementation",
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        weight_init: str | dict[str, Any] = "torch",
        bias_init: str | dict[str, Any] = "torch",
        implementation: str = "fast",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, type(self).__name__, device)
        self.in_channels = _tuple(in_channels, "in_channels", 1, 1)[0]
        self.out_channels = _tuple(out_channels, "out_channels", 1, 1)[0]
        self.geometry = parse_geometry(self.dims, kernel_size, stride, padding, dilation, groups)
        check_conv_options(self, padding_mode, bias, implementation)
        # a padding mode other than zeros: torch pads by the mode, then convolves unpadded
        self.pad_map: PadMap | None = None
        if padding_mode != "zeros":
            self.pad_map = PadMap(self.geometry.padding, padding_mode)
            self.geometry = replace(self.geometry, padding=((0, 0),) * len(self.geometry.kernel))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.has_bias = dilation, int(groups), bool(bias)
        self.padding_mode, self.implementation = padding_mode, implementation
        self.weight_init, self.bias_init = weight_init, bias_init
        kernel = self.geometry.kernel[len(self.geometry.kernel) - self.dims :]
        shape = (self.out_channels, self.in_channels // self.groups, *kernel)
        allocate_conv_parameters(self, shape, dtype, seed)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: U(±1/√fan_in) for weight and bias, fan_in = C_in/G · Πk."""
        reset_conv_parameters(self, rng)

    # -------------------------------------------------------------- the geometry's views
    def _as_view(self, array: np.ndarray) -> np.ndarray:
        """A 1-D array ``(..., L)`` as ``(..., 1, L)`` (inputs, weights, V-stacks alike);
        2-D and 3-D arrays as they are."""
        return array if self.dims != 1 else array[..., None, :]

    def _from_view(self, array: np.ndarray) -> np.ndarray:
        return array if self.dims != 1 else array[..., 0, :]

    def _spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The geometry's spatial sizes of a per-sample shape ``(C, *S)`` (1-D: ``(1, L)``)."""
        return tuple(shape[1:]) if self.dims != 1 else (1, shape[1])

    def _pad(self, array2: np.ndarray) -> np.ndarray:
        """``PAD.map`` of a view (the identity for zeros: the geometry pads then)."""
        return array2 if self.pad_map is None else self.pad_map.forward(array2)

    def _pad_vjp(self, grad2: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """The transpose of :meth:`_pad`: padded copies add back onto the input ``size``."""
        return grad2 if self.pad_map is None else self.pad_map.vjp(grad2, tuple(size))

    def _padded_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial size the geometry convolves: ``size`` grown by the padding map."""
        if self.pad_map is None:
            return tuple(size)
        return self.pad_map.padded_size(tuple(size))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.dims + 1 or shape[0] != self.in_channels:
            want = per_sample_form(self.dims)
            raise ValueError(
                f"{self!r} needs per-sample inputs {want} with C = {self.in_channels}, got {shape}"
            )
        size = self._spatial(shape)
        if self.pad_map is not None:
            self.pad_map.indices(size)  # torch's size rules of the mode, one clear line
        out = self.geometry.output_size(self._padded_size(size))
        if min(out) < 1:
            raise ValueError(
                f"{self!r}: input {shape} is smaller than the dilated kernel (output {out})"
            )
        return (self.out_channels, *out[len(out) - self.dims :])

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ConvCache]:
        """``x (N, C_in, *S) -> (N, C_out, *So)`` — equation ``CONV.forward``."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        out_shape = self.output_shape(x.shape[1:])
        weight = self.params["weight"]
        if x.shape[0] == 0:  # an empty batch: an empty output, as torch
            return np.zeros((0, *out_shape), weight.dtype), ConvCache(x, weight, None)
        x2, w2 = self._as_view(x), self._as_view(weight)
        xp = self._pad(x2)
        if self.implementation == "fast":
            out, cols = conv.conv_forward_fast(xp, w2, self.params.get("bias"), self.geometry)
        else:
            out, cols = (
                conv.conv_forward_readable(xp, w2, self.params.get("bias"), self.geometry),
                None,
            )
        padded = None if self.pad_map is None else xp
        return self._from_view(out), ConvCache(x, weight, cols, padded)

    def backward(
        self, dout: np.ndarray, cache: ConvCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.conv2d`` / ``LAYER.conv1d`` / ``LAYER.conv3d``: ∂C/∂x (``CONV.input``),
        ∂C/∂W (``CONV.weight``), ∂C/∂b = Σ_{n,y,x} δ[n, o, y, x]."""
        grads = self.parameter_gradients(dout, cache)
        if dout.shape[0] == 0:
            return np.zeros(cache.input.shape, cache.weight.dtype), grads
        delta, w2 = self._as_view(dout), self._as_view(cache.weight)
        size = self._as_view(cache.input).shape[2:]
        if cache.cols is not None:
            dx = conv.conv_input_grad_fast(delta, w2, self._padded_size(size), self.geometry)
        else:
            dx = conv.conv_input_grad_readable(delta, w2, self._padded_size(size), self.geometry)
        return self._from_view(self._pad_vjp(dx, size)), grads

    def parameter_gradients(self, dout: np.ndarray, cache: ConvCache) -> dict[str, np.ndarray]:
        """∂C/∂W (``CONV.weight``) and ∂C/∂b without ∂C/∂x (the stack's bottom layer)."""
        expected = (cache.input.shape[0], *self.output_shape(cache.input.shape[1:]))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        if dout.shape[0] == 0:  # an empty batch: zero parameter gradients, as torch
            return {name: np.zeros_like(value) for name, value in self.params.items()}
        delta, w2 = self._as_view(dout), self._as_view(cache.weight)
        if cache.cols is not None:
            dw = conv.conv_weight_grad_fast(delta, cache.cols, w2.shape, self.geometry)
        else:
            xp = self._padded2(cache)
            dw = conv.conv_weight_grad_readable(delta, xp, w2.shape, self.geometry)
        grads = {"weight": dw.reshape(cache.weight.shape)}
        if self.has_bias:
            grads["bias"] = delta.sum(axis=(0, *range(2, delta.ndim)))
        return grads

    def fast_step(self) -> Any:
        """Training's fast form, Conv1d/2d/3d alike:
        :class:`~manual_bp.layers.convolution_fast.ConvStep` (preallocated im2col panels on
        any number of spatial axes, no transposed copies, a strided layer's ∂C/∂x by the
        stride-phase col2im); ``implementation="readable"`` and a padding mode other than
        zeros train with the layer's own forward/backward
        (:class:`~manual_bp.layers.steps.GenericStep`: im2col + GEMM on the padded input)."""
        if self.implementation != "fast" or self.pad_map is not None:
            return super().fast_step()
        return ConvStep(self)

    def _padded2(self, cache: ConvCache) -> np.ndarray:
        """The input view the geometry convolves: x, or x padded by the mode's index map."""
        return self._as_view(cache.input) if cache.padded is None else cache.padded

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> _ConvNd:
        """``conv2d(16, 5, padding=2)`` on ``(C, H, W)`` -> ``Conv2d(C, 16, 5, padding=2)``."""
        if len(input_shape) != cls.dims + 1:
            want = per_sample_form(cls.dims)
            raise ValueError(f"{cls.name} needs per-sample inputs {want}, got {tuple(input_shape)}")
        return cls(input_shape[0], *args, **kwargs)

    def __repr__(self) -> str:
        g = self.geometry
        extra = f", stride={self.stride}" if self.stride != 1 else ""
        extra += f", padding={self.padding!r}" if self.padding != 0 else ""
        extra += f", dilation={self.dilation}" if self.dilation != 1 else ""
        extra += f", groups={g.groups}" if g.groups != 1 else ""
        extra += "" if self.has_bias else ", bias=False"
        extra += "" if self.pad_map is None else f", padding_mode={self.padding_mode!r}"
        sizes = f"{self.in_channels}, {self.out_channels}, {self.kernel_size}"
        return f"{type(self).__name__}({sizes}{extra})"


@register_layer
@unbatched
class Conv2d(_ConvNd):
    """``torch.nn.Conv2d`` on NCHW inputs. Equation ``LAYER.conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "same" (stride 1) or "valid"
    groups : int dividing both channel counts (``groups = in_channels``: depthwise)
    bias : bool
    padding_mode : "zeros", "reflect", "replicate" or "circular" (torch's index maps,
        ``PAD.map``; with ``padding="same"`` too, as torch)
    device, dtype : torch's keywords (``device`` None or "cpu"; ``dtype`` float32 or float64,
        ``None``: float64)
    weight_init, bias_init : schemes of :func:`manual_bp.initializers.initialize`
        (default ``"torch"``: U(±1/√fan_in), fan_in = C_in/groups·kH·kW)
    implementation : "fast" (im2col + GEMM) or "readable" (the derivation's sums)
    """

    name = "conv2d"
    equation = "LAYER.conv2d"
    product_equations = ("PROD.conv2d.vjp", "PROD.conv2d.jvp", "PROD.conv2d.residual")
    dims = 2
    batched_ndim = 4


@register_layer
@unbatched
class Conv1d(_ConvNd):
    """``torch.nn.Conv1d`` on NCL inputs — Conv2d on a height-1 image. Equation ``LAYER.conv1d``.

    Same parameters as :class:`Conv2d` with ints (or 1-tuples) for the sizes.
    """

    name = "conv1d"
    equation = "LAYER.conv1d"
    product_equations = ("PROD.conv1d.vjp", "PROD.conv1d.jvp", "PROD.conv1d.residual")
    dims = 1
    batched_ndim = 3


@register_layer
@unbatched
class Conv3d(_ConvNd):
    """``torch.nn.Conv3d`` on NCDHW inputs. Equation ``LAYER.conv3d``.

    Same parameters as :class:`Conv2d` with ints or 3-tuples for the sizes; the weight is
    ``(C_out, C_in/groups, kD, kH, kW)``. The arithmetic is the N-d one of
    :mod:`~manual_bp.layers._im2col` on three spatial axes; ``padding_mode`` pads the last
    three axes by the mode's index map (``PAD.map``).
    """

    name = "conv3d"
    equation = "LAYER.conv3d"
    product_equations = ("PROD.conv3d.vjp", "PROD.conv3d.jvp", "PROD.conv3d.residual")
    dims = 3
    batched_ndim = 5
