"""``Linear``, torch's name for ``Dense`` (issue 23): torch's signature ``Linear(in_features,
out_features, bias=True, device=None, dtype=None)``, unbatched inputs, the ``linear`` spec,
against ``torch.nn.Linear`` (output, gradients, V-axis products of an unbatched input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.layers.build import get_layer
from manual_bp.layers.dense import Dense, Linear
from manual_bp.model_spec import parse_layers
from manual_bp.models.sequential import Sequential


@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_batched_or_not(shape, bias):
    """LAYER.dense on torch's input forms, an unbatched ``(n_in,)`` included."""
    rng = np.random.default_rng(len(shape))
    theirs = torch.nn.Linear(3, 5, bias, dtype=torch.float64)
    ours = Linear(3, 5, bias)
    for name, p in theirs.named_parameters():
        ours.params[name][...] = p.detach().numpy()
    x = rng.standard_normal(shape)
    y, cache = ours.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    g = rng.standard_normal(tuple(yt.shape))
    got = torch.autograd.grad(yt, [xt, *theirs.parameters()], torch.from_numpy(g))
    dx, grads = ours.backward(g, cache)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dx, got[0].numpy(), rtol=0, atol=1e-14)
    for (name, _), ref in zip(theirs.named_parameters(), got[1:], strict=True):
        np.testing.assert_allclose(grads[name], ref.numpy(), rtol=0, atol=1e-13)
    step = ours.fast_step()
    fast = {name: np.empty_like(p) for name, p in ours.params.items()}
    np.testing.assert_array_equal(step.forward(x), y)
    np.testing.assert_allclose(step.backward(g.copy(), fast, True), dx, rtol=0, atol=1e-14)


def _close(ours, batch_of_one):
    # the same numbers up to BLAS's order of summation for a (V, n) against a (V, 1, n) stack
    np.testing.assert_allclose(ours, batch_of_one, rtol=0, atol=1e-15)


def test_unbatched_products_are_the_batch_of_one():
    """PROD.dense.* of an unbatched input: those of ``x[None]`` without the batch axis."""
    rng = np.random.default_rng(3)
    layer = Linear(3, 4)
    x = rng.standard_normal(3)
    _, cache = layer.forward(x)
    _, cache1 = layer.forward(x[None])
    M, T = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    T_params = {name: rng.standard_normal((2, *p.shape)) for name, p in layer.params.items()}
    dout = rng.standard_normal(4)
    _close(layer.input_vjp(cache, M), layer.input_vjp(cache1, M[:, None])[:, 0])
    _close(layer.input_jvp(cache, T), layer.input_jvp(cache1, T[:, None])[:, 0])
    for name, grad in layer.param_vjp(cache, M).items():
        _close(grad, layer.param_vjp(cache1, M[:, None])[name])
    _close(layer.param_jvp(cache, T_params), layer.param_jvp(cache1, T_params)[:, 0])
    r_x, r_p = layer.residual(cache, dout, T, T_params)
    r_x1, r_p1 = layer.residual(cache1, dout[None], T[:, None], T_params)
    _close(r_x, r_x1[:, 0])
    for name in r_p:
        _close(r_p[name], r_p1[name])


def test_linear_is_dense_under_torchs_name_and_keywords():
    assert Linear is Dense
    x = np.ones((2, 3))
    np.testing.assert_array_equal(
        Linear(3, 2, seed=0).forward(input=x)[0], Linear(3, 2, seed=0).forward(x)[0]
    )
    assert get_layer({"name": "linear", "in_features": 3, "out_features": 2}).out_features == 2
    assert parse_layers("linear(30)") == [{"name": "linear", "args": [30]}]
    model = Sequential.from_spec(
        [{"name": "linear", "args": [30]}, "relu", "linear"], (8,), n_outputs=2
    )
    assert [layer.out_features for layer in model.layers[::2]] == [30, 2]
    assert Linear(3, 2, True, "cpu", torch.float32).params["weight"].dtype == np.float32
    assert Linear(3, 2, dtype=None).params["weight"].dtype == np.float64
    with pytest.raises(ValueError, match="device='cuda' has no meaning here"):
        Linear(3, 2, device="cuda")
