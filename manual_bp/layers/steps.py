"""The fast form of a layer for training: ``forward(x) -> out`` and ``backward(dout, grads,
need_dx) -> dx`` writing the parameter gradients into the trainer's buffers.

A layer's :meth:`~manual_bp.layers.base.Layer.fast_step` returns one; the fused trainer
(:mod:`manual_bp.training.fused`) calls them in order, one mini-batch after another. The
contract:

* ``forward`` may return a buffer it owns (reused at the next step of the same shape);
* ``backward`` writes ``∂C/∂θ`` (scaled as the seed was scaled) into ``grads[name]``, views
  of the trainer's flat gradient buffer shaped like the parameters; it may overwrite the
  ``dout`` it receives (nothing reads it afterwards) and returns ``∂C/∂x``, or ``None`` when
  ``need_dx`` is false (the lowest layer with parameters).

:class:`GenericStep` is the fallback for every layer: its readable ``forward``/``backward``
with the gradients copied into the buffers. A layer whose training pays for a fused form
returns its own step class, written beside its readable form and checked against it and
against torch (``tests/test_fast_*.py``):

=====================  ==========================================  ==========================
layer                  step (module)                               what it fuses
=====================  ==========================================  ==========================
Dense                  ``DenseStep`` (``dense``)                   GEMMs into buffers, BP3 as
                                                                   one GEMV; small products
                                                                   on one BLAS thread
activation layer       ``ActivationStep`` (``activation``)         σ and its VJP in place,
                                                                   rows over threads
Conv1d, Conv2d,        ``ConvStep`` (``convolution_fast``)         im2col/col2im panels on
Conv3d                                                             any number of axes, no
                                                                   transposed copies; strided
                                                                   ∂C/∂x by stride phases
ConvTranspose1d/2d/3d  ``ConvTransposeStep``                       ConvStep run backwards on
                       (``convolution_transpose_steps``)           any number of axes; x on
                                                                   K's larger grid when
                                                                   output_padding ≥ stride
FractionalMaxPool2d/3d ``FractionalMaxPoolStep``                   every plane's windows at
                       (``pooling_steps``)                         once: the layer's own
                                                                   draw, gathered taps, the
                                                                   readable bincount scatter
BatchNorm              ``BatchNormStep`` (``normalisation_fast``)  statistics, scale and
                                                                   shift in one pass each
LayerNorm              ``LayerNormStep`` (``layernorm_fast``)      one row split a direction
InstanceNorm, RMSNorm, ``InstanceNormStep``, ``RMSNormStep``,      group norm with a group per
LocalResponseNorm      ``LRNStep`` (``normalisation_steps``)       channel; vecdot per row;
                                                                   shifted-slice window sums
PReLU, GLU, RReLU      ``PReLUStep``, ``GLUStep``, ``RReLUStep``   the readable expressions,
                       (``activation_steps``)                      no masked copies
Adaptive pools, LPPool ``AdaptivePoolStep``, ``LPPoolStep``        the tiled plain pool
                       (``pooling_steps``)
Bilinear               ``BilinearStep`` (``bilinear_steps``)       the quadratic form as GEMMs
MaxPool2d, AvgPool2d,  ``MaxPoolStep``, ``AvgPoolStep``,           tiling windows by reshape
GlobalAvgPool2d        ``GlobalAvgPoolStep`` (``pooling_fast``)
MultiheadAttention     ``AttentionStep`` (``attention_fast``)      one q/k/v GEMM, batched
                                                                   heads, softmax VJP in place
Residual               ``ResidualStep`` (``containers_fast``)      the branch's own steps
LSTM, GRU, RNN         ``LSTMStep`` (``recurrent_fast``),          one input-projection GEMM,
                       ``GRUStep``, ``RNNStep``                    time-major gates in place;
                       (``recurrent_steps``)
Embedding              ``EmbeddingStep`` (``embedding``)           gather; sorted reduceat
=====================  ==========================================  ==========================

Work that BLAS does not thread is split over the mini-batch's rows with
:func:`manual_bp._threads.parallel_rows` (the same bits on any thread count).

The steps take unchecked arrays (a check per step would cost a tenth of a small step): they
are no public entry. ``layer.fast_step()`` is the trainer's constructor, no step class is
exported, and the trainer's own entries check their data once (issue 24):
:meth:`FusedTrainer.gradients <manual_bp.training.fused.FusedTrainer.gradients>` through the
model's ``prepare_inputs``/``prepare_targets``; ``step`` and ``run_epoch`` take the arrays
:func:`~manual_bp.training.train` prepared, and their entry check is
:func:`check_trainer_data` (x, y and the row indices; O(1) in the data but for the indices'
range, once per call: ``run_epoch`` checks its batches together, then steps unchecked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BufferedStep",
    "GenericStep",
    "check_row_indices",
    "check_trainer_data",
    "shape_buffers",
]


class GenericStep:
    """A layer's readable form as a fast step (no buffers of its own)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self.cache = self.layer.forward(x)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if need_dx:
            dx, computed = self.layer.backward(dout, self.cache)
        else:
            dx, computed = None, self.layer.parameter_gradients(dout, self.cache)
        for name, view in grads.items():
            view[...] = computed[name]
        return dx


def shape_buffers(
    store: dict[tuple, tuple[np.ndarray, ...]], key: tuple, make: Any
) -> tuple[np.ndarray, ...]:
    """The buffers for ``key`` (a batch shape), made once by ``make()`` and kept: a training
    run alternates between at most two mini-batch sizes (the last one may be smaller)."""
    found = store.get(key)
    if found is None:
        found = store[key] = make()
    return found


class BufferedStep:
    """The frame of a fast step that works in buffers made once per batch shape: the layer,
    the buffers (``shape → arrays``, :func:`shape_buffers`) and the last forward's input
    ``x``, whose shape selects the backward's buffers."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.x: np.ndarray | None = None

    def _buffers_for(self, x: np.ndarray, make: Any) -> tuple[np.ndarray, ...]:
        """The forward's buffers for ``x``'s shape (``make()`` the first time); keeps ``x``."""
        self.x = x
        return shape_buffers(self._buffers, x.shape, make)

    def _saved(self) -> tuple[np.ndarray, ...]:
        """The backward's buffers: those of the last forward's shape."""
        return self._buffers[self.x.shape]


def check_row_indices(index: Any, n_rows: int, name: str = "index") -> None:
    """Raise unless ``index`` is a 1-D integer array of row numbers in ``[0, n_rows)``: a
    gather with ``mode="clip"`` would silently take the last row for an index past it."""
    if not isinstance(index, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of row numbers, got {type(index).__name__}")
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise TypeError(
            f"{name} must be a 1-D array of integer row numbers, got dtype {index.dtype} "
            f"and shape {index.shape}"
        )
    if index.size and (int(index.min()) < 0 or int(index.max()) >= n_rows):
        raise ValueError(
            f"{name} holds row numbers from {int(index.min())} to {int(index.max())}; the "
            f"data has {n_rows} rows (0 to {n_rows - 1})"
        )


def _check_prepared_rows(model: Any, x: np.ndarray, y: Any) -> None:
    """``y`` one target row of the output's shape per sample, of the model's dtype."""
    out_shape = tuple(getattr(model, "output_shape", None) or ())
    if not isinstance(y, np.ndarray) or y.dtype != model.dtype:
        got = f"dtype {y.dtype}" if isinstance(y, np.ndarray) else type(y).__name__
        raise TypeError(
            f"y must be prepared targets of dtype {np.dtype(model.dtype).name} "
            f"(model.prepare_targets(y, len(x))), got {got}"
        )
    if y.shape != (x.shape[0], *out_shape):
        raise ValueError(
            f"y has shape {y.shape}; expected {(x.shape[0], *out_shape)}, one target row per "
            f"sample of x (model.prepare_targets(y, len(x)) one-hot encodes labels)"
        )


def check_trainer_data(
    model: Any, x: Any, y: Any, index: Any = None, batches: Sequence[Any] | None = None
) -> None:
    """What a trainer's step takes, checked once before its steps: ``x`` of the model's dtype
    and per-sample shape (the model's own check), ``y`` prepared targets (the model's dtype,
    one row of the output's shape per sample: labels are one-hot encoded by
    ``model.prepare_targets`` first; a torch-named loss as the cost checks its own form),
    ``index`` (``step``'s) None or 1-D integer row numbers of ``x``, ``batches``
    (``run_epoch``'s) a sequence of such arrays."""
    model.check_batch_array(x, "x")
    own = getattr(getattr(model, "cost", None), "check_prepared", None)
    if own is not None:  # a torch-named loss as the cost: its own target form (CTC's packing)
        own(y, x.shape[0], "y")
    else:
        _check_prepared_rows(model, x, y)
    if index is not None:
        check_row_indices(index, x.shape[0])
    if batches is None:
        return
    if isinstance(batches, (str, bytes, np.ndarray)) or not isinstance(batches, Sequence):
        raise TypeError(f"batches must be a list of index arrays, got {type(batches).__name__}")
    for i, each in enumerate(batches):  # the kinds per batch, the range once for all
        check_row_indices(each[:0] if isinstance(each, np.ndarray) else each, 1, f"batches[{i}]")
    if len(batches):
        check_row_indices(np.concatenate(batches), x.shape[0], "batches")
