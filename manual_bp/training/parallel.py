"""Parts of the mini-batch on every core: the fused step's data parallelism (issue 22, item 4).

NumPy threads only the GEMMs; a training step of the newer families is many short calls
(elementwise passes, im2col, softmax, a recurrence's 35 small products), each on one core. So
the fused trainer (:class:`~manual_bp.training.fused.FusedTrainer`) may cut the mini-batch
into :data:`PARTS` contiguous parts of rows, each running forward, seed and backward through
its OWN set of fast steps (its own buffers; the parameters shared and only read during the
pass), the parts concurrently, one per thread, BLAS on one thread inside:

* part ``i`` writes its parameter gradients into its own flat gradient buffer laid out like
  the model's parameters (part 0 into the trainer's own); after the backward pass the buffers
  are added in part order, ``g = g₀ + g₁ + …``, into the trainer's;
* the seed of each part is scaled by the WHOLE batch's ``1/n`` (``BP1``; the mean's ``n``
  is the batch's rows, not the part's), so the sum of the parts' gradients is the batch's;
* a layer that couples the samples in its forward pass (:data:`MEETING`: batch norm's batch
  statistics and running averages) is a meeting point: the parts copy their outputs (their
  slice of rows) into one whole-batch array, the layer's step runs whole on it, and the next
  segment's parts read their rows of its output; the backward pass meets there the same way.
  Its statistics are those of the WHOLE batch (``tests/test_parallel_parts.py`` compares
  them with torch's);
* a plain MLP (:data:`_MLP_LAYERS`) is not cut: its step is a few large GEMMs, which
  BLAS threads whole (and the fused MLP path is tuned for it);
* only layers known to treat every sample alone (:func:`_per_sample`) run in parts: a model
  with anything else (dropout's draws, an embedding's ``max_norm`` writing the weights in
  the forward pass, masks shaped by the batch, a loss as the cost) trains whole, as before.

Determinism (``tests/test_threads.py``): the number of parts and their rows are decided by
the batch's shape alone (:func:`part_count`), never by the thread count; every part runs on
ONE BLAS thread whatever the count; each part's arithmetic is its own; the sum runs in one
order. With one thread the parts run one after the other on the calling thread: the same
bits as with two.

The rule for :func:`part_count` (measured, ``docs/performance.md``, "Parts of the
mini-batch"): two parts when each keeps at least :data:`MIN_PART_ROWS` rows and at least
:data:`MIN_PART_ELEMENTS` elements of the input (``parallel_rows``'s own threshold for a
slice), else the batch runs whole. On one thread the parts cost their doubled Python calls
and halved GEMMs: measured in CPU time (fresh processes, alternating, under load), a
median +4 % for the Transformer block (16 × 64 × 128 inputs: 65 536 a part, exactly at the
edge) and +3 % for the BN CNN (3 × 32 × 32, batch 64), within the ±6 % spread of single
pairs, and +5–7 % for the LSTM (35 token ids a sample), which the rule keeps whole. A
convolutional model counts its input's elements times the most kernel taps of its
convolutions (:func:`widening`: im2col reads each input element that often, so that is its
work): LeNet (784 a sample × 25 taps, batch 64: 627 200 a part) is cut, costing +9–10 % of
CPU time on one thread for a main thread at 0.52–0.59 of the one-thread step on two
(``docs/performance.md``, "LeNet on two cores").
``MIN_PART_ELEMENTS = 0`` cuts every batch of ≥ 16 rows (what the tests do to exercise the
parts on small models).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._threads import (
    MIN_ELEMENTS,
    even_slices,
    one_blas_thread,
    parallel_parts,
    parallel_rows,
    run_here,
)
from manual_bp.layers.steps import shape_buffers
from manual_bp.models.targets import output_seed

__all__ = [
    "MEETING",
    "MIN_PART_ELEMENTS",
    "MIN_PART_ROWS",
    "PARTS",
    "PartPlan",
    "part_count",
    "widening",
]

#: How many parts a qualifying batch is cut into (a fixed number: never the thread count).
PARTS = 2
#: A part keeps at least this many rows (smaller GEMMs lose more than a core gains).
MIN_PART_ROWS = 8
#: A part keeps at least this many elements of the input (else the batch runs whole).
MIN_PART_ELEMENTS = MIN_ELEMENTS

#: Layers whose forward pass couples the samples: run whole between the parts' segments.
MEETING = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"})

#: Layers whose fast step treats every sample alone, with no randomness and no writes to the
#: parameters in the forward pass (the options checked in :func:`_per_sample`).
_ROW_LAYERS = frozenset(
    {
        "Reshape", "Flatten", "Dense", "ActivationLayer", "Conv1d", "Conv2d", "Conv3d",
        "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
        "GlobalAvgPool2d", "LayerNorm", "Embedding", "LSTM", "GRU", "RNN",
        "MultiheadAttention", "Residual",
    }
)  # fmt: skip


#: The layers of a plain MLP: its step is a few large GEMMs, threaded by BLAS (no parts).
_MLP_LAYERS = frozenset({"Dense", "ActivationLayer", "Flatten", "Reshape"})


def _per_sample(layer: Any) -> bool:
    """Whether ``layer``'s training step treats every sample alone (see :data:`_ROW_LAYERS`)."""
    name = type(layer).__name__
    if name not in _ROW_LAYERS:
        return False
    if name == "Residual":
        return all(_per_sample(inner) for inner in layer.layers)
    if name == "ActivationLayer":
        activation = layer.activation
        dim = getattr(activation, "dim", -1)  # softmax's axis: never the batch's
        return not hasattr(activation, "_generator") and (dim == -1 or (dim or 0) >= 1)
    if name == "Embedding":
        return layer.max_norm is None
    if name in ("LSTM", "GRU", "RNN"):
        return not layer.dropout and layer.initial_state is None
    if name == "MultiheadAttention":
        return not layer.dropout and layer.key_padding_mask is None
    return True


def _row_seed(model: Any) -> bool:
    """Whether the readable seed of ``model`` is the cost's gradient row by row, ``∇ₐC_x/n``
    (no mask, no torch-named loss, no output activation): then each part computes its rows."""
    return (
        model.ignore_index is None
        and model.cost.target_kind != "loss"
        and getattr(model.layers[-1], "activation", None) is None
    )


def part_count(n: int, sample_size: int) -> int:
    """How many parts a batch of ``n`` samples of ``sample_size`` elements is cut into (the
    shape's rule, the same on every thread count: see the module docstring; a convolutional
    model passes its input's size times :func:`widening`)."""
    if n < PARTS * MIN_PART_ROWS or (n // PARTS) * sample_size < MIN_PART_ELEMENTS:
        return 1
    return PARTS


def widening(layers: Any) -> int:
    """The most kernel taps of any convolution among ``layers`` (1: none): im2col reads every
    input element that many times, so a part's work is its input's size times this."""
    most = 1
    for layer in layers:
        if type(layer).__name__ == "Residual":
            most = max(most, widening(layer.layers))
        elif type(layer).__name__ in ("Conv1d", "Conv2d", "Conv3d"):
            most = max(most, math.prod(layer.geometry.kernel))
    return most


class _Part:
    """One part's fast steps and gradient views (part 0 shares the trainer's)."""

    def __init__(self, trainer: Any, first: bool) -> None:
        model = trainer.model
        if first:
            self.steps, self.layer_grads, self.grad = trainer.steps, trainer.layer_grads, None
        else:
            self.steps = [layer.fast_step() for layer in model.layers]
            self.grad = np.zeros_like(model.flat_parameters)
            self.layer_grads = [
                {name: model.same_place(self.grad, array) for name, array in layer.params.items()}
                for layer in model.layers
            ]
        self.forwards = [step.forward for step in self.steps]
        self.backwards = [step.backward for step in self.steps]
        self.seeds: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.rows = slice(0, 0)
        self.last: tuple[np.ndarray, np.ndarray] | None = None


class PartPlan:
    """The parts of a model's training step: built once per trainer by :meth:`for_trainer`
    (None when some layer couples the samples in a way the plan does not meet)."""

    def __init__(self, trainer: Any, meeting: list[int]) -> None:
        self.trainer = trainer
        model = trainer.model
        self.K = len(model.layers)
        # segments: ("parts", a, b) runs layers a..b-1 in parts, ("whole", k, k+1) layer k whole
        self.segments: list[tuple[str, int, int]] = []
        start = 0
        for k in meeting:
            if k > start:
                self.segments.append(("parts", start, k))
            self.segments.append(("whole", k, k + 1))
            start = k + 1
        self.segments.append(("parts", start, self.K))
        self.parts: list[_Part] = []  # made at the first batch cut into parts
        self.whole: dict[tuple, tuple[np.ndarray, ...]] = {}  # meeting arrays per shape
        self.ran = False  # the last step ran in parts (the trainer's _last is then None)
        self.widening = widening(model.layers)  # a convolution's work per input element

    @classmethod
    def for_trainer(cls, trainer: Any) -> PartPlan | None:
        model = trainer.model
        if not model.layers or (trainer.seed_kind == "generic" and not _row_seed(model)):
            return None  # the readable seed (masks, losses, coupled outputs) runs whole
        meeting = []
        for k, layer in enumerate(model.layers):
            if type(layer).__name__ in MEETING:
                meeting.append(k)
            elif not _per_sample(layer):
                return None
        if meeting and meeting[-1] == len(model.layers) - 1:
            return None  # the seed's segment must run in parts
        if all(type(layer).__name__ in _MLP_LAYERS for layer in model.layers):
            return None  # an MLP's step is its GEMMs, which BLAS threads whole
        return cls(trainer, meeting)

    def count(self, x: np.ndarray) -> int:
        """The parts this batch is cut into (1: the trainer runs it whole)."""
        n = x.shape[0]
        return part_count(n, x.size // max(n, 1) * self.widening)

    # ------------------------------------------------------------------ one step
    def forward_backward(self, xb: np.ndarray, yb: np.ndarray, factor: float) -> None:
        """The trainer's ``_forward_backward`` in parts: gradients (times ``factor``) in the
        trainer's flat buffer, the sum of the parts' in part order."""
        trainer = self.trainer
        if not self.parts:
            self.parts = [_Part(trainer, i == 0) for i in range(PARTS)]
        parts, n = self.parts, xb.shape[0]
        for part, rows in zip(parts, even_slices(n, PARTS), strict=True):
            part.rows = rows
        self.ran, trainer._last = True, None
        lowest, segments = trainer.lowest, self.segments
        ins: list[Any] = [xb]  # the whole-batch array each segment reads (None: the parts')
        with one_blas_thread():  # every product on one BLAS thread, on any thread count
            for kind, a, b in segments[:-1]:  # forward up to the seed's segment
                if kind == "whole":
                    ins.append(trainer.steps[a].forward(ins[-1]))
                else:
                    ins.append(self._forward_parts(ins[-1], a, b))
            # the last segment: forward, seed, backward down to its start, in each part
            a = segments[-1][1]
            dx = self._meeting_buffer(("dx", a), ins[-1]) if a > lowest else None
            source = ins[-1]

            def last(i: int) -> None:
                part = parts[i]
                out = source[part.rows]
                for forward in part.forwards[a:]:
                    out = forward(out)
                part.last = (out, yb[part.rows])
                g, start = self._seed(part, out, yb[part.rows], factor, n)
                self._backward_part(part, g, start, a, dx)

            parallel_parts(last, PARTS)
            g_whole = dx
            for index in range(len(segments) - 2, -1, -1):
                kind, a, b = segments[index]
                if g_whole is None or b - 1 < lowest:
                    break
                if kind == "whole":
                    g_whole = trainer.steps[a].backward(g_whole, trainer.layer_grads[a], a > lowest)
                    continue
                dx = self._meeting_buffer(("dx", a), ins[index]) if a > lowest else None
                upstream = g_whole

                def down(i: int, a: int = a, b: int = b, dx: Any = dx, up: Any = upstream) -> None:
                    part = parts[i]
                    self._backward_part(part, up[part.rows], b, a, dx)

                parallel_parts(down, PARTS)
                g_whole = dx
        self._sum_gradients()

    def _forward_parts(self, source: np.ndarray, a: int, b: int) -> np.ndarray:
        """Layers ``a..b-1`` in parts on ``source``'s rows; their outputs met in one array
        (each part copies its rows in; the array's shape is learnt from part 0 once)."""
        parts, key = self.parts, ("out", b, source.shape)
        met = self.whole.get(key)

        def work(i: int) -> None:
            part = parts[i]
            out = source[part.rows]
            for forward in part.forwards[a:b]:
                out = forward(out)
            if met is not None:
                met[part.rows] = out
            else:
                first.append(out)

        if met is None:  # the first step of this shape: part 0 alone, then the others
            first: list[np.ndarray] = []
            with run_here():
                work(0)
            met = np.empty((source.shape[0], *first[0].shape[1:]), first[0].dtype)
            met[parts[0].rows] = first[0]
            self.whole[key] = met
            with run_here():
                for i in range(1, PARTS):
                    work(i)
            return met
        parallel_parts(work, PARTS)
        return met

    def _meeting_buffer(self, key: tuple, like: np.ndarray, n: int | None = None) -> np.ndarray:
        shape = like.shape if n is None else (n, *like.shape[1:])
        (buffer,) = shape_buffers(self.whole, (*key, shape), lambda: (np.empty(shape, like.dtype),))
        return buffer

    def _backward_part(
        self, part: _Part, g: np.ndarray, start: int, a: int, dx: np.ndarray | None
    ) -> None:
        """Part ``part``'s backward pass from layer ``start − 1`` down to layer ``a`` (or the
        lowest trainable layer); ``∂C/∂x`` at layer ``a``'s input into ``dx``'s rows."""
        lowest, backwards, grads = self.trainer.lowest, part.backwards, part.layer_grads
        for k in range(start - 1, max(a, lowest) - 1, -1):
            g = backwards[k](g, grads[k], k > lowest)
        if dx is not None:
            dx[part.rows] = g

    def _seed(
        self, part: _Part, out: np.ndarray, y: np.ndarray, factor: float, n: int
    ) -> tuple[np.ndarray, int]:
        """The trainer's seed for one part's rows, scaled by the WHOLE batch's ``1/n``."""
        trainer = self.trainer
        width = out.shape[-1]
        n_rows = n * (out.size // max(out.shape[0], 1) // width)  # the batch's rows of out
        (d,) = shape_buffers(part.seeds, out.shape, lambda: (np.empty_like(out),))
        if trainer.seed_kind == "generic":  # a model ending without activation: ∇ₐC_x / n
            trainer.cost.grad_into(
                out.reshape(-1, width), y.reshape(-1, width), d.reshape(-1, width)
            )
            d /= n_rows  # the readable seed's (∇ₐC_x / n) · η, into the part's buffer
            if factor != 1.0:
                d *= factor
            return d, self.K
        scale = factor / n_rows
        if trainer.seed_kind == "minus-target":  # BP1 folded: δᴸ = a − y, at zᴸ
            np.subtract(out, y, out=d)
            d *= scale
            return d, self.K - 1
        trainer.cost.grad_into(out, y, d)  # ∇ₐC_x; the output activation's VJP follows
        d *= scale
        return d, self.K

    def _sum_gradients(self) -> None:
        """``g ← g₀ + g₁ + …`` in part order (elementwise: any row split gives these bits)."""
        total = self.trainer.grad
        others = [part.grad for part in self.parts[1:]]

        def work(rows: slice) -> None:
            for other in others:
                total[rows] += other[rows]

        parallel_rows(work, total.size)

    # ------------------------------------------------------------------ the epoch's cost
    def last_cost(self) -> float | None:
        """The cost of the last mini-batch, from the parts' outputs put back together."""
        if not self.parts or any(part.last is None for part in self.parts):
            return None
        model, trainer = self.trainer.model, self.trainer
        out = np.concatenate([part.last[0] for part in self.parts])
        y = np.concatenate([part.last[1] for part in self.parts])
        logits: dict[str, Any] = {}
        activation = getattr(model.layers[-1], "activation", None)
        if activation is not None:
            z = np.concatenate([part.steps[-1].z for part in self.parts])
            logits = {"z": z, "activation": activation}
            if not np.isfinite(z).all():
                return float("nan")
        if not np.isfinite(out).all():
            return float("nan")
        with np.errstate(over="ignore", under="ignore"):
            return output_seed(trainer.cost, out, y, model.ignore_index, **logits).cost
