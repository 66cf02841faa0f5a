"""Embedding lookup ``out[n, t] = W[x[n, t]]`` — ``torch.nn.Embedding``.

``weight`` is ``(num_embeddings, embedding_dim)``, initialised ``N(0, 1)`` as torch's;
the ``padding_idx`` row starts at zero and never receives a gradient. Inputs are integer
indices ``(N, *)``; a :class:`~manual_bp.models.sequential.Sequential` hands every layer floats
(``prepare_inputs`` casts to the model's dtype), so float inputs are accepted when they
hold whole numbers exactly and are rounded back to indices — anything else is refused.

torch's options: ``max_norm`` renormalises, in the forward pass and in place on ``weight``,
every looked-up row whose ``norm_type``-norm exceeds it (``EMB.renorm``; torch's
``embedding_renorm_``, outside autograd: the gradient is the lookup's); and
``scale_grad_by_freq`` divides each row's gradient by how often the batch looks it up
(``EMB.lookup``'s scatter-add, averaged instead of summed per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import (
    Cache,
    Layer,
    layer_dtype,
    register_layer,
    tangent_count,
    zero_residual,
)
from manual_bp.layers.steps import shape_buffers

__all__ = [
    "Embedding",
    "EmbeddingCache",
    "EmbeddingStep",
    "embedding_backward",
    "embedding_renorm",
]


@dataclass
class EmbeddingCache(Cache):
    """``input`` as given and the validated integer ``indices``."""

    indices: np.ndarray


def embedding_backward(
    d_out: np.ndarray,
    indices: np.ndarray,
    num_embeddings: int,
    padding_idx: int | None,
    scale_grad_by_freq: bool = False,
) -> np.ndarray:
    """``∂C/∂W[k] = Σ_{(n,t): x[n,t] = k} ∂C/∂out[n,t]`` (equation ``EMB.lookup``).

    A row looked up several times receives the sum of its gradients: ``np.add.at`` is the
    unbuffered scatter-add (fancy-index ``+=`` would keep only the last write of a
    repeated index). The padding row's gradient is zero, as torch's. With
    ``scale_grad_by_freq`` row ``k``'s sum is divided by its count ``c_k`` in the batch
    (torch's option: a mean per row, not a derivative).
    """
    grad = np.zeros((num_embeddings, d_out.shape[-1]), dtype=d_out.dtype)
    np.add.at(grad, indices.reshape(-1), d_out.reshape(-1, d_out.shape[-1]))
    if scale_grad_by_freq:
        counts = np.bincount(indices.reshape(-1), minlength=num_embeddings)
        grad /= np.maximum(counts, 1)[:, None].astype(grad.dtype)
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


def embedding_renorm(
    weight: np.ndarray, indices: np.ndarray, max_norm: float, norm_type: float
) -> None:
    """``W[k] ← W[k] · max_norm / (‖W[k]‖_p + 10⁻⁷)`` for every looked-up row whose
    ``p``-norm exceeds ``max_norm``, in place (equation ``EMB.renorm``; torch's
    ``embedding_renorm_``, the 10⁻⁷ included)."""
    rows = np.unique(indices)
    if not rows.size:
        return
    norms = np.linalg.norm(weight[rows], ord=norm_type, axis=1)
    over = norms > max_norm
    scale = max_norm / (norms[over] + 1e-7)
    weight[rows[over]] *= scale[:, None].astype(weight.dtype)


@register_layer
class Embedding(Layer):
    """``torch.nn.Embedding``: rows of ``weight`` looked up by index. Equation ``EMB.lookup``.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    padding_idx : int, optional
        A row kept at zero that receives no gradient (negative counts from the end).
    max_norm : float, optional — renormalise looked-up rows to at most this norm
        (``EMB.renorm``, in the forward pass, in place on ``weight``)
    norm_type : float — the ``p`` of that norm (default 2)
    scale_grad_by_freq : bool — divide each row's gradient by its count in the batch
    sparse : bool — torch's sparse gradients: refused (NumPy arrays here are dense)
    device, dtype : torch's keywords (``None`` or ``"cpu"``; float64 by default, or float32)
    seed : int or Generator, optional
    """

    name = "embedding"
    equation = "EMB.lookup"
    product_equations = ("PROD.embedding.vjp", "PROD.embedding.jvp", "PROD.embedding.residual")
    #: out = W[x] is linear in W and the indices are no direction: the residual is zero.
    hessian_is_zero = True
    index_input = True
    hyperparameters = (
        "num_embeddings",
        "embedding_dim",
        "padding_idx",
        "max_norm",
        "norm_type",
        "scale_grad_by_freq",
    )

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "Embedding", device)
        if sparse:
            raise ValueError("Embedding: sparse=True has no meaning here (dense NumPy gradients)")
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
                raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(
                    f"padding_idx {padding_idx} is outside [-{num_embeddings}, {num_embeddings})"
                )
            padding_idx = int(padding_idx) % self.num_embeddings  # torch stores it non-negative
        self.padding_idx = padding_idx
        if max_norm is not None:
            max_norm = _real(max_norm, "max_norm")
        self.max_norm = max_norm
        self.norm_type = _real(norm_type, "norm_type")
        if not isinstance(scale_grad_by_freq, (bool, np.bool_)):
            raise TypeError(f"scale_grad_by_freq must be True or False, got {scale_grad_by_freq!r}")
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = False  # torch's attribute: dense gradients only
        self.params["weight"] = np.zeros((self.num_embeddings, self.embedding_dim), dtype)
        self.reset_parameters(np.random.default_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """``N(0, 1)`` for every row; the padding row zero (torch's ``reset_parameters``)."""
        weight = self.params["weight"]
        weight[...] = rng.standard_normal(weight.shape)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape, self.embedding_dim)

    def indices(self, x: np.ndarray) -> np.ndarray:
        """``x`` as int64 indices, refusing non-integral values and out-of-range indices."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self!r}: x must be a NumPy array, got {type(x).__name__}")
        if x.ndim < 1:
            raise ValueError(f"{self!r}: x must have a batch axis, got shape {x.shape}")
        if x.dtype.kind == "f":
            rounded = np.rint(x)
            if not np.array_equal(rounded, x):
                bad = x[rounded != x].flat[0]
                raise ValueError(f"{self!r}: x: indices must be whole numbers, got {bad!r}")
            x = rounded
        elif x.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: indices must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.num_embeddings):
            bad = x[(x < 0) | (x >= self.num_embeddings)].flat[0]
            raise ValueError(f"{self!r}: x: index {bad} is outside [0, {self.num_embeddings})")
        return x.astype(np.int64)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
        """``x (N, *) integer -> out (N, *, embedding_dim)``."""
        indices = self.indices(x)
        if self.max_norm is not None:  # EMB.renorm: in place, before the lookup (torch)
            embedding_renorm(self.params["weight"], indices, self.max_norm, self.norm_type)
        return self.params["weight"][indices], EmbeddingCache(x, indices)

    def backward(
        self, d_out: np.ndarray, cache: EmbeddingCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(0, {"weight": scatter-added rows})``: indices are not differentiable."""
        expected = (*cache.indices.shape, self.embedding_dim)
        if not isinstance(d_out, np.ndarray) or d_out.shape != expected:
            raise ValueError(f"{self!r}: d_out has shape {np.shape(d_out)}, expected {expected}")
        weight = embedding_backward(
            d_out, cache.indices, self.num_embeddings, self.padding_idx, self.scale_grad_by_freq
        )
        return np.zeros(cache.input.shape, dtype=d_out.dtype), {"weight": weight}

    def fast_step(self) -> EmbeddingStep:
        """The fused form for training (:class:`EmbeddingStep`)."""
        return EmbeddingStep(self)

    # ------------------------------------------------------------------ products (V axis)
    # The indices carry no derivative (index_input): only the weight has products. The
    # padding row is a constant (torch never updates it): its VJP row is zero and its
    # tangent contributes nothing. ``PROD.embedding.*`` in docs/products.md.
    def constant_rows(self) -> dict[str, int]:
        """``{"weight": padding_idx}`` when a padding row is set (a constant, no direction)."""
        return {} if self.padding_idx is None else {"weight": self.padding_idx}

    def input_vjp(self, cache: EmbeddingCache, M: np.ndarray) -> np.ndarray:
        """``0`` ``(V, N, *)``: indices have no derivative (``backward``'s ``∂C/∂x``, per V)."""
        return np.zeros((M.shape[0], *cache.input.shape), dtype=M.dtype)

    def param_vjp(
        self, cache: EmbeddingCache, M: np.ndarray, sum_batch: bool = True
    ) -> dict[str, np.ndarray]:
        """``(J_Wᵀ M)[k] = Σ_{(n,r): x[n,r] = k} M[n,r]`` (``PROD.embedding.vjp``): the
        scatter-add of the cotangent rows into the rows they looked up, padding row zero.

        ``sum_batch=False``: sample n's share scatters its own positions only, into
        ``(V, N, K, D)`` (one weight-shaped gradient per sample).
        """
        if self.scale_grad_by_freq:
            raise ValueError(
                f"{self!r}: scale_grad_by_freq rescales the gradient, which is then no "
                "Jacobian product: param_vjp is refused"
            )
        V, N, K, D = M.shape[0], cache.indices.shape[0], self.num_embeddings, self.embedding_dim
        index = cache.indices.reshape(-1)
        if not sum_batch:  # sample n scatters into its own block of K rows
            index = index + K * np.repeat(np.arange(N), index.size // max(N, 1))
        grad = np.zeros((V, K if sum_batch else N * K, D), dtype=M.dtype)
        if index.size:  # sorted by index, each run summed at once (EmbeddingStep's scatter)
            order, ordered, starts = _index_runs(index)
            grad[:, ordered[starts]] = np.add.reduceat(
                M.reshape(V, -1, D)[:, order], starts, axis=1
            )
        grad = grad if sum_batch else grad.reshape(V, N, K, D)  # (V, K, D) or (V, N, K, D)
        if self.padding_idx is not None:
            grad[..., self.padding_idx, :] = 0.0
        return {"weight": grad}

    def param_jvp(self, cache: EmbeddingCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W = T_W[x]`` (``PROD.embedding.jvp``): the gather of the tangent rows,
        ``(V, N, *, D)``; positions holding the padding index get 0 (a constant row)."""
        V = tangent_count(None, T_params)
        if "weight" not in T_params:
            return np.zeros((V, *cache.indices.shape, self.embedding_dim), cache.input.dtype)
        out = T_params["weight"][:, cache.indices]
        if self.padding_idx is not None:
            out[:, cache.indices == self.padding_idx] = 0.0
        return out

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.embedding.residual``): ``out = W[x]`` is linear in ``W``."""
        return zero_residual(self, cache, T, T_params)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Embedding:
        """``embedding(vocab, dim)`` on index sequences ``(T,)``."""
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            extra += f", max_norm={self.max_norm}"
            if self.norm_type != 2.0:
                extra += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            extra += ", scale_grad_by_freq=True"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra})"


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


#: Occurrence levels :class:`EmbeddingStep` scatters one fancy-index add each; rows repeated
#: more often (e.g. a padding token filling a batch) go through one ``np.add.at`` in order.
SCATTER_LEVELS = 8


def _index_runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, index[order], starts)``: a stable sort of flat indices and where each run
    of one index starts — a scatter-add as one ``np.add.reduceat`` over the runs, each row's
    terms in input order (~2.5× faster than ``np.add.at``, see :class:`EmbeddingStep`)."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    return order, ordered, np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))


class EmbeddingStep:
    """The fast form of :class:`Embedding` (``EMB.lookup``): the gather into a buffer, and the
    scatter-add of the rows' gradients by occurrence levels::

        forward    out = W[x]                  take(W, x, axis=0, out=out)
        backward   ∂C/∂W[k] = Σ_{x[r]=k} δ[r]  stable sort by index; level ℓ = every index's
                                               ℓ-th row (unique targets); ∂C/∂W = level 0,
                                               then += level 1, 2, … (fancy-index adds;
                                               past SCATTER_LEVELS one add.at)

    Each index's rows are added left to right, the readable ``np.add.at``'s order: the same
    bits (``tests/test_embedding_step_scatter.py``). At the lstm workload's 1120 rows into
    1000 (≤ ~5 levels): 83 µs, against 209 for a sorted ``add.reduceat`` (one inner loop per
    run, and a run's first row added to the pairwise sum of the rest: other bits) and ~490
    for ``np.add.at`` (float32, one thread, CPU time).
    """

    def __init__(self, layer: Embedding) -> None:
        self.layer = layer
        self.W = layer.params["weight"]
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.indices = self.out = self.dx = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.indices = self.layer.indices(x)  # validated (whole, in range) int64
        layer = self.layer
        if layer.max_norm is not None:  # EMB.renorm, in place on the weight (the model's)
            embedding_renorm(self.W, self.indices, layer.max_norm, layer.norm_type)
        self.out, self.dx = shape_buffers(self._buffers, x.shape, lambda: self._make(x))
        # the indices are validated: "clip" skips the buffered copy of out= ("raise" makes one)
        return np.take(self.W, self.indices, axis=0, out=self.out, mode="clip")

    def _make(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        dtype = self.W.dtype
        return np.empty((*x.shape, self.layer.embedding_dim), dtype), np.zeros(x.shape, dtype)

    def backward(
        self, d_out: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        index = self.indices.reshape(-1)
        rows = d_out.reshape(-1, d_out.shape[-1])
        grad = grads["weight"]
        grad[...] = 0.0
        if not index.size:
            return self._zero_dx() if need_dx else None
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        counts = np.diff(np.append(starts, index.size))
        # occurrence rank of each sorted row within its index's run; rows regrouped by rank
        # (stable), so level r holds every index's r-th row once: unique targets per level
        rank = np.arange(index.size) - np.repeat(starts, counts)
        by_level = np.argsort(rank, kind="stable")
        level_ends = np.cumsum(np.bincount(rank))
        targets, picked = ordered[by_level], rows[order[by_level]]
        ends = level_ends[:SCATTER_LEVELS]
        for level, (a, b) in enumerate(zip((0, *ends[:-1]), ends, strict=True)):
            if level == 0:
                grad[targets[a:b]] = picked[a:b]
            else:
                grad[targets[a:b]] += picked[a:b]
        if len(level_ends) > SCATTER_LEVELS:  # deep repeats (a padding token): in rank order
            rest = level_ends[SCATTER_LEVELS - 1]
            np.add.at(grad, targets[rest:], picked[rest:])
        if self.layer.scale_grad_by_freq:  # each row's sum over its count (segment length)
            uniq = ordered[starts]
            grad[uniq] /= counts[:, None].astype(grad.dtype)
        if self.layer.padding_idx is not None:
            grad[self.layer.padding_idx] = 0.0
        return self._zero_dx() if need_dx else None

    def _zero_dx(self) -> np.ndarray:
        """Indices are not differentiable: zeros (refilled: a receiver may overwrite it)."""
        self.dx[...] = 0.0
        return self.dx
