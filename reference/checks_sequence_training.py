"""Checks of sequence training: ``TBPTT.chunk`` and ``CLIP.norm`` (``docs/sequences.md``).

Truncated BPTT is compared chunk by chunk with torch's loop (``loss.backward()`` then
``h = h.detach()``) on random stacks with one or two recurrent layers, also with padded
labels (``ignore_index``); clipping with ``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.recurrent import RecurrentLayer
from manual_bp.models.sequential import Sequential

# A module object, not names: check modules are loaded by reference.checks in a loop and
# must not need each other fully initialised at import time.
from reference import checks_sequences as seq
from reference.checks import register_check
from reference.compare import Comparison
from reference.sequence_tools import with_sensitivity, with_stack_scales

__all__ = ["tbptt_comparisons", "tbptt_model", "torch_tbptt"]


# ---------------------------------------------------------------------------- TBPTT, clipping
def tbptt_model(
    rng: np.random.Generator, length: int, ignore_index: int | None = None
) -> Sequential:
    """Dense → tanh → recurrent (1–2 of them) → dense → softmax on (T, D) sequences."""
    width, n_classes = int(rng.integers(1, 5)), int(rng.integers(2, 5))
    layers, shape = [Dense(width, width), ActivationLayer("tanh")], (length, width)
    for _ in range(int(rng.integers(1, 3))):
        new, shape = seq._recurrent_block(seq.KINDS[int(rng.integers(len(seq.KINDS)))])(rng, shape)
        layers += new
    layers += [Dense(shape[-1], n_classes), ActivationLayer("softmax")]
    return Sequential(
        layers, "log-likelihood", input_shape=(length, width), seed=int(rng.integers(2**31)),
        ignore_index=ignore_index,
    )  # fmt: skip


def torch_tbptt(model: Sequential, x: np.ndarray, y: np.ndarray, chunk: int) -> list[list]:
    """torch's truncated BPTT: per chunk, loss.backward() then ``h = h.detach()``."""
    from reference.components import torch_cost
    from reference.stack import torch_layer_forward

    params = {name: torch.tensor(a, requires_grad=True) for name, a in model.named_parameters()}
    states: dict[int, object] = {}
    out = []
    for start in range(0, x.shape[1], chunk):
        h = torch.tensor(x[:, start : start + chunk])
        for index, layer in enumerate(model.layers):
            own = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{index}.")}
            if isinstance(layer, RecurrentLayer):
                h, final = seq.torch_recurrent(layer, own, h, states.get(index))
                detached = tuple(f.detach() for f in final) if isinstance(final, tuple) else None
                states[index] = detached if detached is not None else final.detach()
            else:
                h = torch_layer_forward(layer, own, {}, h, None)
        labels = y[:, start : start + chunk].reshape(-1)
        rows = h.reshape(-1, h.shape[-1])
        if model.ignore_index is not None:  # torch's own ignore_index (nan if all ignored)
            labels_t = torch.tensor(labels)
            loss = F.nll_loss(torch.log(rows), labels_t, ignore_index=model.ignore_index)
        else:
            loss = torch_cost(model.cost)(rows, torch.tensor(np.eye(h.shape[-1])[labels]))
        for p in params.values():
            p.grad = None
        loss.backward()
        out.append([float(loss.detach())] + [p.grad.numpy().copy() for p in params.values()])
    return out


@register_check("sequences-tbptt")
def tbptt_check(rng: np.random.Generator) -> list[Comparison]:
    """TBPTT.chunk: per-chunk costs and gradients vs torch with detach() at the boundaries."""
    length, chunk = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    model = tbptt_model(rng, length)
    batch = int(rng.integers(1, 4))
    x = rng.standard_normal((batch, *model.input_shape))
    y = rng.integers(0, model.output_shape[-1], size=(batch, length))
    return tbptt_comparisons(model, x, y, chunk)


def tbptt_comparisons(model: Sequential, x: np.ndarray, y: np.ndarray, chunk: int) -> list:
    """Our truncated BPTT chunk by chunk against :func:`torch_tbptt` (``TBPTT.chunk``).

    A chunk whose positions are all ``ignore_index`` has no cost (torch: nan); ours yields
    ``positions = 0`` and zero gradients, which is checked instead.
    """
    from manual_bp.sequence_training import _chunk_shapes, truncated_bptt

    names = [name for name, _ in model.named_parameters()]
    layers = [layer for layer in model.layers if isinstance(layer, RecurrentLayer)]
    ours, starts = [], []  # each chunk's result and the initial states it started from
    previous = [None] * len(layers)
    for result in truncated_bptt(model, x, y, chunk):
        ours.append(result)
        starts.append(previous)
        previous = [layer.initial_state for layer in layers]
    theirs = torch_tbptt(model, x, y, chunk)
    comparisons = []
    for result, start, reference in zip(ours, starts, theirs, strict=True):
        label = f"[{result.start}:{result.stop}]"
        if result.positions == 0:
            assert np.isnan(reference[0]) and np.isnan(result.cost), label
            assert not any(g.any() for g in result.grads), label
            continue
        chunk_comparisons = [
            Comparison("TBPTT.chunk", f"∂C/∂{name}", grad, expected)
            for name, grad, expected in zip(names, result.grads, reference[1:], strict=True)
        ]
        # Magnitude bounds of the sums (cancellation), on the same chunk and start state.
        span = slice(result.start, result.stop)
        for layer, state in zip(layers, start, strict=True):
            layer.initial_state = state
        with _chunk_shapes(model, result.stop - result.start):
            with_stack_scales(model, x[:, span], y[:, span], chunk_comparisons)
            # forward rounding carried through the recurrence (measured: 1.3× the Σ|terms|
            # bound in ∂C/∂weight_hh_l1 of a 2-layer RNN, hypothesis seed 18472)
            with_sensitivity(model, x[:, span], y[:, span], chunk_comparisons)
        for layer in layers:
            layer.initial_state = None
        comparisons.append(
            Comparison("TBPTT.chunk", f"C{label}", np.array(result.cost), np.array(reference[0]))
        )
        for comparison in chunk_comparisons:
            comparison.name = comparison.name.replace("∂C/", f"∂C{label}/")
        comparisons += chunk_comparisons
    return comparisons


@register_check("sequences-clip")
def clip_check(rng: np.random.Generator) -> list[Comparison]:
    """CLIP.norm: clip_grad_norm against torch.nn.utils.clip_grad_norm_ (norm and result)."""
    from manual_bp.sequence_training import clip_grad_norm

    grads = [rng.standard_normal(tuple(rng.integers(1, 4, size=int(rng.integers(0, 3)))))
             for _ in range(int(rng.integers(1, 5)))]  # fmt: skip
    norm_type = (1.0, 2.0, 3.0, np.inf)[int(rng.integers(4))]
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tensor, g in zip(tensors, grads, strict=True):
        tensor.grad = torch.tensor(g)
    full = float(torch.nn.utils.get_total_norm([t.grad for t in tensors], norm_type))
    # Below, above and (within rounding) at the threshold.
    max_norm = float(full * (0.3, 3.0, 1.0)[int(rng.integers(3))])
    total_t = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type))
    total = clip_grad_norm(grads, max_norm, norm_type)
    comparisons = [Comparison("CLIP.norm", "total norm", np.array(total), np.array(total_t))]
    for i, (g, t) in enumerate(zip(grads, tensors, strict=True)):
        comparisons.append(Comparison("CLIP.norm", f"clipped g[{i}]", g, t.grad.numpy()))
    return comparisons
