"""The row-parallel helper (``manual_bp._threads``): slices, errors, the thread count."""

from __future__ import annotations

import numpy as np
import pytest

import manual_bp
from manual_bp import _threads


@pytest.fixture
def two_threads():
    before = manual_bp.get_num_threads()
    manual_bp.set_num_threads(2)
    yield
    manual_bp.set_num_threads(before)


@pytest.mark.parametrize("n, parts", [(10, 3), (7, 7), (1, 2), (0, 2), (100, 1)])
def test_even_slices_cover_the_rows_once(n, parts):
    slices = _threads.even_slices(n, parts)
    covered = np.concatenate([np.arange(n)[s] for s in slices]) if slices else np.array([])
    assert covered.tolist() == list(range(n))
    sizes = [s.stop - s.start for s in slices]
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_fixed_slices_depend_on_the_shape_only(two_threads):
    assert _threads.fixed_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]


def test_parallel_rows_splits_large_work_and_gives_the_same_bits(two_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 512))
    out, seen = np.empty_like(x), []

    def work(rows):
        seen.append(rows)
        np.tanh(x[rows], out=out[rows])

    _threads.parallel_rows(work, 512, 512)
    assert len(seen) == 2 and np.array_equal(out, np.tanh(x))


def test_parallel_rows_keeps_small_work_on_the_calling_thread(two_threads):
    seen = []
    _threads.parallel_rows(seen.append, 8, 4)
    assert seen == [slice(0, 8)]


def test_an_error_in_a_worker_reaches_the_caller(two_threads):
    def work(rows):
        if rows.start > 0:
            raise ValueError("second slice failed")

    with pytest.raises(ValueError, match="second slice failed"):
        _threads.parallel_rows(work, 1 << 18, 1)
    seen = []  # the pool still serves after an error
    _threads.parallel_rows(seen.append, 1 << 18, 1)
    assert len(seen) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_refuses_non_positive_integers(bad):
    with pytest.raises(ValueError, match="count must be an integer"):
        manual_bp.set_num_threads(bad)
