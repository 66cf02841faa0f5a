"""Large scratch and result arrays of the fast convolution products, from a per-thread pool.

A fresh multi-megabyte NumPy array pays a page fault per 4 kB on first touch every time
(glibc hands such blocks back to the system on ``free``): about 1 ms per 2 MB on the
benchmark machine, as much as the GEMM it feeds (docs/curvature.md, the CNN paragraph of
the speed section). :func:`pooled_empty` reuses buffers nobody refers to any more.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

__all__ = ["POOL_BYTES", "POOL_COUNT", "POOL_MIN_BYTES", "contiguous", "matmul", "pooled_empty"]

#: Per-thread pools of large buffers (see :func:`pooled_empty`), and their limits.
_POOL = threading.local()
POOL_MIN_BYTES, POOL_BYTES, POOL_COUNT = 256 * 2**10, 128 * 2**20, 12


def _idle_count() -> int:
    """What ``sys.getrefcount`` reads for a buffer only a pool list refers to, taken the way
    :func:`pooled_empty` takes it (3 on CPython 3.11: the list, the loop name, the argument);
    measured, not assumed, since interpreters count borrowed references differently."""
    pool = [np.empty(1)]
    return [sys.getrefcount(b) for b in pool][0]  # noqa: RUF015 - the use site's form


_IDLE = _idle_count()


def pooled_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, from a per-thread pool of large buffers.

    A fresh multi-megabyte array pays a page fault per 4 kB on first touch every time
    (glibc hands such blocks back to the system on ``free``): 1 ms per 2 MB on this
    machine, as much as the GEMM it feeds. A pooled buffer is handed out only while
    nothing but the pool refers to it (every view of it counts: numpy views keep their
    base alive), so the caller owns the array exactly as a fresh one; when the caller drops
    it the buffer is free again. Best fit; at most ``POOL_COUNT`` buffers, ``POOL_BYTES``
    bytes per thread; other sizes go to ``np.empty``.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < POOL_MIN_BYTES:
        return np.empty(shape, dtype)
    pool = _POOL.__dict__.setdefault("buffers", [])
    free = [b for b in pool if sys.getrefcount(b) == _IDLE and b.nbytes >= nbytes]
    if free:
        buffer = min(free, key=lambda b: b.nbytes)
    else:
        held = sum(b.nbytes for b in pool)
        idle = [b for b in pool if sys.getrefcount(b) == _IDLE]
        if idle and (len(pool) >= POOL_COUNT or held + nbytes > POOL_BYTES):
            smallest = min(idle, key=lambda b: b.nbytes)  # make room: drop a small idle one
            del pool[next(i for i, b in enumerate(pool) if b is smallest)]
            held = sum(b.nbytes for b in pool)
        if len(pool) >= POOL_COUNT or held + nbytes > POOL_BYTES:
            return np.empty(shape, dtype)
        buffer = np.empty(nbytes, np.uint8)
        pool.append(buffer)
    return buffer[:nbytes].view(dtype).reshape(shape)


def contiguous(a: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(a)``, a copy (when one is needed) in a :func:`pooled_empty`."""
    if a.flags.c_contiguous:
        return a
    out = pooled_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (batched as ``np.matmul``) written into a :func:`pooled_empty`."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    return np.matmul(a, b, out=pooled_empty(shape, np.result_type(a, b)))
