"""Work run beside a serial loop: a second core's share of a recurrent layer's step.

A recurrent layer's BPTT is a loop of small products and in-place passes that stays on one
core (``recurrent_fast.LSTMStep``: two BLAS threads change float32 bits and slow these
products; two halves of the batch convoy on the GIL). The layer above it usually has work
that does not feed that loop: a dense layer's weight gradient ``∂C/∂W = δᵀ h`` (in the
``lstm`` benchmark ``(1000 × 1120)·(1120 × 128)``, ~2 ms on one core) is needed only by the
update, after the whole backward pass. So on two threads that product runs on the second
core while the first runs BPTT; on one thread it runs first, then the loop.

The hand-over, without the trainer knowing:

* a step whose loop can host work (``LSTMStep``, ``GRUStep``, ``RNNStep``) registers its
  output buffer with :func:`offer`;
* the step above finds the host of its input with :func:`host_of` (an identity lookup), and
  in its backward pass gives the product to ``host.pending`` instead of running it;
* the host runs its loop through :func:`beside`, which runs the pending jobs and the loop
  (concurrently when :func:`~manual_bp._threads.get_num_threads` > 1) and returns after both.

Determinism (``tests/test_threads.py``: 1 and 2 threads give bit-identical parameters): the
jobs and the loop run on ONE BLAS thread on every thread count, so every product gives the
same bits however the work is placed; nothing is split. A job writes only its own outputs
(the gradient buffer of its layer), which nothing reads before the backward pass ends.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable

import numpy as np

from manual_bp._threads import get_num_threads, one_blas_thread

__all__ = ["beside", "host_of", "offer"]

#: id(buffer) → (weak reference to the buffer, weak reference to its host step)
_hosts: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def offer(buffer: np.ndarray, host: object) -> None:
    """Register ``host`` (a step with a ``pending`` list) as the one that may run the
    backward-pass work of whichever step reads ``buffer`` (the host's output)."""
    key = id(buffer)
    _hosts[key] = (weakref.ref(buffer, lambda _: _hosts.pop(key, None)), weakref.ref(host))


def host_of(x: np.ndarray) -> object | None:
    """The step that offered ``x`` as its output buffer, or None."""
    found = _hosts.get(id(x))
    if found is None or found[0]() is not x:
        return None
    return found[1]()


class _Worker:
    """One daemon thread running job lists handed to it (its own, not the row pool's: a
    row-parallel pass inside the loop must still find the pool free)."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            jobs, done = self.inbox.get()
            try:
                for job in jobs:
                    job()
                done.put(None)
            except BaseException as error:  # re-raised on the calling thread
                done.put(error)


_worker: _Worker | None = None
_lock = threading.Lock()


def _get_worker() -> _Worker:
    global _worker
    with _lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


def beside(jobs: list[Callable[[], object]], loop: Callable[[], object]) -> None:
    """Run ``jobs`` (in order) and ``loop``, all on one BLAS thread: the jobs on the second
    core while ``loop`` runs on this one when there are two threads, else jobs then loop.
    An error in a job is raised here after the loop finished."""
    if not jobs:
        loop()
        return
    with one_blas_thread():
        if get_num_threads() == 1:
            for job in jobs:
                job()
            loop()
            return
        done: queue.SimpleQueue = queue.SimpleQueue()
        _get_worker().inbox.put((jobs, done))
        try:
            loop()
        finally:
            error = done.get()  # wait for the jobs even when the loop failed
        if error is not None:
            raise error
