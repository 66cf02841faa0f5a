"""Threads over slices of the mini-batch for the work BLAS does not parallelise.

NumPy hands every matrix product to BLAS, which uses all the threads it was started with;
everything else (ufuncs, copies, reductions) runs on one core. NumPy releases the GIL inside
ufunc loops and copies of non-object arrays, so plain Python threads, each given a slice of
the rows, run that work in parallel.

The contract that keeps results independent of the thread count (``tests/test_threads.py``
trains with 1 and 2 threads and compares the parameters bit for bit):

* only work whose every output element depends on its own row is split: elementwise ufuncs,
  copies and gathers (im2col), per-row reductions (softmax, LayerNorm). Such work gives the
  same bits on any slicing;
* a reduction *over* the rows (a bias gradient, batch-norm statistics) is never split by the
  thread count: it runs in one call, or over slices fixed by the data's shape alone,
  combined in a fixed order;
* matrix products stay whole, on the calling thread, for BLAS to thread;
* the fused trainer's parts of a mini-batch (:mod:`manual_bp.training.parallel`): a number
  of parts fixed by the batch's shape, each with its own steps and gradient buffer, run by
  :func:`parallel_parts` (contiguous groups of parts per thread, each inside
  :func:`run_here`, where splits run inline), every product on one BLAS thread, the
  gradients summed in part order.

:func:`parallel_rows` is the one entry. It runs ``work(rows)`` for each slice of
``range(n)``: the first slice on the calling thread, the others on a pool of
``get_num_threads() − 1`` persistent workers. Below :data:`MIN_ELEMENTS` elements per slice,
or with one thread, it calls ``work(slice(0, n))`` directly (a hand-off costs ~10 µs).

The thread count is :func:`set_num_threads` (torch's name), by default the first of
``MANUAL_BP_NUM_THREADS``, ``OMP_NUM_THREADS`` that is set, else the CPUs this process may
use. BLAS reads its own count from ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` at import.

:func:`one_blas_thread` runs a block with BLAS on one thread: a loop of small products (an
LSTM's recurrent ``h W_hhᵀ``, ``(32 × 128)·(128 × 512)``, 35 times a step) runs ~3× slower
on two OpenBLAS threads than on one (waking the second thread costs more than it saves;
measured 161 µs against 45 µs a product with the other core busy). It reaches NumPy's
OpenBLAS through its own ``*_set_num_threads`` symbol (``ctypes``; ~0.2 µs a call) and is a
no-op where that library is not found.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = [
    "MIN_ELEMENTS",
    "SMALL_PRODUCT_FLOPS",
    "even_slices",
    "get_num_threads",
    "one_blas_thread",
    "parallel_parts",
    "parallel_rows",
    "row_parts",
    "run_here",
    "set_num_threads",
]

_ENV_VARS = ("MANUAL_BP_NUM_THREADS", "OMP_NUM_THREADS")


def _default_threads() -> int:
    for var in _ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            try:
                count = int(value)
            except ValueError:
                continue
            if count >= 1:
                return count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


class _Pool:
    """``size − 1`` daemon workers, each fed through its own queue (no executor overhead)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.inboxes: list[queue.SimpleQueue] = []
        for _ in range(size - 1):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), daemon=True).start()
            self.inboxes.append(inbox)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        _local.worker = True  # a nested parallel_rows runs inline (it would wait on itself)
        while True:
            work, rows, done = inbox.get()
            try:
                work(rows)
                done.put(None)
            except BaseException as error:  # re-raised on the calling thread
                done.put(error)

    def run(self, work: Callable[[slice], object], slices: list[slice]) -> None:
        done: queue.SimpleQueue = queue.SimpleQueue()  # this call's own: calls may overlap
        for inbox, rows in zip(self.inboxes, slices[1:], strict=False):
            inbox.put((work, rows, done))
        first_error: BaseException | None = None
        try:
            work(slices[0])
        except BaseException as error:
            first_error = error
        for _ in slices[1:]:
            error = done.get()
            if first_error is None and error is not None:
                first_error = error
        if first_error is not None:
            raise first_error


_threads = _default_threads()
_pool: _Pool | None = None
_local = threading.local()
_lock = threading.Lock()


def get_num_threads() -> int:
    """The number of threads :func:`parallel_rows` uses (torch's ``get_num_threads``); 1
    inside :func:`run_here` (a part of the mini-batch already holds this core)."""
    return 1 if getattr(_local, "here", False) else _threads


@contextmanager
def run_here() -> Iterator[None]:
    """Run the block as if on one thread, on the calling thread: :func:`parallel_rows` runs
    inline and :func:`get_num_threads` is 1 there (the trainer's parts of a mini-batch,
    ``manual_bp.training.parallel``, already give every core its own part; a split inside
    one would queue behind the other part's work)."""
    before = getattr(_local, "here", False)
    _local.here = True
    try:
        yield
    finally:
        _local.here = before


def set_num_threads(count: int) -> None:
    """Use ``count`` threads for row-parallel work (torch's ``set_num_threads``).

    BLAS keeps the count it read from the environment at import; set
    ``OMP_NUM_THREADS`` before starting Python to change both.
    """
    global _threads, _pool
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_num_threads: count must be an integer ≥ 1, got {count!r}")
    with _lock:
        _threads = count
        if _pool is not None and _pool.size != count:
            _pool = None  # the old workers idle on their empty queues


def _get_pool() -> _Pool:
    global _pool
    with _lock:
        if _pool is None or _pool.size != _threads:
            _pool = _Pool(_threads)
        return _pool


def even_slices(n: int, parts: int) -> list[slice]:
    """``range(n)`` cut into ``parts`` contiguous slices whose sizes differ by at most 1."""
    base, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


#: Elements per slice below which a hand-off to a worker (~50 µs to wake it) costs more
#: than it saves; a work function should bundle several passes over its rows.
MIN_ELEMENTS = 1 << 16


def parallel_rows(work: Callable[[slice], object], n: int, row_size: int = 1) -> None:
    """Run ``work(rows)`` over ``range(n)`` cut into one slice per thread.

    ``row_size`` is the number of elements one row's work touches: a slice gets at least
    :data:`MIN_ELEMENTS` of them. ``work`` must write its results for ``rows`` only (into
    arrays it closes over) and give the same bits for any slicing: see the module's
    contract. Exceptions raised in any slice are re-raised here after every slice finished.
    Called from inside a slice's work (a nested split), it runs ``work`` inline.
    """
    parts = row_parts(n, row_size)
    if parts == 1 or getattr(_local, "worker", False) or getattr(_local, "here", False):
        work(slice(0, n))
        return
    _get_pool().run(work, even_slices(n, parts))


def parallel_parts(work: Callable[[int], object], parts: int) -> None:
    """Run ``work(i)`` for every part ``i`` in ``range(parts)``, each inside
    :func:`run_here`: contiguous groups of parts, one group per thread (the first on the
    calling thread), each group's parts in order; with one thread all of them in order here.
    ``work`` must touch only part ``i``'s own state, so any grouping gives the same bits."""
    threads = _threads if not getattr(_local, "here", False) else 1

    def group(indices: slice) -> None:
        with run_here():
            for i in range(indices.start, indices.stop):
                work(i)

    if threads == 1 or parts == 1 or getattr(_local, "worker", False):
        group(slice(0, parts))
        return
    _get_pool().run(
        group, [slice(s.start, s.stop) for s in even_slices(parts, min(parts, threads))]
    )


def row_parts(n: int, row_size: int = 1) -> int:
    """How many slices :func:`parallel_rows` cuts ``n`` rows of ``row_size`` elements into
    (1: the work runs whole on the calling thread)."""
    min_rows = max(1, -(-MIN_ELEMENTS // max(1, row_size)))
    if _threads == 1 or n < 2 * min_rows or getattr(_local, "here", False):
        return 1
    return min(_threads, n // min_rows)


# ---------------------------------------------------------------------- BLAS's own threads
def _find_openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """NumPy's OpenBLAS ``(set_num_threads, get_num_threads)``, found among the libraries
    this process has loaded (NumPy's wheel names its copy ``libscipy_openblas64_``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", "64_"), ("openblas_", "")):
            setter = getattr(library, f"{prefix}set_num_threads{suffix}", None)
            getter = getattr(library, f"{prefix}get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


import numpy as _numpy  # noqa: E402 — loads NumPy's BLAS before it is looked for

del _numpy
_blas = _find_openblas()


#: FLOPs of one product below which a loop of such products runs on one BLAS thread.
SMALL_PRODUCT_FLOPS = 1 << 24


@contextmanager
def one_blas_thread(flops: int = 0) -> Iterator[None]:
    """Run the block with BLAS on one thread, then restore its count (see the module
    docstring) — if its products are small: ``flops``, one product's ``2·m·k·n``, below
    :data:`SMALL_PRODUCT_FLOPS` (0: always). Products give BLAS's one-thread bits inside."""
    if _blas is None or flops >= SMALL_PRODUCT_FLOPS:
        yield
        return
    setter, getter = _blas
    before = getter()
    if before == 1:
        yield
        return
    setter(1)
    try:
        yield
    finally:
        setter(before)
