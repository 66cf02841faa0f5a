"""The plain chain's fused step (``manual_bp/training/chain.py``) against the general one.

* On hypothesis-drawn Dense/activation networks (every activation and cost, float64 and
  float32, L2 or none, batches of mixed sizes), plain-SGD training through the chain gives
  the general fused path's parameters BIT for bit, and the same last-batch cost; the general
  path is checked against torch and the readable path by ``tests/test_fast_path.py``, whose
  networks this test shows take the chain.
* The lowest weight's BP4 is fused into the update by one gemm only where BLAS runs it on
  one thread: below, at and above :data:`ONE_THREAD_MNK`.
* Models the chain does not take (another optimizer, a generic seed, a layer of another
  kind, outputs the general steps would split over threads) keep the general path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp._threads import MIN_ELEMENTS
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import SGD
from manual_bp.regularizers import L2
from manual_bp.training import FusedTrainer
from manual_bp.training.chain import ONE_THREAD_MNK
from reference.cases import build_case
from tests.strategies import STABLE_COSTS, network_specs


def _train_both(net, x, y, *, lr, lmbda, batches, fuse=True):
    """Parameters and last costs after the same steps with and without the chain, and for
    each step whether it took the chain exactly when the seed is not the generic one."""
    results = []
    for chain in (True, False):
        model = net.copy()
        trainer = FusedTrainer(model, SGD(lr=lr), L2(lmbda) if lmbda else None, n_train=len(x))
        if not chain:
            trainer._chain = None
        elif not fuse and trainer._chain is not None:
            trainer._chain.gemm = None  # BP4 written, the flat update whole
        took = []
        for index in batches:
            trainer.step(x, y, index)
            took.append(trainer._chain is not None and trainer._chain_z is not None)
        if chain:
            took = [t == (trainer.seed_kind != "generic") for t in took]
        results.append((model.flat_parameters.copy(), trainer._last_cost(), took))
    return results


@given(
    spec=network_specs(max_depth=4, max_width=12, max_batch=12, costs=STABLE_COSTS),
    dtype=st.sampled_from([np.float64, np.float32]),
    lr=st.sampled_from([0.05, 0.5]),
    lmbda=st.sampled_from([0.0, 2.0]),
)
def test_chain_equals_general_fused_path_bit_for_bit(spec, dtype, lr, lmbda):
    """The chain runs the general steps' calls: the same bits after mixed-size batches;
    with the lowest BP4 fused into the update (one rounding fewer: ``W + (−1)·aᵀδ`` in the
    gemm), one step is the general one's to ``2ε(|W| + |ΔW|)``."""
    net, x, y = build_case(spec, dtype)
    y = net.prepare_targets(y, x.shape[0])
    rng = np.random.default_rng(spec.seed)
    n = x.shape[0]
    batches = [rng.permutation(n)[: max(1, n // 2)], rng.permutation(n), rng.permutation(n)[:1]]
    with np.errstate(all="ignore"):
        (p_chain, c_chain, took), (p_general, c_general, _) = _train_both(
            net, x, y, lr=lr, lmbda=lmbda, batches=batches, fuse=False
        )
        (p_fused, _, took_fused), (p_one, _, _) = _train_both(
            net, x, y, lr=lr, lmbda=lmbda, batches=batches[:1]
        )
    # a plain Dense/activation network takes the chain unless its seed is the readable one
    assert all(took) and all(took_fused)
    np.testing.assert_array_equal(p_chain, p_general)
    assert c_chain == c_general or (np.isnan(c_chain) and np.isnan(c_general))
    before = net.flat_parameters
    bound = 2 * np.finfo(dtype).eps * (np.abs(before) + np.abs(p_one - before))
    assert np.all(np.abs(p_fused - p_one) <= bound)


@pytest.mark.parametrize("rows_delta", [-1, 0, 1])
def test_lowest_bp4_is_fused_only_on_one_blas_thread(rows_delta):
    """``rows·|W¹|`` below, at and above :data:`ONE_THREAD_MNK`: gemm into W¹ at and below,
    the written gradient and the flat update above; parameters as the general path's."""
    n_in, n_out = 64, 32
    rows = ONE_THREAD_MNK // (n_in * n_out) + rows_delta
    net = Network([n_in, n_out, 5], ["tanh", "sigmoid"], "quadratic", seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n_in))
    y = rng.random((rows, 5))
    trainer = FusedTrainer(net.copy(), SGD(lr=0.3), L2(1.0), n_train=rows)
    assert trainer._chain.takes(x)
    fused = trainer._chain._buffers[x.shape][1]
    assert fused == (rows * n_in * n_out <= ONE_THREAD_MNK)
    (p_chain, _, took), (p_general, _, _) = _train_both(
        net, x, y, lr=0.3, lmbda=1.0, batches=[None]
    )
    assert all(took)
    before = net.flat_parameters
    bound = 2 * np.finfo(np.float64).eps * (np.abs(before) + np.abs(p_general - before))
    assert np.all(np.abs(p_chain - p_general) <= bound)


def test_outputs_the_general_steps_would_split_keep_the_general_path():
    """A layer output of ``2·MIN_ELEMENTS`` numbers or more: the general steps (which may cut
    it over threads) run; one row fewer: the chain."""
    width = 256
    rows = 2 * MIN_ELEMENTS // width
    net = Network([3, width, 2], ["relu", "identity"], "quadratic", seed=0)
    trainer = FusedTrainer(net, SGD(lr=0.01))
    assert not trainer._chain.takes(np.zeros((rows, 3)))
    assert trainer._chain.takes(np.zeros((rows - 1, 3)))


@pytest.mark.parametrize(
    "case",
    ["momentum", "generic-seed", "dropout", "no-parameters-below-activation"],
)
def test_models_outside_the_chain(case):
    """Every other model keeps the general fused step (or, a chain below a first activation,
    takes it with the activation run in the forward pass only)."""
    if case == "momentum":
        net = Network([4, 3, 2], "sigmoid", "quadratic", seed=0)
        assert FusedTrainer(net, SGD(lr=0.1, momentum=0.9))._chain is None
    elif case == "generic-seed":  # a masked target: the readable seed
        spec = [("dense", (3,), {}), "softmax"]
        model = Sequential.from_spec(spec, (4,), 3, cost="log-likelihood", ignore_index=0)
        assert FusedTrainer(model, SGD(lr=0.1))._chain is None
    elif case == "dropout":
        spec = [("dense", (3,), {}), ("dropout", (0.5,), {}), "dense", "sigmoid"]
        model = Sequential.from_spec(spec, (4,), 2, cost="quadratic", seed=0)
        assert FusedTrainer(model, SGD(lr=0.1))._chain is None
    else:
        spec = ["tanh", ("dense", (3,), {}), "sigmoid"]
        model = Sequential.from_spec(spec, (4,), 3, cost="quadratic", seed=0)
        rng = np.random.default_rng(2)
        x, y = rng.standard_normal((6, 4)), rng.random((6, 3))
        (p_chain, _, took), (p_general, _, _) = _train_both(
            model, x, y, lr=0.5, lmbda=0.0, batches=[None, None]
        )
        assert all(took)
        np.testing.assert_array_equal(p_chain, p_general)
