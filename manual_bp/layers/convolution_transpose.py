"""``torch.nn.ConvTranspose2d``: the adjoint of a convolution (equation ``LAYER.conv-transpose2d``).

A convolution ``K`` with weight ``W (C_in, C_out/G, kH, kW)`` maps ``C_out`` channels of
size ``(H_out, W_out)`` to ``C_in`` channels of size ``(H, W)``. The transposed
convolution is its adjoint ``Kᵀ`` — exactly the input-gradient map of ``K``
(``CONV.input``) — plus a bias::

    y = Kᵀ x + b,   ∂C/∂x = K δ,   ∂C/∂W = the weight gradient of K with the roles of
                                    input (δ) and upstream gradient (x) swapped,
    ∂C/∂b = Σ_{n,y,x} δ.

``H_out = (H − 1)s − 2p + d(k − 1) + output_padding + 1`` (``output_padding`` picks one of
the ``s`` input sizes that ``K`` maps to the same ``H``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers import _im2col as conv
from manual_bp.layers import convolution_products as products
from manual_bp.layers.base import Layer, check_input, register_layer, tangent_count
from manual_bp.layers.convolution import (
    ConvCache,
    _tuple,
    allocate_conv_parameters,
    check_conv_options,
    parse_geometry,
    reset_conv_parameters,
)

__all__ = ["ConvTranspose2d"]


@register_layer
class ConvTranspose2d(Layer):
    """``torch.nn.ConvTranspose2d`` on NCHW inputs; weight ``(C_in, C_out/groups, kH, kW)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation, output_padding : int or (int, int)
        ``output_padding`` must be smaller than the stride or the dilation (as torch).
    groups : int dividing both channel counts
    bias : bool
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
        *,
        weight_init: str | dict[str, Any] = "torch",
        bias_init: str | dict[str, Any] = "torch",
        implementation: str = "fast",
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
    ) -> None:
        super().__init__()
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
        check_conv_options(self, padding_mode, bias, implementation)
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

    def _size(self, size: tuple[int, int]) -> tuple[int, int]:
        g = self.geometry
        out = tuple(
            (size[a] - 1) * g.stride[a]
            - sum(g.padding[a])
            + g.dilation[a] * (g.kernel[a] - 1)
            + self.output_padding_pair[a]
            + 1
            for a in range(2)
        )
        return out[0], out[1]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C, H, W) with C = {self.in_channels}, "
                f"got {shape}"
            )
        out = self._size(shape[1:])
        if min(out) < 1:
            raise ValueError(f"{self!r}: input {shape} gives an empty output {out}")
        return (self.out_channels, *out)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ConvCache]:
        """``y = Kᵀx + b`` — the input-gradient map of the convolution K (``CONV.input``)."""
        check_input(x, self, ndim=4, name="x")
        size = self.output_shape(x.shape[1:])[1:]
        weight = self.params["weight"]
        if self.implementation == "fast":
            out = conv.conv_input_grad_fast(x, weight, size, self.geometry)
        else:
            out = conv.conv_input_grad_readable(x, weight, size, self.geometry)
        if self.has_bias:
            out += self.params["bias"][:, None, None]
        return out, ConvCache(x, weight, None)

    def backward(
        self, dout: np.ndarray, cache: ConvCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.conv-transpose2d``: ∂C/∂x = Kδ; ∂C/∂W[i,o,·,·] = Σ x[n,i,y,x]·δp[n,o,ys+id,…]."""
        expected = (cache.input.shape[0], *self.output_shape(cache.input.shape[1:]))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        x, weight = cache.input, cache.weight
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
        size = self.output_shape(cache.input.shape[1:])[1:]
        return products.transpose_input_jvp(T, cache.weight, size, self.geometry)

    def param_jvp(self, cache: ConvCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W + J_b T_b = col2im((T_W)_gᵀ x_g) + T_b`` (``PROD.conv-transpose2d.jvp``)."""
        x = cache.input
        out_shape = (tangent_count(None, T_params), x.shape[0], *self.output_shape(x.shape[1:]))
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
