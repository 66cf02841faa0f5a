"""Command line: ``train`` (the README's main job) and ``evaluate``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual_bp.commands.train as train_command
from manual_bp.cli import main
from manual_bp.commands.evaluate import confusion_matrix, format_confusion_matrix
from manual_bp.commands.train import resolve_sizes
from manual_bp.serialization import load_network, save_network

REPO = Path(__file__).resolve().parents[1]


def test_default_train_on_digits_reaches_90_percent(capsys):
    """The README's main-job command, with its defaults, in-process."""
    assert main(["train"]) == 0
    out, err = capsys.readouterr()
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 30
    assert "training accuracy" in epoch_lines[-1] and "evaluation accuracy" in epoch_lines[-1]
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    assert accuracy >= 90.0, out
    assert "epoch 30/30" in err  # the progress bar goes to stderr


def test_train_monitors_validation_and_reports_test(monkeypatch, capsys):
    """Per-epoch lines are on the validation split; only the summary touches the test split."""
    from manual_bp.data import load_digits

    seen = {}
    original = train_command.train

    def spy(self, x, y, **kwargs):  # the command calls train(net, x, y, ...)
        seen.update(x=x, evaluation=kwargs["evaluation_data"])
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(train_command, "train", spy)
    assert main(["train", "--quiet", "--epochs", "1"]) == 0
    data = load_digits()
    np.testing.assert_array_equal(seen["x"], data.x_train)
    np.testing.assert_array_equal(seen["evaluation"][0], data.x_val)
    assert "test accuracy" in capsys.readouterr().out


def test_quiet_prints_only_the_summary(capsys):
    assert main(["train", "--quiet", "--epochs", "2", "--sizes", "10"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("digits: test accuracy")
    assert err == ""


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_then_evaluate_round_trip(tmp_path, capsys, suffix):
    path = tmp_path / f"net{suffix}"
    args = ["train", "--quiet", "--epochs", "3", "--sizes", "64", "20", "10", "--save", str(path)]
    assert main([*args, "--dtype", "float32", "--seed", "4"]) == 0
    out, _ = capsys.readouterr()
    trained = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    net = load_network(path)
    assert net.sizes == [64, 20, 10] and net.dtype == np.float32
    assert main(["evaluate", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert float(re.search(r"accuracy ([\d.]+)%", out).group(1)) == trained
    table = out.split("predicted label)\n", 1)[1].splitlines()
    assert table[0].split()[:3] == ["true\\pred", "0", "1"]
    counts = np.array([[int(v) for v in row.split()[1:11]] for row in table[1:11]])
    assert counts.sum() == 359  # every test sample lands in one cell


@pytest.mark.parametrize(
    "suffix, magic",
    [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml"), (".pdf", b"%PDF"), (".jpg", b"\xff\xd8")],
)
def test_plot_writes_the_format_of_its_suffix(tmp_path, capsys, suffix, magic, monkeypatch):
    """matplotlib is in the test extra: this runs in CI (no skip), headless (no DISPLAY;
    a standalone Figure, no pyplot backend)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    path = tmp_path / f"curves{suffix}"
    assert main(["train", "--quiet", "--epochs", "2", "--plot", str(path)]) == 0
    assert path.read_bytes().startswith(magic)
    assert capsys.readouterr().out.endswith(f"saved learning curves to {path}\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
        (["train", "--eta", "-1"], "argument --eta: expected a positive number"),
        (["train", "--lmbda", "nan"], "argument --lmbda: expected a finite number"),
        (["train", "--dtype", "float16"], "argument --dtype: invalid choice"),
        (["train", "--activation", "nope"], "unknown activation 'nope'; valid names:"),
        (["train", "--cost", "nope"], "unknown cost 'nope'; valid names:"),
        (["train", "--initializer", "zeros"], "unknown initializer 'zeros'"),
        (
            ["train", "--save", "net.pkl"],
            "net.pkl: unsupported file type '.pkl' for the saved model; use .json or .npz",
        ),
        (["train", "--mnist", "/nonexistent/mnist"], "MNIST directory does not exist"),
        (["evaluate", "/nonexistent/net.json"], "/nonexistent/net.json: no such file"),
    ],
)
def test_bad_options_give_one_clear_line_and_exit_2(capsys, argv, message):
    code = _exit_code(argv)
    assert code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own errors
        return int(exit_.code)


def test_corrupt_saved_file_gives_clear_error(tmp_path, capsys):
    path = tmp_path / "net.json"
    assert main(["train", "--quiet", "--epochs", "1", "--save", str(path)]) == 0
    capsys.readouterr()
    document = json.loads(path.read_text())
    document["parameters"]["0.weight"] = document["parameters"]["0.weight"][:-1]
    path.write_text(json.dumps(document))
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"manual-bp evaluate: error: {path}: parameter 0.weight has shape (29, 64); "
        "the model needs (30, 64)"
    )
    path.write_text(path.read_text()[:100])
    assert main(["evaluate", str(path)]) == 2
    assert f"{path}: corrupt JSON" in capsys.readouterr().err


def test_evaluate_network_that_does_not_fit_the_data(tmp_path, capsys):
    from manual_bp.models.network import Network

    path = save_network(Network([10, 3], seed=0), tmp_path / "small.npz")
    assert main(["evaluate", str(path)]) == 2
    assert "do not fit digits (64 inputs, 10 classes)" in capsys.readouterr().err


def test_resolve_sizes():
    assert resolve_sizes([30], 64, 10) == [64, 30, 10]
    assert resolve_sizes([64, 30, 10], 64, 10) == [64, 30, 10]
    assert resolve_sizes([64, 10], 64, 10) == [64, 10]
    assert resolve_sizes([100, 30], 784, 10) == [784, 100, 30, 10]


@pytest.mark.parametrize(
    ("labels", "predicted", "message"),
    [([0, 3], [0, 1], "labels: label 3 at index 1"), ([0, 1], [-1, 1], "predicted: label -1")],
)
def test_confusion_matrix_refuses_labels_out_of_range(labels, predicted, message):
    """A label outside [0, n) is named (it was an IndexError, or -1 counted in the last row)."""
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.array(labels), np.array(predicted), 3)


def test_confusion_matrix_table():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    lines = format_confusion_matrix(matrix).splitlines()
    assert lines[1].split() == ["0", "1", "1", "0", "50.00%"]


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "manual_bp", "train", "--quiet", "--epochs", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("digits: test accuracy")


def test_optimizer_and_schedule_flags_reach_training(monkeypatch, capsys):
    cli = pytest.importorskip("manual_bp.optimizers.cli")

    seen = {}
    original = train_command.train

    def spy(self, x, y, **kwargs):  # the command calls train(net, x, y, ...)
        seen.update(kwargs)
        if kwargs.get("optimizer") is not None:
            seen["initial_lr"] = kwargs["optimizer"].lr  # before a schedule changes it
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(train_command, "train", spy)
    argv = ["train", "--quiet", "--epochs", "2", "--optimizer", "adam", "--lr", "0.01"]
    if hasattr(cli, "schedule_from_args"):
        argv += ["--schedule", "step", "--step-size", "1", "--gamma", "0.5"]
    assert main(argv) == 0
    assert seen["optimizer"].name == "adam" and seen["initial_lr"] == 0.01
    assert "eta" not in seen
    if hasattr(cli, "schedule_from_args"):
        assert seen["schedule"].name == "step"
    seen.clear()
    assert main(["train", "--quiet", "--epochs", "1"]) == 0  # no flags: plain SGD with --eta
    assert seen["eta"] == 0.5 and "optimizer" not in seen and "schedule" not in seen
