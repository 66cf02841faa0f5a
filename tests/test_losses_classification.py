"""torch's ``CrossEntropyLoss``, ``NLLLoss`` and ``MultiMarginLoss``: every option against
torch in float64 with a random ``grad_output``, torch's own module configurations, finite
differences, the adjoint identity, saturation, the edges (every target ignored, label
smoothing at 0 and 1, hinges exactly at 0) and the errors (docs/losses_classification.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing._internal.common_modules import module_db

import manual_bp
from manual_bp.gradcheck import finite_difference_gradient
from manual_bp.losses import CrossEntropyLoss, MultiMarginLoss, NLLLoss
from reference.checks_losses_classification import (
    _class_arrays,
    _margin_arrays,
    class_loss_comparisons,
    margin_loss_comparisons,
)

FAST = settings(max_examples=40)
REDUCTIONS = st.sampled_from(("none", "mean", "sum"))


@st.composite
def class_cases(draw, loss: str = "cross-entropy") -> dict:
    """Every option of a class loss, drawn (the verify check's ``draw_class_case`` form)."""
    n_classes = draw(st.integers(1, 5))
    soft = loss == "cross-entropy" and draw(st.booleans())
    reduction = draw(REDUCTIONS)
    ignore = "absent" if soft else draw(st.sampled_from(("absent", "present", "all")))
    if ignore == "all" and reduction == "mean":
        ignore = "present"  # NaN: test_every_target_ignored
    smoothing = 0.0
    if loss == "cross-entropy":
        smoothing = draw(st.one_of(st.sampled_from((0.0, 1.0)), st.floats(1e-3, 0.999)))
    return dict(
        loss=loss,
        n_classes=n_classes,
        batch=draw(st.integers(1, 4)),
        form=draw(st.sampled_from(("1d", "2d", "kd"))),
        extra=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))),
        soft=soft,
        weighted=draw(st.booleans()),
        ignore=ignore,
        ignore_index=draw(st.sampled_from((-100, -1, 0, n_classes - 1))),
        label_smoothing=smoothing,
        reduction=reduction,
        magnitude=draw(st.sampled_from((1.0, 1.0, 700.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@st.composite
def margin_cases(draw, p: int | None = None, weighted: bool | None = None) -> dict:
    """Every option of ``MultiMarginLoss``; ``p`` and ``weighted`` fixed when given (each
    pair gets its own examples: a weighted ``p = 2`` case must not be left to chance)."""
    return dict(
        p=draw(st.sampled_from((1, 2))) if p is None else p,
        margin=draw(st.sampled_from((1.0, 0.5, 0.0, -0.5, 2.25))),
        weighted=draw(st.booleans()) if weighted is None else weighted,
        form=draw(st.sampled_from(("0d", "1d", "1d-batch", "2d", "2d"))),
        n_classes=draw(st.integers(1, 6)),
        batch=draw(st.integers(1, 5)),
        reduction=draw(REDUCTIONS),
        magnitude=draw(st.sampled_from((1.0, 1.0, 700.0))),
        on_hinge=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _check_all(comparisons, *equations):
    seen = set()
    for comparison in comparisons:
        if comparison.equation in equations:
            comparison.check()
            seen.add(comparison.equation)
    assert seen == set(equations), seen


# ---------------------------------------------------------------------- torch, every option
@FAST
@given(class_cases("cross-entropy"))
def test_cross_entropy_matches_torch(case):
    """LOSS.cross-entropy and LOSS.cross-entropy.grad: the value, ∂/∂input and (probability
    targets) ∂/∂target against torch.nn.CrossEntropyLoss for every option."""
    comparisons = class_loss_comparisons(case)
    _check_all(comparisons, "LOSS.cross-entropy", "LOSS.cross-entropy.grad")


@FAST
@given(class_cases("cross-entropy"))
def test_cross_entropy_hessian_matches_torch_double_backward(case):
    """LOSS.cross-entropy.hessian: the blocks g_i (Σa_i)(diag p_i − p_i p_iᵀ) applied to a
    random direction equal torch's double backward."""
    _check_all(class_loss_comparisons(case), "LOSS.cross-entropy.hessian")


@FAST
@given(class_cases("nll"))
def test_nll_matches_torch(case):
    """LOSS.nll and LOSS.nll.grad against torch.nn.NLLLoss for every option."""
    _check_all(class_loss_comparisons(case), "LOSS.nll", "LOSS.nll.grad")


P_AND_WEIGHT = pytest.mark.parametrize("p, weighted", [(1, 0), (1, 1), (2, 0), (2, 1)])


@P_AND_WEIGHT
@settings(max_examples=15)
@given(data=st.data())
def test_multi_margin_matches_torch(p, weighted, data):
    """LOSS.multi-margin and LOSS.multi-margin.grad against torch.nn.MultiMarginLoss: p, the
    margin, weights, every input form, hinges exactly at 0."""
    case = data.draw(margin_cases(p, weighted))
    _check_all(margin_loss_comparisons(case), "LOSS.multi-margin", "LOSS.multi-margin.grad")


@P_AND_WEIGHT
@settings(max_examples=15)
@given(data=st.data())
def test_multi_margin_hessian_matches_torch(p, weighted, data):
    """LOSS.multi-margin.hessian: (2 g w_y / C) Σ_active (e_j − e_y)(e_j − e_y)ᵀ for p = 2,
    0 for p = 1, against double backward through torch primitives."""
    case = data.draw(margin_cases(p, weighted))
    _check_all(margin_loss_comparisons(case), "LOSS.multi-margin.hessian")


# ---------------------------------------------------------------------- torch's module tests
OURS = {
    "CrossEntropyLoss": CrossEntropyLoss,
    "NLLLoss": NLLLoss,
    "MultiMarginLoss": MultiMarginLoss,
}


def _module_configurations():
    torch.manual_seed(0)
    out = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in OURS:
            continue
        inputs = info.module_inputs_func(
            info, device="cpu", dtype=torch.float64, requires_grad=True, training=False
        )
        for k, module_input in enumerate(inputs):
            out.append(pytest.param(name, module_input, id=f"{name}-{k}-{module_input.desc}"))
    return out


@pytest.mark.parametrize("name, module_input", _module_configurations())
def test_torch_module_db_configuration_agrees(name, module_input):
    """Every module_db configuration of the three classes (torch's exact constructor
    arguments and inputs): value, ∂/∂input and ∂/∂target (where torch gives one)."""
    kwargs = dict(module_input.constructor_input.kwargs)
    args = module_input.constructor_input.args
    module = OURS[name]
    torch_module = getattr(torch.nn, name)(*args, **kwargs)
    ours = module(*args, **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in kwargs.items()})
    tensors = module_input.forward_input.args
    expected = torch_module(*tensors)
    value, cache = ours.forward(*(t.detach().numpy() for t in tensors))
    rng = np.random.default_rng(len(tensors[0].reshape(-1)))
    grad_output = rng.standard_normal(value.shape)
    wrt = [t for t in tensors if t.requires_grad]
    grads = torch.autograd.grad(expected, wrt, torch.tensor(grad_output))
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-13, atol=1e-14)
    ours_grads = [g for g in ours.backward(grad_output, cache) if g is not None]
    assert len(ours_grads) == len(grads)
    for mine, theirs in zip(ours_grads, grads, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------- finite differences
@settings(max_examples=15)
@given(class_cases("cross-entropy"), st.data())
def test_cross_entropy_gradient_matches_finite_differences(case, data):
    """LOSS.cross-entropy.grad against central differences of ⟨grad_output, value⟩ (both
    arguments of a probability target), logits of moderate size."""
    case = dict(case, magnitude=1.0)
    x, target, weight, kwargs = _class_arrays(case)
    if case["reduction"] == "mean" and not case["soft"] and case["ignore"] == "all":
        return
    loss = CrossEntropyLoss(weight=weight, **kwargs)
    value, cache = loss.forward(x, target)
    grad_output = np.random.default_rng(case["seed"]).standard_normal(value.shape)
    d_x, d_t = loss.backward(grad_output, cache)
    x = np.ascontiguousarray(x)

    def f():
        return float(np.sum(grad_output * loss.forward(x, target)[0]))

    np.testing.assert_allclose(d_x, finite_difference_gradient(f, x), rtol=1e-6, atol=1e-7)
    if case["soft"]:
        target = np.ascontiguousarray(target, dtype=np.float64)
        fd = finite_difference_gradient(f, target)
        np.testing.assert_allclose(d_t, fd, rtol=1e-6, atol=1e-7)


@settings(max_examples=15)
@given(margin_cases())
def test_multi_margin_gradient_matches_finite_differences(case):
    """LOSS.multi-margin.grad against central differences away from the hinges."""
    case = dict(case, magnitude=1.0, on_hinge=False)
    x, target, weight = _margin_arrays(case)
    x = np.ascontiguousarray(x, dtype=np.float64)
    loss = MultiMarginLoss(p=case["p"], margin=case["margin"], weight=weight,
                           reduction=case["reduction"])  # fmt: skip
    value, cache = loss.forward(x, target)
    hinge = cache.hinge[~np.eye(cache.hinge.shape[1], dtype=bool)[cache.labels]]
    if hinge.size and np.abs(hinge).min() < 1e-4:
        return  # a kink within the step
    grad_output = np.random.default_rng(case["seed"]).standard_normal(value.shape)
    (d_x, _) = loss.backward(grad_output, cache)

    def f():
        return float(np.sum(grad_output * loss.forward(x, target)[0]))

    np.testing.assert_allclose(d_x, finite_difference_gradient(f, x), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- adjoint identity
@settings(max_examples=20)
@given(st.one_of(class_cases("cross-entropy"), class_cases("nll")))
def test_class_loss_backward_is_the_adjoint_of_torchs_jvp(case):
    """⟨grad_output, J v⟩ = ⟨backwardᵀ(grad_output), v⟩ with J v from torch.func.jvp
    (LOSS.cross-entropy.grad, LOSS.nll.grad)."""
    x, target, weight, kwargs = _class_arrays(case)
    cls = CrossEntropyLoss if case["loss"] == "cross-entropy" else NLLLoss
    loss = cls(weight=weight, **kwargs)
    value, cache = loss.forward(x, target)
    if np.isnan(value).any():
        return
    rng = np.random.default_rng(case["seed"] + 7)
    grad_output = rng.standard_normal(value.shape)
    v = rng.standard_normal(x.shape)
    d_x = loss.backward(grad_output, cache)[0]
    torch_cls = torch.nn.CrossEntropyLoss if cls is CrossEntropyLoss else torch.nn.NLLLoss
    module = torch_cls(weight=None if weight is None else torch.tensor(weight), **kwargs)
    _, jv = torch.func.jvp(lambda t: module(t, torch.tensor(target)), (torch.tensor(x),),
                           (torch.tensor(v),))  # fmt: skip
    lhs = float(np.sum(grad_output * jv.numpy()))
    rhs = float(np.sum(d_x * v))
    scale = float(np.sum(np.abs(d_x * v))) + abs(lhs)
    assert abs(lhs - rhs) <= 1e-12 * max(scale, 1e-300)


# ---------------------------------------------------------------------- edges and saturation
@pytest.mark.parametrize("cls", [CrossEntropyLoss, NLLLoss])
@pytest.mark.parametrize("smoothing", [0.0, 0.4])
def test_every_target_ignored(cls, smoothing):
    """LOSS.reduction's 0/0: every target ignored gives NaN for 'mean' and 0 for 'sum' and
    'none', with a zero gradient, as torch (the mean is not counted over ignored rows)."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    target = np.array([2, 2, 2])
    extra = {"label_smoothing": smoothing} if cls is CrossEntropyLoss else {}
    for reduction in ("mean", "sum", "none"):
        loss = cls(ignore_index=2, reduction=reduction, **extra)
        value, cache = loss.forward(x, target)
        torch_cls = getattr(torch.nn, cls.__name__)
        xt = torch.tensor(x, requires_grad=True)
        expected = torch_cls(ignore_index=2, reduction=reduction, **extra)(xt, torch.tensor(target))
        np.testing.assert_array_equal(value, expected.detach().numpy())
        grad_output = np.full(value.shape, 0.7)
        (gt,) = torch.autograd.grad(expected, xt, torch.tensor(grad_output))
        np.testing.assert_array_equal(loss.backward(grad_output, cache)[0], gt.numpy())
        assert not np.abs(gt.numpy()).any()


def test_ignored_targets_are_left_out_of_the_mean():
    """'mean' divides by the weights of the counted targets only (Σ_{kept} w_y), not by
    the row count: one ignored row of three changes the denominator."""
    x = np.random.default_rng(1).standard_normal((3, 4))
    target = np.array([0, 3, 1])
    weight = np.array([0.5, 2.0, 1.0, 3.0])
    loss = CrossEntropyLoss(weight=weight, ignore_index=3)
    value = float(loss(x, target))
    log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
    expected = -(0.5 * log_p[0, 0] + 2.0 * log_p[2, 1]) / (0.5 + 2.0)
    assert value == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("smoothing", [0.0, 1e-12, 0.5, 1.0 - 1e-12, 1.0])
def test_label_smoothing_at_and_beside_its_ends(smoothing):
    """LOSS.cross-entropy at ε = 0 and 1 exactly and a hair inside: the uniform term is
    weighted by every class's weight (not the target's), with torch's denominator."""
    rng = np.random.default_rng(2)
    x, target, weight = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2]), rng.random(3) + 0.1
    loss = CrossEntropyLoss(weight=weight, label_smoothing=smoothing, ignore_index=1)
    value, cache = loss.forward(x, target)
    xt = torch.tensor(x, requires_grad=True)
    module = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weight), ignore_index=1, label_smoothing=smoothing
    )
    expected = module(xt, torch.tensor(target))
    (gt,) = torch.autograd.grad(expected, xt, torch.tensor(0.3, dtype=torch.float64))
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(loss.backward(0.3, cache)[0], gt.numpy(), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("soft", [False, True])
def test_saturated_logits_stay_finite_and_match_torch(soft):
    """Logits of ±700 (exp overflows unshifted): value and gradient finite and torch's."""
    x = np.array([[700.0, -700.0, 0.0], [-700.0, -700.0, 700.0]])
    target = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]) if soft else np.array([1, 2])
    loss = CrossEntropyLoss(label_smoothing=0.1, reduction="sum")
    value, cache = loss.forward(x, target)
    xt = torch.tensor(x, requires_grad=True)
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum")(
        xt, torch.tensor(target)
    )
    (gt,) = torch.autograd.grad(expected, xt, torch.tensor(1.5, dtype=torch.float64))
    assert np.isfinite(value) and value == pytest.approx(expected.item(), rel=1e-14)
    np.testing.assert_allclose(loss.backward(1.5, cache)[0], gt.numpy(), rtol=1e-13, atol=1e-300)


def test_zero_total_weight_gives_nan_as_torch():
    """Counted targets whose weights are all 0: 'mean' is 0/0 = NaN, and so is the gradient
    at those targets (torch's −w·g/0), while 'sum' stays 0."""
    x = np.random.default_rng(3).standard_normal((2, 3))
    weight, target = np.array([0.0, 1.0, 0.0]), np.array([0, 2])
    loss = NLLLoss(weight=weight)
    value, cache = loss.forward(x, target)
    xt = torch.tensor(x, requires_grad=True)
    expected = torch.nn.NLLLoss(weight=torch.tensor(weight))(xt, torch.tensor(target))
    (gt,) = torch.autograd.grad(expected, xt)
    assert np.isnan(value) and torch.isnan(expected)
    np.testing.assert_array_equal(loss.backward(1.0, cache)[0], gt.numpy())
    assert float(NLLLoss(weight=weight, reduction="sum")(x, target)) == 0.0


def test_float32_follows_torch_float32():
    """float32 in, float32 out, within float32 rounding of torch's float32."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    target = rng.integers(0, 4, (5, 3))
    loss = CrossEntropyLoss(weight=rng.random(4) + 0.1, label_smoothing=0.2)
    value, cache = loss.forward(x, target)
    assert value.dtype == np.float32
    d_x = loss.backward(np.float32(1.0), cache)[0]
    assert d_x.dtype == np.float32
    xt = torch.tensor(x, requires_grad=True)
    expected = torch.nn.CrossEntropyLoss(weight=torch.tensor(loss.weight, dtype=torch.float32),
                                         label_smoothing=0.2)(xt, torch.tensor(target))  # fmt: skip
    (gt,) = torch.autograd.grad(expected, xt)
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(d_x, gt.numpy(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- inside a network
@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1), REDUCTIONS, st.booleans())
def test_cross_entropy_at_the_end_of_a_random_stack(seed, reduction, soft):
    """Linear → tanh → Linear → CrossEntropyLoss (weights, smoothing, ignore_index): the
    first layer's weight gradient through the loss's backward equals torch's
    (LOSS.cross-entropy.grad in a chain)."""
    rng = np.random.default_rng(seed)
    n, d, h, c = (int(k) for k in rng.integers(1, 6, 4))
    first, second = manual_bp.Linear(d, h), manual_bp.Linear(h, c)
    x = rng.standard_normal((n, d))
    target = rng.random((n, c)) if soft else rng.integers(0, c, n)
    kwargs = dict(weight=rng.random(c) + 0.1, reduction=reduction, label_smoothing=0.25)
    if not soft:
        kwargs["ignore_index"] = int(rng.integers(-1, c))
    loss = CrossEntropyLoss(**kwargs)
    z1, cache1 = first.forward(x)
    a1 = np.tanh(z1)
    z2, cache2 = second.forward(a1)
    value, cache = loss.forward(z2, target)
    if np.isnan(value).any():
        return
    grad_output = rng.standard_normal(value.shape)
    d_z2 = loss.backward(grad_output, cache)[0]
    d_a1, _ = second.backward(d_z2, cache2)
    _, grads = first.backward(d_a1 * (1 - a1**2), cache1)

    w1 = torch.tensor(first.params["weight"], requires_grad=True)
    b1 = torch.tensor(first.params["bias"])
    w2, b2 = (torch.tensor(second.params[k]) for k in ("weight", "bias"))
    zt = torch.tanh(torch.tensor(x) @ w1.T + b1) @ w2.T + b2
    tk = {k: (torch.tensor(v) if k == "weight" else v) for k, v in kwargs.items()}
    out = torch.nn.CrossEntropyLoss(**tk)(zt, torch.tensor(target))
    (gw,) = torch.autograd.grad(out, w1, torch.tensor(grad_output))
    np.testing.assert_allclose(grads["weight"], gw.numpy(), rtol=1e-10, atol=1e-13)
