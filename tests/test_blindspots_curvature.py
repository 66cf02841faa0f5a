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


def test_hvp_takes_a_list_of_arrays_or_one_flat_vector():
    """A direction given as arrays shaped like the parameters or as one flat vector."""
    from manual_bp.curvature import flatten, hvp

    net, x, y = _case()
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s) for s in as_chain(net).shapes]
    np.testing.assert_array_equal(
        flatten(hvp(net, x, y, arrays)), flatten(hvp(net, x, y, flatten(arrays)))
    )


def test_ggn_matrix_columns_are_ggn_vector_products():
    """``ggn_matrix`` (column i = G eᵢ): G v for random v, symmetric, positive semidefinite
    for a convex cost on the outputs."""
    from manual_bp.curvature import flatten, ggn_matrix, ggnvp

    net, x, y = _case()
    G = ggn_matrix(net, x, y)
    v = np.random.default_rng(5).standard_normal(G.shape[0])
    np.testing.assert_allclose(G @ v, flatten(ggnvp(net, x, y, v)), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(G, G.T, atol=1e-13)
    assert np.linalg.eigvalsh(G).min() > -1e-12


def test_factored_diag_hessian_through_a_hidden_softmax():
    """A coupled activation inside the network (softmax as a hidden layer): the factored
    diagonal Hessian equals the readable propagation of full per-sample matrices."""
    from manual_bp.curvature.diagonal import diag_hessian, diag_hessian_readable

    rng = np.random.default_rng(6)
    net = Network([3, 4, 2], ["softmax", "identity"], "quadratic", seed=2)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    for per_sample in (False, True):
        fast = diag_hessian(net, x, y, per_sample=per_sample)
        slow = diag_hessian_readable(net, x, y, per_sample=per_sample)
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_output_hessian_of_a_float32_model_is_float32():
    """``output_hessian`` keeps the model's dtype (the closed form builds a diagonal)."""
    chain = as_chain(Network([3, 2], "sigmoid", "cross-entropy", seed=1, dtype=np.float32))
    x, y = chain.data(np.ones((2, 3), np.float32), np.array([0, 1]))
    _, f = chain.forward(x)
    assert output_hessian(chain, f, y).dtype == np.float32


def test_monte_carlo_ggn_with_large_logits_is_finite():
    """Sampling targets from a softmax with logits of several hundred (stable shift by
    the row maximum): the MC diagonal GGN stays finite (no e^{f + max} overflow)."""
    net, x, y = _case()
    net.weights[-1] *= 400.0
    for d in diag_ggn_mc(net, x * 10, y, rng=1):
        assert np.isfinite(d).all()


def test_per_sample_gradient_statistics_equal_a_loop_over_samples():
    """``grad_norms`` (‖∇Cₓ‖² per sample), ``grad_variance`` and ``sum_grad_squared``
    against ``gradient`` of each sample alone (batch of 4, width 3: n ≠ any other axis)."""
    from manual_bp.curvature.stats import grad_norms, grad_variance, sum_grad_squared

    net, x, y = _case()
    x, y = x[:4], y[:4]
    per = [gradient(net, x[i : i + 1], y[i : i + 1]) for i in range(4)]
    norms = grad_norms(net, x, y)
    for j, arrays in enumerate(zip(*per, strict=True)):
        stacked = np.stack(arrays)
        squares = (stacked**2).reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose(norms[j], squares, rtol=1e-12)
        np.testing.assert_allclose(sum_grad_squared(net, x, y)[j], (stacked**2).sum(axis=0),
                                   rtol=1e-12, atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(grad_variance(net, x, y)[j], stacked.var(axis=0),
                                   rtol=1e-9, atol=1e-15)  # fmt: skip
