"""The dense layer's forward (``FWD.dense``) and its fast form for training, :class:`DenseStep`.

:func:`dense_forward` is the only dense forward in the library: :class:`~manual_bp.layers.Dense`,
:class:`~manual_bp.models.network.Network` and the fused trainer call it. :class:`DenseStep`
writes the same equations into preallocated buffers; as the lowest trainable layer under plain
SGD it can also fuse its BP4 with the update (:meth:`DenseStep.backward_sgd`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.steps import shape_buffers

__all__ = ["ONE_THREAD_MNK", "DenseStep", "dense_forward"]

#: OpenBLAS runs a gemm on one thread below ``m·k·n = 65536·4`` (its interface's
#: ``SMP_THRESHOLD_MIN · GEMM_MULTITHREAD_THRESHOLD``): a product of that size or less has
#: the same bits whatever the thread count, the contract of ``manual_bp/_threads.py``.
ONE_THREAD_MNK = 65536 * 4


def _blas_gemm(dtype: np.dtype) -> Any:
    """SciPy's BLAS ``gemm`` of ``dtype`` (None for other dtypes). Imported on first use:
    ``scipy.linalg`` costs ~45 ms and ~6 MB at import, paid only by a run that fuses."""
    if dtype not in (np.float64, np.float32):
        return None
    from scipy.linalg import blas

    return blas.dgemm if dtype == np.float64 else blas.sgemm


def dense_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, out: np.ndarray | None = None
) -> np.ndarray:
    """``z = x Wᵀ + b`` (equation ``FWD.dense``), written into ``out`` when given.

    Parameters
    ----------
    x : (batch, *, n_in)
    W : (n_out, n_in)
    b : (n_out,) or None
    out : (batch, *, n_out), optional — a preallocated buffer (the fused trainer's)

    Returns
    -------
    z : (batch, *, n_out)
    """
    z = np.matmul(x, W.T, out=out)
    if b is not None:
        z += b
    return z


class DenseStep:
    """The fast form of :class:`Dense` (``docs/performance.md``): the same ``FWD.dense`` and
    ``LAYER.dense`` written into preallocated buffers, gradients straight into the
    trainer's flat gradient buffer::

        forward    z = x Wᵀ + b              matmul(x, W.T, out=z); z += b
        backward   ∂C/∂W = dzᵀ x   (BP4)     dot(dz.T, x, out=gW)
                   ∂C/∂b = 1ᵀ dz   (BP3)     dot(ones, dz, out=gb)  one BLAS call, not sum
                   ∂C/∂x = dz W    (BP2)     dot(dz, W, out=dx)     only when asked

    Leading axes are rows (``(N, T, D)`` inputs are ``N·T`` rows of the same map). The
    parameters are views of the model's flat buffer, updated in place, so the step keeps
    them; the buffers of the current batch shape are picked once per forward pass.
    """

    def __init__(self, layer: Any) -> None:  # a Dense (dense.py imports this module)
        self.layer = layer
        self.W = layer.params["weight"]
        self.b = layer.params.get("bias")
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.x = self.z = self.dx = self.ones = self.z2 = self.dx2 = None
        self._gemm: Any = False  # BLAS gemm of backward_sgd, looked up on first use

    def forward(self, x: np.ndarray) -> np.ndarray:
        # the input is usually the same buffer step after step: compare shapes only if not
        if x is not self.x and (self.x is None or self.x.shape != x.shape):
            self.z, self.dx, self.ones = shape_buffers(
                self._buffers, x.shape, lambda: self._make(x)
            )
            self.z2 = self.z.reshape(-1, self.z.shape[-1])  # views of the same buffers
            self.dx2 = self.dx.reshape(-1, self.dx.shape[-1])
        self.x = x
        if x.ndim == 2:
            return dense_forward(x, self.W, self.b, out=self.z)
        # (N, T, D): one 2-D GEMM on the (N·T, D) views; numpy's stacked matmul loops over N
        dense_forward(x.reshape(-1, x.shape[-1]), self.W, self.b, out=self.z2)
        return self.z

    def _make(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = int(np.prod(x.shape[:-1]))
        z = np.empty((*x.shape[:-1], self.layer.out_features), x.dtype)
        return z, np.empty(x.shape, x.dtype), np.ones(rows, x.dtype)

    def backward(
        self, dz: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        x = self.x
        if x.ndim == 2:
            np.dot(dz.T, x, out=grads["weight"])  # BP4
            if self.b is not None:
                np.dot(self.ones, dz, out=grads["bias"])  # BP3: 1ᵀ dz
        else:
            dz_rows, x_rows, g_w = (
                dz.reshape(-1, dz.shape[-1]),
                x.reshape(-1, x.shape[-1]),
                grads["weight"],
            )
            np.dot(dz_rows.T, x_rows, out=g_w)
            if self.b is not None:
                np.dot(self.ones, dz_rows, out=grads["bias"])
        if not need_dx:
            return None
        if x.ndim == 2:
            return np.matmul(dz, self.W, out=self.dx)  # BP2's (Wˡ⁺¹)ᵀ δˡ⁺¹
        np.matmul(dz_rows, self.W, out=self.dx2)  # the same, one 2-D GEMM over N·T rows
        return self.dx

    #: the parameters :meth:`backward_sgd` updates in place (the trainer's flat update skips them)
    updated_in_place = ("weight",)

    def backward_sgd(self, dz: np.ndarray, grads: dict[str, np.ndarray], shrink: float) -> bool:
        """BP4 fused with ``OPT.sgd`` (and ``REG.l2``'s shrink) at the bottom of the stack.

        For the lowest trainable layer under plain SGD the trainer's seed already carries
        ``η/n``, so ``dz`` is ``η ∂C/∂z`` and the update of the weight is::

            W ← shrink · W − dzᵀ x        (REG.l2, BP4 and OPT.sgd)

        one BLAS ``gemm`` with ``α = −1``, ``β = shrink`` written into ``Wᵀ`` (the weight's
        Fortran view) in place: the gradient is never written, and the trainer's flat
        update skips the weight (:attr:`updated_in_place`). One rounding fewer than the
        shrink, the written gradient and the subtract: equal to them to
        ``2ε(|W| + |ΔW|)``. The bias gets BP3 into ``grads`` as in :meth:`backward`.

        Only for 2-D inputs whose product BLAS runs on one thread (``m·k·n ≤``
        :data:`ONE_THREAD_MNK`), so the bits never depend on the thread count; otherwise
        it returns False having done nothing, and the trainer calls :meth:`backward`.
        Returns True when the weight was updated.
        """
        x, W = self.x, self.W
        if x.ndim != 2 or x.shape[0] * W.size > ONE_THREAD_MNK:
            return False
        if self._gemm is False:
            W_T = W.T  # writing into a copy would lose the update: only a Fortran view
            self._gemm = _blas_gemm(W.dtype) if W_T.flags.f_contiguous else None
        gemm = self._gemm
        if gemm is None or dz.dtype != W.dtype or x.dtype != W.dtype:
            return False
        if self.b is not None:
            np.dot(self.ones, dz, out=grads["bias"])  # BP3: 1ᵀ dz
        # Wᵀ ← shrink·Wᵀ + (−1)·xᵀ dz; op(B) = (dzᵀ)ᵀ = dz, so no copy of either operand
        gemm(-1.0, x.T, dz.T, shrink, W.T, 0, 1, 1)
        return True
