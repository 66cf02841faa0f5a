"""LAYER.dense: the dense layer's backward with random upstream gradients, alone and mid-network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import ActivationLayer, Dense
from manual_bp.gradcheck import assert_gradients_close


@st.composite
def dense_cases(draw):
    n_in, n_mid, n_out, batch = (draw(st.integers(1, 12)) for _ in range(4))
    seed = draw(st.integers(0, 2**31 - 1))
    return n_in, n_mid, n_out, batch, seed


@given(dense_cases())
def test_dense_layer_backward_matches_torch(case):
    """LAYER.dense: ∂C/∂x = dz W, ∂C/∂W = dzᵀx, ∂C/∂b = Σ_rows dz for C = Σ upstream ⊙ out.

    The dense layer under test sits in the MIDDLE of a small network
    (Dense → tanh → [Dense] → sigmoid → Dense) and the upstream gradient at the
    top is random (never all-ones).
    """
    n_in, n_mid, n_out, batch, seed = case
    rng = np.random.default_rng(seed)
    first, middle, last = (
        Dense(n_in, n_mid, rng=rng),
        Dense(n_mid, n_out, rng=rng),
        Dense(n_out, 3, rng=rng),
    )
    tanh, sigmoid = ActivationLayer("tanh"), ActivationLayer("sigmoid")
    x = rng.standard_normal((batch, n_in))
    upstream = rng.standard_normal((batch, 3))

    h1, _ = first.forward(x)
    a1, _ = tanh.forward(h1)
    h2, c2 = middle.forward(a1)
    a2, cb = sigmoid.forward(h2)
    _, c3 = last.forward(a2)
    d_a2, _ = last.backward(upstream, c3)
    d_h2, _ = sigmoid.backward(d_a2, cb)
    d_a1, grads = middle.backward(d_h2, c2)

    params = {
        name: torch.tensor(np.array(p), requires_grad=True)
        for layer, tag in ((first, "1"), (middle, "2"), (last, "3"))
        for name, p in (("W" + tag, layer.W), ("b" + tag, layer.b))
    }
    xt = torch.tensor(x)
    a1t = torch.tanh(torch.nn.functional.linear(xt, params["W1"], params["b1"]))
    a1t.retain_grad()
    a2t = torch.sigmoid(torch.nn.functional.linear(a1t, params["W2"], params["b2"]))
    outt = torch.nn.functional.linear(a2t, params["W3"], params["b3"])
    (outt * torch.tensor(upstream)).sum().backward()

    scale_w = np.abs(d_h2).T @ np.abs(a1)
    assert_gradients_close(
        grads["W"], params["W2"].grad.numpy(), name="LAYER.dense ∂C/∂W", scale=scale_w
    )
    assert_gradients_close(
        grads["b"],
        params["b2"].grad.numpy(),
        name="LAYER.dense ∂C/∂b",
        scale=np.abs(d_h2).sum(axis=0),
    )
    assert_gradients_close(
        d_a1, a1t.grad.numpy(), name="LAYER.dense ∂C/∂x", scale=np.abs(d_h2) @ np.abs(middle.W)
    )


def test_dense_layer_rejects_wrong_shapes():
    layer = Dense(3, 2, rng=0)
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\); expected \(batch, 3\)"):
        layer.forward(np.zeros((4, 5)))
    _, cache = layer.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"dz has shape \(4, 3\); expected \(4, 2\)"):
        layer.backward(np.zeros((4, 3)), cache)
