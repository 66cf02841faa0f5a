"""The residual block's fast step (``LAYER.residual``): ``x + f(x)`` from the branch's fast
steps, ``∂C/∂x = ∂C/∂y + J_fᵀ ∂C/∂y``; against the readable form and torch (float64, random
upstream gradients), 1 vs 2 threads bit-identical, float32 kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp import set_num_threads
from manual_bp.layers.containers import Residual
from manual_bp.layers.dense import Dense


def _block(dtype=np.float64, n_in=12, hidden=20):
    return Residual(
        [Dense(n_in, hidden, dtype=dtype, seed=0), "gelu", Dense(hidden, n_in, dtype=dtype, seed=1)]
    )


def _run(block, x, g, need_dx=True):
    step = block.fast_step()
    grads = {k: np.full_like(v, np.nan) for k, v in block.params.items()}
    y = step.forward(x).copy()
    dx = step.backward(g.copy(), grads, need_dx)
    return y, (None if dx is None else dx.copy()), grads


def test_fast_residual_matches_readable_and_torch():
    rng = np.random.default_rng(0)
    block = _block()
    x, g = rng.standard_normal((7, 12)), rng.standard_normal((7, 12))
    y, dx, grads = _run(block, x, g)
    ref_y, cache = block.forward(x)
    ref_dx, ref_grads = block.backward(g, cache)
    np.testing.assert_allclose(y, ref_y, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-13, atol=1e-14)
    for name in block.params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-13, atol=1e-14)
    # torch: x + W2 gelu(W1 x + b1) + b2
    p = {k: torch.from_numpy(v).requires_grad_() for k, v in block.params.items()}
    xt = torch.from_numpy(x).requires_grad_()
    h = torch.nn.functional.gelu(xt @ p["0.weight"].T + p["0.bias"])
    yt = xt + h @ p["2.weight"].T + p["2.bias"]
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    for name in block.params:
        np.testing.assert_allclose(grads[name], p[name].grad.numpy(), rtol=1e-12, atol=1e-13)
    _, none, grads2 = _run(block, x, g, need_dx=False)
    assert none is None and all(np.array_equal(grads2[k], grads[k]) for k in grads)


def test_fast_residual_with_a_parameter_free_bottom_and_identity_branch():
    """``x + f(x)`` with ``f = identity``: ∂C/∂x = 2 ∂C/∂y (the branch returns dout itself)."""
    rng = np.random.default_rng(1)
    block = Residual(["identity"])
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    y, dx, _ = _run(block, x, g)
    assert np.array_equal(y, 2 * x) and np.array_equal(dx, 2 * g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_residual_threads_bit_identical(dtype):
    rng = np.random.default_rng(2)
    block = _block(dtype, n_in=256, hidden=512)
    x = rng.standard_normal((600, 256)).astype(dtype)
    g = rng.standard_normal((600, 256)).astype(dtype)
    runs = []
    for threads in (1, 2):
        set_num_threads(threads)
        try:
            runs.append(_run(block, x, g))
        finally:
            set_num_threads(1)
    (y1, d1, g1), (y2, d2, g2) = runs
    assert y1.dtype == dtype and d1.dtype == dtype
    assert np.array_equal(y1, y2) and np.array_equal(d1, d2)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def _transformer(dtype):
    from manual_bp.models.sequential import Sequential

    spec = [
        ("residual", ([("multihead_attention", (2,), {"causal": True})],), {}),
        "layernorm",
        ("residual", ([("dense", (32,), {}), "gelu", "dense"],), {}),
        "layernorm",
    ]
    return Sequential.from_spec(spec, (10, 16), 16, cost="quadratic", seed=0, dtype=dtype)


def _trained(dtype, threads, generic):
    from manual_bp.layers.steps import GenericStep
    from manual_bp.optimizers import SGD
    from manual_bp.training.fused import FusedTrainer

    model = _transformer(dtype)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 10, 16)).astype(dtype)
    y = rng.standard_normal((12, 10, 16)).astype(dtype)
    trainer = FusedTrainer(model, SGD(lr=0.1))
    if generic:  # every layer's readable form
        trainer.steps = [GenericStep(layer) for layer in model.layers]
        trainer._forwards = [s.forward for s in trainer.steps]
        trainer._backwards = [s.backward for s in trainer.steps]
    set_num_threads(threads)
    try:
        for _ in range(3):
            trainer.step(x, y)
    finally:
        set_num_threads(1)
    return model.flat_parameters.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transformer_block_fused_steps_match_readable_steps(dtype):
    """Residual(MHA) → LayerNorm → Residual(Dense, GELU, Dense) → LayerNorm: three SGD steps
    through the fast steps equal the readable forms' (to rounding), on 1 and 2 threads alike."""
    fast1 = _trained(dtype, 1, False)
    fast2 = _trained(dtype, 2, False)
    readable = _trained(dtype, 1, True)
    assert fast1.dtype == dtype and np.array_equal(fast1, fast2)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast1, readable, rtol=tol, atol=tol)
