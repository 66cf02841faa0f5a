"""One layer of every registered class with an input, as a stack puts it (shared test cases).

:func:`layer_case` draws a layer of a named class and the input it receives: from a random
stack of a block of :mod:`reference.stack` that builds the class (so the layer sits where a
real model puts it, in training or evaluation mode at random), or, for the classes no
block builds, constructed directly. Used by the adjoint tests and the product tests.
"""

from __future__ import annotations

import numpy as np

import reference.checks  # noqa: F401  (imports every checks_* module: torch forwards, blocks)
from manual_bp.layers import LAYERS, Embedding, Identity, Layer, Reshape, Unflatten
from reference.checks_convolution import build_conv, draw_conv_kwargs
from reference.stack import BLOCKS, random_stack

__all__ = ["DIRECT", "LAYER_NAMES", "layer_case", "sources"]

LAYER_NAMES = sorted(cls.__name__ for cls in LAYERS.classes())


def _blocks_building(cls: type) -> list[tuple[str, str]]:
    """``(kind, block)`` pairs of :data:`reference.stack.BLOCKS` whose stacks hold a ``cls``
    at the top level (a class only ever inside a container would need its own case)."""
    found = []
    for kind, blocks in BLOCKS.items():
        for block in sorted(blocks):
            for seed in range(12):
                model, _, _ = random_stack(np.random.default_rng(seed), kind, blocks=(block,))
                if any(type(top) is cls for top in model.layers):
                    found.append((kind, block))
                    break
    return found


def _direct(name: str, rng: np.random.Generator) -> tuple[Layer, np.ndarray]:
    """The layers no stack block builds, with an input: constructed as their checks do."""
    batch = int(rng.integers(1, 4))
    if name in ("Conv1d", "ConvTranspose2d"):
        transpose, dims = name == "ConvTranspose2d", 1 if name == "Conv1d" else 2
        kwargs = draw_conv_kwargs(rng, dims, transpose)
        layer, size = build_conv(kwargs, dims, transpose, seed=int(rng.integers(2**31)))
        return layer, rng.standard_normal((batch, layer.in_channels, *size))
    if name == "Embedding":
        vocab, dim = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        padding = None if rng.integers(2) else int(rng.integers(-vocab, vocab))
        layer = Embedding(vocab, dim, padding, seed=rng)
        return layer, rng.integers(0, vocab, size=(batch, int(rng.integers(1, 6)))).astype(float)
    if name == "Identity":
        return Identity(), rng.standard_normal((batch, int(rng.integers(1, 5)), 3))
    if name == "Reshape":
        return Reshape(3, -1), rng.standard_normal((batch, 2, int(rng.integers(1, 4)), 3))
    if name == "Unflatten":
        return Unflatten(1, (2, -1)), rng.standard_normal((batch, 2 * int(rng.integers(1, 4)), 3))
    raise LookupError(name)


DIRECT = ("Conv1d", "ConvTranspose2d", "Embedding", "Identity", "Reshape", "Unflatten")
#: layer class name -> the (kind, block) pairs that build it (filled on first use)
SOURCES: dict[str, list[tuple[str, str]]] = {}


def sources(name: str) -> list[tuple[str, str]]:
    if name not in SOURCES:
        cls = next(c for c in LAYERS.classes() if c.__name__ == name)
        SOURCES[name] = _blocks_building(cls)
    return SOURCES[name]


def layer_case(name: str, rng: np.random.Generator) -> tuple[Layer, np.ndarray]:
    """A ``name`` layer and its input: from a random stack of a block that builds it (the
    input is what the layers below feed it; the mode is train or eval at random), else
    constructed directly."""
    if name in DIRECT:
        layer, x = _direct(name, rng)
        layer.train(bool(rng.integers(2)))
        return layer, x
    found = sources(name)
    assert found, f"no block of reference.stack.BLOCKS builds a {name}: register one"
    kind, block = found[int(rng.integers(len(found)))]
    while True:
        model, x, _ = random_stack(rng, kind, blocks=(block,))
        if rng.integers(2):
            model.eval()
        h = x
        for top in model.layers:
            if type(top).__name__ == name:
                return top, h
            h, _ = top.forward(h)
