"""``manual-bp evaluate FILE``: accuracy and confusion matrix of a saved network.

Examples::

    python -m manual_bp train --save digits.json
    python -m manual_bp evaluate digits.json                 # embedded digits, test split
    python -m manual_bp evaluate mnist.npz --mnist ../shared/data/mnist --split validation
    python -m manual_bp train --task reverse --layers "embedding(8, 16), lstm(32), dense, \
        softmax" --save rev.json && python -m manual_bp evaluate rev.json --task reverse

A ``--task`` model is evaluated on the task's data drawn with the same ``--length`` and
``--seed`` as in ``train`` (the defaults match ``train``'s); its confusion matrix counts
every position.

Exit status 0, or 2 for a missing, corrupt or wrong kind of file or a network that does
not fit the data (see docs/cli.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from manual_bp._argtypes import non_negative_int, positive_int
from manual_bp._validation import check_labels
from manual_bp.commands.gpt_text import add_evaluate_arguments, evaluate_gpt, is_gpt_model
from manual_bp.commands.train import DEFAULTS
from manual_bp.commands.train_gpt import TEXT_TASKS

__all__ = ["add_parser", "confusion_matrix", "format_confusion_matrix", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy and confusion matrix of a saved network",
        description="Load a network saved by 'train --save' and evaluate it on a data set split.",
    )
    parser.add_argument("file", type=Path, help="saved network (.json or .npz)")
    parser.add_argument(
        "--mnist", metavar="DIR", type=Path, help="evaluate on MNIST from the IDX files in DIR"
    )
    parser.add_argument(
        "--task",
        choices=("copy", "reverse", "sum", "parity", "ctc-copy", *TEXT_TASKS),
        help="evaluate a sequence model on the synthetic task it was trained on (ctc-copy: "
        "the mean CTC loss and the greedy-decoding accuracy); a saved GPT on its text task "
        "(loss, perplexity, exact greedy answers; commands/gpt_text.py)",
    )
    parser.add_argument(
        "--length", type=positive_int, default=8, help="sequence length of --task (default: 8)"
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULTS["seed"],
        help="seed of --task's data, as given to train (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "validation", "test"),
        default="test",
        help="data split (default: %(default)s)",
    )
    add_evaluate_arguments(parser)  # --digits of a GPT's text task
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from manual_bp._files import check_input_dir, check_input_file
    from manual_bp.data import load_digits, load_mnist
    from manual_bp.serialization import SUFFIXES, load

    check_input_file(args.file, "a saved model file", SUFFIXES)
    if args.mnist is not None:
        check_input_dir(args.mnist, "the MNIST directory")
        if args.task is not None:
            raise ValueError("give --task or --mnist, not both")
    net = load(args.file)
    if is_gpt_model(net) or args.task in TEXT_TASKS:
        return evaluate_gpt(net, args)
    dtype = net.dtype
    if args.task is not None:
        from manual_bp.sequence_data import load_task

        data = load_task(args.task, length=args.length, seed=args.seed)
        frames = data.x_train.shape[1:]  # (T,) token indices, or (T, C) frames of ctc-copy
        expected = (frames, (data.n_features, data.n_classes))
    else:
        data = load_mnist(args.mnist, dtype=dtype) if args.mnist else load_digits(dtype=dtype)
        expected = ((data.n_features,), (data.n_classes,))
    x, y = data.split(args.split)
    # Every model knows its per-sample shapes (None when the config leaves them open).
    n_in, n_out = net.input_shape, net.output_shape
    if (n_in, n_out) != expected:
        raise ValueError(
            f"{args.file}: the model's inputs {n_in} and outputs {n_out} do not fit "
            f"{data.name} ({data.n_features} inputs, {data.n_classes} classes)"
        )
    if net.cost.target_kind == "loss":  # a torch-named loss: no per-position labels
        return _report_loss(net, args, data.name, x, y)
    predicted = net.predict(x)
    matrix = confusion_matrix(np.ravel(y), np.ravel(predicted), data.n_classes)
    total = int(matrix.sum())  # samples, or positions of a sequence task
    accuracy = float(np.trace(matrix)) / total
    print(f"{net!r} from {args.file}")
    print(f"{data.name} {args.split}: accuracy {accuracy:.2%} ({int(np.trace(matrix))}/{total})")
    print("confusion matrix (rows: true label, columns: predicted label)")
    print(format_confusion_matrix(matrix))
    return 0


def _report_loss(net, args: argparse.Namespace, name: str, x: np.ndarray, y: np.ndarray) -> int:
    """A model trained on a torch-named loss (CTC): the loss on the split (torch's reduction)
    and the fraction of sequences decoded exactly (greedy: best class per frame, repeats
    merged, blanks dropped)."""
    loss, out = net.cost_and_outputs(x, y)
    targets = net.prepare_targets(y, x.shape[0])
    accuracy = net.output_accuracy(out, targets)
    print(f"{net!r} from {args.file}")
    print(f"{name} {args.split}: {net.cost.name} {loss:.4f}; greedy-decoding accuracy "
          f"{accuracy:.2%} ({round(accuracy * len(x))}/{len(x)} sequences exact)")  # fmt: skip
    return 0


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts; ``[i, j]``: samples of class ``i`` predicted ``j``."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    check_labels(labels, n_classes, "labels")
    check_labels(predicted, n_classes, "predicted")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def format_confusion_matrix(matrix: np.ndarray) -> str:
    """A plain-text table with per-class recall in the last column."""
    n = matrix.shape[0]
    width = max(len(str(int(matrix.max(initial=0)))), len(str(n - 1)), 3)
    header = "true\\pred " + " ".join(f"{j:>{width}}" for j in range(n)) + "   recall"
    lines = [header]
    for i in range(n):
        total = int(matrix[i].sum())
        recall = f"{matrix[i, i] / total:7.2%}" if total else "      —"
        cells = " ".join(f"{int(v):>{width}}" for v in matrix[i])
        lines.append(f"{i:>9} {cells}  {recall}")
    return "\n".join(lines)
