"""Checks of padded sequence batches: ``SEQ.ignore_index`` (``docs/sequences.md``).

Oracle: ``F.cross_entropy(z, labels, ignore_index=i)`` (and ``F.nll_loss(log a, …)`` for
``∂C/∂aᴷ``) on the same stack built from torch functions with OUR parameters, float64:
``Embedding(padding_idx) → RNN/LSTM/GRU (1–2 layers, either direction) → Dense →
softmax`` (log-likelihood: BP1's shortcut path) or ``→ identity``
(categorical-cross-entropy: the general path). Sequences of random lengths are padded at
the end with the padding token and the label ``ignore_index`` (torch's −100, or a class
index, which must then be ignored although it is a valid class).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.embedding import Embedding
from manual_bp.models.sequential import Sequential

# A module object, not names: check modules are loaded by reference.checks in a loop and
# must not need each other fully initialised at import time.
from reference import checks_sequences as seq
from reference.checks import register_check
from reference.compare import Comparison
from reference.sequence_tools import with_sensitivity, with_stack_scales
from reference.stack import torch_layer_forward

__all__ = ["ignore_index_case", "padded_batch", "torch_padded_step"]


def padded_batch(
    rng: np.random.Generator, batch: int, length: int, vocab: int, n_classes: int,
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Tokens in ``1..vocab−1`` (0 is the padding token) and labels, padded at the end.

    Each sequence has a random length in ``0..length`` (0: entirely padding); at least
    one position of the batch is real and counted.
    """
    lengths = rng.integers(0, length + 1, size=batch)
    lengths[int(rng.integers(batch))] = max(1, lengths.max())
    real = np.arange(length)[None, :] < lengths[:, None]
    x = np.where(real, rng.integers(1, vocab, size=(batch, length)), 0)
    y = np.where(real, rng.integers(0, n_classes, size=(batch, length)), ignore_index)
    n, t = np.argwhere(real)[int(rng.integers(real.sum()))]
    if y[n, t] == ignore_index:  # a class index as ignore_index: keep one position counted
        y[n, t] = (ignore_index + 1) % n_classes
    return x, y


def torch_padded_step(model: Sequential, x: np.ndarray, y: np.ndarray, caches) -> dict:
    """torch's step with ``ignore_index``: cost, ∂C/∂aᴷ and every ∂C/∂θ."""
    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.named_parameters()}
    h = torch.tensor(x.astype(np.float64))
    for index, (layer, cache) in enumerate(zip(model.layers[:-1], caches, strict=False)):
        own = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{index}.")}
        h = torch_layer_forward(layer, own, {}, h, cache)
    z = h.reshape(-1, h.shape[-1])
    labels = torch.tensor(y.reshape(-1))
    ce = F.cross_entropy(z, labels, ignore_index=model.ignore_index)
    if model.cost.name == "log-likelihood":  # softmax output: C = nll(log a)
        a = torch.softmax(z, dim=-1)
        loss = F.nll_loss(torch.log(a), labels, ignore_index=model.ignore_index)
    else:  # identity output: the logits are the output
        a, loss = z, ce
    a.retain_grad()
    loss.backward()
    return {
        "C": float(loss.detach()),
        "C (F.cross_entropy)": float(ce.detach()),
        "∂C/∂a": a.grad.numpy().reshape(*y.shape, -1),
        **{f"∂C/∂{k}": v.grad.numpy() for k, v in params.items()},
    }


def ignore_index_case(
    kind: str, batch: int, length: int, vocab: int, dim: int, n_classes: int,
    ignore_index: int, shortcut: bool, seed: int,
) -> list[Comparison]:  # fmt: skip
    """SEQ.ignore_index: cost, ∂C/∂aᴷ and every parameter gradient on a padded batch."""
    rng = np.random.default_rng(seed)
    recurrent, shape = seq._recurrent_block(kind)(rng, (length, dim))
    layers = [Embedding(vocab, dim, padding_idx=0), *recurrent, Dense(shape[-1], n_classes)]
    layers.append(ActivationLayer("softmax" if shortcut else "identity"))
    cost = "log-likelihood" if shortcut else "categorical-cross-entropy"
    model = Sequential(
        layers, cost, input_shape=(length,), seed=int(rng.integers(2**31)),
        ignore_index=ignore_index,
    )  # fmt: skip
    x, y = padded_batch(rng, batch, length, vocab, n_classes, ignore_index)
    ours = model.backprop(x, y)
    theirs = torch_padded_step(model, x, y, ours.caches)
    eq = "SEQ.ignore_index"
    comparisons = [
        Comparison(eq, "C", np.array(ours.cost), np.array(theirs["C"])),
        Comparison(
            eq, "C vs F.cross_entropy", np.array(ours.cost), np.array(theirs["C (F.cross_entropy)"])
        ),
        Comparison(eq, "∂C/∂a", ours.output_grad, theirs["∂C/∂a"]),
    ]
    params = [
        Comparison(eq, f"∂C/∂{name}", ours.params[name], theirs[f"∂C/∂{name}"])
        for name, _ in model.named_parameters()
    ]
    return comparisons + with_sensitivity(model, x, y, with_stack_scales(model, x, y, params))


def _draw(rng: np.random.Generator) -> dict:
    n_classes = int(rng.integers(2, 5))
    return dict(
        kind=seq.KINDS[int(rng.integers(len(seq.KINDS)))],
        batch=int(rng.integers(1, 5)),
        length=int(rng.integers(1, 6)),
        vocab=int(rng.integers(2, 6)),
        dim=int(rng.integers(1, 4)),
        n_classes=n_classes,
        ignore_index=-100 if rng.integers(2) else int(rng.integers(n_classes)),
        shortcut=bool(rng.integers(2)),
        seed=int(rng.integers(2**31)),
    )


@register_check("sequences-ignore-index")
def ignore_index_check(rng: np.random.Generator) -> list[Comparison]:
    """SEQ.ignore_index: a padded batch through embedding → recurrent → dense vs torch."""
    return ignore_index_case(**_draw(rng))
