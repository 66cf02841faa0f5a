"""``torch.nn.ConvTranspose1d/2d/3d``: the adjoint of a convolution (equations
``LAYER.conv-transpose1d``, ``LAYER.conv-transpose2d``, ``LAYER.conv-transpose3d``).

A convolution ``K`` with weight ``W (C_in, C_out/G, *k)`` maps ``C_out`` channels of
spatial size ``S_out`` to ``C_in`` channels of size ``S``. The transposed convolution is
its adjoint ``Kᵀ`` — exactly the input-gradient map of ``K`` (``CONV.input``) — plus a
bias::

    y = Kᵀ x + b,   ∂C/∂x = K δ,   ∂C/∂W = the weight gradient of K with the roles of
                                    input (δ) and upstream gradient (x) swapped,
    ∂C/∂b = Σ_{n,y,x} δ.

``H_out = (H − 1)s − 2p + d(k − 1) + output_padding + 1`` on every axis (``output_padding``
picks one of the ``s`` input sizes that ``K`` maps to the same ``H``;
``forward(x, output_size=…)`` picks it per call, as torch). Written once for any number of
spatial axes (1-D as 2-D of height 1, as the convolutions). Unbatched inputs and empty
batches as torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers import _im2col as conv
from manual_bp.layers import convolution_products as products
from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Layer, check_input, layer_dtype, register_layer
from manual_bp.layers.convolution import (
    ConvCache,
    _tuple,
    allocate_conv_parameters,
    check_conv_options,
    parse_geometry,
    per_sample_form,
    reset_conv_parameters,
)
from manual_bp.layers.convolution_transpose_products import ConvTransposeProducts
from manual_bp.layers.convolution_transpose_steps import conv_transpose_fast_step

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "ConvTransposeCache"]


@dataclass
class ConvTransposeCache(ConvCache):
    """:class:`ConvCache` and the ``output_padding`` of this call (``output_size`` picks it;
    the geometry's view: 1-D as ``(0, p)``)."""

    output_padding: tuple[int, ...] = (0, 0)


class _ConvTransposeNd(ConvTransposeProducts, Layer):
    """Shared body of ConvTranspose1d/2d/3d on ``(N, C, *S)`` views of ``max(dims, 2)``
    spatial axes.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation, output_padding : int or a tuple of ``dims``
        ``output_padding`` must be smaller than the stride or the dilation (as torch).
    groups : int dividing both channel counts
    bias : bool
    padding_mode : "zeros" only (torch's transposed convolutions take no other)
    device, dtype : torch's keywords (``device`` None or "cpu"; ``dtype`` float32 or float64)
    weight_init, bias_init : initialiser schemes (default ``"torch"``: U(±1/√fan_in) with
        torch's fan_in of this weight, ``C_out/groups · Πk``)
    implementation : "fast" or "readable"
    """

    dims = 2
    decay = ("weight",)
    hyperparameters = (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "output_padding",
        "groups",
        "bias",
        "dilation",
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
        padding: int | tuple[int, ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, ...] = 1,
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
        name = type(self).__name__
        dtype = layer_dtype(dtype, name, device)
        self.in_channels = _tuple(in_channels, "in_channels", 1, 1)[0]
        self.out_channels = _tuple(out_channels, "out_channels", 1, 1)[0]
        if isinstance(padding, str):
            raise ValueError(f"{name} takes an int or a tuple as padding, got {padding!r}")
        self.geometry = parse_geometry(self.dims, kernel_size, stride, padding, dilation, groups)
        extra = _tuple(output_padding, "output_padding", self.dims, 0)
        self.output_padding_pair = (0, *extra) if self.dims == 1 else extra
        g = self.geometry
        for axis in range(len(g.kernel)):
            if self.output_padding_pair[axis] >= max(g.stride[axis], g.dilation[axis]):
                raise ValueError(
                    f"output_padding={output_padding!r} must be smaller than the stride or the "
                    f"dilation on each axis (stride={stride!r}, dilation={dilation!r})"
                )
        check_conv_options(self, padding_mode, bias, implementation, modes=("zeros",))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding, self.dilation, self.groups = output_padding, dilation, int(groups)
        self.has_bias, self.padding_mode = bool(bias), padding_mode
        self.implementation = implementation
        self.weight_init, self.bias_init = weight_init, bias_init
        kernel = g.kernel[len(g.kernel) - self.dims :]
        shape = (self.in_channels, self.out_channels // self.groups, *kernel)
        allocate_conv_parameters(self, shape, dtype, seed)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: U(±1/√fan_in), fan_in = C_out/G · Πk (weight.shape[1:])."""
        reset_conv_parameters(self, rng)

    # -------------------------------------------------------------- the geometry's views
    def _as_view(self, array: np.ndarray) -> np.ndarray:
        """A 1-D array ``(..., L)`` as ``(..., 1, L)``; 2-D and 3-D arrays as they are."""
        return array if self.dims != 1 else array[..., None, :]

    def _from_view(self, array: np.ndarray) -> np.ndarray:
        return array if self.dims != 1 else array[..., 0, :]

    def _size(
        self, size: tuple[int, ...], output_padding: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        """The output's spatial size (the view's) for the view's input size ``size``."""
        g = self.geometry
        extra = self.output_padding_pair if output_padding is None else output_padding
        return tuple(
            (size[a] - 1) * g.stride[a]
            - sum(g.padding[a])
            + g.dilation[a] * (g.kernel[a] - 1)
            + extra[a]
            + 1
            for a in range(len(g.kernel))
        )

    def output_shape(
        self, input_shape: tuple[int, ...], output_padding: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.dims + 1 or shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} needs per-sample inputs {per_sample_form(self.dims)} with "
                f"C = {self.in_channels}, got {shape}"
            )
        size = shape[1:] if self.dims != 1 else (1, shape[1])
        out = self._size(size, output_padding)
        if min(out) < 1:
            raise ValueError(f"{self!r}: input {shape} gives an empty output {out}")
        return (self.out_channels, *out[len(out) - self.dims :])

    def output_padding_for(self, size: tuple[int, ...], output_size: Any) -> tuple[int, ...]:
        """torch's ``_output_padding``: the ``output_padding`` giving ``output_size`` (its last
        ``dims`` entries), which must lie in ``[H_min, H_min + s − 1]`` (``H_min``: ``op = 0``).
        ``size``: the view's spatial input size."""
        if output_size is None:
            return self.output_padding_pair
        wanted = tuple(int(v) for v in output_size)
        if len(wanted) in (self.dims + 1, self.dims + 2):  # torch's (C, *S) / (N, C, *S)
            wanted = wanted[-self.dims :]
        if len(wanted) != self.dims:
            raise ValueError(
                f"output_size must have {self.dims} (or {self.dims + 1}, {self.dims + 2}) "
                f"entries, got {output_size!r}"
            )
        if self.dims == 1:
            wanted = (1, *wanted)
        smallest = self._size(size, (0,) * len(size))
        for a in range(len(size)):
            top = smallest[a] + self.geometry.stride[a] - 1
            if not smallest[a] <= wanted[a] <= top:
                axis = a - (len(size) - self.dims)
                raise ValueError(
                    f"output_size={output_size!r}: size {wanted[a]} of axis {axis} must lie in "
                    f"[{smallest[a]}, {top}] for input {tuple(size)[len(size) - self.dims :]} "
                    "(as torch)"
                )
        return tuple(w - m for w, m in zip(wanted, smallest, strict=True))

    def forward(
        self, x: np.ndarray, output_size: Any = None
    ) -> tuple[np.ndarray, ConvTransposeCache]:
        """``y = Kᵀx + b`` — the input-gradient map of the convolution K (``CONV.input``);
        ``output_size`` (torch's) chooses the output padding of this call."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        x2 = self._as_view(x)
        extra = self.output_padding_for(x2.shape[2:], output_size)
        out_shape = self.output_shape(x.shape[1:], extra)
        size = self._size(x2.shape[2:], extra)
        weight = self.params["weight"]
        w2 = self._as_view(weight)
        if x.shape[0] == 0:  # an empty batch: an empty output, as torch
            out = np.zeros((0, *out_shape), weight.dtype)
            return out, ConvTransposeCache(x, weight, None, None, extra)
        if self.implementation == "fast":
            out = conv.conv_input_grad_fast(x2, w2, size, self.geometry)
        else:
            out = conv.conv_input_grad_readable(x2, w2, size, self.geometry)
        if self.has_bias:
            out += self.params["bias"].reshape(-1, *(1,) * len(size))
        return self._from_view(out), ConvTransposeCache(x, weight, None, None, extra)

    def _out_shape(self, cache: ConvTransposeCache) -> tuple[int, ...]:
        """The per-sample output shape of the call ``cache`` records."""
        return self.output_shape(cache.input.shape[1:], cache.output_padding)

    def _view_out_size(self, cache: ConvTransposeCache) -> tuple[int, ...]:
        """The view's spatial output size of the call ``cache`` records."""
        return self._size(self._as_view(cache.input).shape[2:], cache.output_padding)

    def backward(
        self, dout: np.ndarray, cache: ConvCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.conv-transpose2d`` (and ``LAYER.conv-transpose1d``,
        ``LAYER.conv-transpose3d``): ∂C/∂x = Kδ;
        ∂C/∂W[i,o,·,·] = Σ x[n,i,y,x]·δp[n,o,ys+id,…]."""
        expected = (cache.input.shape[0], *self._out_shape(cache))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        x, weight = self._as_view(cache.input), self._as_view(cache.weight)
        if x.shape[0] == 0:  # an empty batch: zero parameter gradients, as torch
            zeros = {name: np.zeros_like(value) for name, value in self.params.items()}
            return np.zeros(cache.input.shape, weight.dtype), zeros
        delta = self._as_view(dout)
        size, full = x.shape[2:], self.geometry.output_size(delta.shape[2:])
        if full != size:
            # output_padding ≥ stride (allowed when < dilation): K maps the output to a larger
            # grid whose extra rows/columns the forward never read — their δ is zero.
            x = products.pad_to(x, full)
        if self.implementation == "fast":
            dx, cols = conv.conv_forward_fast(delta, weight, None, self.geometry)
            dw = conv.conv_weight_grad_fast(x, cols, weight.shape, self.geometry)
        else:
            dx = conv.conv_forward_readable(delta, weight, None, self.geometry)
            dw = conv.conv_weight_grad_readable(x, delta, weight.shape, self.geometry)
        grads = {"weight": dw.reshape(cache.weight.shape)}
        if self.has_bias:
            grads["bias"] = delta.sum(axis=(0, *range(2, delta.ndim)))
        return self._from_view(np.ascontiguousarray(products.crop(dx, size))), grads

    def fast_step(self) -> Any:
        """Training's fast form: ConvStep run backwards
        (:mod:`~manual_bp.layers.convolution_transpose_steps`) for ConvTranspose1d/2d/3d;
        the readable implementation and an uninitialised lazy layer train through the
        readable form."""
        return conv_transpose_fast_step(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> _ConvTransposeNd:
        """``conv-transpose2d(8, 3, stride=2)`` on ``(C, H, W)``: ConvTranspose2d(C, 8, 3, 2)."""
        if len(input_shape) != cls.dims + 1:
            raise ValueError(
                f"{cls.name} needs per-sample inputs {per_sample_form(cls.dims)}, got {input_shape}"
            )
        return cls(input_shape[0], *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"{self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding})"
        )


@register_layer
@unbatched
class ConvTranspose2d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose2d`` on NCHW inputs; weight ``(C_in, C_out/groups, kH, kW)``
    (parameters: :class:`_ConvTransposeNd`)."""

    name = "conv-transpose2d"
    aliases = ("convtranspose2d",)
    equation = "LAYER.conv-transpose2d"
    product_equations = (
        "PROD.conv-transpose2d.vjp",
        "PROD.conv-transpose2d.jvp",
        "PROD.conv-transpose2d.residual",
    )
    dims = 2
    batched_ndim = 4


@register_layer
@unbatched
class ConvTranspose1d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose1d`` on NCL inputs — ConvTranspose2d on a height-1 image;
    weight ``(C_in, C_out/groups, k)``."""

    name = "conv-transpose1d"
    aliases = ("convtranspose1d",)
    equation = "LAYER.conv-transpose1d"
    product_equations = (
        "PROD.conv-transpose1d.vjp",
        "PROD.conv-transpose1d.jvp",
        "PROD.conv-transpose1d.residual",
    )
    dims = 1
    batched_ndim = 3


@register_layer
@unbatched
class ConvTranspose3d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose3d`` on NCDHW inputs; weight ``(C_in, C_out/groups, kD, kH,
    kW)``: the N-d arithmetic on three spatial axes."""

    name = "conv-transpose3d"
    aliases = ("convtranspose3d",)
    equation = "LAYER.conv-transpose3d"
    product_equations = (
        "PROD.conv-transpose3d.vjp",
        "PROD.conv-transpose3d.jvp",
        "PROD.conv-transpose3d.residual",
    )
    dims = 3
    batched_ndim = 5
