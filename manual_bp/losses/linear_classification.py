"""torch's ``LinearCrossEntropyLoss``: a linear projection to class scores, then
:class:`~manual_bp.losses.classification.CrossEntropyLoss` — a loss with a parameter
(``docs/losses_classification.md``, ``LOSS.linear-cross-entropy``).

Shapes, as torch 2.13's: the input is ``(in_features)`` or ``(N, in_features)``; the flat
parameter ``linear.weight`` ``(C·Πd, in_features)`` is read as ``(C, d₁, …, d_K,
in_features)``, so the logits ``z = x Wᵀ + b`` reshape to ``(N, C, d₁, …, d_K)`` (row
``c·Πd + j`` of the flat weight scores class ``c`` at position ``j``); the target is what
``CrossEntropyLoss`` takes for those logits (class indices ``(N, d…)`` or probabilities
``(N, C, d…)``). K-dimensional outputs need a batch, as torch's.

**Chunking** (torch's ``options``: :class:`LinearCrossEntropyOptions`). torch's chunked path
processes ``batch_chunk_size`` rows at a time so the ``(N, C)`` logits are never whole.
Here the chunked path keeps, from the forward, only each row's log-sum-exp ``λᵢ`` ``(N,)``;
the backward recomputes one chunk's logits ``z``, its softmax ``p = exp(z − λ)`` and
``∂ℓ/∂z`` at a time and accumulates ``∂x = (∂ℓ/∂z) W`` and ``∂W = (∂ℓ/∂z)ᵀ x`` — peak
memory one ``(chunk, C)`` block, the probabilities never stored. It applies where torch's
does (``out_features == ()``, class-index targets, no label smoothing); otherwise the
options are ignored, as torch's (torch warns), and the reference path runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp._validation import as_array
from manual_bp.layers.dense import Dense, dense_backward, dense_forward
from manual_bp.losses.base import Loss, checked, reduce, register_loss
from manual_bp.losses.classification import (
    ClassCache,
    CrossEntropyLoss,
    WeightConfig,
    class_rows,
    row_upstream,
    target_mixture,
)

__all__ = ["LinearCrossEntropyLoss", "LinearCrossEntropyOptions"]

CHUNKING_METHODS = ("auto", "aspect_ratio")


@dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """torch's ``LinearCrossEntropyOptions`` (the fields that mean something here).

    ``batch_chunk_size``: rows per chunk (``None``: from ``chunking_method``);
    ``chunking_method``: ``"auto"`` (torch's CPU float32/float64 pick, ``"aspect_ratio:2"``),
    ``"aspect_ratio[:k]"`` — ``next_pow2(⌈N / ⌈C / in_features⌉⌉) // k`` rows — or ``None``
    (one chunk unless ``batch_chunk_size``). ``allow_retain_graph``, ``acc_policy`` and
    ``acc_dtype`` concern torch's autograd buffers and mixed precision: accepted, no effect
    (the cache here is never consumed, and float64 accumulates in float64).
    """

    allow_retain_graph: bool = False
    batch_chunk_size: int | None = None
    chunking_method: str | None = "auto"
    acc_policy: str = "auto"
    acc_dtype: Any = None

    def __post_init__(self) -> None:
        size = self.batch_chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"options: batch_chunk_size must be a positive int or None, "
                             f"got {size!r}")  # fmt: skip
        _method_factor(self.chunking_method)
        if self.acc_policy not in ("auto", "accurate", "balanced", "compact"):
            raise ValueError(f"options: invalid acc_policy {self.acc_policy!r}")

    @classmethod
    def of(cls, options: Any) -> LinearCrossEntropyOptions | None:
        """``options`` as this class: None, an instance, a dict of its fields, or torch's
        ``LinearCrossEntropyOptions`` (read by its field names)."""
        if options is None or isinstance(options, cls):
            return options
        fields = cls.__dataclass_fields__
        if isinstance(options, dict):
            unknown = set(options) - set(fields)
            if unknown:
                raise ValueError(f"options has no field(s) {sorted(unknown)}")
            return cls(**options)
        if all(hasattr(options, name) for name in fields):
            return cls(**{name: getattr(options, name) for name in fields})
        raise TypeError(f"options must be None or LinearCrossEntropyOptions, got {options!r}")

    def chunk_size(self, rows: int, in_features: int, n_classes: int) -> int:
        """Rows per chunk for ``rows`` rows (torch's ``_adjust`` on the CPU)."""
        method = self.chunking_method
        if method == "auto":
            method = None if self.batch_chunk_size is not None else "aspect_ratio:2"
        size = rows if self.batch_chunk_size is None else min(self.batch_chunk_size, rows)
        factor = _method_factor(method)
        if factor is not None:
            target = -(-rows // -(-n_classes // in_features))
            size = min((1 << max(target - 1, 0).bit_length()) // factor, rows)
            if self.batch_chunk_size is not None and self.batch_chunk_size != size:
                raise ValueError(f"options: batch_chunk_size={self.batch_chunk_size} and "
                                 f"chunking_method={method!r} give different chunk sizes "
                                 f"({self.batch_chunk_size} vs {size}); pass only one")  # fmt: skip
        return max(1, size)


def _method_factor(method: Any) -> int | None:
    """``"aspect_ratio:k"`` -> k (1 without ``:k``); ``None``/``"auto"`` -> None."""
    if method is None or method == "auto":
        return None
    name, sep, factor = str(method).partition(":")
    factor = factor if sep else "1"
    if name != "aspect_ratio" or not factor.isdigit() or int(factor) < 1:
        raise ValueError(f"options: invalid chunking_method {method!r}")
    return int(factor)


@dataclass
class LinearCache:
    """The input, the parameters used, the logits' shape and either the cross-entropy's
    cache (reference path) or the chunked path's per-row log-sum-exp and labels."""

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    logits_shape: tuple[int, ...]
    classes: ClassCache | None = None
    log_sum_exp: np.ndarray | None = None
    labels: np.ndarray | None = None
    kept: np.ndarray | None = None
    total: np.ndarray | None = None
    chunk: int = 0

    @property
    def element_shape(self) -> tuple[int, ...]:
        """The unreduced loss's shape: the logits' without the class axis."""
        shape = self.logits_shape
        return () if len(shape) == 1 else (shape[0], *shape[2:])


@register_loss
class LinearCrossEntropyLoss(WeightConfig, Loss):
    """torch's ``LinearCrossEntropyLoss(in_features, num_classes, *, out_features=(),
    bias=False, device=None, dtype=None, reduction='mean', weight=None, ignore_index=None,
    label_smoothing=0.0, options=None)`` (``LOSS.linear-cross-entropy``, ``.grad``).

    ``value = CrossEntropyLoss(weight, ignore_index, reduction, label_smoothing)(z, target)``
    with ``z = x Wᵀ + b`` reshaped to ``(N, C, d…)``. With ``δ = ∂⟨g, value⟩/∂z`` (the
    cross-entropy's gradient, softmax minus the weighted target mixture):
    ``∂x = δ W``, ``∂W = δᵀ x``, ``∂b = Σ_rows δ`` (``LAYER.dense`` on the flat logits).
    The parameters are ``linear.weight`` ``(C·Πd, in_features)`` and, with ``bias=True``,
    ``linear.bias`` ``(C·Πd,)`` — torch's flat storage and ``nn.Linear``'s
    ``U(±1/√in_features)`` initialisation; ``dtype`` float64 by default (the library's).
    ``ignore_index=None`` means −100 for class indices; any other value with probability
    targets is refused, as torch. :meth:`backward_with_params` returns the parameter
    gradients too (the loss protocol's extension, :class:`~manual_bp.losses.base.Loss`).
    """

    name = "linear-cross-entropy-loss"
    aliases = ("linearcrossentropyloss",)
    equation_value = "LOSS.linear-cross-entropy"
    equation_grad = "LOSS.linear-cross-entropy.grad"
    hyperparameters = ("in_features", "num_classes", "out_features", "bias", "reduction",
                       "weight", "ignore_index", "label_smoothing", "options")  # fmt: skip
    stored_as = {"bias": "has_bias", "options": "options_config"}

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: Any = None,
        dtype: Any = None,
        reduction: str = "mean",
        weight: Any = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: Any = None,
    ) -> None:
        super().__init__(reduction)
        self.num_classes = _positive(num_classes, "num_classes")
        self.in_features = _positive(in_features, "in_features")
        if not isinstance(out_features, (tuple, list)):
            raise TypeError(f"out_features must be a tuple of positive ints, got "
                            f"{out_features!r}")  # fmt: skip
        self.out_features = tuple(_positive(d, "out_features") for d in out_features)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer)
        ):
            raise TypeError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        # the cross-entropy of the logits: its checks of weight and label_smoothing, its math
        self.cross_entropy = CrossEntropyLoss(
            weight, -100 if ignore_index is None else self.ignore_index, reduction,
            label_smoothing,
        )  # fmt: skip
        self.weight = self.cross_entropy.weight
        self.label_smoothing = self.cross_entropy.label_smoothing
        if self.weight is not None and self.weight.shape != (self.num_classes,):
            raise ValueError(f"weight must have shape ({self.num_classes},), got "
                             f"{self.weight.shape}")  # fmt: skip
        self.options = LinearCrossEntropyOptions.of(options)
        self.linear = Dense(self.in_features, math.prod(self.out_features, start=self.num_classes),
                            bias=bias, device=device, dtype=dtype)  # fmt: skip
        self.has_bias = self.linear.has_bias

    @property
    def options_config(self) -> dict[str, Any] | None:
        """``options`` as a JSON-able dict (the config's form)."""
        if self.options is None:
            return None
        fields = dataclasses.asdict(self.options)
        fields["acc_dtype"] = None if fields["acc_dtype"] is None else str(fields["acc_dtype"])
        return fields

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``linear.weight`` (and ``linear.bias``): torch's state-dict names, flat storage."""
        return self.linear.named_parameters("linear.")

    # ------------------------------------------------------------------ forward
    def _chunked(self, target: np.ndarray) -> bool:
        # torch's conditions for its chunked path; elsewhere torch ignores options
        plain = not self.out_features and not self.label_smoothing
        return self.options is not None and plain and np.issubdtype(target.dtype, np.integer)

    def forward(self, input: Any, target: Any) -> tuple[np.ndarray, LinearCache]:
        x = as_array(input, "input")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"LinearCrossEntropyLoss: input must be float32 or float64, got "
                            f"{x.dtype}")  # fmt: skip
        if x.ndim not in (1, 2) or x.shape[-1] != self.in_features:
            raise ValueError(f"LinearCrossEntropyLoss: input must be (in_features,) or "
                             f"(N, in_features) with in_features={self.in_features}, got shape "
                             f"{x.shape}")  # fmt: skip
        if self.out_features and x.ndim == 1:
            raise ValueError(f"LinearCrossEntropyLoss: out_features={self.out_features} needs a "
                             f"batched input (N, {self.in_features}), got {x.shape}")  # fmt: skip
        target = as_array(target, "target")
        weight, bias = self.linear.params["weight"], self.linear.params.get("bias")
        logits_shape = (*x.shape[:-1], self.num_classes, *self.out_features)
        if target.shape == logits_shape and self.ignore_index is not None:
            raise ValueError("LinearCrossEntropyLoss: ignore_index cannot be given when target "
                             "holds class probabilities")  # fmt: skip
        if self._chunked(target):
            return self._forward_chunked(x, target, weight, bias, logits_shape)
        z = dense_forward(x, weight, bias).reshape(logits_shape)
        value, classes = self.cross_entropy.forward(z, target)
        return value, LinearCache(x, weight, bias, logits_shape, classes=classes)

    def _forward_chunked(self, x, target, weight, bias, logits_shape):
        """Each chunk's logits, log-sum-exp and losses; only ``λ`` ``(N,)`` is kept."""
        rows_x = x.reshape(-1, self.in_features)
        ce = self.cross_entropy
        # the target checked against the logits' shape without building the logits
        labels = class_rows(np.broadcast_to(np.empty((), x.dtype), logits_shape), target,
                            "LinearCrossEntropyLoss", ce.ignore_index)  # fmt: skip
        class_weight = ce._weights(self.num_classes, x.dtype)
        chunk = self.options.chunk_size(len(rows_x), self.in_features, self.num_classes)
        lse = np.empty(len(rows_x), x.dtype)
        elements = np.empty(len(rows_x), x.dtype)
        kept = labels != ce.ignore_index
        total = np.zeros((), x.dtype)
        for start in range(0, len(rows_x), chunk):
            part = slice(start, start + chunk)
            z = dense_forward(rows_x[part], weight, bias)
            a, _, chunk_total = target_mixture(labels[part], None, class_weight, 0.0,
                                               ce.ignore_index)  # fmt: skip
            top = z.max(axis=1)  # shifted: no overflow at logits of ±700
            lse[part] = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
            log_p = z - lse[part, None]
            elements[part] = -(a * log_p).sum(axis=1)
            total += chunk_total
        cache = LinearCache(x, weight, bias, logits_shape, log_sum_exp=lse, labels=labels,
                            kept=kept, total=total, chunk=chunk)  # fmt: skip
        value = reduce(elements.reshape(cache.element_shape), self.reduction, total)
        return value.astype(x.dtype), cache

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, Any]:
        """``(∂input, ∂target)`` (``∂target`` for probability targets, else None)."""
        return self.backward_with_params(grad_output, cache)[0]

    def backward_with_params(
        self, grad_output: Any, cache: LinearCache
    ) -> tuple[tuple[np.ndarray, Any], dict[str, np.ndarray]]:
        """``((∂input, ∂target), {"linear.weight": ∂W, "linear.bias": ∂b})``
        (``LOSS.linear-cross-entropy.grad``)."""
        grad_output = np.asarray(checked(grad_output, "grad_output"))
        if grad_output.shape != (cache.element_shape if self.reduction == "none" else ()):
            raise ValueError(f"LinearCrossEntropyLoss: grad_output must have the value's shape, "
                             f"got {grad_output.shape}")  # fmt: skip
        if cache.classes is None:
            return self._backward_chunked(grad_output, cache)
        d_logits, d_target = self.cross_entropy.backward(grad_output, cache.classes)
        flat = d_logits.reshape(*cache.input.shape[:-1], -1)
        dx, dW, db = dense_backward(flat, cache.input, cache.weight)
        return (dx, d_target), self._named(dW, db)

    def _backward_chunked(self, grad_output, cache: LinearCache):
        """Per chunk: ``z``, ``p = exp(z − λ)``, ``δ = gᵢ((Σ_c a_ic) p − a)`` recomputed; the
        input gradient written, the parameter gradients accumulated."""
        g = row_upstream(grad_output, self.reduction, cache.element_shape, cache.kept,
                         cache.total, cache.input.dtype, type(self).__name__)  # fmt: skip
        rows_x = cache.input.reshape(-1, self.in_features)
        class_weight = self.cross_entropy._weights(self.num_classes, rows_x.dtype)
        dx = np.empty_like(rows_x)
        dW = np.zeros_like(cache.weight)
        db = np.zeros(cache.weight.shape[0], rows_x.dtype)
        for start in range(0, len(rows_x), cache.chunk):
            part = slice(start, start + cache.chunk)
            z = dense_forward(rows_x[part], cache.weight, cache.bias)
            p = np.exp(z - cache.log_sum_exp[part, None])
            a = target_mixture(cache.labels[part], None, class_weight, 0.0,
                               self.cross_entropy.ignore_index)[0]  # fmt: skip
            with np.errstate(invalid="ignore"):  # Σ w_y = 0 with rows kept: NaN, as torch's
                delta = g[part, None] * (a.sum(axis=1, keepdims=True) * p - a)
            dx[part], dW_part, db_part = dense_backward(delta, rows_x[part], cache.weight)
            dW += dW_part
            db += db_part
        return (dx.reshape(cache.input.shape), None), self._named(dW, db)

    def input_hessian(self, grad_output: Any, cache: LinearCache) -> np.ndarray:
        """The Hessian of ``⟨grad_output, value⟩`` with respect to each sample's input
        (``LOSS.linear-cross-entropy.hessian``): ``Σ_j W_jᵀ H_j W_j`` over the sample's
        positions ``j``, with ``W_j`` the ``(C, in_features)`` slice of the weight at position
        ``j`` and ``H_j`` the cross-entropy's block ``gᵢ sᵢ (diag pᵢ − pᵢ pᵢᵀ)``; shape
        ``(N, in_features, in_features)`` (``(in_features, in_features)`` unbatched). The
        samples do not couple: the full Hessian is block-diagonal over them."""
        x = cache.input
        c, n_in = self.num_classes, self.in_features
        per = math.prod(self.out_features)
        w = cache.weight.reshape(c, per, n_in)
        if cache.classes is not None:
            blocks = self.cross_entropy.input_hessian(grad_output, cache.classes)
            blocks = blocks.reshape(-1, per, c, c)
            hessian = np.einsum("cpi,npcd,dpk->nik", w, blocks, w)
            return hessian.reshape(*x.shape[:-1], n_in, n_in)
        g = row_upstream(checked(grad_output, "grad_output"), self.reduction,
                         cache.element_shape, cache.kept, cache.total, x.dtype,
                         type(self).__name__)  # fmt: skip
        rows_x = x.reshape(-1, n_in)
        class_weight = self.cross_entropy._weights(c, x.dtype)
        hessian = np.empty((len(rows_x), n_in, n_in), x.dtype)
        for start in range(0, len(rows_x), cache.chunk):  # one (chunk, C, C) block at a time
            part = slice(start, start + cache.chunk)
            p = np.exp(dense_forward(rows_x[part], cache.weight, cache.bias)
                       - cache.log_sum_exp[part, None])  # fmt: skip
            a = target_mixture(cache.labels[part], None, class_weight, 0.0,
                               self.cross_entropy.ignore_index)[0]  # fmt: skip
            mass = g[part] * a.sum(axis=1)
            block = mass[:, None, None] * (p[:, :, None] * np.eye(c) - p[:, :, None] * p[:, None])
            hessian[part] = np.einsum("ci,ncd,dk->nik", cache.weight, block, cache.weight)
        return hessian.reshape(*x.shape[:-1], n_in, n_in)

    def _named(self, dW: np.ndarray, db: np.ndarray) -> dict[str, np.ndarray]:
        grads = {"linear.weight": dW}
        if self.has_bias:
            grads["linear.bias"] = db
        return grads


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
