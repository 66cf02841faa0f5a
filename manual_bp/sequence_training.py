"""Training on sequences: truncated backpropagation through time and gradient-norm clipping.

* :func:`clip_grad_norm` — ``torch.nn.utils.clip_grad_norm_`` (equation ``CLIP.norm``):
  the total norm over ALL gradients, ``‖g‖ = (Σ_i ‖g_i‖_p^p)^{1/p}``, every gradient scaled
  in place by ``min(1, max_norm / (‖g‖ + 1e-6))``; returns ``‖g‖`` before clipping.
* :func:`truncated_bptt` — equation ``TBPTT.chunk``: the sequence is cut into chunks of
  ``chunk_length`` steps; each recurrent layer starts a chunk from the final state of
  the previous one (the state is carried forward as a value), but no gradient crosses
  a chunk boundary (torch: ``h = h.detach()`` between chunks). Each chunk's cost is the
  mean over its own positions (those not equal to the model's ``ignore_index``,
  ``SEQ.ignore_index``); a chunk whose positions are all ignored (the padded tail of short
  sequences) still carries the state forward but has no cost: it yields ``positions = 0``,
  ``cost = nan`` and zero gradients, and :func:`train_sequences` takes no step on it.
* :func:`train_sequences` — mini-batch training with truncated BPTT and clipping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from manual_bp.layers.recurrent import RecurrentLayer
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import Optimizer

__all__ = ["ChunkResult", "clip_grad_norm", "train_sequences", "truncated_bptt"]


def clip_grad_norm(
    grads: Sequence[np.ndarray] | dict[str, np.ndarray],
    max_norm: float,
    norm_type: float = 2.0,
) -> float:
    """Scale ``grads`` in place so that their total norm is at most ``max_norm`` (``CLIP.norm``).

    Parameters
    ----------
    grads : list or dict of arrays
        Every gradient; the norm is taken over all of them together.
    max_norm : float > 0
    norm_type : float ≥ 1 or inf

    Returns
    -------
    float
        The total norm before clipping (what ``clip_grad_norm_`` returns).
    """
    arrays = list(grads.values()) if isinstance(grads, dict) else list(grads)
    if not np.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    if not (norm_type == np.inf or norm_type >= 1):
        raise ValueError(f"norm_type must be ≥ 1 or inf, got {norm_type!r}")
    if not arrays:
        return 0.0
    if norm_type == np.inf:
        total = max(float(np.abs(g).max(initial=0.0)) for g in arrays)
    else:
        # torch: the norm of the vector of per-tensor norms (same value as the flat norm).
        norms = np.array([np.linalg.norm(g.reshape(-1), ord=norm_type) for g in arrays])
        total = float(np.linalg.norm(norms, ord=norm_type))
    if not np.isfinite(total):
        raise ValueError(
            f"the total gradient norm is {total}; refusing to clip non-finite gradients"
        )
    coefficient = min(1.0, max_norm / (total + 1e-6))
    for g in arrays:
        g *= coefficient
    return total


@dataclass
class ChunkResult:
    """One chunk of truncated BPTT: its time span, mean cost and gradients (buffer order).

    ``positions`` is the number of positions the mean ran over (0: all ignored).
    """

    start: int
    stop: int
    cost: float
    grads: list[np.ndarray]
    positions: int = 0


def _recurrent_layers(model: Sequential) -> list[RecurrentLayer]:
    """The top-level recurrent layers; each is batch-major (the chunks are sliced on axis 1):
    ``Sequential`` refuses a time-major layer when it is built."""
    return [layer for layer in model.layers if isinstance(layer, RecurrentLayer)]


@contextmanager
def _chunk_shapes(model: Sequential, length: int) -> Iterator[None]:
    """Let the model take sequences of ``length`` steps (its shapes name the full length)."""
    saved = model.input_shape, model.output_shape
    try:
        if model.input_shape is not None:
            model.input_shape = (length, *model.input_shape[1:])
        if model.output_shape is not None:
            model.output_shape = (length, *model.output_shape[1:])
        yield
    finally:
        model.input_shape, model.output_shape = saved


@dataclass
class _ChunkPass:
    cost: float
    grads: list[np.ndarray]
    positions: int
    caches: list


def _chunk(model: Sequential, x: np.ndarray, y: np.ndarray) -> _ChunkPass:
    """One chunk's backprop, or only its forward pass when every position is ignored."""
    x = model.prepare_inputs(x)
    targets = model.prepare_targets(y, x.shape[0])
    counted = targets.reshape(-1, targets.shape[-1]).any(axis=1)
    positions = int(counted.sum()) if model.ignore_index is not None else counted.size
    if positions == 0:
        _, caches = model.forward(x)
        grads = [np.zeros_like(array) for array in model.parameter_arrays()]
        return _ChunkPass(float("nan"), grads, 0, caches)
    result = model.backprop(x, targets)
    grads = [result.params[name] for name, _ in model.named_parameters()]
    return _ChunkPass(result.cost, grads, positions, result.caches)


def truncated_bptt(
    model: Sequential, x: np.ndarray, y: np.ndarray, chunk_length: int
) -> Iterator[ChunkResult]:
    """Gradients chunk by chunk with the state carried forward (``TBPTT.chunk``).

    Yields a :class:`ChunkResult` per chunk, in time order, *before* computing the next
    one, so a caller may update the parameters between chunks (as the torch loop
    ``loss.backward(); opt.step(); h = h.detach()`` does). The recurrent layers must be
    top-level layers of ``model``; their ``initial_state`` is restored afterwards.

    Parameters
    ----------
    model : Sequential
    x : (N, T, ...) inputs; y : (N, T) integer labels or (N, T, C) targets
    chunk_length : int ≥ 1 (the last chunk may be shorter)
    """
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, (int, np.integer)):
        raise TypeError(f"chunk_length must be an integer, got {chunk_length!r}")
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be ≥ 1, got {chunk_length}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.shape[:2] != x.shape[:2]:
        raise ValueError(f"x {x.shape} and y {y.shape} must share (batch, time) axes")
    layers = _recurrent_layers(model)
    if not layers:
        raise ValueError("truncated_bptt needs a model with a top-level recurrent layer")
    saved = [layer.initial_state for layer in layers]
    try:
        for layer in layers:
            layer.initial_state = None
        for start in range(0, x.shape[1], chunk_length):
            stop = min(start + chunk_length, x.shape[1])
            with _chunk_shapes(model, stop - start):
                chunk = _chunk(model, x[:, start:stop], y[:, start:stop])
            for layer in layers:
                cache = chunk.caches[model.layers.index(layer)]
                # Carried as a value: the next chunk's backward never reaches this one.
                layer.initial_state = tuple(state.copy() for state in cache.final)
            yield ChunkResult(start, stop, chunk.cost, chunk.grads, chunk.positions)
    finally:
        for layer, state in zip(layers, saved, strict=True):
            layer.initial_state = state


def train_sequences(
    model: Sequential,
    optimizer: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    chunk_length: int | None = None,
    max_norm: float | None = None,
    seed: int | np.random.Generator | None = None,
) -> list[float]:
    """Mini-batch training with truncated BPTT (``chunk_length``; None: whole sequences)
    and optional gradient clipping before every step. Returns the mean cost per epoch
    (over the chunks that had positions to count)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x), np.asarray(y)
    chunk = chunk_length or x.shape[1]
    params = model.parameter_arrays()
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        costs = []
        for begin in range(0, len(x), batch_size):
            rows = order[begin : begin + batch_size]
            for result in truncated_bptt(model, x[rows], y[rows], chunk):
                if not result.positions:
                    continue  # every position ignored: no cost, no step
                if max_norm is not None:
                    clip_grad_norm(result.grads, max_norm)
                optimizer.step(params, result.grads)
                costs.append(result.cost)
        if not costs:
            raise ValueError(
                f"no position of the data is counted: every label equals ignore_index="
                f"{model.ignore_index}"
            )
        history.append(float(np.mean(costs)))
    return history
