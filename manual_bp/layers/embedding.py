"""Embedding lookup ``out[n, t] = W[x[n, t]]`` — ``torch.nn.Embedding``.

``weight`` is ``(num_embeddings, embedding_dim)``, initialised ``N(0, 1)`` as torch's;
the ``padding_idx`` row starts at zero and never receives a gradient. Inputs are integer
indices ``(N, *)``; a :class:`~manual_bp.models.sequential.Sequential` hands every layer floats
(``prepare_inputs`` casts to the model's dtype), so float inputs are accepted when they
hold whole numbers exactly and are rounded back to indices — anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp.layers.base import Cache, Layer, register_layer

__all__ = ["Embedding", "EmbeddingCache", "embedding_backward"]


@dataclass
class EmbeddingCache(Cache):
    """``input`` as given and the validated integer ``indices``."""

    indices: np.ndarray


def embedding_backward(
    d_out: np.ndarray, indices: np.ndarray, num_embeddings: int, padding_idx: int | None
) -> np.ndarray:
    """``∂C/∂W[k] = Σ_{(n,t): x[n,t] = k} ∂C/∂out[n,t]`` (equation ``EMB.lookup``).

    A row looked up several times receives the sum of its gradients: ``np.add.at`` is the
    unbuffered scatter-add (fancy-index ``+=`` would keep only the last write of a
    repeated index). The padding row's gradient is zero, as torch's.
    """
    grad = np.zeros((num_embeddings, d_out.shape[-1]), dtype=d_out.dtype)
    np.add.at(grad, indices.reshape(-1), d_out.reshape(-1, d_out.shape[-1]))
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


@register_layer
class Embedding(Layer):
    """``torch.nn.Embedding``: rows of ``weight`` looked up by index. Equation ``EMB.lookup``.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    padding_idx : int, optional
        A row kept at zero that receives no gradient (negative counts from the end).
    seed : int or Generator, optional
    dtype : float64 or float32
    """

    name = "embedding"
    equation = "EMB.lookup"
    hyperparameters = ("num_embeddings", "embedding_dim", "padding_idx")

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
    ) -> None:
        super().__init__()
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
                raise ValueError(f"{self!r}: indices must be whole numbers, got {bad!r}")
            x = rounded
        elif x.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: indices must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.num_embeddings):
            bad = x[(x < 0) | (x >= self.num_embeddings)].flat[0]
            raise ValueError(f"{self!r}: index {bad} is outside [0, {self.num_embeddings})")
        return x.astype(np.int64)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
        """``x (N, *) integer -> out (N, *, embedding_dim)``."""
        indices = self.indices(x)
        return self.params["weight"][indices], EmbeddingCache(x, indices)

    def backward(
        self, d_out: np.ndarray, cache: EmbeddingCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(0, {"weight": scatter-added rows})``: indices are not differentiable."""
        expected = (*cache.indices.shape, self.embedding_dim)
        if not isinstance(d_out, np.ndarray) or d_out.shape != expected:
            raise ValueError(f"{self!r}: d_out has shape {np.shape(d_out)}, expected {expected}")
        weight = embedding_backward(d_out, cache.indices, self.num_embeddings, self.padding_idx)
        return np.zeros(cache.input.shape, dtype=d_out.dtype), {"weight": weight}

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Embedding:
        """``embedding(vocab, dim)`` on index sequences ``(T,)``."""
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra})"
