"""A torch-named :class:`~manual_bp.losses.Loss` as a model's cost (``docs/ctc.md``, "Training
a CTC model from the command line").

A :class:`~manual_bp.models.sequential.Sequential` built with ``cost=<a Loss>`` (an instance,
``{"loss": config}``, ``"loss:<name>"``, or a loss name that is not a cost name) means:

    value  = loss.forward(output, *targets)[0]          (torch's reduction, a number)
    seed   = loss.backward(1, cache)[0]                 (∂value/∂output, the backward's start)

— torch's ``loss = criterion(model(x), …); loss.backward()``. The library's own costs keep
their convention (the mean of per-sample costs); a name in both registries is the cost's,
and ``"loss:<name>"`` names the loss unambiguously.

Targets that are several arrays (CTC's ``targets, input_lengths, target_lengths``) travel
through mini-batching as **one integer array per sequence** (:func:`pack_targets`)::

    packed[n] = (input_lengthₙ, target_lengthₙ, labelₙ₁, …, labelₙₛ)      shape (N, 2 + S)

so that ``y[index]`` slices every part at once. A loss with parameters
(``LinearCrossEntropyLoss``'s ``linear.weight``) is refused: a model trains and saves its
layers' parameters only, so its cost must have none (the same model is a ``Linear`` layer
followed by ``CrossEntropyLoss``). A loss whose input is time-major
(``log_probs`` ``(T, N, C)``, torch's CTC) gets the model's batch-major output transposed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from manual_bp.costs import COSTS, Cost, get_cost

if TYPE_CHECKING:
    from manual_bp.losses import Loss

__all__ = ["LossCost", "pack_targets", "resolve_cost"]

#: Per-sequence lengths carried in the first columns of the packed targets, in this order.
LENGTHS = ("input_lengths", "target_lengths")
#: A loss's first argument by these names is time-major ``(T, N, ...)`` (torch's CTC).
TIME_MAJOR = ("log_probs",)
PREFIX = "loss:"


def resolve_cost(spec: Any) -> Cost | LossCost:
    """A cost or a loss-as-cost from a name, instance, class or config (module docstring)."""
    # imported here: `import manual_bp` does not load the losses until a model names one
    from manual_bp.losses import LOSSES, Loss, get_loss

    if isinstance(spec, LossCost):
        return spec
    if isinstance(spec, Loss) or (isinstance(spec, type) and issubclass(spec, Loss)):
        return LossCost(get_loss(spec))
    if isinstance(spec, dict) and "loss" in spec:
        return LossCost(get_loss(spec["loss"]))
    if isinstance(spec, str):
        name = spec.strip()
        if name.lower().startswith(PREFIX):
            return LossCost(get_loss(name[len(PREFIX) :]))
        if name not in COSTS and name in LOSSES:
            return LossCost(get_loss(name))
    return get_cost(spec)


def pack_targets(
    targets: Any, target_lengths: Any, input_lengths: Any, name: str = "y"
) -> np.ndarray:
    """``(N, 2 + S)`` int64: each row ``(input_length, target_length, padded labels…)``."""
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.dtype.kind not in "iu":
        raise ValueError(f"{name}: targets must be an (N, S) integer array of padded labels, "
                         f"got {targets.dtype} of shape {targets.shape}")  # fmt: skip
    columns = [np.broadcast_to(np.asarray(v), (targets.shape[0],)) for v in
               (input_lengths, target_lengths)]  # fmt: skip
    for column, what in zip(columns, LENGTHS, strict=True):
        if column.dtype.kind not in "iu":
            raise ValueError(f"{name}: {what} must be integers, got dtype {column.dtype}")
    return np.column_stack([*columns, targets]).astype(np.int64)


class LossCost:
    """A :class:`~manual_bp.losses.Loss` in a model's cost slot (module docstring).

    It has the parts of the :class:`~manual_bp.costs.Cost` protocol the model's paths read
    (no folds, no shortcut: the seed is the loss's own backward) and :meth:`seed`, which
    :func:`~manual_bp.models.targets.output_seed` calls instead of the per-row mean.
    """

    folds: dict = {}
    shortcuts: dict = {}
    target_kind = "loss"

    def __init__(self, loss: Loss) -> None:
        names = [name for name, _ in loss.named_parameters()]
        if names:  # a model trains and saves its layers' parameters, not a cost's
            raise ValueError(
                f"cost: {type(loss).__name__} has parameters ({', '.join(names)}) that a "
                "model would neither train nor save; end the model with a Linear layer and "
                "use CrossEntropyLoss"
            )
        if loss.reduction == "none":
            raise ValueError(
                f"cost: a model's cost is a number; {type(loss).__name__} with "
                "reduction='none' gives one per element: use 'mean' or 'sum'"
            )
        self.loss = loss
        self.name = f"{PREFIX}{loss.name}"
        self.time_major = loss.arguments[0] in TIME_MAJOR
        self.lengths = [a for a in loss.arguments[1:] if a in LENGTHS]

    # -- the Cost protocol's parts a model reads
    def fold(self, activation: Any) -> None:
        return None

    def shortcut_applies(self, activation: Any) -> bool:
        return False

    def check_output_activation(self, activation: Any) -> None:
        return None

    def check_targets(self, y: Any) -> None:
        return None  # the loss checks its targets in forward

    def get_config(self) -> dict[str, Any]:
        return {"loss": self.loss.get_config()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossCost) and other.loss == self.loss

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LossCost({self.loss!r})"

    # -- targets
    def check_prepared(self, y: Any, batch: int, name: str = "y") -> None:
        """``y`` as :meth:`prepare_targets` returns it for a batch of ``batch`` (what a
        trainer's step takes): an array with one row per sample."""
        if not isinstance(y, np.ndarray) or y.shape[:1] != (batch,):
            got = f"shape {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
            raise TypeError(f"{name} must be prepared targets, one row per sample of x "
                            f"(model.prepare_targets(y, len(x))), got {got}")  # fmt: skip
        if self.lengths and y.dtype.kind not in "iu":
            raise TypeError(f"{name} must be the packed integer targets of {self.loss.name} "
                            f"(model.prepare_targets(y, len(x))), got dtype {y.dtype}")  # fmt: skip

    def prepare_targets(
        self, y: Any, batch: int, out_shape: tuple[int, ...] | None, dtype: Any, name: str = "y"
    ) -> np.ndarray:
        """Targets as the mini-batches slice them: the packed array for a loss with lengths
        (from the tuple ``(targets, target_lengths)`` — every input length the output's
        ``T`` — or ``(targets, input_lengths, target_lengths)`` in the loss's order, or
        already packed), else the one target array as given."""
        if not self.lengths:
            y = np.asarray(y)
            if y.shape[:1] != (batch,):
                raise ValueError(f"{name} has shape {y.shape}; expected {batch} targets")
            return y if y.dtype.kind in "iu" else y.astype(dtype, copy=False)
        if isinstance(y, (tuple, list)):
            if len(y) == 2:
                if out_shape is None:
                    raise ValueError(f"{name}: input lengths need a known output shape")
                targets, target_lengths = y
                packed = pack_targets(targets, target_lengths, out_shape[0], name)
            elif len(y) == 3:
                parts = dict(zip(self.loss.arguments[1:], y, strict=True))
                packed = pack_targets(parts["targets"], parts["target_lengths"],
                                      parts["input_lengths"], name)  # fmt: skip
            else:
                raise ValueError(
                    f"{name}: give (targets, target_lengths) or (targets, input_lengths, "
                    f"target_lengths), got {len(y)} arrays"
                )
        else:
            packed = np.asarray(y)
            if packed.ndim != 2 or packed.dtype.kind not in "iu" or packed.shape[1] < 2:
                raise ValueError(f"{name}: {self.loss.name} targets are a tuple (targets, "
                                 "target_lengths) or the packed (N, 2 + S) integer array, got "
                                 f"{packed.dtype} of shape {packed.shape}")  # fmt: skip
        if packed.shape[0] != batch:
            raise ValueError(f"{name} has {packed.shape[0]} target sequences for a batch of "
                             f"{batch} inputs")  # fmt: skip
        s_len = packed.shape[1] - 2
        bad = (packed[:, 1] < 0) | (packed[:, 1] > s_len) | (packed[:, 0] < 0)
        if out_shape is not None:
            bad |= packed[:, 0] > out_shape[0]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: sequence {i} has input length {packed[i, 0]} and target "
                             f"length {packed[i, 1]}; valid: input ≤ the output's length, "
                             f"target ≤ {s_len}")  # fmt: skip
        return packed

    def _arguments(self, out: np.ndarray, y: np.ndarray) -> list[Any]:
        first = np.swapaxes(out, 0, 1) if self.time_major else out
        if not self.lengths:
            return [first, y]
        parts = {"input_lengths": y[:, 0], "target_lengths": y[:, 1], "targets": y[:, 2:]}
        return [first, *(parts[a] for a in self.loss.arguments[1:])]

    # -- value and seed
    def seed(self, out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """``(value, ∂value/∂out)``: the loss's forward, and its backward seeded with 1."""
        value, cache = self.loss.forward(*self._arguments(out, y))
        grad = self.loss.backward(np.ones((), out.dtype), cache)[0]
        if self.time_major:
            grad = np.swapaxes(grad, 0, 1)
        return float(value), np.ascontiguousarray(grad, dtype=out.dtype)

    def value(self, out: np.ndarray, y: np.ndarray) -> float:
        return float(self.loss.forward(*self._arguments(out, y))[0])

    def accuracy(self, out: np.ndarray, y: np.ndarray) -> float:
        """With lengths: the fraction of sequences whose greedy decoding (the best class per
        frame, repeats merged, blanks dropped) is the target exactly; else the argmax's."""
        if not self.lengths:
            return float(np.mean(np.argmax(out, axis=-1) == y))
        blank = getattr(self.loss, "blank", 0)
        hits = [
            np.array_equal(greedy_decode(o[: row[0]], blank), row[2 : 2 + row[1]])
            for o, row in zip(out, y, strict=True)
        ]
        return float(np.mean(hits))


def greedy_decode(frames: np.ndarray, blank: int = 0) -> np.ndarray:
    """Best path of ``(T, C)`` frame scores: the argmax per frame, repeats merged, blanks
    dropped (Graves et al. 2006, best path decoding)."""
    best = np.argmax(frames, axis=-1)
    keep = np.ones(best.shape, bool)
    keep[1:] = best[1:] != best[:-1]
    return best[keep & (best != blank)]
