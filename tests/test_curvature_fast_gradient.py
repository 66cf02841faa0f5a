"""The curvature gradient by the fused training step's fast forms
(``manual_bp/curvature/fast_gradient.py``, ``docs/curvature.md``, "The gradient by the fast
forms"): equal to the readable walk of the layers' products on every family, the model's
running statistics untouched, the kept trainer following the model's mode, parameters,
batch shape, dtype and layers. ``tests/test_curvature_layers.py`` checks the same
``gradient`` against ``torch.func`` on every family.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Sequential
from manual_bp import layers as L
from manual_bp.curvature import gradient
from manual_bp.curvature.fast_gradient import _SLOT
from manual_bp.curvature.rop import walk_gradient
from reference.curvature_families import FAMILIES, build


def _assert_equal_to_walk(model, x, y, rel: float = 1e-12) -> None:
    fast, walk = gradient(model, x, y), walk_gradient(model, x, y)
    assert len(fast) == len(walk)
    scale = max(max(float(np.abs(w).max()) for w in walk), 1e-300)
    for (name, p), f, w in zip(model.named_parameters(), fast, walk, strict=True):
        assert f.shape == p.shape and f.dtype == p.dtype, name
        err = float(np.abs(f - w).max()) / scale
        assert err <= rel, f"{name}: {err:.2e} of the largest gradient entry from the walk"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fast_gradient_is_the_walk_and_leaves_the_model_as_it_was(family):
    """Every family of ``reference.curvature_families`` (batch norm in training mode
    included, whose fast pass moves the running statistics): the fused route equals the
    readable walk to 1e-12 of the largest entry, the buffers are bit for bit what they
    were, the parameters too."""
    model, x, y = build(family, 3)
    buffers = [(name, b.copy()) for name, b in model.named_buffers()]
    flat = model.flat_parameters.copy()
    _assert_equal_to_walk(model, x, y)
    for (name, before), (_, after) in zip(buffers, model.named_buffers(), strict=True):
        assert np.array_equal(before, after), f"buffer {name} moved"
    assert np.array_equal(flat, model.flat_parameters)


def test_results_are_fresh_arrays_not_the_trainers_buffers():
    model, x, y = build("Conv2d", 0)
    first = gradient(model, x, y)
    kept = [g.copy() for g in first]
    for g in first:
        g[...] = 7.0  # the caller owns its result
    second = gradient(model, x, y)
    for a, b in zip(kept, second, strict=True):
        assert np.array_equal(a, b)
    assert not any(np.shares_memory(a, b) for a, b in zip(first, second, strict=True))


def _cnn_bn(seed: int = 0, dtype: str = "float64") -> Sequential:
    return Sequential(
        [
            L.Conv2d(2, 3, 3, padding=1),
            L.BatchNorm2d(3),
            "relu",
            L.Flatten(),
            L.Dense(48, 4),
            "softmax",
        ],
        "log-likelihood",
        input_shape=(2, 4, 4),
        seed=seed,
        dtype=dtype,
    )


def test_the_kept_trainer_follows_mode_parameters_and_batch_shape():
    """One trainer is kept on the model; switching eval/train, writing new parameter
    values and changing the batch size between calls each give the walk's answer; a new
    batch shape gets a new trainer."""
    rng = np.random.default_rng(5)
    model = _cnn_bn()
    x, y = rng.standard_normal((6, 2, 4, 4)), rng.integers(0, 4, 6)
    _assert_equal_to_walk(model, x, y)
    trainer = model.derived[_SLOT][1]
    model.eval()  # running statistics instead of batch statistics
    _assert_equal_to_walk(model, x, y)
    model.train()
    model.flat_parameters[...] = rng.standard_normal(model.flat_parameters.shape) * 0.3
    _assert_equal_to_walk(model, x, y)
    assert model.derived[_SLOT][1] is trainer  # kept across mode and parameter changes
    _assert_equal_to_walk(model, x[:3], y[:3])  # another batch shape: a trainer of its own
    assert model.derived[_SLOT][1] is not trainer
    _assert_equal_to_walk(model, x, y)


def test_the_kept_trainer_holds_one_batch_shape():
    """Gradients on batches of many sizes keep one trainer, with buffers for the last
    shape only (what is kept is bounded by one batch's working set)."""
    rng = np.random.default_rng(9)
    model = _cnn_bn()
    for n in (2, 5, 3, 7):
        x, y = rng.standard_normal((n, 2, 4, 4)), rng.integers(0, 4, n)
        _assert_equal_to_walk(model, x, y)
        trainer = model.derived[_SLOT][1]
        shapes = {key for step in trainer.steps for key in getattr(step, "_buffers", {})}
        assert shapes and all(key[0] == n for key in shapes), shapes


def test_a_changed_model_gets_a_new_trainer():
    """``append`` re-allocates the flat buffer: the kept trainer (whose steps view the old
    parameters) is not used again."""
    rng = np.random.default_rng(6)
    model = Sequential([L.Dense(3, 5), "tanh"], "quadratic", input_shape=(3,), seed=1)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    _assert_equal_to_walk(model, x, rng.standard_normal((4, 5)))
    before = model.derived[_SLOT][1]
    model.append(L.Dense(5, 2))
    _assert_equal_to_walk(model, x, y)
    assert model.derived[_SLOT][1] is not before


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), eval_mode=st.booleans())
def test_float32_cnn_with_batch_norm(seed, n, eval_mode):
    """float32, batch sizes from 1 (batch statistics over one sample's 4 × 4 positions) in
    either mode: the route is the walk to float32 rounding, relative to the largest entry."""
    rng = np.random.default_rng(seed)
    model = _cnn_bn(seed % 1000, "float32")
    if eval_mode:
        model.eval()
    x = rng.standard_normal((n, 2, 4, 4)).astype(np.float32)
    y = rng.integers(0, 4, n)
    _assert_equal_to_walk(model, x, y, rel=1e-4)


def test_threads_asking_for_one_models_gradient_get_the_walks_answer():
    """Calls on one model run one at a time: four threads, each asking for the gradient of
    the same model (batch norm in training mode) on its own batch of one shape (one kept
    trainer, whose buffers they would share), all get the walk's answer, and the running
    statistics end as they began (without the lock: wrong gradients or moved statistics
    in 5 runs of 5)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    model = _cnn_bn()
    batches = [(rng.standard_normal((40, 2, 4, 4)), rng.integers(0, 4, 40)) for _ in range(4)]
    expected = [walk_gradient(model, x, y) for x, y in batches]
    buffers = [b.copy() for _, b in model.named_buffers()]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            found = list(pool.map(lambda b: gradient(model, *b), batches))
            for ours, theirs in zip(found, expected, strict=True):
                for a, b in zip(ours, theirs, strict=True):
                    assert np.allclose(a, b, rtol=1e-12, atol=1e-14)
    for before, (name, after) in zip(buffers, model.named_buffers(), strict=True):
        assert np.array_equal(before, after), f"buffer {name} moved"


def test_an_all_ignored_batch_is_refused_alike_by_every_route():
    """``Chain.data`` refuses a batch whose every position is ``ignore_index`` before any
    route runs: the fused gradient, the walk, the R-operator and the factor sweeps give one
    message, naming ``y`` (the fused route once refused it in the trainer's wording)."""
    from manual_bp import Sequential
    from manual_bp import curvature as C
    from manual_bp.layers import Dense, Embedding

    model = Sequential([Embedding(5, 3), Dense(3, 4)], "categorical-cross-entropy",
                       input_shape=(2,), seed=0, ignore_index=-100)  # fmt: skip
    x, y = np.array([[0, 1], [2, 3]]), np.full((2, 2), -100)
    zeros = [np.zeros_like(p) for p in model.parameter_arrays()]
    calls = {
        "gradient": lambda: C.gradient(model, x, y),
        "walk_gradient": lambda: C.rop.walk_gradient(model, x, y),
        "hvp": lambda: C.hvp(model, x, y, zeros),
        "diag_ggn": lambda: C.diag_ggn(model, x, y),
        "per_sample_gradients": lambda: C.per_sample_gradients(model, x, y),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert message.startswith("y: every position of the batch is ignored"), name
        assert "ignore_index=-100" in message and "\n" not in message, name
