"""Padding as an index map: torch's ``padding_mode`` ``'reflect'``, ``'replicate'``,
``'circular'`` (and ``'zeros'``) on the last axes of an array (equation ``PAD.map``).

Along one axis of size ``H`` padded by ``(a, b)``, padded position ``u = 0 … a+H+b−1`` reads
input position ``π(u)`` of ``t = u − a`` (``−1``: a zero)::

    zeros      π = t if 0 ≤ t < H else −1
    reflect    π = |t| reflected at both edges, the edge itself not repeated: −t for t < 0,
               2(H−1) − t for t ≥ H                       (torch: a, b < H)
    replicate  π = clip(t, 0, H−1)                          (the edge repeated)
    circular   π = t mod H                                 (torch: a, b ≤ H)

The padded array is the gather ``xp[..., u, v] = x[..., π_h(u), π_w(v)]`` (0 where either
is −1); its VJP scatters back: ``∂C/∂x[..., s, r] = Σ_{u: π_h(u)=s} Σ_{v: π_w(v)=r}
∂C/∂xp[..., u, v]`` — every padded copy of an input element returns its gradient to it.
One map per mode, shared by the convolutions' ``padding_mode`` and the padding layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PADDING_MODES", "PadMap", "SignedPadMap", "pad_indices", "signed_pad_indices"]

#: torch's ``padding_mode`` values.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """``π(u)`` for ``u = 0 … before+size+after−1`` (``−1``: a zero), checked as torch does."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    t = np.arange(-before, size + after)
    if mode == "zeros":
        return np.where((t >= 0) & (t < size), t, -1)
    if size < 1 and mode != "circular":  # circular: an empty axis padded by 0 stays empty
        raise ValueError(f"padding_mode={mode!r} needs a non-empty axis to pad, got size {size}")
    if mode == "reflect":
        if max(before, after) >= size:
            raise ValueError(
                f"padding_mode='reflect': padding ({before}, {after}) must be smaller than the "
                f"input size {size} (as torch)"
            )
        return np.where(t < 0, -t, np.where(t >= size, 2 * (size - 1) - t, t))
    if mode == "replicate":
        return np.clip(t, 0, size - 1)
    if max(before, after) > size:
        raise ValueError(
            f"padding_mode='circular': padding ({before}, {after}) must be at most the input "
            f"size {size} (as torch: it would wrap around more than once)"
        )
    return t % size if size else t  # size 0: no padding either (checked above), t is empty


@dataclass(frozen=True)
class PadMap:
    """Padding ``pads = ((a, b), …)`` of the LAST ``len(pads)`` axes in one ``mode``."""

    pads: tuple[tuple[int, int], ...]
    mode: str

    def indices(self, size: tuple[int, ...]) -> list[np.ndarray]:
        """``π`` of each padded axis for trailing sizes ``size``."""
        return [pad_indices(s, a, b, self.mode) for s, (a, b) in zip(size, self.pads, strict=True)]

    def padded_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s + a + b for s, (a, b) in zip(size, self.pads, strict=True))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``PAD.map``: the gather ``xp = x[..., π_h, π_w]`` (zeros where ``π = −1``)."""
        k = len(self.pads)
        out = x
        for axis, index in zip(range(-k, 0), self.indices(x.shape[-k:]), strict=True):
            out = np.take(out, np.maximum(index, 0), axis=axis)
            if (index < 0).any():  # 'zeros': the positions outside the input read 0
                shape = [1] * out.ndim
                shape[axis] = index.size
                out = np.where((index >= 0).reshape(shape), out, 0).astype(x.dtype, copy=False)
        return out

    def vjp(self, grad: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """``PAD.map``'s transpose: every padded position adds its gradient back to ``π(u)``
        (``size``: the trailing sizes of the unpadded input; zeros' ``−1`` are dropped)."""
        k = len(self.pads)
        out = grad
        for axis, index, s in zip(range(-k, 0), self.indices(size), size, strict=True):
            moved = np.moveaxis(out, axis, 0)
            keep = index >= 0
            back = np.zeros((s, *moved.shape[1:]), dtype=grad.dtype)
            np.add.at(back, index[keep], moved[keep])
            out = np.moveaxis(back, 0, axis)
        return np.ascontiguousarray(out)


# ---------------------------------------------------------------- the padding layers' maps
def signed_pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """``π(u)`` as :func:`pad_indices`, with torch's padding layers' negative padding
    (cropping) and limits; for ``before, after ≥ 0`` it is :func:`pad_indices`.

    zeros, reflect and replicate keep the formulas above with ``t = u − before`` (a negative
    ``before`` starts ``t`` inside the input; an output cropped to nothing is empty).
    circular crops first and wraps the cropped axis (torch's ``_pad_circular``):
    ``π = c₀ + ((u − a) mod m)``, ``c₀ = max(−before, 0)``, ``m`` the cropped size,
    ``a = max(before, 0)``; each positive side at most ``m`` (once round).
    """
    out_size = size + before + after
    if out_size == 0 and mode in ("reflect", "replicate") and size > 0:
        return np.zeros(0, dtype=np.int64)  # cropped to nothing (torch's 2-d and 3-d layers)
    if out_size < 0:
        raise ValueError(
            f"padding ({before}, {after}) of an axis of size {size} leaves an output of size "
            f"{out_size} (padding_mode={mode!r})"
        )
    if mode != "circular" or (before >= 0 and after >= 0):
        if mode in ("reflect", "replicate") and size < 1:
            raise ValueError(f"padding_mode={mode!r} needs a non-empty axis to pad, got size 0")
        return pad_indices(size, before, after, mode)  # zeros: t outside [0, size) reads 0
    start, kept = max(-before, 0), size - max(-before, 0) - max(-after, 0)
    a, b = max(before, 0), max(after, 0)
    if kept < 0 or max(a, b) > kept or (kept == 0 and a + b > 0):
        raise ValueError(
            f"padding_mode='circular': padding ({before}, {after}) of size {size} wraps the "
            f"cropped size {max(kept, 0)} more than once"
        )
    if kept == 0:
        return np.zeros(0, dtype=np.int64)
    return start + np.arange(-a, kept + b) % kept


@dataclass(frozen=True)
class SignedPadMap(PadMap):
    """:class:`PadMap` with negative padding (:func:`signed_pad_indices`) and a constant
    ``value`` where ``π = −1`` (``'zeros'`` mode; torch's ``ConstantPad``). The VJP is
    :meth:`PadMap.vjp` (a constant has no gradient)."""

    value: float = 0.0

    def indices(self, size: tuple[int, ...]) -> list[np.ndarray]:
        return [
            signed_pad_indices(s, a, b, self.mode)
            for s, (a, b) in zip(size, self.pads, strict=True)
        ]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``PAD.map``: the gather, ``value`` where any axis reads ``π = −1``."""
        k = len(self.pads)
        out, outside = x, None
        for axis, index in zip(range(-k, 0), self.indices(x.shape[-k:]), strict=True):
            shape = [1] * x.ndim
            shape[axis] = index.size
            if out.shape[axis] == 0:  # nothing to read: every position is outside
                out = np.zeros((*out.shape[:axis % x.ndim], index.size,
                                *out.shape[axis % x.ndim + 1 :]), x.dtype)  # fmt: skip
            else:
                out = np.take(out, np.maximum(index, 0), axis=axis)
            miss = (index < 0).reshape(shape)
            outside = miss if outside is None else outside | miss
        if outside is not None and outside.any():
            out = np.where(outside, np.asarray(self.value, x.dtype), out).astype(x.dtype)
        return out
