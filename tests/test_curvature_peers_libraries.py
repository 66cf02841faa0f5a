"""The peers themselves as oracles (the optional ``peers`` extra): BackPACK 1.7.1,
curvlinops 3.0.1 and Opacus 1.6.0 on the same torch model (``reference.interop.to_torch``),
float64. A model family is one entry of :data:`FAMILIES`.

BackPACK: ``BatchGrad``, ``SumGradSquared``, ``Variance``, ``KFLR`` through the conversion
helpers (``manual_bp.curvature.conventions``), ``SqrtGGNExact`` as is. curvlinops:
``EFLinearOperator``, ``KFACInverseLinearOperator`` (every damping) on a type-2 KFAC,
``EKFACLinearOperator`` and its exact-damped inverse, the top eigenvalues of its
``HessianLinearOperator`` (scipy ``eigsh``). Opacus: DP-SGD steps with the noise injected.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from manual_bp import Dense, Sequential  # noqa: E402
from manual_bp.curvature.chain import flatten  # noqa: E402
from manual_bp.curvature.conventions import (  # noqa: E402
    to_backpack_batch_grad,
    to_backpack_kron,
    to_backpack_sum_grad_squared,
    to_backpack_variance,
)
from manual_bp.curvature.dp import dp_sgd_step  # noqa: E402
from manual_bp.curvature.fisher import efvp  # noqa: E402
from manual_bp.curvature.kfac import kflr  # noqa: E402
from manual_bp.curvature.kfac_inverse import ekfac, ekfac_product, kfac_inverse_product  # noqa: E402
from manual_bp.curvature.lanczos import lanczos_eigenvalues  # noqa: E402
from manual_bp.curvature.per_sample import per_sample_gradients  # noqa: E402
from manual_bp.curvature.sqrt_ggn import sqrt_ggn  # noqa: E402
from manual_bp.curvature.stats import grad_variance, sum_grad_squared  # noqa: E402
from manual_bp.layers.activation import ActivationLayer  # noqa: E402
from reference.interop import to_torch  # noqa: E402


def _mlp_tanh() -> Sequential:
    return Sequential(
        [Dense(5, 4), ActivationLayer("tanh"), Dense(4, 3)], "categorical-cross-entropy"
    )


def _mlp_deep() -> Sequential:
    layers = [Dense(6, 5), ActivationLayer("relu"), Dense(5, 4, bias=False)]
    layers += [ActivationLayer("sigmoid"), Dense(4, 3)]
    return Sequential(layers, "categorical-cross-entropy")


#: name -> a model built on cross-entropy (the loss every peer has); add a family here.
FAMILIES: dict[str, Callable[[], Sequential]] = {"mlp-tanh": _mlp_tanh, "mlp-deep": _mlp_deep}


def _case(family: str, seed: int, n: int = 7):
    rng = np.random.default_rng(seed)
    model = FAMILIES[family]()
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    n_in = model.parameter_arrays()[0].shape[1]
    x, y = rng.standard_normal((n, n_in)), rng.integers(0, 3, n)
    return model, x, y, rng


def _close(actual, expected, rtol: float = 1e-11) -> None:
    expected = np.asarray(expected)
    bound = rtol * (np.abs(expected).max() + 1e-300)
    assert np.abs(np.asarray(actual) - expected).max() <= bound


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_backpack_quantities_and_conventions(family):
    """CURV.per-sample-grad, CURV.sqrt-ggn, and the n² and [B, A] conventions vs BackPACK."""
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import KFLR, BatchGrad, SqrtGGNExact, SumGradSquared, Variance

    model, x, y, _ = _case(family, 0)
    n = x.shape[0]
    net = backpack.extend(to_torch(model))
    loss = backpack.extend(torch.nn.CrossEntropyLoss())(net(torch.tensor(x)), torch.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's full-backward-hook notice
        with backpack.backpack(BatchGrad(), SumGradSquared(), Variance(), KFLR(), SqrtGGNExact()):
            loss.backward()
    ours = zip(
        to_backpack_batch_grad(per_sample_gradients(model, x, y)),
        to_backpack_sum_grad_squared(sum_grad_squared(model, x, y), n),
        to_backpack_variance(grad_variance(model, x, y), n),
        to_backpack_kron(model, kflr(model, x, y)),
        sqrt_ggn(model, x, y),
        strict=True,
    )
    for p, (batch, sgs, var, kron, sqrt) in zip(net.parameters(), ours, strict=True):
        _close(batch, p.grad_batch.numpy(force=True))
        _close(sgs, p.sum_grad_squared.numpy(force=True))
        _close(var, p.variance.numpy(force=True), rtol=1e-9)  # a difference of two terms
        assert len(kron) == len(p.kflr)
        for a, b in zip(kron, p.kflr, strict=True):
            _close(a, b.numpy(force=True))
        _close(sqrt, p.sqrt_ggn_exact.numpy(force=True))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_curvlinops_operators(family):
    """CURV.empirical-fisher, CURV.kfac-inverse (every damping), CURV.ekfac, CURV.lanczos."""
    curvlinops = pytest.importorskip("curvlinops")
    from scipy.sparse.linalg import eigsh

    model, x, y, rng = _case(family, 1)
    net = to_torch(model)
    params = list(net.parameters())
    loss = torch.nn.CrossEntropyLoss()
    data = [(torch.tensor(x), torch.tensor(y))]
    P = sum(p.numel() for p in params)
    v = rng.standard_normal(P)
    vt = torch.tensor(v)
    quick = {"check_deterministic": False}  # one batch, no dropout: nothing to check

    ef = curvlinops.EFLinearOperator(net, loss, params, data, **quick)
    _close(flatten(efvp(model, x, y, v)), (ef @ vt).numpy(force=True))

    kfac = curvlinops.KFACLinearOperator(
        net, loss, params, data, fisher_type="type-2", separate_weight_and_bias=False, **quick
    )
    factors = kflr(model, x, y)
    damping = float(10 ** rng.uniform(-2, 0))
    for mode, options in (
        ("factors", {}),
        ("heuristic", {"use_heuristic_damping": True}),
        ("exact", {"use_exact_damping": True}),
    ):
        inverse = curvlinops.KFACInverseLinearOperator(kfac, damping=damping, **options)
        ours = flatten(kfac_inverse_product(model, factors, v, damping, mode=mode))
        _close(ours, (inverse @ vt).numpy(force=True), rtol=1e-9)  # a solve: cond·ε

    ek = curvlinops.EKFACLinearOperator(
        net, loss, params, data, fisher_type="type-2", separate_weight_and_bias=False, **quick
    )
    corrected = ekfac(model, x, y)
    _close(flatten(ekfac_product(model, corrected, v)), (ek @ vt).numpy(force=True))
    ek_inverse = curvlinops.KFACInverseLinearOperator(ek, damping=damping, use_exact_damping=True)
    _close(
        flatten(ekfac_product(model, corrected, v, damping)),
        (ek_inverse @ vt).numpy(force=True),
        rtol=1e-9,
    )

    hessian = curvlinops.HessianLinearOperator(net, loss, params, data, **quick).to_scipy()
    theirs = eigsh(hessian, k=2, which="LM", return_eigenvectors=False)
    theirs = theirs[np.argsort(-np.abs(theirs))]
    lam, _ = lanczos_eigenvalues(model, x, y, 2, n_iter=P, rng=0)
    _close(lam, theirs, rtol=1e-9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_opacus_dp_sgd_steps(family, monkeypatch):
    """CURV.dp-sgd: three DP-SGD steps equal to Opacus's with the same noise injected (its
    noise generator replaced by σ·C·ξ)."""
    pytest.importorskip("opacus")
    import opacus.optimizers.optimizer as opacus_optimizer
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model, _, _, rng = _case(family, 2)
    n, C, sigma, lr = 7, 0.5, 1.1, 0.3
    net = GradSampleModule(to_torch(model), loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.SGD(net.parameters(), lr=lr),
        noise_multiplier=sigma,
        max_grad_norm=C,
        expected_batch_size=n,
        loss_reduction="mean",
    )
    shapes = [p.shape for p in model.parameter_arrays()]
    n_in = shapes[0][1]
    queue: list = []
    monkeypatch.setattr(opacus_optimizer, "_generate_noise", lambda *a, **k: queue.pop(0))
    for _ in range(3):
        x, y = rng.standard_normal((n, n_in)), rng.integers(0, 3, n)
        xi = [rng.standard_normal(s) for s in shapes]
        queue[:] = [torch.tensor(sigma * C * e) for e in xi]
        optimizer.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.nn.CrossEntropyLoss()(net(torch.tensor(x)), torch.tensor(y)).backward()
        optimizer.step()
        assert not queue
        dp_sgd_step(model, x, y, lr=lr, max_grad_norm=C, noise_multiplier=sigma, noise=xi)
        for p, q in zip(net.parameters(), model.parameter_arrays(), strict=True):
            _close(q, p.detach().numpy(force=True), rtol=1e-13)
