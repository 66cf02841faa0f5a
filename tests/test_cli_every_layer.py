"""``train --layers … --save m.json`` then ``evaluate m.json`` for every layer kind of the
registry (issue 23: "Every model saves, loads and copies"), small and fast: one epoch each.

A registered layer name that no command below uses fails
:func:`test_every_registered_layer_kind_has_a_command`.
"""

from __future__ import annotations

import re

import pytest

from manual_bp import LAYERS
from manual_bp.cli import main

#: one small stack per group of layer kinds (digits: 64 features, 10 classes; a sequence
#: task: integer sequences of length 8, per-position labels)
COMMANDS: dict[str, list[str]] = {
    "features": ["--layers", "dense(12), batchnorm1d, relu, dropout(0.1), dense, softmax"],
    "norm": ["--layers", "layernorm, identity_layer, residual([dense(64), tanh]), dense, softmax"],
    "conv2d": [
        "--layers",
        "reshape(1, 8, 8), conv2d(3, 3, padding=1), batchnorm2d, relu, dropout2d(0.1), "
        "maxpool2d(2), avgpool2d(2), flatten, dense, softmax",
    ],
    "transpose": [
        "--layers",
        "reshape(1, 8, 8), conv_transpose2d(2, 2, stride=2), adaptive_avgpool2d((3, None)), "
        "global_avgpool2d, flatten, "
        "dense, softmax",
    ],
    "sequences": [
        "--layers",
        "reshape(8, 8), conv1d(8, 3, padding=1), rnn(4), flatten, dense, softmax",
    ],
    "norm3d": [
        "--layers",
        "reshape(2, 4, 8), groupnorm(2), instancenorm2d(2, affine=True, "
        "track_running_stats=True), localresponsenorm(3), reshape(2, 32), instancenorm1d(2), "
        "reshape(2, 1, 4, 8), batchnorm3d, instancenorm3d(2, affine=True), flatten, rmsnorm, "
        "dense, softmax",
    ],
    "cells": ["--layers", "rnn_cell(12), lstm_cell(10), gru_cell(8, bias=False), dense, softmax"],
    "volumes": [
        "--layers",
        "reshape(1, 4, 4, 4), conv3d(2, 3, padding=1, padding_mode='circular'), relu, "
        "conv_transpose3d(2, 2, stride=2), flatten, dense, softmax",
    ],
    "lazy": [
        "--layers",
        "reshape(8, 8), lazy_conv1d(4, 3), lazy_conv_transpose1d(2, 3), conv_transpose1d(2, 1), "
        "reshape(2, 2, 2, 2), lazy_conv3d(2, 1), lazy_conv_transpose3d(1, 1), reshape(2, 2, 2), "
        "lazy_conv2d(2, 3, padding=1), lazy_conv_transpose2d(2, 2, stride=2), flatten, dense, "
        "softmax",
    ],
    "pool1d": [
        "--layers",
        "reshape(8, 8), maxpool1d(2, stride=1, padding=1, ceil_mode=True), avgpool1d(3, 1, 1), "
        "adaptive_avgpool1d(6), adaptive_maxpool1d(5), lppool1d(2, 2, 1), flatten, dense, softmax",
    ],
    "pool2d": [
        "--layers",
        "reshape(1, 8, 8), fractional_maxpool2d(1, output_size=8), adaptive_maxpool2d((4, None)), "
        "lppool2d(1.5, 2), relu, flatten, dense, softmax",
    ],
    "pool3d": [
        "--layers",
        "reshape(1, 4, 4, 4), maxpool3d(2, stride=1), avgpool3d(2, stride=1, padding=1), "
        "fractional_maxpool3d(1, output_size=2), adaptive_avgpool3d((2, None, 2)), "
        "adaptive_maxpool3d(1), lppool3d(2, 1), flatten, dense, softmax",
    ],
    "padding2d3d": [
        "--layers",
        "reshape(1, 8, 8), zeropad2d(1), constantpad2d((1, 0, 2, -1), 0.5), "
        "reflectionpad2d((1, 2, 0, 1)), replicationpad2d(1), circularpad2d((2, 1, 1, 0)), "
        "zeropad3d((1, 0, 0, 1, 1, 0)), constantpad3d(1, -1.0), "
        "reflectionpad3d((1, 1, 1, 0, 0, 1)), replicationpad3d((0, 1, 1, 0, 1, 0)), "
        "circularpad3d((1, 0, 0, 1, 1, 1)), flatten, dense, softmax",
    ],
    "activation-modules": [
        "--layers",
        "dense(16), glu, prelu(8), rrelu(0.1, 0.3), softmin, reshape(2, 2, 2), softmax2d, "
        "glu(1), flatten, dense, softmax",
    ],
    "padding1d-bilinear": [
        "--layers",
        "reshape(8, 8), zeropad1d(1), constantpad1d((2, -1), 1.0), reflectionpad1d((2, 1)), "
        "replicationpad1d(1), circularpad1d((1, 2)), flatten, dense(6), tanh, bilinear(5), "
        "dense, softmax",
    ],
    "transformer": [
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--layers",
        "reshape(8, 8), transformer_encoder([transformer_encoder_layer(2, dim_feedforward=16, "
        "dropout=0.0)], 2, [layernorm]), transformer_encoder_layer(2, dim_feedforward=16, "
        "norm_first=True), transformer_decoder_layer(2, dim_feedforward=16), "
        "transformer_decoder([transformer_decoder_layer(2, dim_feedforward=8)], 1), "
        "transformer(2, 1, 1, dim_feedforward=8), flatten, dense, softmax",
    ],
    "recurrent": ["--layers", "unflatten(1, (8, 8)), gru(4), lstm(4), flatten, dense, softmax"],
    "attention": [  # Nielsen's default eta = 3.0 makes attention's scores overflow: Adam
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--layers",
        "reshape(8, 8), multihead_attention(8, 2), flatten, dense, softmax",
    ],
    "embedding": [
        "--task",
        "copy",
        "--layers",
        "embedding(8, 4), lstm(6), dense, softmax",
    ],
}


def _names(argv: list[str]) -> set[str]:
    spec = argv[argv.index("--layers") + 1]
    names = re.findall(r"([a-z_0-9]+)\s*(?=\(|,|$|\])", spec)
    return {*names, *(name.replace("_", "-") for name in names)}  # "_" may stand for "-"


def test_every_registered_layer_kind_has_a_command():
    used = set().union(*(_names(argv) for argv in COMMANDS.values()))
    kinds = set(LAYERS.names()) - {"activation"}  # activations are named by their own names
    assert not kinds - used, f"layer kinds no CLI save/evaluate test uses: {kinds - used}"


@pytest.mark.parametrize("group", sorted(COMMANDS))
@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_train_save_then_evaluate(tmp_path, capsys, group, suffix):
    path = tmp_path / f"m{suffix}"
    argv = COMMANDS[group]
    task = argv[: argv.index("--layers")] if "--task" in argv else []
    args = ["train", "--quiet", "--epochs", "1", "--seed", "3", "--cost", "log-likelihood"]
    args += [*argv, "--save", str(path)]
    assert main(args) == 0, capsys.readouterr().err
    out, _ = capsys.readouterr()
    trained = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    assert main(["evaluate", str(path), "--seed", "3", *task]) == 0, capsys.readouterr().err
    out, _ = capsys.readouterr()
    assert float(re.search(r"accuracy ([\d.]+)%", out).group(1)) == trained
