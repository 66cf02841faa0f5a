"""A saved GPT on the command line: ``evaluate`` on a text task's held-out split and
``sample`` from a prompt. The model is loaded through the one serializer
(:func:`manual_bp.serialization.load`); the only model-specific knowledge here is what
decoding text needs: a GPT, and its vocabulary, a prefix of :data:`manual_bp.text_data.ALPHABET`.

Examples::

    python -m manual_bp train --model gpt --task copy --length 4 --save copy.npz
    python -m manual_bp evaluate copy.npz --task copy --length 4     # test split
    python -m manual_bp sample copy.npz 3141= --max-new-tokens 5 --top-k 1

Exit status 0, or 2 (one line) for a missing or corrupt file, a model that is not a GPT or
does not fit the task, a prompt with characters outside the vocabulary, ``--temperature``
not positive or ``--top-k`` below 1.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from manual_bp._argtypes import positive_int

__all__ = ["add_evaluate_arguments", "check_gpt", "evaluate_gpt", "is_gpt_model"]


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``evaluate``'s options of a GPT (``--task``, ``--length``, ``--seed`` and ``--split``
    are the command's own)."""
    parser.add_argument(
        "--digits",
        type=positive_int,
        default=1,
        help="operand digits of --task addition, as given to train (default: 1)",
    )


def is_gpt_model(model: Any) -> bool:
    from manual_bp.models.gpt import GPT

    return isinstance(model, GPT)


def check_gpt(model: Any, path: Path, needed_by: str) -> Any:
    """``model`` if it is a GPT whose vocabulary is a text task's, else one line."""
    from manual_bp.text_data import ALPHABET

    if not is_gpt_model(model):
        raise ValueError(f"{path}: holds {model!r}, not a GPT ({needed_by} needs a saved GPT)")
    if model.config.vocab_size > len(ALPHABET):
        raise ValueError(
            f"{path}: the GPT's vocabulary of {model.config.vocab_size} tokens is not a text "
            f"task's (at most {len(ALPHABET)} characters, {ALPHABET!r})"
        )
    return model


def evaluate_gpt(model: Any, args: argparse.Namespace) -> int:
    """Loss, perplexity and the exact-match accuracy of greedy answers of a saved GPT on
    ``args.split`` of ``args.task`` (drawn as ``train`` draws it: the held-out prompts do not
    depend on the seed)."""
    from manual_bp.commands.train_gpt import GPT_TASKS
    from manual_bp.text_data import exact_match, load_text_task, prompts, solve, task_of, task_size

    check_gpt(model, args.file, "evaluate --task " + str(args.task))
    if args.task not in GPT_TASKS:
        raise ValueError(
            f"{args.file}: a GPT is evaluated on a text task: give --task "
            f"{', '.join(GPT_TASKS[:-1])} or {GPT_TASKS[-1]}"
        )
    task = task_of(args.task)
    size = args.digits if args.task == "addition" else args.length
    flag = "--digits" if args.task == "addition" else "--length"
    task_size(args.task, size, flag)
    data = load_text_task(args.task, n_train=1, digits=size, length=size, seed=args.seed)
    length = data.x_test.shape[1]
    config = model.config
    if config.vocab_size != task.vocab_size or config.block_size < length:
        raise ValueError(
            f"{args.file}: the GPT (vocabulary {config.vocab_size}, context "
            f"{config.block_size}) does not fit {data.name} (vocabulary {task.vocab_size}, "
            f"samples of {length}): give the --task and {flag} it was trained with"
        )
    x, y = data.split(args.split)
    loss = float(model.total_cost(x, y))
    questions = prompts(data, args.split)
    answers = solve(model, questions, size, args.task)
    accuracy = exact_match(questions, answers, args.task)
    right = round(accuracy * len(questions))
    print(f"{model!r} from {args.file}")
    print(
        f"{data.name} {args.split}: loss {loss:.4f} (answer characters), perplexity "
        f"{math.exp(loss):.4f}, exact answers {accuracy:.2%} ({right}/{len(questions)})"
    )
    return 0
