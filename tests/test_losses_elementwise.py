"""torch's element-wise losses (``docs/losses.md``): MSELoss, L1Loss, HuberLoss, SmoothL1Loss,
BCELoss, BCEWithLogitsLoss, KLDivLoss, PoissonNLLLoss against torch's modules in float64.

Every option is drawn by hypothesis (reduction, ``delta``, ``beta``, ``weight``,
``pos_weight``, ``log_target``, ``log_input``, ``full``, ``eps``, the input's rank and
shape, a broadcast target), always under a random ``grad_output``; finite differences are
the second oracle; the adjoint identity pairs ``backward`` with the loss's JVP; kinks are
probed below, at and above; BCE saturates at 0 and 1 with torch's clamps; the loss closes a
random layer stack.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
import manual_bp.losses as losses
from manual_bp.gradcheck import finite_difference_gradient
from manual_bp.layers import ActivationLayer, Dense
from manual_bp.losses._elementwise import sum_to_shape
from reference.checks_losses import ELEMENTWISE, draw_case, loss_comparisons, ours, torch_oracle

NAMES = list(ELEMENTWISE)
SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def loss_options(draw, name: str) -> dict:
    """Every constructor option of loss ``name``, drawn (arrays come from the seed)."""
    reductions = ["none", "mean", "sum"] + (["batchmean"] if name == "KLDivLoss" else [])
    options = {"reduction": draw(st.sampled_from(reductions)), "shape": draw(SHAPES)}
    if name == "HuberLoss":
        options["delta"] = draw(st.sampled_from([0.25, 1.0, 2.0]) | st.floats(0.05, 5.0))
    if name == "SmoothL1Loss":
        options["beta"] = draw(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.05, 5.0))
    if name == "KLDivLoss":
        options["log_target"] = draw(st.booleans())
    if name == "PoissonNLLLoss":
        options["log_input"] = draw(st.booleans())
        options["full"] = draw(st.booleans())
        options["eps"] = draw(st.sampled_from([1e-8, 1e-3, 0.5]))
    return options


def _case(seed: int, name: str, options: dict):
    case = draw_case(np.random.default_rng(seed), name, **options)
    case.seed = seed
    return case


def _checked(case, equations: tuple[str, ...]) -> None:
    found = [c for c in loss_comparisons(case) if c.equation.startswith(equations)]
    assert found
    for comparison in found:
        comparison.check()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_value_matches_torch(name, data, seed):
    """``LOSS.mse``, ``LOSS.l1``, ``LOSS.huber``, ``LOSS.smooth-l1``, ``LOSS.bce``,
    ``LOSS.bce-logits``, ``LOSS.kl-div``, ``LOSS.poisson-nll``: torch's value, every
    option, every reduction (weights and broadcast targets drawn from the seed)."""
    case = _case(seed, name, data.draw(loss_options(name)))
    stem = ELEMENTWISE[name]
    for comparison in loss_comparisons(case):
        if comparison.equation == f"LOSS.{stem}":
            comparison.check()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_gradients_match_torch(name, data, seed):
    """``LOSS.mse.grad``, ``LOSS.l1.grad``, ``LOSS.huber.grad``, ``LOSS.smooth-l1.grad``,
    ``LOSS.bce.grad``, ``LOSS.bce-logits.grad``, ``LOSS.kl-div.grad``,
    ``LOSS.poisson-nll.grad``: ∂input and ∂target under a random grad_output."""
    case = _case(seed, name, data.draw(loss_options(name)))
    _checked(case, (f"LOSS.{ELEMENTWISE[name]}.grad",))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_second_derivative_matches_torch_double_backward(name, data, seed):
    """``LOSS.mse.hess``, ``LOSS.l1.hess``, ``LOSS.huber.hess``, ``LOSS.smooth-l1.hess``,
    ``LOSS.bce.hess``, ``LOSS.bce-logits.hess``, ``LOSS.kl-div.hess``,
    ``LOSS.poisson-nll.hess``: the diagonal output Hessian against torch's double
    backward (an element-wise loss's Hessian in its input is diagonal)."""
    case = _case(seed, name, data.draw(loss_options(name)))
    _checked(case, (f"LOSS.{ELEMENTWISE[name]}.hess",))


@settings(max_examples=30)
@given(shape=SHAPES, reduction=st.sampled_from(["none", "mean", "sum"]), seed=st.integers(0, 99))
def test_reduction_and_its_vjp(shape, reduction, seed):
    """``LOSS.reduction``: torch's 'none'/'mean'/'sum' and their VJP, on any shape (an empty
    mean is NaN, as torch's)."""
    rng = np.random.default_rng(seed)
    ell = rng.standard_normal(shape)
    leaf = torch.tensor(ell, requires_grad=True)
    theirs = {"none": leaf, "sum": leaf.sum(), "mean": leaf.mean()}[reduction]
    g = rng.standard_normal(tuple(theirs.shape))
    (vjp,) = torch.autograd.grad(theirs, leaf, torch.from_numpy(g))
    np.testing.assert_allclose(
        losses.reduce(ell, reduction), theirs.detach().numpy(), rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(losses.reduce_vjp(g, ell.shape, reduction), vjp.numpy(), rtol=1e-15)
    # through a loss: the same case under all three reductions
    case = _case(seed, "MSELoss", {"reduction": reduction, "shape": shape})
    _checked(case, ("LOSS.reduction",))
    empty = losses.MSELoss()(np.zeros((0, 3)), np.zeros((0, 3)))
    assert np.isnan(empty) and np.isnan(
        float(torch.nn.MSELoss()(torch.zeros(0, 3), torch.zeros(0, 3)))
    )


# ---------------------------------------------------------------------- second oracle
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8)
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_gradients_match_finite_differences(name, data, seed):
    """Central differences of ⟨g, value⟩ in the input and in the target (away from kinks
    and clamps: the cases keep |x − y| off the kinks with probability 1)."""
    case = _case(seed, name, data.draw(loss_options(name)))
    loss = getattr(losses, name)(**case.kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, cache = loss.forward(case.x, case.y)
        g = np.random.default_rng(seed).standard_normal(np.shape(value))
        dx, dy = loss.backward(g, cache)

        def f():
            return float(np.sum(g * loss.forward(x, y)[0]))

        x, y = case.x.copy(), case.y.copy()
        with np.errstate(all="ignore"):
            fd_x, err_x = finite_difference_gradient(f, x, return_error=True)
            fd_y, err_y = finite_difference_gradient(f, y, return_error=True)
    scale = 1 + abs(f())
    assert np.all(np.abs(dx - fd_x) <= 1e-6 * scale + 10 * err_x), (dx, fd_x)
    assert np.all(np.abs(dy - fd_y) <= 1e-6 * scale + 10 * err_y), (dy, fd_y)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_backward_is_the_adjoint_of_the_jvp(name, data, seed):
    """⟨backward(g), (u, v)⟩ = ⟨g, J(u, v)⟩ with the JVP built from the same partials:
    the reduction's VJP is the adjoint of the reduction, and summing a broadcast
    gradient back is the adjoint of broadcasting."""
    case = _case(seed, name, data.draw(loss_options(name)))
    loss = getattr(losses, name)(**case.kwargs)
    rng = np.random.default_rng(seed + 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, cache = loss.forward(case.x, case.y)
    g = rng.standard_normal(np.shape(value))
    u, v = rng.standard_normal(case.x.shape), rng.standard_normal(case.y.shape)
    dx, dy = loss.backward(g, cache)
    px, py = loss.partials(cache.x, cache.y)
    ub, vb = np.broadcast_to(u, cache.shape), np.broadcast_to(v, cache.shape)
    jvp = losses.reduce(px * ub + py * vb, loss._reduction())
    if loss.reduction == "batchmean" and case.x.ndim:
        jvp = jvp / case.x.shape[0]
    left = float(np.sum(dx * u) + np.sum(dy * v))
    right = float(np.sum(g * jvp))
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


def test_sum_to_shape_is_the_adjoint_of_broadcasting():
    rng = np.random.default_rng(0)
    for shape, full in [((3,), (2, 3)), ((1, 3), (4, 3)), ((), (2, 2)), ((2, 1, 3), (2, 5, 3))]:
        a, b = rng.standard_normal(shape), rng.standard_normal(full)
        assert np.sum(np.broadcast_to(a, full) * b) == pytest.approx(
            np.sum(a * sum_to_shape(b, shape)), rel=1e-13
        )


# ---------------------------------------------------------------------- kinks and saturation
def _against_torch(name, kwargs, x, y):
    case = draw_case(
        np.random.default_rng(0), name, **kwargs, x=x, y=y, shape=x.shape, target_shape=y.shape
    )
    theirs = torch_oracle(case)
    mine = ours(case, theirs["upstream"])
    for key in ("value", "input", "target", "hess"):
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-13, atol=1e-300, err_msg=key)


@pytest.mark.parametrize(
    ("name", "kwargs", "kink"),
    [
        ("L1Loss", {}, 0.0),
        ("HuberLoss", {"delta": 1.0}, 1.0),
        ("HuberLoss", {"delta": 0.3}, 0.3),
        ("SmoothL1Loss", {"beta": 1.0}, 1.0),
        ("SmoothL1Loss", {"beta": 0.5}, 0.5),
        ("SmoothL1Loss", {"beta": 0.0}, 0.0),
    ],
)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kinks_both_sides_and_at(name, kwargs, kink, reduction):
    """``LOSS.l1.grad`` at d = 0, ``LOSS.huber.grad`` at |d| = δ, ``LOSS.smooth-l1.grad``
    at |d| = β (and β = 0): value, both gradients and the second derivative equal
    torch's below, exactly at, and above each kink, on both signs of d."""
    target = np.linspace(-1.0, 1.0, 5)
    for d0 in (kink, -kink):
        for d in (np.nextafter(d0, -np.inf), d0, np.nextafter(d0, np.inf), d0 - 1e-3, d0 + 1e-3):
            x = target + d
            y = x - d  # exactly d apart wherever d is representable against the target
            _against_torch(name, {**kwargs, "reduction": reduction}, x, y)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_bce_saturation_follows_torchs_clamps(reduction):
    """``LOSS.bce`` at x ∈ {0, 1} (logs floored at −100; gradient denominator floored at
    1e-12) and just inside; ``LOSS.bce-logits`` at logits of ±800 (stable, finite)."""
    x = np.array([0.0, 0.0, 1.0, 1.0, 1e-300, 1 - 1e-16, 0.5, 1e-20])
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.3, 0.7])
    weight = np.linspace(0.5, 2.0, x.size)
    for kwargs in ({"reduction": reduction}, {"reduction": reduction, "weight": weight}):
        case = draw_case(np.random.default_rng(1), "BCELoss", **kwargs, x=x, y=y, shape=x.shape)
        theirs = torch_oracle(case)
        mine = ours(case, theirs["upstream"])
        np.testing.assert_allclose(mine["value"], theirs["value"], rtol=1e-13)
        np.testing.assert_allclose(mine["input"], theirs["input"], rtol=1e-13)
        finite = np.isfinite(theirs["target"])
        np.testing.assert_allclose(mine["target"][finite], theirs["target"][finite], rtol=1e-13)
        assert np.array_equal(np.isfinite(mine["target"]), finite)
    logits = np.array([-800.0, 800.0, -40.0, 40.0, 0.0])
    _against_torch(
        "BCEWithLogitsLoss",
        {"reduction": reduction, "pos_weight": np.array(2.5)},
        logits,
        np.array([1.0, 0.0, 0.5, 1.0, 0.0]),
    )


def test_weight_scales_elements_never_the_mean_denominator():
    """BCE's ``weight`` multiplies each element; 'mean' still divides by the count."""
    rng = np.random.default_rng(3)
    x, y, w = rng.uniform(0.1, 0.9, (4, 3)), rng.random((4, 3)), rng.uniform(0.1, 3, 3)
    plain = losses.BCELoss(reduction="none")(x, y)
    assert losses.BCELoss(weight=w)(x, y) == pytest.approx(np.mean(w * plain), rel=1e-14)
    assert losses.BCELoss(weight=w, reduction="sum")(x, y) == pytest.approx(
        np.sum(w * plain), rel=1e-14
    )


def test_kl_and_poisson_target_gradients_at_zero_targets():
    """At y = 0 torch's KL target gradient is NaN (xlogy's 0/0), and so is ours; torch's
    Poisson target gradient with full=True is NaN from its masked Stirling term, ours the
    masked term's derivative (docs/losses.md)."""
    x = np.array([-0.5, -1.0])
    y = np.array([0.0, 0.4])
    case = draw_case(
        np.random.default_rng(0),
        "KLDivLoss",
        reduction="sum",
        x=x,
        y=y,
        shape=(2,),
        target_shape=(2,),
    )
    theirs, mine = torch_oracle(case), None
    mine = ours(case, theirs["upstream"])
    assert np.isnan(theirs["target"][0]) and np.isnan(mine["target"][0])
    np.testing.assert_allclose(mine["target"][1], theirs["target"][1], rtol=1e-14)
    np.testing.assert_allclose(mine["value"], theirs["value"], rtol=1e-14)
    loss = losses.PoissonNLLLoss(full=True, reduction="sum")
    _, cache = loss.forward(np.array([0.2, 0.3]), np.array([0.0, 3.0]))
    _, dy = loss.backward(np.array(1.0), cache)
    assert dy[0] == -0.2 and dy[1] == pytest.approx(-0.3 + np.log(3) + 1 / 6, rel=1e-14)


# ---------------------------------------------------------------------- input forms
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"])
def test_another_target_shape_warns_and_broadcasts_as_torch(name):
    """torch warns and broadcasts a target of another shape (both ways: the input may be
    the smaller); 'none' has the broadcast shape; each gradient has its argument's shape."""
    rng = np.random.default_rng(0)
    for xs, ys in [((4, 3), (3,)), ((3,), (4, 3)), ((2, 1), (1, 5)), ((), (2,))]:
        x, y = rng.standard_normal(xs), rng.standard_normal(ys)
        with pytest.warns(UserWarning, match="different to the input size"):
            getattr(losses, name)(reduction="none")(x, y)
        for reduction in ("none", "mean", "sum"):
            _against_torch(name, {"reduction": reduction}, x, y)


@pytest.mark.parametrize("name", ["KLDivLoss", "PoissonNLLLoss"])
def test_kl_and_poisson_broadcast_silently_as_torch(name):
    rng = np.random.default_rng(1)
    x, y = np.log(rng.uniform(0.1, 1, (3, 4))), rng.uniform(0.1, 2, (4,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(losses, name)()(x, y)
    _against_torch(name, {"reduction": "none"}, x, y)
    _against_torch(name, {"reduction": "sum"}, x[:1], np.abs(x))  # the input the smaller


@pytest.mark.parametrize("name", ["BCELoss", "BCEWithLogitsLoss"])
def test_bce_refuses_another_target_shape_as_torch(name):
    with pytest.raises(ValueError, match="target size"):
        getattr(losses, name)()(np.full((2, 3), 0.5), np.zeros(3))
    with pytest.raises(ValueError):
        getattr(torch.nn, name)()(torch.full((2, 3), 0.5), torch.zeros(3))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4), (0, 3)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_none_shapes_and_every_input_form(name, shape, reduction):
    """0-d, unbatched, batched, 3-d and empty inputs: 'none' keeps the shape, the others
    give 0-d; the values equal torch's (an empty mean is NaN as torch's)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 0.9, shape) if name == "BCELoss" else rng.standard_normal(shape)
    y = rng.uniform(0.1, 0.9, shape)
    value, _ = getattr(losses, name)(reduction=reduction).forward(x, y)
    assert value.shape == (shape if reduction == "none" else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(torch.nn, name)(reduction=reduction)(torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(value, expected.numpy(), rtol=1e-13)


@pytest.mark.parametrize(
    "name",
    [
        "MSELoss",
        "L1Loss",
        "SmoothL1Loss",
        "BCELoss",
        "BCEWithLogitsLoss",
        "KLDivLoss",
        "PoissonNLLLoss",
    ],
)
@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_legacy_size_average_and_reduce_as_torch(name, size_average, reduce):
    """torch's own tests pass ``reduce=False`` (BCEWithLogitsLoss_legacy_enum): the legacy
    pair overrides ``reduction`` with torch's rule and torch's warning."""
    x, y = np.full((2, 3), 0.25), np.full((2, 3), 0.5)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ours_ = getattr(losses, name)(size_average=size_average, reduce=reduce)
        theirs = getattr(torch.nn, name)(size_average=size_average, reduce=reduce)
        np.testing.assert_allclose(ours_(x, y), theirs(torch.tensor(x), torch.tensor(y)).numpy())
    assert ours_.reduction == theirs.reduction


def test_complex_l1_as_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    y = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    xt, yt = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    value = torch.nn.L1Loss(reduction="none")(xt, yt)
    g = rng.standard_normal((2, 3))
    dx_t, dy_t = torch.autograd.grad(value, (xt, yt), torch.from_numpy(g))
    loss = losses.L1Loss(reduction="none")
    ours_, cache = loss.forward(x, y)
    dx, dy = loss.backward(g, cache)
    np.testing.assert_allclose(ours_, value.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(dx, dx_t.numpy(), rtol=1e-14)
    np.testing.assert_allclose(dy, dy_t.numpy(), rtol=1e-14)


@pytest.mark.parametrize(
    ("build", "call", "match"),
    [
        (lambda: losses.MSELoss(reduction="avg"), None, "reduction"),
        (lambda: losses.KLDivLoss(reduction="batch"), None, "reduction"),
        (lambda: losses.HuberLoss(delta=0.0), None, "delta"),
        (lambda: losses.SmoothL1Loss(beta=-1.0), None, "beta"),
        (lambda: losses.PoissonNLLLoss(log_input="yes"), None, "log_input"),
        (lambda: losses.BCELoss(weight="heavy"), None, "weight"),
        (lambda: losses.MSELoss(reduce="no"), None, "reduce"),
        (losses.MSELoss, (np.arange(3), np.zeros(3)), "input"),
        (losses.MSELoss, (np.zeros(3), np.arange(3)), "target"),
        (losses.BCELoss, (np.array([1.5]), np.zeros(1)), "between 0 and 1"),
        (lambda: losses.BCELoss(weight=np.ones(4)), (np.full(3, 0.5), np.zeros(3)), "weight"),
        (
            lambda: losses.BCEWithLogitsLoss(pos_weight=np.ones(2)),
            (np.zeros(3), np.zeros(3)),
            "pos_weight",
        ),
        (losses.MSELoss, (np.zeros(3), np.zeros(4)), "broadcast"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_naming_them(build, call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError), match=match) as error:
            loss = build()
            loss(*call)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------- API and stack
def test_torch_named_exports_mean_torchs_losses_with_torchs_signatures():
    """``manual_bp.HuberLoss`` & co. are the torch-named losses (no longer the costs'
    aliases): torch's signature and defaults, torch's default value on a 10-output batch
    (not 10× it)."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0.1, 0.9, (4, 10)), rng.uniform(0.1, 0.9, (4, 10))
    for name in NAMES:
        cls = getattr(manual_bp, name)
        assert cls is getattr(losses, name) and name in manual_bp.__all__
        ours_sig = inspect.signature(cls).parameters
        theirs_sig = inspect.signature(getattr(torch.nn, name)).parameters
        assert list(ours_sig) == list(theirs_sig), name
        assert [p.default for p in ours_sig.values()] == [p.default for p in theirs_sig.values()]
        expected = getattr(torch.nn, name)()(torch.tensor(x), torch.tensor(y)).item()
        assert cls()(x, y) == pytest.approx(expected, rel=1e-13)
    assert not hasattr(manual_bp.costs, "HuberLoss")


def test_registry_names_and_configs_round_trip():
    for name in NAMES:
        cls = getattr(losses, name)
        assert losses.LOSSES[name.lower()] is cls and losses.get_loss(cls.name) == cls()
    bce = losses.BCEWithLogitsLoss(weight=np.array([1.0, 2.0]), pos_weight=np.array([3.0, 1.0]))
    assert losses.get_loss(bce.get_config()) == bce
    huber = losses.HuberLoss(reduction="sum", delta=0.5)
    assert losses.get_loss(huber.get_config()) == huber


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31), reduction=st.sampled_from(["none", "mean", "sum"]))
def test_loss_closes_a_random_layer_stack(name, seed, reduction):
    """The loss at the end of Dense → tanh → Dense (→ sigmoid for BCE): the gradient of
    ⟨g, loss⟩ in every parameter and the stack's input equals torch's."""
    rng = np.random.default_rng(seed)
    n, widths = int(rng.integers(1, 5)), [int(w) for w in rng.integers(1, 6, 3)]
    layers = [  # seeded from the case, so that a failing example replays
        Dense(widths[0], widths[1], seed=rng),
        ActivationLayer("tanh"),
        Dense(widths[1], widths[2], seed=rng),
    ]
    if name == "BCELoss":
        layers.append(ActivationLayer("sigmoid"))
    case = draw_case(
        rng, name, reduction=reduction, shape=(n, widths[2]), target_shape=(n, widths[2])
    )
    x = rng.standard_normal((n, widths[0]))
    tx = torch.tensor(x, requires_grad=True)
    modules = []
    for layer in layers:
        if isinstance(layer, Dense):
            linear = torch.nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.weight))
                linear.bias.copy_(torch.from_numpy(layer.bias))
            modules.append(linear)
        else:
            modules.append(torch.nn.Tanh() if len(modules) == 1 else torch.nn.Sigmoid())
    net = torch.nn.Sequential(*modules)
    loss_t = getattr(torch.nn, name)(
        **{
            k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in case.kwargs.items()
        }
    )
    value_t = loss_t(net(tx), torch.tensor(case.y))
    g = rng.standard_normal(tuple(value_t.shape))
    grads_t = torch.autograd.grad(value_t, [tx, *net.parameters()], torch.from_numpy(g))
    a, caches = x, []
    for layer in layers:
        a, cache = layer.forward(a)
        caches.append(cache)
    loss = getattr(losses, name)(**case.kwargs)
    value, cache = loss.forward(a, case.y)
    np.testing.assert_allclose(value, value_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    d, _ = loss.backward(g, cache)
    param_grads = []
    for layer, cache in zip(reversed(layers), reversed(caches), strict=True):
        d, grads = layer.backward(d, cache)
        if isinstance(layer, Dense):
            param_grads = [grads["weight"], grads["bias"], *param_grads]
    scale = max(1.0, *(float(t.abs().max()) for t in grads_t))
    for mine, theirs in zip([d, *param_grads], grads_t, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12 * scale)


def test_the_criterion_walk_agrees_on_every_configuration_of_these_losses():
    """torch's own loss tests (module_db, criterion_tests, the functional no-reduce
    entries): every configuration of the eight classes agrees in value and in the gradient
    of every float argument torch differentiates."""
    from reference import torch_losses, torch_modules

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = torch_losses.configurations(set(ELEMENTWISE))
        found = {c.key: torch_modules.run(c) for c in configs}
    assert len(found) >= 100 and {c.torch_name for c in configs} == set(ELEMENTWISE)
    bad = {k: f"{o.status}: {o.detail}" for k, o in found.items() if o.status != "agree"}
    assert not bad, bad
    assert all({"output", "∂input", "∂target"} <= set(o.compared) for o in found.values())
