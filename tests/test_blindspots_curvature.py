"""Blind spots of ``manual_bp/curvature`` found by mutation testing (issue 15,
docs/mutation.md): public functions and options that no other test called. The mutants each
test kills are listed in docs/mutation.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manual_bp import Network
from manual_bp.curvature import as_chain, gradient
from manual_bp.curvature.diagonal import diag_ggn_mc
from manual_bp.curvature.loss import output_hessian, output_hessian_composed


def _case(head: str = "softmax", cost: str = "log-likelihood"):
    rng = np.random.default_rng(0)
    net = Network([3, 4, 3], "tanh", cost, output_activation=head, seed=1)
    x = rng.standard_normal((5, 3))
    y = rng.integers(0, 3, size=5)
    return net, x, y


def test_rop_gradient_equals_torch():
    """``curvature.gradient`` (the sweep the R-operator differentiates) is ``∇C`` of the
    mean cost: against autograd of the same network in torch."""
    net, x, y = _case()
    params = [torch.tensor(np.asarray(p), requires_grad=True) for p in (*net.weights, *net.biases)]
    W1, W2, b1, b2 = params
    logits = F.linear(torch.tanh(F.linear(torch.tensor(x), W1, b1.reshape(-1))), W2, b2.reshape(-1))
    F.cross_entropy(logits, torch.tensor(y)).backward()
    ours = gradient(net, x, y)
    expected = {p.shape: p.grad.numpy() for p in params}  # shapes are distinct here
    assert len(ours) == 4
    for g in ours:
        np.testing.assert_allclose(g, expected[g.shape], rtol=1e-12, atol=1e-15)


def test_diag_ggn_mc_per_sample_has_a_batch_axis_and_averages_to_the_batch_diagonal():
    """``per_sample=True``: arrays ``(n, *shape)`` whose mean over samples is the batch
    estimate drawn with the same generator (batch quantities carry the 1/n)."""
    net, x, y = _case()
    batch = diag_ggn_mc(net, x, y, rng=3, n_samples=4)
    per_sample = diag_ggn_mc(net, x, y, rng=3, n_samples=4, per_sample=True)
    for b, p in zip(batch, per_sample, strict=True):
        assert p.shape == (len(x), *b.shape)
        np.testing.assert_allclose(p.mean(axis=0), b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("head", "cost"),
    [("softmax", "log-likelihood"), ("sigmoid", "cross-entropy"), ("tanh", "quadratic")],
)
def test_composed_output_hessian_equals_the_closed_form_and_torch(head, cost):
    """The readable ``Jᵀ(∇²ₐC)J + Σₖ gₖ∇²σₖ`` (``CURV.output-hessian``) equals the closed
    forms of ``output_hessian`` and torch's Hessian of the per-sample cost in ``f``."""
    from reference.components import torch_activation, torch_cost

    net, x, y = _case(head, cost)
    chain = as_chain(net)
    x, targets = chain.data(x, y)
    _, f = chain.forward(x)
    composed = output_hessian_composed(chain, f, targets)
    if head != "tanh":
        np.testing.assert_allclose(composed, output_hessian(chain, f, targets), atol=1e-13)
    if cost == "cross-entropy":
        return  # torch's BCE backward divides by max(a(1 − a), 1e-12): a 1e-12/(a(1 − a))
        # relative deviation of its Hessian; the closed form above is the oracle here
    sigma, loss = torch_activation(chain.head), torch_cost(chain.cost)
    expected = np.stack(
        [_torch_hessian(sigma, loss, f[i], targets[i : i + 1]) for i in range(len(f))]
    )
    # Rounding: relative to the terms the composed form adds, |∇²ₐC| σ'² + |g σ''| on the
    # diagonal of an elementwise head (a saturated sigmoid cancels a² against −a there).
    scale = np.abs(expected)
    if chain.head.elementwise:
        a = chain.head.forward(f)
        d1, d2 = chain.head.derivative(f, a), chain.head.second_derivative(f, a)
        terms = np.abs(chain.cost.hessian_diagonal(a, targets)) * d1**2
        terms += np.abs(chain.cost.grad(a, targets) * d2)
        scale = scale + terms[:, :, None] * np.eye(f.shape[1])
    bound = 64 * np.finfo(float).eps * (scale + 1e-300)
    assert (np.abs(composed - expected) <= bound).all(), np.abs(composed - expected) / bound


def _torch_hessian(sigma, loss, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    target = torch.tensor(y)
    return torch.autograd.functional.hessian(
        lambda t: loss(sigma(t[None]), target), torch.tensor(f)
    ).numpy()
