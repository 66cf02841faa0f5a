"""torch's ``LinearCrossEntropyLoss``, the one loss with a parameter: every option against
torch in float64 with a random ``grad_output`` (the parameters copied in, their gradients
compared), the chunked path against the reference path at and beside every chunk edge,
finite differences, the adjoint identity, the input Hessian against torch's double
backward, the loss at the end of a random stack, the edges and torch's own error inputs
(docs/losses_classification.md, ``LOSS.linear-cross-entropy*``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp.gradcheck import finite_difference_gradient
from manual_bp.losses import (
    LOSSES,
    CrossEntropyLoss,
    LinearCrossEntropyLoss,
    LinearCrossEntropyOptions,
    get_loss,
)
from reference.checks_losses_linear import linear_arrays, linear_loss_comparisons

FAST = settings(max_examples=30, deadline=None)
REDUCTIONS = st.sampled_from(("none", "mean", "sum"))


@st.composite
def linear_cases(draw, chunked: bool | None = None) -> dict:
    """Every option of ``LinearCrossEntropyLoss`` (the verify check's case form)."""
    c = draw(st.integers(1, 5))
    batched = draw(st.booleans()) or draw(st.booleans())
    out_features = () if not batched else draw(st.sampled_from(((), (), (1,), (3,), (2, 3))))
    soft = draw(st.booleans()) and not chunked
    reduction = draw(REDUCTIONS)
    ignore = None if soft else draw(st.sampled_from((None, -100, 0, c - 1, c + 5)))
    if c == 1 and ignore == 0:
        ignore = -1
    if chunked:
        out_features = ()
    options = None
    if chunked or (chunked is None and draw(st.booleans())):
        methods = ({}, {"chunking_method": "aspect_ratio"},
                   {"chunking_method": "aspect_ratio:2"}, {"chunking_method": None})  # fmt: skip
        sizes = st.builds(lambda k: {"batch_chunk_size": k}, st.integers(1, 7))
        options = draw(st.sampled_from(methods) | sizes)
    smoothing = draw(st.sampled_from((0.0, 1.0)) | st.floats(1e-3, 0.999))
    return dict(
        in_features=draw(st.integers(1, 5)),
        num_classes=c,
        batch=draw(st.integers(1, 6)) if batched else None,
        out_features=out_features,
        bias=draw(st.booleans()),
        soft=soft,
        weighted=draw(st.booleans()),
        ignore_index=ignore,
        all_ignored=ignore is not None and reduction != "mean" and draw(st.booleans()),
        label_smoothing=0.0 if chunked else smoothing,
        reduction=reduction,
        options=options,
        magnitude=draw(st.sampled_from((1.0, 1.0, 40.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _check_all(comparisons, *equations):
    seen = set()
    for comparison in comparisons:
        if comparison.equation in equations:
            comparison.check()
            seen.add(comparison.equation)
    assert seen == set(equations), seen


def _ours(case):
    """Our loss of a case with its own parameters (no torch copy), and its arrays."""
    x, target, kwargs = linear_arrays(case)
    return LinearCrossEntropyLoss(case["in_features"], case["num_classes"], **kwargs), x, target


# ---------------------------------------------------------------------- torch, every option
@FAST
@given(linear_cases())
def test_linear_cross_entropy_matches_torch(case):
    """LOSS.linear-cross-entropy and LOSS.linear-cross-entropy.grad: the value, ∂/∂input,
    ∂/∂linear.weight, ∂/∂linear.bias and (probabilities) ∂/∂target against
    torch.nn.LinearCrossEntropyLoss for every option, the chunked path included."""
    _check_all(linear_loss_comparisons(case), "LOSS.linear-cross-entropy",
               "LOSS.linear-cross-entropy.grad")  # fmt: skip


@FAST
@given(linear_cases(chunked=True))
def test_chunked_path_matches_torch_chunked_path(case):
    """LOSS.linear-cross-entropy and .grad on the chunked path against torch's chunked op
    (value, ∂input, ∂linear.weight, ∂linear.bias)."""
    _check_all(linear_loss_comparisons(case), "LOSS.linear-cross-entropy",
               "LOSS.linear-cross-entropy.grad")  # fmt: skip


@FAST
@given(linear_cases())
def test_linear_cross_entropy_hessian_matches_torch_double_backward(case):
    """LOSS.linear-cross-entropy.hessian: Σ_j W_jᵀ H_j W_j applied to a random direction
    equals torch's double backward (reference path), per sample."""
    _check_all(linear_loss_comparisons(case), "LOSS.linear-cross-entropy.hessian")


# ---------------------------------------------------------------------- the chunked path
@pytest.mark.parametrize("rows", [1, 5, 8])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_chunked_path_matches_the_reference_path(rows, reduction):
    """Chunk sizes 1, rows − 1, rows, rows + 1 (both sides of and at the edge), weights and
    ignored rows: the chunked value and gradients equal the reference path's, and the
    chunked cache holds one number per row, never the (rows, C) probabilities."""
    rng = np.random.default_rng(rows)
    c, n_in = 7, 3
    weight = rng.uniform(0.2, 2.0, c)
    x = rng.standard_normal((rows, n_in))
    target = np.where(rng.random(rows) < 0.3, 2, rng.integers(0, c, rows))
    target[0] = 1
    grad_output = rng.standard_normal(() if reduction != "none" else (rows,))
    reference = LinearCrossEntropyLoss(n_in, c, bias=True, weight=weight, ignore_index=2,
                                       reduction=reduction)  # fmt: skip
    value, cache = reference.forward(x, target)
    grads, params = reference.backward_with_params(grad_output, cache)
    hessian = reference.input_hessian(grad_output, cache)
    for size in sorted({1, max(rows - 1, 1), rows, rows + 1}):
        chunked = LinearCrossEntropyLoss(n_in, c, bias=True, weight=weight, ignore_index=2,
                                         reduction=reduction,
                                         options={"batch_chunk_size": size})  # fmt: skip
        for name, array in chunked.named_parameters():
            array[...] = reference.params[name]
        value_c, cache_c = chunked.forward(x, target)
        assert cache_c.classes is None and cache_c.chunk == min(size, rows)
        assert all(np.ndim(v) <= 1 for v in (cache_c.log_sum_exp, cache_c.labels))
        grads_c, params_c = chunked.backward_with_params(grad_output, cache_c)
        np.testing.assert_allclose(value_c, value, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grads_c[0], grads[0], rtol=1e-12, atol=1e-15)
        assert grads_c[1] is None
        for name in params:
            np.testing.assert_allclose(params_c[name], params[name], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(chunked.input_hessian(grad_output, cache_c), hessian,
                                   rtol=1e-12, atol=1e-15)  # fmt: skip


def test_chunk_size_follows_torchs_rule():
    """torch's _adjust on the CPU: batch_chunk_size, aspect_ratio[:k], auto, and the
    disagreeing pair refused."""
    for options, rows, n_in, c in [({}, 8, 5, 4), ({"chunking_method": "aspect_ratio:4"}, 8, 5, 4),
                                   ({"chunking_method": "aspect_ratio"}, 100, 3, 40),
                                   ({"batch_chunk_size": 3}, 8, 5, 4),
                                   ({"chunking_method": None}, 8, 5, 4)]:  # fmt: skip
        theirs = torch.nn.LinearCrossEntropyOptions(**options)._adjust(
            rows, n_in, c, torch.float64, torch.device("cpu")
        )
        ours = LinearCrossEntropyOptions(**options).chunk_size(rows, n_in, c)
        assert ours == theirs.batch_chunk_size, (options, ours, theirs)
    with pytest.raises(ValueError, match="batch_chunk_size"):
        LinearCrossEntropyOptions(batch_chunk_size=3, chunking_method="aspect_ratio").chunk_size(
            8, 5, 4
        )


# ---------------------------------------------------------------------- finite differences
@settings(max_examples=15, deadline=None)
@given(linear_cases())
def test_linear_cross_entropy_gradient_matches_finite_differences(case):
    """LOSS.linear-cross-entropy.grad against central differences of ⟨grad_output, value⟩
    in the input, linear.weight and linear.bias."""
    case = dict(case, magnitude=1.0, all_ignored=False)
    loss, x, target = _ours(case)
    value, cache = loss.forward(x, target)
    if np.isnan(value).any():
        return
    grad_output = np.random.default_rng(case["seed"]).standard_normal(value.shape)
    (d_x, _), d_params = loss.backward_with_params(grad_output, cache)
    x = np.ascontiguousarray(x)

    def f():
        return float(np.sum(grad_output * loss.forward(x, target)[0]))

    np.testing.assert_allclose(d_x, finite_difference_gradient(f, x), rtol=1e-6, atol=1e-7)
    for name, array in loss.named_parameters():
        fd = finite_difference_gradient(f, array)
        np.testing.assert_allclose(d_params[name], fd, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- adjoint identity
@settings(max_examples=20, deadline=None)
@given(linear_cases())
def test_backward_is_the_adjoint_of_torchs_jvp(case):
    """⟨g, J (v_x, v_W, v_b)⟩ = ⟨backward(g), (v_x, v_W, v_b)⟩ with the JVP from
    torch.func.jvp of torch's reference path (LOSS.linear-cross-entropy.grad)."""
    loss, x, target = _ours(case)
    value, cache = loss.forward(x, target)
    if np.isnan(value).any():
        return
    rng = np.random.default_rng(case["seed"] + 7)
    grad_output = rng.standard_normal(value.shape)
    (d_x, _), d_params = loss.backward_with_params(grad_output, cache)
    params = dict(loss.named_parameters())
    tangents = {"x": rng.standard_normal(x.shape)}
    tangents.update({name: rng.standard_normal(a.shape) for name, a in params.items()})
    of, c = case["out_features"], case["num_classes"]
    weight = None if loss.weight is None else torch.tensor(loss.weight)

    def f(xt, w, *b):
        z = torch.nn.functional.linear(xt, w, b[0] if b else None)
        z = z.reshape(*xt.shape[:-1], c, *of)
        return torch.nn.functional.cross_entropy(
            z, torch.tensor(target), weight=weight, reduction=case["reduction"],
            ignore_index=-100 if case["ignore_index"] is None else case["ignore_index"],
            label_smoothing=case["label_smoothing"])  # fmt: skip

    primals = (torch.tensor(x), *(torch.tensor(a) for a in params.values()))
    directions = (torch.tensor(tangents["x"]), *(torch.tensor(tangents[n]) for n in params))
    _, jv = torch.func.jvp(f, primals, directions)
    lhs = float(np.sum(grad_output * jv.numpy()))
    pairs = [(d_x, tangents["x"])] + [(d_params[n], tangents[n]) for n in params]
    rhs = sum(float(np.sum(a * b)) for a, b in pairs)
    scale = sum(float(np.sum(np.abs(a * b))) for a, b in pairs) + abs(lhs)
    assert abs(lhs - rhs) <= 1e-12 * max(scale, 1e-300)


# ---------------------------------------------------------------------- inside a network
@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), REDUCTIONS, st.booleans())
def test_linear_cross_entropy_at_the_end_of_a_random_stack(seed, reduction, chunked):
    """Linear → tanh → LinearCrossEntropyLoss (weights, smoothing or chunks,
    ignore_index): the first layer's weight gradient through the loss's backward equals
    torch's (LOSS.linear-cross-entropy.grad in a chain)."""
    rng = np.random.default_rng(seed)
    n, d, h, c = (int(k) for k in rng.integers(1, 6, 4))
    first = manual_bp.Linear(d, h)
    x = rng.standard_normal((n, d))
    target = rng.integers(0, c, n)
    kwargs = dict(weight=rng.random(c) + 0.1, reduction=reduction, bias=True,
                  ignore_index=int(rng.integers(-1, c)))  # fmt: skip
    if chunked:
        kwargs["options"] = {"batch_chunk_size": int(rng.integers(1, n + 2))}
    else:
        kwargs["label_smoothing"] = 0.25
    loss = LinearCrossEntropyLoss(h, c, **kwargs)
    z1, cache1 = first.forward(x)
    a1 = np.tanh(z1)
    value, cache = loss.forward(a1, target)
    if np.isnan(value).any():
        return
    grad_output = rng.standard_normal(value.shape)
    d_a1 = loss.backward(grad_output, cache)[0]
    _, grads = first.backward(d_a1 * (1 - a1**2), cache1)

    w1 = torch.tensor(first.params["weight"], requires_grad=True)
    b1 = torch.tensor(first.params["bias"])
    tk = {k: v for k, v in kwargs.items() if k != "options"}
    tk["weight"] = torch.tensor(kwargs["weight"])
    module = torch.nn.LinearCrossEntropyLoss(h, c, dtype=torch.float64, **tk)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.tensor(loss.params[name]))
    out = module(torch.tanh(torch.tensor(x) @ w1.T + b1), torch.tensor(target))
    (gw,) = torch.autograd.grad(out, w1, torch.tensor(grad_output))
    np.testing.assert_allclose(grads["weight"], gw.numpy(), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------- edges
@pytest.mark.parametrize("options", [None, {"batch_chunk_size": 2}])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_target_ignored(options, reduction):
    """Every target ignored (in range and out of range): 'mean' is NaN (0/0), 'sum' and
    'none' 0, and every gradient 0 — as torch, on both paths."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    for ignore in (1, 9):
        loss = LinearCrossEntropyLoss(3, 5, bias=True, ignore_index=ignore, reduction=reduction,
                                      options=options)  # fmt: skip
        target = np.full(4, ignore)
        value, cache = loss.forward(x, target)
        module = torch.nn.LinearCrossEntropyLoss(
            3, 5, bias=True, ignore_index=ignore, reduction=reduction, dtype=torch.float64
        )
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                parameter.copy_(torch.tensor(loss.params[name]))
        expected = module(torch.tensor(x), torch.tensor(target)).detach().numpy()
        np.testing.assert_array_equal(value, expected)
        assert np.isnan(value) if reduction == "mean" else not np.any(value)
        grad_output = rng.standard_normal(value.shape)
        (d_x, _), d_params = loss.backward_with_params(grad_output, cache)
        assert not np.any(d_x) and not any(np.any(g) for g in d_params.values())


@pytest.mark.parametrize("smoothing", [0.0, 1e-12, 0.5, 1.0 - 1e-12, 1.0])
def test_label_smoothing_at_and_beside_its_ends(smoothing):
    """ε at 0, 1 and one step inside each (LOSS.linear-cross-entropy): torch's value and
    gradients with K-dimensional outputs and class weights."""
    case = dict(in_features=3, num_classes=4, batch=3, out_features=(2,), bias=True,
                soft=False, weighted=True, ignore_index=0, all_ignored=False,
                label_smoothing=smoothing, reduction="mean", options=None, magnitude=1.0,
                seed=5)  # fmt: skip
    _check_all(linear_loss_comparisons(case), "LOSS.linear-cross-entropy",
               "LOSS.linear-cross-entropy.grad")  # fmt: skip


def test_float32_follows_torch_float32():
    """dtype=float32 parameters and a float32 input: float32 results near torch's."""
    rng = np.random.default_rng(3)
    loss = LinearCrossEntropyLoss(4, 6, bias=True, dtype="float32", label_smoothing=0.1)
    assert loss.params["linear.weight"].dtype == np.float32
    x = rng.standard_normal((5, 4)).astype(np.float32)
    target = rng.integers(0, 6, 5)
    value, cache = loss.forward(x, target)
    (d_x, _), d_params = loss.backward_with_params(np.float32(0.7), cache)
    assert value.dtype == d_x.dtype == d_params["linear.weight"].dtype == np.float32
    module = torch.nn.LinearCrossEntropyLoss(4, 6, bias=True, label_smoothing=0.1)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.tensor(loss.params[name]))
    xt = torch.tensor(x, requires_grad=True)
    out = module(xt, torch.tensor(target))
    (gx,) = torch.autograd.grad(out, xt, torch.tensor(0.7))
    np.testing.assert_allclose(value, out.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(d_x, gx.numpy(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- construction, API
def test_parameters_are_torchs():
    """Names, flat shapes, dtype and nn.Linear's U(±1/√in_features) initialisation."""
    loss = LinearCrossEntropyLoss(16, 3, out_features=(2, 5), bias=True)
    module = torch.nn.LinearCrossEntropyLoss(16, 3, out_features=(2, 5), bias=True)
    ours = dict(loss.named_parameters())
    theirs = dict(module.named_parameters())
    assert list(ours) == list(theirs) == ["linear.weight", "linear.bias"]
    for name in ours:
        assert ours[name].shape == tuple(theirs[name].shape) and ours[name].dtype == np.float64
        assert 0 < np.abs(ours[name]).max() <= 1 / 4
    assert list(LinearCrossEntropyLoss(4, 3).params) == ["linear.weight"]


def test_registry_config_and_torch_defaults():
    """Registry name linear-cross-entropy-loss (torch's class name too); the config
    round-trips; torch's defaults."""
    assert LOSSES["linear-cross-entropy-loss"] is LinearCrossEntropyLoss
    assert LOSSES["LinearCrossEntropyLoss"] is LinearCrossEntropyLoss
    loss = LinearCrossEntropyLoss(3, 4, out_features=(2,), weight=np.ones(4), ignore_index=1,
                                  label_smoothing=0.2, options={"batch_chunk_size": 2})  # fmt: skip
    again = get_loss(loss.get_config())
    assert again == loss and again.options == loss.options
    default = LinearCrossEntropyLoss(3, 4)
    found = (default.reduction, default.ignore_index, default.label_smoothing,
             default.has_bias, default.out_features, default.options)  # fmt: skip
    assert found == ("mean", None, 0.0, False, (), None)
    assert isinstance(default.cross_entropy, CrossEntropyLoss)


def test_a_model_refuses_a_loss_with_parameters():
    """A loss with parameters is not a model's cost: the model would neither train nor save
    linear.weight; one line naming it."""
    from manual_bp.models.loss_cost import resolve_cost

    with pytest.raises(ValueError, match=r"linear\.weight") as error:
        resolve_cost(LinearCrossEntropyLoss(3, 4))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"linear\.weight"):
        manual_bp.Sequential([manual_bp.Linear(2, 3)], cost=LinearCrossEntropyLoss(3, 4))


def _error_inputs():
    from torch.testing._internal.common_modules import module_db

    (info,) = [i for i in module_db if i.module_cls is torch.nn.LinearCrossEntropyLoss]
    return list(info.module_error_inputs_func(info, "cpu", torch.float64, False, True))


@pytest.mark.parametrize("index", range(len(_error_inputs())))
def test_torchs_error_inputs_are_refused_in_one_line(index):
    """Each of torch's module_error_inputs: refused (ValueError/TypeError), one line,
    naming the argument at fault."""
    error_input = _error_inputs()[index]
    case = error_input.module_error_input
    args = case.constructor_input.args
    kwargs = {k: (v.numpy() if isinstance(v, torch.Tensor) else v)
              for k, v in case.constructor_input.kwargs.items()}  # fmt: skip
    inputs = [t.detach().numpy() for t in case.forward_input.args]
    with pytest.raises((ValueError, TypeError)) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LinearCrossEntropyLoss(*args, **kwargs).forward(*inputs)
    message = str(error.value)
    assert "\n" not in message
    assert any(name in message for name in ("input", "target", "weight", "label_smoothing"))


@pytest.mark.parametrize(
    "kwargs, inputs, name",
    [
        ({}, [np.zeros((2, 4)), np.zeros(2, int)], "input"),
        ({}, [np.zeros((2, 2, 3)), np.zeros(2, int)], "input"),
        ({"out_features": (2,)}, [np.zeros(3), np.zeros(2, int)], "batched input"),
        ({"ignore_index": -100}, [np.zeros((2, 3)), np.full((2, 4), 0.25)], "ignore_index"),
        ({}, [np.zeros((2, 3)), np.zeros(3, int)], "target"),
        ({}, [np.zeros((2, 3)), np.array([0, 7])], "target"),
        ({"options": {"batch_chunk_size": 0}}, None, "batch_chunk_size"),
        ({"options": {"chunking_method": "square"}}, None, "chunking_method"),
        ({"out_features": 3}, None, "out_features"),
        ({"weight": np.ones(3)}, None, "weight"),
        ({"ignore_index": 1.5}, None, "ignore_index"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, inputs, name):
    """Bad constructor arguments and bad inputs: one line naming the argument."""
    with pytest.raises((ValueError, TypeError)) as error:
        loss = LinearCrossEntropyLoss(3, 4, **kwargs)
        loss.forward(*inputs)
    assert name in str(error.value) and "\n" not in str(error.value)


def test_the_criterion_walk_copies_and_compares_the_parameters():
    """torch's own module_db configurations through the loss walk (a twentieth of them, and
    every one with a bias; test_torch_module_tests walks all 857): torch's parameters are
    copied in by state-dict name and every parameter gradient is compared
    (LOSS.linear-cross-entropy.grad)."""
    from reference import torch_losses, torch_modules

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = list(torch_losses._module_db({"LinearCrossEntropyLoss"}))  # its only source
        chosen = [c for i, c in enumerate(configs) if i % 20 == 0 or c.kwargs.get("bias")]
        found = {c.key: torch_modules.run(c) for c in chosen}
    assert len(configs) == 857 and len(found) > 40
    bad = {k: f"{o.status}: {o.detail}" for k, o in found.items() if o.status != "agree"}
    assert not bad, bad
    assert all({"output", "∂input", "∂linear.weight"} <= set(o.compared) for o in found.values())
    with_bias = [c.key for c in chosen if c.kwargs.get("bias")]
    assert with_bias and all("∂linear.bias" in found[k].compared for k in with_bias)
