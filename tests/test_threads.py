"""The row-parallel helper (``manual_bp._threads``): slices, errors, the thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual_bp
from manual_bp import _threads

ROOT = Path(__file__).resolve().parents[1]


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


def test_row_parts_is_the_split_parallel_rows_makes(two_threads):
    for n, row_size in [(8, 4), (512, 512), (1 << 18, 1), (3, 1 << 20)]:
        seen: list[slice] = []
        _threads.parallel_rows(seen.append, n, row_size)
        assert len(seen) == _threads.row_parts(n, row_size)


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


# ---------------------------------------------------------------------- whole training runs
#: One small model per layer family, trained by the fused path (every layer's fast form).
_FAMILIES = {
    "mlp": ("[('dense', (64,), {}), 'relu', 'dense', 'softmax']", "(48,)", 10, "log-likelihood"),
    "cnn": (
        "[('conv2d', (8, 3), {'padding': 1}), 'batchnorm2d', 'relu', ('maxpool2d', (2,), {}),"
        " ('conv2d', (16, 3), {'stride': 2}), 'relu', 'global-avgpool2d', 'flatten', 'dense',"
        " 'softmax']",
        "(3, 16, 16)",
        10,
        "log-likelihood",
    ),
    "lenet": (
        "[('reshape', ((1, 16, 16),), {}), ('conv2d', (6, 5), {'padding': 2}), 'relu',"
        " ('maxpool2d', (2,), {}), ('conv2d', (16, 5), {}), 'relu', ('maxpool2d', (2,), {}),"
        " 'flatten', ('dense', (32,), {}), 'relu', 'dense', 'softmax']",
        "(256,)",
        10,
        "log-likelihood",
    ),
    "lstm": (
        "[('embedding', (50, 16), {}), ('lstm', (32,), {}), 'dense', 'softmax']",
        "(12,)",
        50,
        "log-likelihood",
    ),
    "transformer": (
        "[('residual', ([('multihead_attention', (4,), {'causal': True})],), {}), 'layernorm',"
        " ('residual', ([('dense', (128,), {}), 'gelu', 'dense'],), {}), 'layernorm']",
        "(16, 32)",
        32,
        "quadratic",
    ),
}

_TRAIN = """
import hashlib, sys
import numpy as np
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import SGD
from manual_bp.training import parallel
from manual_bp.training.fused import FusedTrainer
parallel.MIN_PART_ELEMENTS = 0  # these small batches in parts too
spec, shape, n_out, cost, dtype = {spec}, {shape}, {n_out}, {cost!r}, {dtype!r}
model = Sequential.from_spec(spec, shape, n_out, cost=cost, seed=0, dtype=dtype)
rng = np.random.default_rng(1)
n = 64
if {family!r} == "lstm":
    x = rng.integers(0, 50, (n, *shape)); y = rng.integers(0, 50, (n, *shape))
elif {family!r} == "transformer":
    x = rng.standard_normal((n, *shape)); y = rng.standard_normal((n, *shape))
else:
    x = rng.standard_normal((n, *shape)); y = rng.integers(0, n_out, n)
x = model.prepare_inputs(x); y = model.prepare_targets(y, n)
trainer = FusedTrainer(model, SGD(lr=0.05))
for step in range(3):
    trainer.step(x, y, rng.permutation(n)[:48])
print(hashlib.sha256(model.flat_parameters.tobytes()).hexdigest())
print(trainer._parts is not None and trainer._parts.ran)  # the batch ran in parts
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_one_and_two_threads_train_to_bit_identical_parameters(family, dtype):
    """Issue 22: the row-parallel work and the mini-batch's parts (``training/parallel.py``:
    two parts of 24 rows, run one after the other or side by side) do not change a bit — 1
    and 2 threads of ours, a fresh process each, BLAS's own thread count held at 2 in both.

    BLAS's count is held because OpenBLAS itself is not bit-identical across its thread
    counts: measured on this machine (``benchmarks/blas_determinism.py``), 20 of 28 float32
    and 4 of 28 float64 products of these models' shapes (e.g. the weight gradient
    ``(27, 16384) × (16384, 8)``) give different last bits with 1 and 2 BLAS threads
    (``docs/performance.md``, "Two cores").
    """
    spec, shape, n_out, cost = _FAMILIES[family]
    code = _TRAIN.format(spec=spec, shape=shape, n_out=n_out, cost=cost, dtype=dtype, family=family)
    digests, ran = [], []
    for threads in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), MANUAL_BP_NUM_THREADS=threads)
        env.update({v: "2" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0, result.stderr
        digest, in_parts = result.stdout.split()
        digests.append(digest)
        ran.append(in_parts)
    assert digests[0] == digests[1]
    assert ran == [str(family != "mlp")] * 2  # every family but the MLP ran in parts


def test_a_nested_split_runs_inline_instead_of_waiting_on_itself(two_threads):
    """A row-parallel work function that itself calls parallel_rows (a softmax inside a
    split activation pass) must not deadlock: the worker's nested call runs inline."""
    inner: list[slice] = []

    def outer(rows):
        _threads.parallel_rows(inner.append, 1 << 18, 1)

    _threads.parallel_rows(outer, 1 << 18, 1)
    assert len(inner) == 3  # the calling thread split again (2), the worker ran inline (1)


def test_one_blas_thread_restores_the_count():
    if _threads._blas is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS found in /proc/self/maps")
    set_, get = _threads._blas
    original = get()
    set_(2)  # two threads, whatever this process started with: the count must come back
    try:
        with _threads.one_blas_thread():
            assert get() == 1
        assert get() == 2
        with pytest.raises(RuntimeError), _threads.one_blas_thread():
            raise RuntimeError("inside")
        assert get() == 2
    finally:
        set_(original)
