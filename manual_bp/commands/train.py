"""``manual-bp train``: train a network on the embedded digits or on MNIST.

Examples::

    python -m manual_bp train                       # 8×8 digits, [64, 30, 10], ~2 s
    python -m manual_bp train --sizes 100 --epochs 60 --save digits.json --plot curves.png
    python -m manual_bp train --mnist ../shared/data/mnist --sizes 30 --cost quadratic \\
        --initializer large --eta 3.0 --epochs 30      # Nielsen, ch. 1

Input and output sizes come from the data: ``--sizes 30`` means one hidden layer
of 30 units; full sizes (``--sizes 64 30 10``) are accepted when they match the
data. Each epoch prints a progress bar (stderr) and one line with the training
and validation cost and accuracy (stdout); the run ends with the test accuracy.
Exit status 0; 1 when training fails (divergence, out of memory); 2 for bad options,
data or output paths — all checked before training starts; 3 when ``--plot`` needs
matplotlib (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from manual_bp._argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from manual_bp.commands.train_gpt import TEXT_TASKS, add_gpt_arguments, is_gpt, run_gpt
from manual_bp.optimizers.cli import add_optimizer_arguments, step_from_args
from manual_bp.serialization import save
from manual_bp.training import train

__all__ = ["DEFAULTS", "add_parser", "run"]

#: Defaults of the main job: measured to reach ≥ 90 % test accuracy on the embedded
#: digits in a few seconds (see docs/results.md).
DEFAULTS = {
    "sizes": [30],
    "activation": "sigmoid",
    "cost": "cross-entropy",
    "epochs": 30,
    "batch_size": 10,
    "eta": 0.5,
    "lmbda": 0.0,
    "initializer": "default",
    "seed": 0,
    "dtype": "float64",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a network (embedded 8×8 digits by default, or MNIST)",
        description=(
            "Train a fully connected network with mini-batch SGD and report the test accuracy. "
            "Data: the embedded 8×8 digits (default) or MNIST IDX files (--mnist DIR)."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--mnist",
        metavar="DIR",
        type=Path,
        help="train on MNIST from the four IDX files in DIR (gzipped or raw)",
    )
    data.add_argument(
        "--task",
        choices=("copy", "reverse", "sum", "parity", "ctc-copy", *TEXT_TASKS),
        help="train a sequence model on a synthetic task (integer sequences, per-position "
        "labels; needs --layers or --model), e.g. --task reverse --layers "
        "'embedding(8, 16), lstm(32, bidirectional=True), dense, softmax'; ctc-copy: noisy "
        "one-hot frames with blanks, the target the collapsed symbols (--cost ctc); "
        "addition, sort, brackets (and copy, reverse with --model gpt): text for a GPT",
    )
    data.add_argument(
        "--length", type=positive_int, default=8, help="sequence length of --task (default: 8)"
    )
    model = parser.add_argument_group("network")
    model.add_argument(
        "--layers",
        metavar="SPEC",
        help="train a layer stack instead of Nielsen's network, e.g. "
        "'dense(100), batchnorm1d, relu, dropout(0.2), dense, softmax' (sizes are inferred "
        "from the data; a bare 'dense' maps to the classes); see docs/layers.md",
    )
    model.add_argument(
        "--model",
        metavar="FILE",
        type=Path,
        help="a layer stack from a .json or .toml spec: {layers = [...], cost = ...}; or the "
        "literal 'gpt': a small GPT on a text --task (see --gpt)",
    )
    model.add_argument(
        "--sizes",
        nargs="+",
        type=positive_int,
        metavar="N",
        help="hidden layer widths (input/output sizes come from the data), or all sizes "
        f"(default: {DEFAULTS['sizes']})",
    )
    model.add_argument(
        "--activation",
        help=f"hidden activation (default: {DEFAULTS['activation']})",
    )
    model.add_argument(
        "--output-activation", default=None, help="output activation (default: --activation)"
    )
    model.add_argument(
        "--cost",
        help=f"cost function name (default: {DEFAULTS['cost']}, or the model spec's 'cost')",
    )
    model.add_argument(
        "--initializer",
        help="'default' (W ~ N(0, 1/n_in)) or 'large' (N(0, 1), Nielsen ch. 1) "
        f"(default: {DEFAULTS['initializer']})",
    )
    model.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default=DEFAULTS["dtype"],
        help="precision (default: %(default)s)",
    )
    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--epochs", type=positive_int, default=DEFAULTS["epochs"], help="(default: %(default)s)"
    )
    fit.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS["batch_size"],
        help="mini-batch size (default: %(default)s)",
    )
    fit.add_argument(
        "--eta",
        type=positive_float,
        default=DEFAULTS["eta"],
        help="learning rate η of plain SGD (default: %(default)s)",
    )
    fit.add_argument(
        "--lmbda",
        type=non_negative_float,
        default=DEFAULTS["lmbda"],
        help="L2 strength λ (default: %(default)s)",
    )
    fit.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULTS["seed"],
        help="seed of initialiser and shuffling (default: %(default)s)",
    )
    add_optimizer_arguments(parser)  # --optimizer, --lr, --schedule & co.
    add_gpt_arguments(parser)  # --gpt, --digits, --grad-clip & co. (commands/train_gpt.py)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--save", metavar="FILE", type=Path, help="save the trained network (.json or .npz)"
    )
    output.add_argument(
        "--plot", metavar="FILE.png", type=Path, help="draw the learning curves (matplotlib)"
    )
    output.add_argument(
        "--quiet", action="store_true", help="no progress bar and no per-epoch lines"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from manual_bp.data import load_digits, load_mnist
    from manual_bp.models.network import Network
    from manual_bp.models.sequential import Sequential

    if is_gpt(args):
        return run_gpt(args, train)
    started = time.perf_counter()
    spec = _preflight(args)  # every flag, input and output path: before any long work
    step = step_from_args(args)  # eta (plain SGD) or optimizer, and schedule: passed on as is
    if args.task is not None:
        from manual_bp.sequence_data import load_task

        data = load_task(args.task, length=args.length, seed=args.seed)
    elif args.mnist:
        data = load_mnist(args.mnist, dtype=args.dtype)
    else:
        data = load_digits(dtype=args.dtype)
    if spec is None:
        sizes = resolve_sizes(_given(args, "sizes"), data.n_features, data.n_classes)
        title = f"{sizes}"
        _check_fits_in_memory(sizes, args.dtype)
        net = Network(
            sizes,
            _given(args, "activation"),
            _given(args, "cost"),
            output_activation=args.output_activation,
            initializer=_given(args, "initializer"),
            seed=args.seed,
            dtype=args.dtype,
        )
    else:
        title = "layer stack"
        _check_input_shape(spec, data.x_train.shape[1:], args.model)
        net = Sequential.from_spec(
            spec["layers"],
            data.x_train.shape[1:],
            data.n_classes,
            cost=spec.get("cost") or _given(args, "cost"),
            seed=args.seed,
            dtype=args.dtype,
        )
    if not args.quiet:
        print(f"{data!r}\n{net!r}, {net.n_parameters} parameters", flush=True)
    history = train(
        net,
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lmbda=args.lmbda,
        evaluation_data=(data.x_val, data.y_val),
        seed=args.seed,
        progress=not args.quiet,
        log=None if args.quiet else sys.stdout,
        **step,
    )
    best_epoch, best_accuracy = history.best_evaluation_accuracy()
    test_accuracy = net.accuracy(data.x_test, data.y_test)
    print(
        f"{data.name}: test accuracy {test_accuracy:.2%} "
        f"({round(test_accuracy * len(data.y_test))}/{len(data.y_test)}); "
        f"best validation accuracy {best_accuracy:.2%} at epoch {best_epoch}; "
        f"{sum(history.epoch_seconds):.1f} s training, "
        f"{time.perf_counter() - started:.1f} s total"
    )
    if args.save is not None:
        save(net, args.save)
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from manual_bp.plotting import plot_learning_curves

        plot_learning_curves(history, args.plot, title=f"{data.name} {title}")
        print(f"saved learning curves to {args.plot}")
    return 0


def resolve_sizes(sizes: list[int], n_in: int, n_out: int) -> list[int]:
    """Full layer sizes from hidden widths, or ``sizes`` itself when it already starts with
    ``n_in`` and ends with ``n_out``."""
    if len(sizes) >= 2 and sizes[0] == n_in and sizes[-1] == n_out:
        return list(sizes)
    return [n_in, *sizes, n_out]


#: Flags that describe the fully connected network (``--sizes`` form) only: with a layer
#: stack they have no meaning, and are refused rather than silently ignored.
NETWORK_ONLY_FLAGS = ("sizes", "activation", "output_activation", "initializer")


def _given(args: argparse.Namespace, key: str) -> Any:
    """A flag's value, or the main job's default when it was not given."""
    value = getattr(args, key)
    return DEFAULTS[key] if value is None else value


def _check_flags_apply(args: argparse.Namespace, spec: dict) -> None:
    """Refuse flags a layer stack ignores, and a --cost that contradicts the spec's."""
    source = "--model" if args.model is not None else "--layers"
    for key in NETWORK_ONLY_FLAGS:
        if getattr(args, key) is not None:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} describes the fully connected network (--sizes form) and does not "
                f"apply to a layer stack given by {source}: write it into the layer spec"
            )
    if args.cost is not None and spec.get("cost") not in (None, args.cost):
        raise ValueError(
            f"--cost {args.cost!r} contradicts the spec's cost {spec['cost']!r} in "
            f"{args.model}: give one"
        )


def _preflight(args: argparse.Namespace) -> dict | None:
    """Check what can be checked before training (fail now, not after minutes of it):
    conflicting flags, the spec, the data directory, every output path and what writing
    it needs (matplotlib and the image format for ``--plot``). Returns the layer spec."""
    from manual_bp._files import check_distinct, check_input_dir, check_output_file
    from manual_bp.model_spec import SpecError, load_spec_file, parse_layers

    if args.task in TEXT_TASKS or args.gpt is not None:
        raise ValueError(f"--task {args.task} and --gpt train a GPT: give --model gpt")
    if args.layers is not None and args.model is not None:
        raise ValueError("give --layers or --model, not both")
    if args.task is not None and args.mnist is not None:
        raise ValueError("give --task or --mnist, not both")
    if args.task is not None and args.layers is None and args.model is None:
        raise ValueError("--task trains a layer stack: give --layers or --model too")
    spec = None
    if args.model is not None:
        spec = load_spec_file(args.model)
    elif args.layers is not None:
        try:
            spec = {"layers": parse_layers(args.layers)}
        except SpecError as error:
            raise SpecError(f"--layers: {error}") from None
    if spec is not None:
        _check_flags_apply(args, spec)
    if args.mnist is not None:
        check_input_dir(args.mnist, "the MNIST directory")
    check_distinct({"--save": args.save, "--plot": args.plot, "--model": args.model})
    if args.save is not None:
        check_output_file(args.save, "the saved model", (".json", ".npz"))
    if args.plot is not None:
        from manual_bp.plotting import check_plot_path

        check_plot_path(args.plot)
    return spec


def _check_fits_in_memory(sizes: list[int], dtype: str) -> None:
    """Refuse, as an input error, sizes whose parameters alone exceed physical memory
    (``--sizes 10000000000`` would end in an allocation failure, or in swapping)."""
    n_parameters = sum((sizes[l] + 1) * sizes[l + 1] for l in range(len(sizes) - 1))
    needed = n_parameters * np.dtype(dtype).itemsize * 2  # parameters and gradients
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX: allocation will tell
        return
    if needed > available:
        raise ValueError(
            f"--sizes {sizes}: {n_parameters:.3g} parameters need {needed / 2**30:.3g} GiB, "
            f"more than this machine's {available / 2**30:.3g} GiB of memory"
        )


def _check_input_shape(spec: dict, shape: tuple[int, ...], source: Path | None) -> None:
    declared = spec.get("input_shape")
    if declared is None:
        return
    if not isinstance(declared, list) or tuple(declared) != tuple(shape):
        raise ValueError(
            f"{source}: input_shape {declared!r} does not match the data's per-sample "
            f"shape {list(shape)}"
        )
