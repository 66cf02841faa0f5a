"""``torch.nn.ConvTranspose2d``: the adjoint of a convolution (equation ``LAYER.conv-transpose2d``).

A convolution ``K`` with weight ``W (C_in, C_out/G, kH, kW)`` maps ``C_out`` channels of
size ``(H_out, W_out)`` to ``C_in`` channels of size ``(H, W)``. The transposed
convolution is its adjoint ``Kᵀ`` — exactly the input-gradient map of ``K``
(``CONV.input``) — plus a bias::

    y = Kᵀ x + b,   ∂C/∂x = K δ,   ∂C/∂W = the weight gradient of K with the roles of
                                    input (δ) and upstream gradient (x) swapped,
    ∂C/∂b = Σ_{n,y,x} δ.

``H_out = (H − 1)s − 2p + d(k − 1) + output_padding + 1`` (``output_padding`` picks one of
the ``s`` input sizes that ``K`` maps to the same ``H``; ``forward(x, output_size=…)`` picks
it per call, as torch). Unbatched ``(C, H, W)`` inputs and empty batches as torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers import _im2col as conv
from manual_bp.layers import convolution_products as products
from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Layer, check_input, layer_dtype, register_layer, tangent_count
from manual_bp.layers.convolution import (
    ConvCache,
    _tuple,
    allocate_conv_parameters,
    check_conv_options,
    parse_geometry,
    reset_conv_parameters,
)

__all__ = ["ConvTranspose2d", "ConvTransposeCache"]


@dataclass
class ConvTransposeCache(ConvCache):
    """:class:`ConvCache` and the ``output_padding`` of this call (``output_size`` picks it)."""

    output_padding: tuple[int, int] = (0, 0)


@register_layer
@unbatched
class ConvTranspose2d(Layer):
    """``torch.nn.ConvTranspose2d`` on NCHW inputs; weight ``(C_in, C_out/groups, kH, kW)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation, output_padding : int or (int, int)
        ``output_padding`` must be smaller than the stride or the dilation (as torch).
    groups : int dividing both channel counts
    bias : bool
    padding_mode : "zeros" only (torch's ConvTranspose2d takes no other)
    device, dtype : torch's keywords (``device`` None or "cpu"; ``dtype`` float32 or float64)
    weight_init, bias_init : initialiser schemes (default ``"torch"``: U(±1/√fan_in) with
        torch's fan_in of this weight, ``C_out/groups · kH · kW``)
    implementation : "fast" or "readable"
    """

    name = "conv-transpose2d"
    aliases = ("convtranspose2d",)
    equation = "LAYER.conv-transpose2d"
    product_equations = (
        "PROD.conv-transpose2d.vjp",
        "PROD.conv-transpose2d.jvp",
        "PROD.conv-transpose2d.residual",
    )
    decay = ("weight",)
    batched_ndim = 4
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
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
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
        dtype = layer_dtype(dtype, "ConvTranspose2d", device)
        self.in_channels = _tuple(in_channels, "in_channels", 1, 1)[0]
        self.out_channels = _tuple(out_channels, "out_channels", 1, 1)[0]
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d takes an int or a pair as padding, got {padding!r}")
        self.geometry = parse_geometry(2, kernel_size, stride, padding, dilation, groups)
        self.output_padding_pair = _tuple(output_padding, "output_padding", 2, 0)
        g = self.geometry
        for axis in range(2):
            if self.output_padding_pair[axis] >= max(g.stride[axis], g.dilation[axis]):
                raise ValueError(
                    f"output_padding={output_padding!r} must be smaller than the stride or the "
                    f"dilation on each axis (stride={g.stride}, dilation={g.dilation})"
                )
        check_conv_options(self, padding_mode, bias, implementation, modes=("zeros",))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding, self.dilation, self.groups = output_padding, dilation, int(groups)
        self.has_bias, self.padding_mode = bool(bias), padding_mode
        self.implementation = implementation
        self.weight_init, self.bias_init = weight_init, bias_init
        shape = (self.in_channels, self.out_channels // self.groups, *g.kernel)
        allocate_conv_parameters(self, shape, dtype, seed)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: U(±1/√fan_in), fan_in = C_out/G · kH · kW (weight.shape[1:])."""
        reset_conv_parameters(self, rng)

    def _size(
        self, size: tuple[int, ...], output_padding: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        g = self.geometry
        extra = self.output_padding_pair if output_padding is None else output_padding
        out = tuple(
            (size[a] - 1) * g.stride[a]
            - sum(g.padding[a])
            + g.dilation[a] * (g.kernel[a] - 1)
            + extra[a]
            + 1
            for a in range(2)
        )
        return out[0], out[1]

    def output_shape(
        self, input_shape: tuple[int, ...], output_padding: tuple[int, int] | None = None
    ) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C, H, W) with C = {self.in_channels}, "
                f"got {shape}"
            )
        out = self._size(shape[1:], output_padding)
        if min(out) < 1:
            raise ValueError(f"{self!r}: input {shape} gives an empty output {out}")
        return (self.out_channels, *out)

    def output_padding_for(self, size: tuple[int, ...], output_size: Any) -> tuple[int, int]:
        """torch's ``_output_padding``: the ``output_padding`` giving ``output_size`` (its last
        two entries), which must lie in ``[H_min, H_min + s − 1]`` (``H_min``: ``op = 0``)."""
        if output_size is None:
            return self.output_padding_pair
        wanted = tuple(int(v) for v in output_size)
        if len(wanted) in (3, 4):  # torch's (C, H, W) / (N, C, H, W) forms
            wanted = wanted[-2:]
        if len(wanted) != 2:
            raise ValueError(f"output_size must have 2 (or 3, 4) entries, got {output_size!r}")
        smallest = self._size(size, (0, 0))
        for a in range(2):
            top = smallest[a] + self.geometry.stride[a] - 1
            if not smallest[a] <= wanted[a] <= top:
                raise ValueError(
                    f"output_size={output_size!r}: size {wanted[a]} of axis {a} must lie in "
                    f"[{smallest[a]}, {top}] for input {tuple(size)} (as torch)"
                )
        return wanted[0] - smallest[0], wanted[1] - smallest[1]

    def forward(
        self, x: np.ndarray, output_size: Any = None
    ) -> tuple[np.ndarray, ConvTransposeCache]:
        """``y = Kᵀx + b`` — the input-gradient map of the convolution K (``CONV.input``);
        ``output_size`` (torch's) chooses the output padding of this call."""
        check_input(x, self, ndim=4, name="x")
        extra = self.output_padding_for(x.shape[2:], output_size)
        size = self.output_shape(x.shape[1:], extra)[1:]
        weight = self.params["weight"]
        if x.shape[0] == 0:  # an empty batch: an empty output, as torch
            out = np.zeros((0, self.out_channels, *size), weight.dtype)
        elif self.implementation == "fast":
            out = conv.conv_input_grad_fast(x, weight, size, self.geometry)
        else:
            out = conv.conv_input_grad_readable(x, weight, size, self.geometry)
        if self.has_bias:
            out += self.params["bias"][:, None, None]
        return out, ConvTransposeCache(x, weight, None, None, extra)

    def _out_shape(self, cache: ConvTransposeCache) -> tuple[int, ...]:
        """The per-sample output shape of the call ``cache`` records."""
        return self.output_shape(cache.input.shape[1:], cache.output_padding)

    def backward(
        self, dout: np.ndarray, cache: ConvCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.conv-transpose2d``: ∂C/∂x = Kδ; ∂C/∂W[i,o,·,·] = Σ x[n,i,y,x]·δp[n,o,ys+id,…]."""
        expected = (cache.input.shape[0], *self._out_shape(cache))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        x, weight = cache.input, cache.weight
        if x.shape[0] == 0:  # an empty batch: zero parameter gradients, as torch
            zeros = {name: np.zeros_like(value) for name, value in self.params.items()}
            return np.zeros(x.shape, weight.dtype), zeros
        size, full = x.shape[2:], self.geometry.output_size(dout.shape[2:])
        if full != size:
            # output_padding ≥ stride (allowed when < dilation): K maps the output to a larger
            # grid whose extra rows/columns the forward never read — their δ is zero.
            padded = np.zeros((*x.shape[:2], *full), dtype=x.dtype)
            padded[:, :, : size[0], : size[1]] = x
            x = padded
        if self.implementation == "fast":
            dx, cols = conv.conv_forward_fast(dout, weight, None, self.geometry)
            dw = conv.conv_weight_grad_fast(x, cols, weight.shape, self.geometry)
        else:
            dx = conv.conv_forward_readable(dout, weight, None, self.geometry)
            dw = conv.conv_weight_grad_readable(x, dout, weight.shape, self.geometry)
        grads = {"weight": dw}
        if self.has_bias:
            grads["bias"] = dout.sum(axis=(0, 2, 3))
        return np.ascontiguousarray(dx[:, :, : size[0], : size[1]]), grads

    # ------------------------------------------------------------------ products (V axis)
    # y = K_Wᵀ x̃ + b: the convolution products with U and col2im swapped
    # (manual_bp.layers.convolution_products; derivations: docs/products.md).
    def input_vjp(self, cache: ConvCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = K_W M = W_g U_g(M)``, cropped to x's grid (``PROD.conv-transpose2d.vjp``):
        the convolution of each cotangent, ``(V, N, C_in, H, W)``."""
        size = cache.input.shape[2:]
        return products.transpose_input_vjp(M, cache.weight, size, self.geometry)

    def param_vjp(
        self, cache: ConvCache, M: np.ndarray, sum_batch: bool = True
    ) -> dict[str, np.ndarray]:
        """``J_Wᵀ M = x̃_g U_g(M)ᵀ``, ``J_bᵀ M = Σ_{n,y,x} M`` (``PROD.conv-transpose2d.vjp``);
        ``sum_batch=False``: one GEMM batched over ``(v, n, g)``, ``(V, N, *p)``."""
        dw, db = products.transpose_param_vjp(
            M, cache.input, cache.weight.shape, self.geometry, sum_batch
        )
        return {"weight": dw, "bias": db} if self.has_bias else {"weight": dw}

    def input_jvp(self, cache: ConvCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = K_Wᵀ T = col2im(W_gᵀ T_g)``, the forward without bias
        (``PROD.conv-transpose2d.jvp``)."""
        size = self._out_shape(cache)[1:]
        return products.transpose_input_jvp(T, cache.weight, size, self.geometry)

    def param_jvp(self, cache: ConvCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W + J_b T_b = col2im((T_W)_gᵀ x_g) + T_b`` (``PROD.conv-transpose2d.jvp``)."""
        x = cache.input
        out_shape = (tangent_count(None, T_params), x.shape[0], *self._out_shape(cache))
        T_bias = T_params.get("bias") if self.has_bias else None
        return products.transpose_param_jvp(
            x, out_shape, self.geometry, T_params.get("weight"), T_bias
        )

    def residual(
        self,
        cache: ConvCache,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bilinear in ``(x, W)``: only the mixed terms (``PROD.conv-transpose2d.residual``)::

        residual_x = K_{T_W} dout, cropped = (T_W)_g U_g(dout)
        residual_W = T̃_x,g U_g(dout)ᵀ
        residual_b = 0
        """
        x, weight = cache.input, cache.weight
        V = tangent_count(T, T_params)
        r_x, r_w = products.transpose_residual(
            dout, T, (T_params or {}).get("weight"), x.shape[2:], weight.shape, self.geometry
        )
        dtype = np.result_type(x, weight)
        grads = {"weight": np.zeros((V, *weight.shape), dtype) if r_w is None else r_w}
        if self.has_bias:
            grads["bias"] = np.zeros((V, self.out_channels), dtype)
        return (np.zeros((V, *x.shape), dtype) if r_x is None else r_x), grads

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> ConvTranspose2d:
        """``conv-transpose2d(8, 3, stride=2)`` on ``(C, H, W)``: ConvTranspose2d(C, 8, 3, 2)."""
        if len(input_shape) != 3:
            raise ValueError(
                f"conv-transpose2d needs per-sample inputs (C, H, W), got {input_shape}"
            )
        return cls(input_shape[0], *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ConvTranspose2d({self.in_channels}, {self.out_channels}, {self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding})"
        )
