"""The lowest layer's BP4 fused with plain SGD (``DenseStep.backward_sgd``) against the
unfused step of the same trainer.

* On hypothesis-drawn Dense/activation networks (every activation and cost, float64 and
  float32, L2 or none), one fused step gives the unfused step's parameters to
  ``2ε(|W| + |ΔW|)`` (one rounding fewer), the bias and every other layer bit for bit, and the
  same last-batch cost; the unfused step is checked against torch and the readable path by
  ``tests/test_fast_path.py``.
* The gemm runs only where BLAS runs it on one thread: below, at and above
  :data:`ONE_THREAD_MNK`; sequences ``(N, T, D)`` and models whose lowest layer has no fused
  form keep the unfused step; other optimizers never fuse; :meth:`FusedTrainer.gradients`
  never fuses.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp.layers.dense_step import ONE_THREAD_MNK
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import SGD
from manual_bp.regularizers import L2
from manual_bp.training import FusedTrainer
from reference.cases import build_case
from tests.strategies import STABLE_COSTS, network_specs


def _step_both(net, x, y, *, lr, lmbda, batches, optimizer=None):
    """``(parameters, last cost, fused flags)`` after the same steps with the lowest
    layer's fused update allowed and with it switched off."""
    results = []
    for allow in (True, False):
        model = net.copy()
        opt = optimizer if optimizer is not None else SGD(lr=lr)
        trainer = FusedTrainer(model, opt, L2(lmbda) if lmbda else None, n_train=len(x))
        if not allow:
            trainer._low_sgd = None
        fused = []
        low = trainer._low_sgd
        if low is not None:  # record every call's answer
            call = low.backward_sgd

            def spy(dz, grads, shrink, call=call, fused=fused):
                fused.append(call(dz, grads, shrink))
                return fused[-1]

            trainer._low_sgd = low._replace(backward_sgd=spy)
        for index in batches:
            trainer.step(x, y, index)
        results.append((model.flat_parameters.copy(), trainer._last_cost(), fused, model))
    return results


def _close(p_fused, p_plain, before, dtype):
    bound = 2 * np.finfo(dtype).eps * (np.abs(before) + np.abs(p_plain - before))
    excess = np.abs(p_fused - p_plain) - bound
    assert np.all(excess <= 0), f"fused update off by {excess.max():.3g} beyond 2ε(|W|+|ΔW|)"


@given(
    spec=network_specs(max_depth=4, max_width=12, max_batch=12, costs=STABLE_COSTS),
    dtype=st.sampled_from([np.float64, np.float32]),
    lr=st.sampled_from([0.05, 0.5]),
    lmbda=st.sampled_from([0.0, 2.0]),
)
def test_fused_lowest_update_equals_the_unfused_step(spec, dtype, lr, lmbda):
    """One step: the lowest weight to ``2ε(|W| + |ΔW|)``, every other parameter and the
    cost exactly; a plain Dense network under plain SGD always fuses."""
    net, x, y = build_case(spec, dtype)
    y = net.prepare_targets(y, x.shape[0])
    with np.errstate(all="ignore"):
        (p_fused, c_fused, fused, model), (p_plain, c_plain, _, _) = _step_both(
            net, x, y, lr=lr, lmbda=lmbda, batches=[None]
        )
    assert fused == [True]
    weight = model.same_place(np.arange(p_fused.size), model.layers[0].params["weight"]).ravel()
    others = np.setdiff1d(np.arange(p_fused.size), weight)
    np.testing.assert_array_equal(p_fused[others], p_plain[others])
    _close(p_fused[weight], p_plain[weight], net.flat_parameters[weight], dtype)
    assert c_fused == c_plain or (np.isnan(c_fused) and np.isnan(c_plain))


@pytest.mark.parametrize("rows_delta", [-1, 0, 1])
def test_fused_only_where_blas_runs_one_thread(rows_delta):
    """``rows·|W¹|`` below, at and above :data:`ONE_THREAD_MNK`: the gemm into W¹ at and
    below, the written gradient and the flat update above; parameters as unfused."""
    n_in, n_out = 64, 32
    rows = ONE_THREAD_MNK // (n_in * n_out) + rows_delta
    net = Network([n_in, n_out, 5], ["tanh", "sigmoid"], "quadratic", seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n_in))
    y = rng.random((rows, 5))
    (p_fused, _, fused, _), (p_plain, _, _, _) = _step_both(
        net, x, y, lr=0.3, lmbda=1.0, batches=[None]
    )
    assert fused == [rows * n_in * n_out <= ONE_THREAD_MNK]
    _close(p_fused, p_plain, net.flat_parameters, np.float64)


def test_mini_batches_of_mixed_sizes_and_a_middle_dropout():
    """Several steps on index batches of different sizes, a dropout and a masked target
    (the generic seed) above the lowest Dense: every step fuses, and the parameters stay
    within the one-step bound compounded over the steps."""
    spec = [("dense", (6,), {}), "tanh", ("dropout", (0.0,), {}), ("dense", (3,), {}), "softmax"]
    model = Sequential.from_spec(spec, (5,), 3, cost="log-likelihood", ignore_index=0, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 5))
    y = model.prepare_targets(rng.integers(0, 3, 9), 9)
    batches = [rng.permutation(9)[:4], rng.permutation(9), rng.permutation(9)[:1]]
    (p_fused, _, fused, _), (p_plain, _, _, _) = _step_both(
        model, x, y, lr=0.2, lmbda=0.5, batches=batches
    )
    assert fused == [True, True, True]
    drift = 3 * 2 * np.finfo(np.float64).eps * (1 + np.abs(model.flat_parameters))
    assert np.all(np.abs(p_fused - p_plain) <= 4 * drift)


@pytest.mark.parametrize("case", ["momentum", "sequence-input", "activation-below", "conv"])
def test_what_does_not_fuse(case):
    """Momentum: no fused update at all. (N, T, D) input: the step declines, the unfused
    step runs. An activation below the lowest Dense still fuses; a convolution at the bottom
    has no fused form."""
    rng = np.random.default_rng(2)
    if case == "momentum":
        net = Network([4, 3, 2], "sigmoid", "quadratic", seed=0)
        assert FusedTrainer(net, SGD(lr=0.1, momentum=0.9))._low_sgd is None
        return
    if case == "sequence-input":
        model = Sequential.from_spec([("dense", (3,), {}), "tanh"], (4, 5), 3, cost="quadratic")
        x, y = rng.standard_normal((2, 4, 5)), rng.random((2, 4, 3))
        expected = [False]
    elif case == "activation-below":
        model = Sequential.from_spec(
            ["tanh", ("dense", (3,), {}), "sigmoid"], (4,), 3, cost="quadratic", seed=0
        )
        x, y = rng.standard_normal((6, 4)), rng.random((6, 3))
        expected = [True]
    else:
        spec = [("conv2d", (2, 3), {}), "flatten", ("dense", (2,), {}), "sigmoid"]
        model = Sequential.from_spec(spec, (1, 5, 5), 2, cost="quadratic", seed=0)
        assert FusedTrainer(model, SGD(lr=0.1))._low_sgd is None
        return
    (p_fused, _, fused, _), (p_plain, _, _, _) = _step_both(
        model, x, y, lr=0.5, lmbda=0.0, batches=[None]
    )
    assert fused == expected
    _close(p_fused, p_plain, model.flat_parameters, np.float64)


def test_gradients_never_fuse():
    """After fused steps ``gradients`` still returns every gradient, the lowest weight's
    included, equal to the readable path's."""
    net = Network([6, 4, 3], "sigmoid", "quadratic", seed=5)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 6)), rng.random((7, 3))
    trainer = FusedTrainer(net, SGD(lr=0.1))
    trainer.step(x, y)
    fast = trainer.gradients(x, y)
    readable = net.loss_and_gradients(x, y)[1]
    for got, want in zip(fast, readable, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
