"""``CTCLoss`` against ``torch.nn.CTCLoss`` and finite differences (``docs/ctc.md``).

Random batches (``reference.checks_ctc.ctc_case``): per-sequence frame and label counts,
repeated labels, impossible alignments, any blank index, padded, concatenated and
unbatched targets, every reduction and ``zero_infinity``; random upstream gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.losses import LOSSES, CTCLoss, get_loss
from reference.checks_ctc import (
    _log_softmax,
    ctc_case,
    ctc_comparisons,
    ctc_finite_difference_comparisons,
    torch_ctc,
)

seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds)
@settings(max_examples=60)
def test_ctc_loss_matches_torch(seed):
    """LOSS.ctc: the α recursion, read at each sequence's own last frame, and torch's
    reductions ('mean' divides by the target lengths), infinite losses included."""
    rng = np.random.default_rng(seed)
    value, _ = ctc_comparisons(ctc_case(rng), rng)
    value.check()


@given(seed=seeds)
@settings(max_examples=60)
def test_ctc_gradient_matches_torch(seed):
    """LOSS.ctc.grad: ``y − γ`` with the occupancy from ``α β``, zero past each sequence's
    frames, NaN on an impossible sequence's frames (0 with ``zero_infinity``), as torch."""
    rng = np.random.default_rng(seed)
    _, grad = ctc_comparisons(ctc_case(rng), rng)
    grad.check()


@given(seed=seeds)
@settings(max_examples=15)
def test_ctc_gradient_matches_finite_differences(seed):
    """LOSS.ctc.grad through the log-softmax equals central differences in the logits."""
    rng = np.random.default_rng(seed)
    for comparison in ctc_finite_difference_comparisons(ctc_case(rng, possible=True), rng):
        comparison.check()


def _one(targets, lengths, frames, classes=4, blank=0, **options):
    rng = np.random.default_rng(0)
    log_probs = _log_softmax(rng.standard_normal((frames, len(lengths), classes)))
    case = {"targets": np.asarray(targets), "input_lengths": np.full(len(lengths), frames),
            "target_lengths": np.asarray(lengths),
            "options": {"blank": blank, "reduction": "none", **options}}  # fmt: skip
    ours, cache = CTCLoss(**case["options"]).forward(
        log_probs, case["targets"], case["input_lengths"], case["target_lengths"]
    )
    return ours, cache, case, log_probs


def test_repeated_labels_need_a_blank_between_them():
    """ "1 1" needs three frames (1, blank, 1); "1 2" two. At two frames "1 1" is impossible:
    a CTC that let the path skip the blank between equal labels would find it possible."""
    loss, _, case, lp = _one([[1, 1], [1, 2]], [2, 2], frames=2)
    assert np.isinf(loss[0]) and np.isfinite(loss[1])
    np.testing.assert_array_equal(loss, torch_ctc(case, lp, np.ones(2))[0])
    loss3, *_ = _one([[1, 1]], [2], frames=3)
    assert np.isfinite(loss3[0])


def test_single_frame_probability_is_the_emission():
    """One frame, one label: the only path emits it, so ``L = −ln y_0(l)`` exactly."""
    loss, _, _, lp = _one([[2]], [1], frames=1)
    assert loss[0] == pytest.approx(-lp[0, 0, 2], rel=1e-15)


def test_empty_target_is_all_blanks():
    """An empty target: the only path is all blanks, ``L = −Σ_t ln y_t(b)``."""
    loss, _, _, lp = _one(np.zeros((1, 0), dtype=np.int64), [0], frames=3, blank=1)
    assert loss[0] == pytest.approx(-lp[:, 0, 1].sum(), rel=1e-14)


def test_zero_infinity_zeroes_the_impossible_loss_and_its_gradient():
    loss, cache, _, _ = _one([[1, 1]], [2], frames=2, zero_infinity=True)
    assert loss[0] == 0.0
    assert not CTCLoss(zero_infinity=True, reduction="none").backward(np.ones(1), cache)[0].any()
    _, cache, _, _ = _one([[1, 1]], [2], frames=2)
    assert np.isnan(CTCLoss(reduction="none").backward(np.ones(1), cache)[0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    _, cache, case, lp = _one([[1, 2]], [2], frames=4)
    loss = CTCLoss()
    value, cache = loss.forward(lp.astype(dtype), case["targets"], (4,), (2,))
    assert value.dtype == dtype and loss.backward(np.asarray(1.0), cache)[0].dtype == dtype
    want, _ = torch_ctc({**case, "options": {}}, lp.astype(dtype), np.asarray(1.0, dtype))
    assert abs(float(value) - float(want)) <= 64 * np.finfo(dtype).eps * (1 + abs(float(want)))


def test_the_module_db_configurations_agree():
    """torch's own CTCLoss configurations (module_db: int and long targets, padded and
    concatenated, tuples and tensors of lengths, every reduction, blank 14)."""
    from torch.testing._internal.common_modules import module_db

    info = next(i for i in module_db if i.module_cls is torch.nn.CTCLoss)
    torch.manual_seed(0)
    cases = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                    requires_grad=True, training=True)  # fmt: skip
    assert len(cases) == 40
    rng = np.random.default_rng(0)
    for case in cases:
        kwargs = case.constructor_input.kwargs
        lp, targets, il, tl = case.forward_input.args
        lp = lp.detach().requires_grad_()
        want = torch.nn.CTCLoss(**kwargs)(lp, targets, il, tl)
        upstream = rng.standard_normal(tuple(want.shape))
        (want_grad,) = torch.autograd.grad(want, lp, torch.tensor(upstream))
        as_np = [np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for v in (il, tl)]
        ours, cache = CTCLoss(**kwargs).forward(lp.detach().numpy(), targets.numpy(), *as_np)
        grad = CTCLoss(**kwargs).backward(upstream, cache)[0]
        scale = 1 + np.abs(lp.detach().numpy()).max(axis=-1).sum(axis=0).max()
        np.testing.assert_allclose(ours, want.detach().numpy(), rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(grad, want_grad.numpy(), rtol=0, atol=1e-13 * scale)


def test_registered_by_name():
    assert LOSSES["ctc"] is CTCLoss and get_loss({"name": "ctc", "blank": 2}).blank == 2
    assert CTCLoss(blank=3).get_config() == {"name": "ctc-loss", "blank": 3, "reduction": "mean",
                                             "zero_infinity": False}  # fmt: skip


BAD_INPUTS = [
    ({"log_probs": np.zeros((3, 2, 4), dtype=np.int64)}, "log_probs must be float32"),
    ({"log_probs": np.zeros((3, 2, 4)) + 0j}, "log_probs has complex dtype"),
    ({"log_probs": np.zeros((3, 2, 4, 1))}, "log_probs must be a non-empty (T, N, C)"),
    ({"log_probs": np.zeros((0, 2, 4))}, "log_probs must be a non-empty"),
    ({"targets": np.array([[1.0, 2.0], [1.0, 2.0]])}, "targets must hold integers"),
    ({"targets": np.array([[1, 0], [1, 2]])}, "other than the blank 0"),
    ({"targets": np.array([[1, 4], [1, 2]])}, "class indices in [0, 4)"),
    ({"targets": np.array([1, 2])}, "concatenated targets must have"),
    ({"targets": np.array([[1], [2]])}, "do not hold target_lengths"),
    ({"input_lengths": (3, 4)}, "input_lengths must be at most the 3 frames"),
    ({"input_lengths": (3,)}, "input_lengths must hold one length per sequence (2)"),
    ({"input_lengths": (3, -1)}, "input_lengths must be non-negative"),
    ({"target_lengths": 2}, "target_lengths must be a tuple, list or array of integers"),
    ({"target_lengths": (2.0, 2.0)}, "target_lengths must hold integers"),
]


@pytest.mark.parametrize("change, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_are_named_in_one_line(change, message):
    args = {"log_probs": np.log(np.full((3, 2, 4), 0.25)), "targets": np.array([[1, 2], [3, 3]]),
            "input_lengths": (3, 3), "target_lengths": (2, 1), **change}  # fmt: skip
    with pytest.raises((TypeError, ValueError)) as error:
        CTCLoss()(*args.values())
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"blank": -1}, "blank must be a non-negative integer"),
    ({"blank": 1.0}, "blank must be a non-negative integer"),
    ({"reduction": "batchmean"}, "reduction must be one of"),
    ({"zero_infinity": 1}, "zero_infinity must be True or False"),
])  # fmt: skip
def test_bad_options_are_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(")):
        CTCLoss(**kwargs)


def test_blank_outside_the_classes_is_named():
    with pytest.raises(ValueError, match="blank 5 is not a class of log_probs"):
        CTCLoss(blank=5)(np.zeros((2, 1, 3)), np.array([[1]]), (2,), (1,))
