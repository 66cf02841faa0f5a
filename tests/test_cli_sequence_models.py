"""Issue 25: a 1-d convolutional sequence classifier and a two-layer Transformer encoder,
trained from the CLI on the embedded digits (each image a sequence of 8 steps of 8
features), each checked against the same model in torch.

The CLI runs for real (``main(["train", …, "--save", f])``); a spy on the command's call of
``manual_bp.training.train`` records the model it built (before training), its optimizer
and the per-epoch ``History``. The torch twin (``reference/cli_twin.py``: the same modules,
the same initial state dict, the same mini-batches of ``iterate_minibatches`` with the
seed, ``torch.optim`` with the flags' hyper-parameters, autograd) is trained alongside.
Compared in float64: the cost curve (training and validation cost after every epoch, in
evaluation mode) and every parameter and buffer of the saved model, each entry within
``64·ε·max(max|torch|, κ)`` where κ is the run's measured condition number
(``trajectory_sensitivity``: the run repeated from shaken initial weights with shaken
gradients at every step). The saved model loads, ``evaluate`` reports the accuracy ``train``
printed, and torch's twin classifies the test set the same.

A Transformer with dropout 0.1 (torch's default) trains from a spec file; evaluation mode
must switch dropout off: its saved model's outputs equal torch's in ``eval()``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import manual_bp.commands.train as train_command
from manual_bp.cli import main
from manual_bp.data import load_digits
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.serialization import load
from reference.cli_twin import output_sensitivity, torch_training, trajectory_sensitivity
from reference.interop import to_torch


@dataclass(frozen=True)
class Case:
    spec: str
    flags: tuple[str, ...]  # optimizer flags of the command line
    torch_optimizer: object  # params -> torch.optim optimizer with the flags' values
    epochs: int
    batch_size: int
    min_accuracy: float  # it learns: test accuracy after the run


#: rows of the 8×8 image as channels, columns as the 8 time steps (reshape(8, 8) is (C, L)
#: for conv1d); batch norm's running statistics are buffers the comparison covers too
CONV1D = Case(
    "reshape(8, 8), conv1d(16, 3, padding=1), batchnorm1d, relu, maxpool1d(2), "
    "conv1d(16, 3, padding=1), relu, adaptive_avgpool1d(1), flatten, dense, softmax",
    ("--optimizer", "sgd", "--lr", "0.2", "--momentum", "0.9"),
    lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
    epochs=3,
    batch_size=50,
    min_accuracy=0.8,
)
#: rows as the 8 positions of 8 features ((L, E) for the encoder, batch-first)
TRANSFORMER = Case(
    "reshape(8, 8), transformer_encoder([transformer_encoder_layer(2, dim_feedforward=32, "
    "dropout=0.0)], 2), flatten, dense, softmax",
    ("--optimizer", "adam", "--lr", "0.01"),
    lambda p: torch.optim.Adam(p, lr=0.01),
    epochs=2,
    batch_size=100,
    min_accuracy=0.85,
)


#: the two-layer encoder as a spec file: pre-norm layers, a final norm, torch's dropout 0.1
ENCODER_TOML = """
layers = [
    {name = "reshape", args = [8, 8]},
    {name = "transformer_encoder", norm = [{name = "layernorm"}], args = [
        [{name = "transformer_encoder_layer", args = [2], dim_feedforward = 32, norm_first = true}],
        2,
    ]},
    "flatten",
    "dense",
    "softmax",
]
cost = "log-likelihood"
"""


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on shared cores
    yield
    torch.set_num_threads(threads)


def _cli(argv: list[str], capsys) -> str:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _accuracy(text: str) -> float:
    return float(re.search(r"accuracy ([\d.]+)%", text).group(1))


def _train_from_cli(monkeypatch, capsys, args: list[str], path: Path) -> tuple[dict, float]:
    """``train … --save path`` through ``main``; returns what the spy saw and the printed
    test accuracy."""
    seen: dict = {}
    real = train_command.train

    def spy(net, x, y, **kwargs):
        seen.update(kwargs, model=net.copy(), fresh_optimizer=copy.deepcopy(kwargs["optimizer"]))
        seen["history"] = real(net, x, y, **kwargs)
        return seen["history"]

    monkeypatch.setattr(train_command, "train", spy)
    out = _cli(["train", "--quiet", "--seed", "3", "--cost", "log-likelihood", *args,
                "--save", str(path)], capsys)  # fmt: skip
    return seen, float(re.search(r"test accuracy ([\d.]+)%", out).group(1))


def _check_close(ours: dict, theirs: dict, scale: dict, label: str) -> None:
    assert ours.keys() == theirs.keys(), f"{label}: {set(ours) ^ set(theirs)}"
    for name, expected in theirs.items():
        actual = np.asarray(ours[name])
        if actual.dtype.kind in "iu":  # num_batches_tracked
            np.testing.assert_array_equal(actual, expected, err_msg=f"{label} {name}")
            continue
        assert_gradients_close(actual, expected, name=f"{label} {name}", scale=scale[name])


@pytest.mark.parametrize("case", [CONV1D, TRANSFORMER], ids=["conv1d", "transformer"])
def test_cli_trained_model_matches_the_same_torch_model(tmp_path, monkeypatch, capsys, case):
    """Cost curve, trained parameters and buffers, saved model and its accuracy vs torch."""
    path = tmp_path / "model.npz"
    args = ["--epochs", str(case.epochs), "--batch-size", str(case.batch_size), *case.flags]
    seen, printed = _train_from_cli(monkeypatch, capsys, [*args, "--layers", case.spec], path)
    assert (seen["epochs"], seen["batch_size"], seen["seed"]) == (case.epochs, case.batch_size, 3)
    data = load_digits()
    fit = dict(epochs=case.epochs, batch_size=case.batch_size, seed=3)
    theirs, twin = torch_training(seen["model"], data, make_optimizer=case.torch_optimizer, **fit)
    base, kappa = trajectory_sensitivity(
        seen["model"], data, make_optimizer=lambda: copy.deepcopy(seen["fresh_optimizer"]), **fit
    )
    saved = load(path)
    ours = {k: np.array(v) for k, v in saved.state_dict().items()}
    # the probe's base run is the CLI's run, bit for bit (so κ is the CLI run's conditioning)
    history = seen["history"]
    curves = {"training cost": history.training_cost, "evaluation cost": history.evaluation_cost}
    for name, value in {**curves, **ours}.items():
        np.testing.assert_array_equal(value, base.values()[name], err_msg=name)
    _check_close({**curves, **ours}, theirs.values(), kappa, "after the CLI's run:")
    # the saved model evaluates to the printed accuracy, and torch's twin classifies alike
    evaluated = _accuracy(_cli(["evaluate", str(path), "--seed", "3"], capsys))
    with torch.no_grad():
        labels = twin(torch.tensor(data.x_test)).argmax(-1).numpy()
    torch_accuracy = 100 * float(np.mean(labels == data.y_test))
    assert evaluated == printed == round(torch_accuracy, 2)
    assert printed >= 100 * case.min_accuracy  # it learns, in a few dozen steps
    assert history.training_cost[-1] < history.training_cost[0]


def test_transformer_with_dropout_from_a_spec_file_evaluates_as_torch(tmp_path, monkeypatch,
                                                                      capsys):  # fmt: skip
    """Dropout 0.1 in training, none in evaluation: the saved model's outputs on the test set
    equal torch's ``eval()`` twin's (within the measured sensitivity), evaluating twice gives
    the same accuracy, and training mode does draw masks."""
    spec = tmp_path / "encoder.toml"
    spec.write_text(ENCODER_TOML)
    path = tmp_path / "encoder.json"
    args = ["--epochs", "1", "--batch-size", "100", "--optimizer", "adam", "--lr", "0.01"]
    seen, printed = _train_from_cli(monkeypatch, capsys, [*args, "--model", str(spec)], path)
    encoder = seen["model"].layers[1]
    assert encoder.layers[0].dropout == 0.1 and encoder.norm_layer is not None
    saved = load(path)
    x = load_digits().x_test
    ours = saved.infer(x)
    twin = to_torch(saved).eval()
    with torch.no_grad():
        theirs = twin(torch.tensor(x)).numpy()
    assert_gradients_close(ours, theirs, name="eval outputs", scale=output_sensitivity(saved, x))
    assert np.array_equal(saved.infer(x), ours)
    accuracy = [_accuracy(_cli(["evaluate", str(path)], capsys)) for _ in range(2)]
    assert (
        accuracy[0]
        == accuracy[1]
        == printed
        == round(100 * float(np.mean(theirs.argmax(-1) == load_digits().y_test)), 2)
    )
    saved.train()  # and training mode does drop
    assert not np.allclose(saved.forward(x[:20])[0], ours[:20])


def test_the_conditioning_probe_refuses_an_unprobed_run():
    """Plain SGD is folded into the fused step and never calls ``optimizer.step``: the
    gradient probe would silently measure nothing, so the run is refused, naming why."""
    from manual_bp.model_spec import parse_layers
    from manual_bp.models.sequential import Sequential
    from manual_bp.optimizers import SGD

    model = Sequential.from_spec(parse_layers("dense, softmax"), (64,), 10, seed=0)
    fit = dict(epochs=1, batch_size=500, seed=0)
    with pytest.raises(ValueError, match=r"never called step \(fused plain SGD\)"):
        trajectory_sensitivity(model, load_digits(), make_optimizer=lambda: SGD(0.1), **fit)
    trajectory_sensitivity(
        model, load_digits(), make_optimizer=lambda: SGD(0.1, momentum=0.5), **fit
    )
