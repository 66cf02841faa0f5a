"""The fused training path (manual_bp/fast.py) under every option it accepts (issue 15).

``train(net, x, y, ..., fast=True)`` against autograd + ``torch.optim`` (+ the
``torch.optim.lr_scheduler`` twin) after every epoch, with every optimizer and
*every* flag of it drawn (weight decay, momentum, dampening, Nesterov, lr_decay,
initial accumulator, centred, AMSGrad), every regulariser (none, L1, L2 — the
fused SGD update and the generic one), every schedule (none, step, exponential,
cosine: the learning rate changes during training), mini-batches or full batch;
and in float32 (``OPT.*``, ``REG.l1``, ``REG.l2``, ``SCHED.*`` through ``BP1``–``BP4``).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from manual_bp.regularizers import L1, L2
from manual_bp.schedules import CosineAnnealingLR, ExponentialLR, StepLR
from reference.cases import build_case
from reference.optim import network_trajectories
from tests.strategies import SMOOTH_ACTIVATIONS, STABLE_COSTS, network_specs

SPECS = network_specs(
    max_depth=3,
    max_width=5,
    max_batch=8,
    activations=SMOOTH_ACTIVATIONS,
    costs=STABLE_COSTS,
    weight_scales=(1.0,),
    kinks=False,
    dyadic=False,
)

decays = st.sampled_from([0.0, 0.3])


@st.composite
def every_optimizer(draw):
    """Any optimizer class, with each of its options drawn (not only the defaults)."""
    kind = draw(st.sampled_from(["sgd", "adagrad", "rmsprop", "adam", "adamw"]))
    wd = draw(decays)
    if kind == "sgd":
        momentum = draw(st.sampled_from([0.0, 0.7]))
        nesterov = bool(momentum) and draw(st.booleans())
        dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.3]))
        return SGD(0.05, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd)
    if kind == "adagrad":
        return Adagrad(
            0.05,
            lr_decay=draw(st.sampled_from([0.0, 0.1])),
            weight_decay=wd,
            initial_accumulator_value=draw(st.sampled_from([0.0, 0.5])),
        )
    if kind == "rmsprop":
        return RMSprop(
            0.005,
            alpha=draw(st.sampled_from([0.99, 0.8])),
            weight_decay=wd,
            momentum=draw(st.sampled_from([0.0, 0.5])),
            centered=draw(st.booleans()),
        )
    cls = Adam if kind == "adam" else AdamW
    return cls(
        0.01,
        beta1=draw(st.sampled_from([0.9, 0.5])),
        weight_decay=wd if kind == "adam" else draw(st.sampled_from([0.0, 0.1])),
        amsgrad=draw(st.booleans()),
    )


regularizers = st.sampled_from([None, "l1", "l2"])
schedules = st.sampled_from([None, "step", "exponential", "cosine"])


def _make(regularizer, schedule):
    reg = {None: None, "l1": L1(0.3), "l2": L2(0.8)}[regularizer]
    sched = {
        None: None,
        "step": StepLR(step_size=2, gamma=0.5),
        "exponential": ExponentialLR(gamma=0.7),
        "cosine": CosineAnnealingLR(T_max=4, eta_min=0.001),
    }[schedule]
    return reg, sched


def _assert_trajectory(trajectory, label: str, dtype=np.float64) -> None:
    """Every epoch, every array: ``|ours − torch| ≤ c·ε·max|θ|`` (ε of ``dtype``)."""
    for k, (ours, theirs) in enumerate(zip(trajectory.ours, trajectory.torch, strict=True)):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            scale = np.full(a.shape, trajectory.scales[i])
            assert_gradients_close(
                a, b, name=f"{label} θ[{i}] after epoch {k + 1}", dtype=dtype, scale=scale
            )


@settings(max_examples=30)
@given(SPECS, every_optimizer(), regularizers, schedules, st.booleans())
def test_fast_path_matches_torch_under_every_option(spec, opt, regularizer, schedule, minibatch):
    """Fused path = torch.optim twin + lr_scheduler twin, epoch by epoch, float64."""
    net, x, y = build_case(spec)
    reg, sched = _make(regularizer, schedule)
    batch_size = max(1, len(x) // 2) if minibatch else None
    try:
        trajectory = network_trajectories(
            net, x, y, opt, epochs=6, batch_size=batch_size, regularizer=reg,
            schedule=sched, seed=spec.seed, fast=True,
        )  # fmt: skip
    except FloatingPointError:  # a diverged trajectory compares nothing (rare at these rates)
        assume(False)
    _assert_trajectory(trajectory, f"fast {opt!r} {reg!r} {sched!r}")


@settings(max_examples=15)
@given(SPECS, every_optimizer(), regularizers, schedules)
def test_fast_path_in_float32_stays_float32_and_matches_torch(spec, opt, regularizer, schedule):
    """float32 network through the fused path: parameters stay float32 and follow the
    float64 torch trajectory to float32 rounding (c·ε₃₂·max|θ|)."""
    net, x, y = build_case(spec, dtype=np.float32)
    reg, sched = _make(regularizer, schedule)
    try:
        trajectory = network_trajectories(
            net, x, y, opt, epochs=4, regularizer=reg, schedule=sched, seed=spec.seed, fast=True
        )
    except FloatingPointError:
        assume(False)
    assert all(p.dtype == np.float32 for p in trajectory.ours[-1])
    _assert_trajectory(trajectory, f"fast float32 {opt!r} {reg!r} {sched!r}", np.float32)
