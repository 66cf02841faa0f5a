"""The V-axis products of ConvTranspose1d/2d/3d (``PROD.conv-transpose{1,2,3}d.*``), mixed
into :class:`~manual_bp.layers.convolution_transpose._ConvTransposeNd`.

``y = K_Wᵀ x̃ + b``: the convolution products of
:mod:`manual_bp.layers.convolution_products` with the roles of ``U`` and col2im swapped,
on the geometry's views (1-D as height 1). Derivations: ``docs/products.md`` and
``docs/convolution.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers import convolution_products as products
from manual_bp.layers.base import tangent_count

__all__ = ["ConvTransposeProducts"]

ConvCache = Any


class ConvTransposeProducts:
    """``input_vjp``, ``param_vjp``, ``input_jvp``, ``param_jvp`` and ``residual`` of a
    transposed convolution (the layer supplies ``_as_view``, ``_from_view``, ``geometry``,
    ``has_bias``, ``out_channels`` and ``_view_out_size``)."""

    def input_vjp(self, cache: ConvCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = K_W M = W_g U_g(M)``, cropped to x's grid (``PROD.conv-transpose2d.vjp``,
        ``PROD.conv-transpose1d.vjp``, ``PROD.conv-transpose3d.vjp``): the convolution of
        each cotangent, ``(V, N, C_in, *S)``."""
        size = self._as_view(cache.input).shape[2:]
        w2 = self._as_view(cache.weight)
        return self._from_view(
            products.transpose_input_vjp(self._as_view(M), w2, size, self.geometry)
        )

    def param_vjp(
        self, cache: ConvCache, M: np.ndarray, sum_batch: bool = True
    ) -> dict[str, np.ndarray]:
        """``J_Wᵀ M = x̃_g U_g(M)ᵀ``, ``J_bᵀ M = Σ_{n,y,x} M`` (``PROD.conv-transpose2d.vjp``);
        ``sum_batch=False``: one GEMM batched over ``(v, n, g)``, ``(V, N, *p)``."""
        w2 = self._as_view(cache.weight)
        dw, db = products.transpose_param_vjp(
            self._as_view(M), self._as_view(cache.input), w2.shape, self.geometry, sum_batch
        )
        dw = dw.reshape(*dw.shape[: 1 if sum_batch else 2], *cache.weight.shape)
        return {"weight": dw, "bias": db} if self.has_bias else {"weight": dw}

    def input_jvp(self, cache: ConvCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = K_Wᵀ T = col2im(W_gᵀ T_g)``, the forward without bias
        (``PROD.conv-transpose2d.jvp``, ``PROD.conv-transpose1d.jvp``,
        ``PROD.conv-transpose3d.jvp``)."""
        size = self._view_out_size(cache)
        w2 = self._as_view(cache.weight)
        return self._from_view(
            products.transpose_input_jvp(self._as_view(T), w2, size, self.geometry)
        )

    def param_jvp(self, cache: ConvCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W + J_b T_b = col2im((T_W)_gᵀ x_g) + T_b`` (``PROD.conv-transpose2d.jvp``)."""
        x = self._as_view(cache.input)
        V = tangent_count(None, T_params)
        out_shape = (V, x.shape[0], self.out_channels, *self._view_out_size(cache))
        T_bias = T_params.get("bias") if self.has_bias else None
        T_weight = T_params.get("weight")
        out = products.transpose_param_jvp(
            x,
            out_shape,
            self.geometry,
            None if T_weight is None else self._as_view(T_weight),
            T_bias,
        )
        return self._from_view(out)

    def residual(
        self,
        cache: ConvCache,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bilinear in ``(x, W)``: only the mixed terms (``PROD.conv-transpose2d.residual``,
        ``PROD.conv-transpose1d.residual``, ``PROD.conv-transpose3d.residual``)::

        residual_x = K_{T_W} dout, cropped = (T_W)_g U_g(dout)
        residual_W = T̃_x,g U_g(dout)ᵀ
        residual_b = 0
        """
        x, weight = cache.input, cache.weight
        V = tangent_count(T, T_params)
        T_weight = (T_params or {}).get("weight")
        r_x, r_w = products.transpose_residual(
            self._as_view(dout),
            None if T is None else self._as_view(T),
            None if T_weight is None else self._as_view(T_weight),
            self._as_view(x).shape[2:],
            self._as_view(weight).shape,
            self.geometry,
        )
        dtype = np.result_type(x, weight)
        r_w = np.zeros((V, *weight.shape), dtype) if r_w is None else r_w.reshape(V, *weight.shape)
        grads = {"weight": r_w}
        if self.has_bias:
            grads["bias"] = np.zeros((V, self.out_channels), dtype)
        r_x = np.zeros((V, *x.shape), dtype) if r_x is None else self._from_view(r_x)
        return r_x, grads
