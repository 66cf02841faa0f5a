"""The padding layers' fast form: an in-place pad by slice copies and its fold (``PAD.fold``).

The readable form (:class:`~manual_bp.layers.padding.SignedPadMap`) gathers through an
index map and scatter-adds back with ``np.add.at``. Training uses slices instead: the
(cropped) input is written into the centre of a reused buffer, then each padded axis in
turn fills its two borders from the buffer itself (axes already done at full extent, later
axes at their centre)::

    reflect    left  xp[a−1−j] = xp[a+1+j]            right xp[a+H+j] = xp[a+H−2−j]
    replicate  left  xp[j]     = xp[a]                right xp[a+H+j] = xp[a+H−1]
    circular   left  xp[j]     = xp[H+j]              right xp[a+H+j] = xp[a+j]
    constant   both  xp[…]     = value

Each copy is linear, so its adjoint adds the border's gradient onto its source. The fold
runs the axes in reverse order and, on each, adds the left border mirrored onto
``a+1 … 2a`` (reflect: the edge itself not repeated), or summed onto the edge (replicate),
or onto the opposite end (circular), then keeps the centre: ``PAD.fold`` (docs/padding.md).
The adjoint of the crop (negative padding) is an embedding into zeros.

Reflection with a negative side whose mirror would reach the cropped-away part is the one
case the slices do not cover (:func:`fast_supported`); the step then uses the readable map.
"""

from __future__ import annotations

import numpy as np

from manual_bp.layers.steps import shape_buffers

__all__ = ["PadStep", "fast_supported", "fold", "pad_into"]

Pads = tuple[tuple[int, int], ...]


def fast_supported(size: tuple[int, ...], pads: Pads, mode: str) -> bool:
    """Whether crop-then-pad by slices equals the index map (all but one reflect case)."""
    if mode != "reflect":
        return True
    for s, (a, b) in zip(size, pads, strict=True):
        kept = s - max(-a, 0) - max(-b, 0)
        if max(a, b, 0) > kept - 1:
            return False
    return True


def _crop(pads: Pads, size: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(-a, 0), s - max(-b, 0)) for s, (a, b) in zip(size, pads, strict=True))


def _region(k: int, axis: int, centre: tuple[slice, ...], here: slice) -> tuple:
    """Index of padded axis ``axis`` at ``here``: earlier axes whole, later at their centre."""
    return (Ellipsis, *(slice(None),) * axis, here, *centre[axis + 1 :])


def pad_into(x: np.ndarray, pads: Pads, mode: str, value: float, out: np.ndarray) -> np.ndarray:
    """Write the padded ``x`` into ``out`` (its shape: the padded shape) by slices."""
    k = len(pads)
    size = x.shape[x.ndim - k :]
    inner = x[(Ellipsis, *_crop(pads, size))]
    kept = inner.shape[x.ndim - k :]
    pos = [(max(a, 0), max(b, 0)) for a, b in pads]
    centre = tuple(slice(a, a + h) for (a, _), h in zip(pos, kept, strict=True))
    out[(Ellipsis, *centre)] = inner
    for axis, ((a, b), h) in enumerate(zip(pos, kept, strict=True)):
        left = _region(k, axis, centre, slice(0, a))
        right = _region(k, axis, centre, slice(a + h, a + h + b))
        if mode == "zeros":
            out[left], out[right] = value, value
        elif mode == "reflect":
            out[left] = np.flip(out[_region(k, axis, centre, slice(a + 1, 2 * a + 1))], -k + axis)
            src = out[_region(k, axis, centre, slice(a + h - 1 - b, a + h - 1))]
            out[right] = np.flip(src, -k + axis)
        elif mode == "replicate":
            out[left] = out[_region(k, axis, centre, slice(a, a + 1))]
            out[right] = out[_region(k, axis, centre, slice(a + h - 1, a + h))]
        else:  # circular
            out[left] = out[_region(k, axis, centre, slice(h, a + h))]
            out[right] = out[_region(k, axis, centre, slice(a, a + b))]
    return out


def fold(g: np.ndarray, pads: Pads, mode: str, size: tuple[int, ...]) -> np.ndarray:
    """``PAD.fold``: ``∂C/∂x`` from ``g = ∂C/∂xp`` (overwritten), the transpose of
    :func:`pad_into` for an input of trailing sizes ``size``."""
    k = len(pads)
    crop = _crop(pads, size)
    kept = tuple(c.stop - c.start for c in crop)
    pos = [(max(a, 0), max(b, 0)) for a, b in pads]
    centre = tuple(slice(a, a + h) for (a, _), h in zip(pos, kept, strict=True))
    for axis in reversed(range(k)):
        (a, b), h, ax = pos[axis], kept[axis], -k + axis
        left = g[_region(k, axis, centre, slice(0, a))]
        right = g[_region(k, axis, centre, slice(a + h, a + h + b))]
        if mode == "reflect":
            g[_region(k, axis, centre, slice(a + 1, 2 * a + 1))] += np.flip(left, ax)
            g[_region(k, axis, centre, slice(a + h - 1 - b, a + h - 1))] += np.flip(right, ax)
        elif mode == "replicate":
            g[_region(k, axis, centre, slice(a, a + 1))] += left.sum(ax, keepdims=True)
            g[_region(k, axis, centre, slice(a + h - 1, a + h))] += right.sum(ax, keepdims=True)
        elif mode == "circular":
            g[_region(k, axis, centre, slice(h, a + h))] += left
            g[_region(k, axis, centre, slice(a, a + b))] += right
    inner = g[(Ellipsis, *centre)]
    if all(c.start == 0 and c.stop == s for c, s in zip(crop, size, strict=True)):
        return np.ascontiguousarray(inner)
    dx = np.zeros((*g.shape[: g.ndim - k], *size), g.dtype)  # the crop's adjoint: embed
    dx[(Ellipsis, *crop)] = inner
    return dx


class PadStep:
    """The fast step of a padding layer: :func:`pad_into` a reused buffer, :func:`fold`
    back (the readable map where :func:`fast_supported` says no)."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        pad_map = layer.pad_map(x)
        k = len(pad_map.pads)
        self.size, self.pads = x.shape[x.ndim - k :], pad_map.pads
        self.fast = fast_supported(self.size, self.pads, pad_map.mode)
        if not self.fast:
            out, self.cache = layer.forward(x)
            return out
        shape = (*x.shape[: x.ndim - k], *pad_map.padded_size(self.size))
        (out,) = shape_buffers(
            self._buffers, (x.shape, x.dtype.str), lambda: (np.empty(shape, x.dtype),)
        )
        return pad_into(x, self.pads, pad_map.mode, pad_map.value, out)

    def backward(self, dout: np.ndarray, grads: dict, need_dx: bool) -> np.ndarray | None:
        if not need_dx:
            return None
        if not self.fast:
            return self.layer.backward(dout, self.cache)[0]
        return fold(dout, self.pads, self.layer.mode, self.size)
