"""Issue 26: a CTC model (a bidirectional LSTM over the ``ctc-copy`` frames) trained from the
CLI, its cost torch's ``CTCLoss`` (``manual_bp.models.loss_cost``).

Against torch in float64: the same stack (``reference.interop.to_torch``: same modules, same
state dict) on the same batch, ``F.ctc_loss`` of its output and autograd's gradients with
random lengths (variable input lengths: masked frames), every reduction that gives a number,
``zero_infinity`` both ways, any blank, and impossible alignments in the batch. The loss and
every parameter gradient agree within ``64·ε·max(max|torch|, κ) + 64·ε·|torch|`` where κ is
the gradient's measured condition number (the paired rounding probes: parameters and inputs
shaken by ``1 ± δ``, docs/conventions.md "Precision and tolerances"). Both the readable
backward and the fused trainer's are checked.

An impossible alignment with ``zero_infinity=False`` makes the cost infinite: training must
stop with the divergence error naming the epoch (never NaN weights saved); with
``zero_infinity=True`` it trains on, as torch does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from manual_bp.cli import main
from manual_bp.divergence import DivergenceError
from manual_bp.losses import CTCLoss
from manual_bp.model_spec import parse_layers
from manual_bp.models.loss_cost import LossCost, greedy_decode, pack_targets, resolve_cost
from manual_bp.models.sequential import Sequential, model_from_config
from manual_bp.optimizers import SGD
from manual_bp.sequence_data import load_task
from manual_bp.serialization import load, save
from manual_bp.training import train
from manual_bp.training.fused import FusedTrainer
from reference.interop import to_torch

EPS = np.finfo(np.float64).eps
C_TOL = 64.0


def _model(T: int, C: int, loss: CTCLoss, seed: int, hidden: int = 5) -> Sequential:
    spec = parse_layers(f"lstm({hidden}, bidirectional=True), dense({C}), log-softmax")
    return Sequential.from_spec(spec, (T, C), C, cost=loss, seed=seed)


def _batch(rng, N, T, C, blank, impossible):
    """Random frames and targets; lengths random (a target fits its input unless
    ``impossible``: then sequence 0 has fewer frames than its target needs)."""
    symbols = [c for c in range(C) if c != blank]
    S = max(1, T // 2)
    x = rng.standard_normal((N, T, C))
    targets = rng.choice(symbols, size=(N, S))
    target_lengths = rng.integers(0, S + 1, size=N)
    input_lengths = rng.integers(0, T + 1, size=N)
    need = np.array([_frames_needed(t[:s]) for t, s in zip(targets, target_lengths, strict=True)])
    input_lengths = np.maximum(input_lengths, need)  # exactly at the edge when equal
    if impossible:
        target_lengths[0] = S
        input_lengths[0] = _frames_needed(targets[0]) - 1  # one frame short: no path
    return x, targets, input_lengths, target_lengths


def _frames_needed(target: np.ndarray) -> int:
    """The fewest frames with a path to ``target``: one per label, one blank per repeat."""
    return len(target) + int(np.sum(target[1:] == target[:-1]))


def _torch_side(model, loss, x, targets, input_lengths, target_lengths):
    twin = to_torch(model)
    lp = twin(torch.tensor(x)).transpose(0, 1)
    value = F.ctc_loss(lp, torch.tensor(targets), torch.tensor(input_lengths),
                       torch.tensor(target_lengths), blank=loss.blank, reduction=loss.reduction,
                       zero_infinity=loss.zero_infinity)  # fmt: skip
    value.backward()
    grads = {name: p.grad.numpy().copy() for name, p in twin.named_parameters()}
    return value.item(), grads


def _signs(rng, shape, alternate):
    signs = rng.choice([-1.0, 1.0], size=shape)
    if alternate:
        signs = signs * np.where(np.arange(signs.size) % 2, -1.0, 1.0).reshape(shape)
    return signs


def _sensitivity(model, x, y, delta=2.0**-26):
    """Per entry ``max |g(probe) − g| / δ`` over two probes shaking θ and x by ``1 ± δ``."""
    base = model.backprop(x, y).params
    kappa = {k: np.zeros_like(v) for k, v in base.items()}
    for alternate in (False, True):
        shaken, rng = model.copy(), np.random.default_rng(0)
        for _, array in shaken.named_parameters():
            array[...] *= 1.0 + delta * _signs(rng, array.shape, alternate)
        xs = x * (1.0 + delta * _signs(rng, x.shape, alternate))
        moved = shaken.backprop(xs, y).params
        for k in base:
            kappa[k] = np.maximum(kappa[k], np.abs(moved[k] - base[k]) / delta)
    return kappa


def _assert_close(ours, ref, kappa, what):
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(ours), nan), f"{what}: NaN pattern differs from torch's"
    ours, ref, kappa = ours[~nan], ref[~nan], kappa[~nan]
    if not ref.size:
        return
    bound = C_TOL * EPS * np.maximum(np.abs(ref).max(), kappa) + C_TOL * EPS * np.abs(ref)
    worst = np.abs(ours - ref) - bound
    assert (worst <= 0).all(), f"{what}: off by {np.abs(ours - ref).max():.3g}"


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    N=st.integers(1, 3),
    T=st.integers(3, 6),
    C=st.integers(2, 4),
    reduction=st.sampled_from(["mean", "sum"]),
    zero_infinity=st.booleans(),
    impossible=st.booleans(),
    blank_at=st.integers(0, 3),
)
def test_loss_and_every_gradient_match_torch(
    seed, N, T, C, reduction, zero_infinity, impossible, blank_at
):
    rng = np.random.default_rng(seed)
    loss = CTCLoss(blank=blank_at % C, reduction=reduction, zero_infinity=zero_infinity)
    model = _model(T, C, loss, seed)
    x, targets, input_lengths, target_lengths = _batch(rng, N, T, C, loss.blank, impossible)
    y = (targets, input_lengths, target_lengths)
    trainer = FusedTrainer(model, SGD(lr=1.0), None, N)
    with np.errstate(invalid="ignore", over="ignore"):
        result = model.backprop(x, y)
    ref_value, ref_grads = _torch_side(model, loss, x, targets, input_lengths, target_lengths)
    if impossible and not zero_infinity:
        assert np.isinf(result.cost) and np.isinf(ref_value)
        for name, g in result.params.items():  # torch's NaN where the sequence is impossible
            assert np.array_equal(np.isnan(g), np.isnan(ref_grads[name])), name
        with pytest.raises(DivergenceError, match="cost became inf"):
            trainer.gradients(x, y)  # the fused step stops before the NaN update
        return
    fused = trainer.gradients(x, y)
    assert np.isfinite(result.cost)
    with np.errstate(invalid="ignore", over="ignore"):
        kappa = _sensitivity(model, x, y)
    scale = C_TOL * EPS * max(abs(ref_value), 1.0) * T
    assert abs(result.cost - ref_value) <= scale, (result.cost, ref_value)
    for i, name in enumerate(model._parameter_names):
        _assert_close(result.params[name], ref_grads[name], kappa[name], name)
        _assert_close(fused[i], ref_grads[name], kappa[name], f"fused {name}")


def test_impossible_alignment_at_the_edge_and_one_frame_short():
    """Target (1, 1) needs 3 frames (a blank between the repeats): 3 is finite, 2 is not."""
    loss = CTCLoss(reduction="sum")
    model = _model(4, 3, loss, 0)
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    y = (np.array([[1, 1], [1, 1]]), np.array([3, 2]), np.array([2, 2]))
    with np.errstate(invalid="ignore"):
        value = model.backprop(x, y).cost
    ref, _ = _torch_side(model, loss, x, *y)
    assert np.isinf(value) and np.isinf(ref)
    one = (y[0][:1], y[1][:1], y[2][:1])
    assert np.isfinite(model.backprop(x[:1], one).cost)


def _impossible_data(n=12, T=6, C=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, C))
    targets = rng.integers(1, C, size=(n, 2))
    packed = pack_targets(targets, np.full(n, 2), np.full(n, T))
    packed[5, 0] = 1  # sequence 5: one frame for two symbols: no alignment
    return x, packed


@pytest.mark.parametrize("fast", [True, False])
def test_an_infinite_ctc_loss_stops_training_naming_the_epoch(fast):
    x, y = _impossible_data()
    model = _model(6, 4, CTCLoss(), 0)
    before = model.flat_parameters.copy()
    with pytest.raises(DivergenceError, match=r"epoch 1\b.*cost became inf"):
        train(model, x, y, epochs=2, batch_size=4, eta=0.1, seed=0, monitor=(), fast=fast)
    assert np.isfinite(before).all()
    assert np.isfinite(model.flat_parameters).all()  # stopped before the NaN step


@pytest.mark.parametrize("fast", [True, False])
def test_zero_infinity_trains_on_and_matches_torch_s_step(fast):
    x, y = _impossible_data()
    loss = CTCLoss(zero_infinity=True)
    model = _model(6, 4, loss, 0)
    start = model.copy()
    history = train(model, x, y, epochs=1, batch_size=12, eta=0.1, seed=0, fast=fast,
                    monitor=("cost",))  # fmt: skip
    assert np.isfinite(history.training_cost).all()
    # one full-batch SGD step equals torch's on the same batch
    _, ref = _torch_side(start, loss, x, y[:, 2:], y[:, 0], y[:, 1])
    for name, array in model.state_dict().items():
        expected = start.state_dict()[name] - 0.1 * ref[name]
        np.testing.assert_allclose(
            array, expected, rtol=0, atol=1e-12 * max(1, np.abs(expected).max())
        )


def test_names_configs_and_save_load(tmp_path):
    assert isinstance(resolve_cost("ctc"), LossCost)
    assert isinstance(resolve_cost("loss:ctc"), LossCost)
    assert resolve_cost("quadratic").name == "quadratic"  # a cost name stays the cost
    with pytest.raises(ValueError, match="reduction='none'"):
        resolve_cost(CTCLoss(reduction="none"))
    model = _model(6, 4, CTCLoss(blank=2, zero_infinity=True), 3)
    config = json.loads(json.dumps(model.get_config()))
    assert config["cost"] == {"loss": {"name": "ctc-loss", "blank": 2, "reduction": "mean",
                                       "zero_infinity": True}}  # fmt: skip
    assert model_from_config(config).cost == model.cost
    for suffix in (".json", ".npz"):
        save(model, tmp_path / f"m{suffix}")
        loaded = load(tmp_path / f"m{suffix}")
        assert loaded.cost == model.cost
        for name, array in model.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[name], array)


def test_targets_forms_and_errors():
    cost = resolve_cost("ctc")
    targets, lengths = np.array([[1, 2], [3, 0]]), np.array([2, 1])
    packed = cost.prepare_targets((targets, lengths), 2, (5, 4), np.float64)
    np.testing.assert_array_equal(packed, [[5, 2, 1, 2], [5, 1, 3, 0]])
    same = cost.prepare_targets((targets, np.array([5, 5]), lengths), 2, (5, 4), np.float64)
    np.testing.assert_array_equal(same, packed)
    np.testing.assert_array_equal(cost.prepare_targets(packed, 2, (5, 4), np.float64), packed)
    for bad, match in [
        ((targets, np.array([3, 1])), "sequence 0 has input length 5 and target length 3"),
        ((targets, lengths), "2 target sequences for a batch of 3"),
        (targets.astype(float), "targets are a tuple"),
        ((targets,), "give \\(targets, target_lengths\\)"),
    ]:
        batch = 3 if "batch of 3" in match else 2
        with pytest.raises(ValueError, match=match) as error:
            cost.prepare_targets(bad, batch, (5, 4), np.float64)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="input length 6"):
        cost.prepare_targets((targets, np.array([6, 5]), lengths), 2, (5, 4), np.float64)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    frames = np.eye(4)[[0, 1, 1, 0, 1, 2, 2, 3, 0]]
    np.testing.assert_array_equal(greedy_decode(frames, 0), [1, 1, 2, 3])
    np.testing.assert_array_equal(greedy_decode(frames, 1), [0, 0, 2, 3, 0])


def test_ctc_copy_task_collapses_to_its_targets():
    data = load_task("ctc-copy", n_train=50, n_val=1, n_test=1, length=9, vocab=5, seed=4)
    assert data.n_classes == 6 and data.x_train.shape == (50, 9, 6)
    clean = np.argmax(data.x_train, axis=-1)  # the noise (σ 0.2) is far below the one-hot gap
    for frames, row in zip(clean, data.y_train, strict=True):
        assert row[0] == 9 and 1 <= row[1] <= 3
        np.testing.assert_array_equal(greedy_decode(np.eye(6)[frames]), row[2 : 2 + row[1]])
    again = load_task("ctc-copy", n_train=50, n_val=1, n_test=1, length=9, vocab=5, seed=4)
    np.testing.assert_array_equal(again.x_train, data.x_train)


def test_cli_trains_saves_and_evaluates_a_ctc_model(tmp_path, capsys):
    path = tmp_path / "ctc.json"
    argv = ["train", "--task", "ctc-copy", "--length", "9", "--layers",
            "lstm(16, bidirectional=True), dense(9), log-softmax", "--cost", "ctc",
            "--epochs", "2", "--batch-size", "20", "--optimizer", "adam", "--lr", "0.01",
            "--save", str(path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    costs = [float(v) for v in __import__("re").findall(r"training cost (\S+)", out)]
    assert len(costs) == 2 and costs[1] < costs[0]
    model = load(path)
    assert model.cost == LossCost(CTCLoss())
    assert main(["evaluate", str(path), "--task", "ctc-copy", "--length", "9"]) == 0
    report = capsys.readouterr().out
    assert "loss:ctc" in report and "greedy-decoding accuracy" in report


def test_a_spec_file_sets_the_loss_options(tmp_path, capsys):
    spec = tmp_path / "ctc.toml"
    spec.write_text(
        'layers = [{name = "lstm", args = [4], bidirectional = true}, '
        '{name = "dense", args = [9]}, "log-softmax"]\n'
        'cost = {loss = {name = "ctc", blank = 0, zero_infinity = true}}\n'
    )
    path = tmp_path / "ctc.npz"
    argv = ["train", "--task", "ctc-copy", "--length", "6", "--model", str(spec), "--epochs",
            "1", "--batch-size", "500", "--quiet", "--save", str(path)]  # fmt: skip
    assert main(argv) == 0
    assert load(path).cost == LossCost(CTCLoss(zero_infinity=True))
    assert main([*argv[:-2], "--cost", "loss:ctc"]) == 2  # contradicts the spec: refused
    assert "contradicts" in capsys.readouterr().err
