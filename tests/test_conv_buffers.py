"""The fast convolution's buffer pool (``_buffers.pooled_empty``): an array it hands out is
owned by the caller exactly as a fresh ``np.empty`` — never shared with a live array, a view
of one included — and a buffer comes back to the pool only when nothing refers to it."""

from __future__ import annotations

import threading

import numpy as np

from manual_bp.layers import _buffers as c

BIG = c.POOL_MIN_BYTES // 8 + 1  # float64 entries: just above the pooled size


def _buffer_of(a: np.ndarray) -> np.ndarray:
    while a.base is not None:  # a dtype-changing view keeps its slice as base
        a = a.base
    return a


def test_live_arrays_and_their_views_are_never_handed_out_again() -> None:
    a = c.pooled_empty((BIG,), np.float64)
    view = a[5:].reshape(-1)[::2]
    del a
    b = c.pooled_empty((BIG,), np.float64)
    assert not np.shares_memory(b, view)
    alive = [c.pooled_empty((BIG + k,), np.float64) for k in range(2 * c.POOL_COUNT)]
    for i, x in enumerate(alive):  # more arrays than the pool holds: all distinct
        x[...] = i
    assert all((x == i).all() for i, x in enumerate(alive))
    assert not any(np.shares_memory(b, x) or np.shares_memory(view, x) for x in alive)


def test_a_dropped_array_returns_its_buffer_and_small_ones_are_plain() -> None:
    size = BIG + 1000  # a size no other test asks for
    a = c.pooled_empty((size,), np.float64)
    buffer = id(_buffer_of(a))  # its id only: a reference would keep it in use
    del a
    b = c.pooled_empty((2 * size - 1,), np.float32)  # best fit: the idle buffer, any dtype
    assert id(_buffer_of(b)) == buffer and b.shape == (2 * size - 1,) and b.dtype == np.float32
    small = c.pooled_empty((3, 4), np.float64)
    assert small.base is None and small.shape == (3, 4)


def test_pools_are_per_thread() -> None:
    a = c.pooled_empty((BIG,), np.float64)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(c.pooled_empty((BIG,), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(a, seen[0])


def test_helpers_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 40, 70)), rng.standard_normal((70, 90))
    np.testing.assert_array_equal(c.matmul(a, b), a @ b)
    t = a.transpose(2, 0, 1)
    np.testing.assert_array_equal(c.contiguous(t), np.ascontiguousarray(t))
    assert c.contiguous(a) is a
