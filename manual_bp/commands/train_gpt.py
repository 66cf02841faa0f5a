"""``manual-bp train --model gpt --task addition``: a small GPT trained on a corpus the package
makes (:mod:`manual_bp.text_data`: addition, copy, reverse, sort, brackets), as nanoGPT
trains: AdamW in two groups (decay on the 2-D weights), global gradient-norm clipping,
warm-up then cosine decay per iteration (:class:`~manual_bp.training.gpt_train.NanoGPTStep`),
through :func:`~manual_bp.training.train` with the model's fused step
(``GPT.fast_training``, :mod:`manual_bp.models.gpt_fast`; with ``dropout > 0`` the readable
step, which draws the masks). Progress bars, per-epoch training and evaluation loss, the
held-out test loss and exact-match accuracy of greedy answers, ``--save``, ``--plot`` of the
loss curves and generated answers at the end.

Example (≈ 5 s)::

    python -m manual_bp train --model gpt --task addition --epochs 8 --batch-size 32
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from manual_bp._argtypes import non_negative_float, non_negative_int, positive_int

__all__ = ["GPT_DEFAULTS", "GPT_TASKS", "add_gpt_arguments", "is_gpt", "run_gpt", "task_size_of"]

#: The small GPT of the CLI and its training (measured: 1-digit addition learnt exactly, on
#: held-out problems, in 8 epochs of 1000 samples, batch 32, in about 11 s; tests/test_gpt_cli.py).
GPT_DEFAULTS: dict[str, Any] = {
    "n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0, "bias": True,
    "lr": 1e-2, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
}  # fmt: skip
#: GPTConfig fields ``--gpt`` takes (vocabulary and context come from the task)
SPEC_FIELDS = {"n_layer": int, "n_head": int, "n_embd": int, "dropout": float, "bias": bool}
#: the text tasks of --model gpt (manual_bp.text_data.TEXT_TASKS, listed here so that the
#: parser is built without importing the corpus)
GPT_TASKS = ("addition", "copy", "reverse", "sort", "brackets")
#: the text tasks only a GPT trains (copy and reverse are also the layer stacks' tasks)
TEXT_TASKS = ("addition", "sort", "brackets")
#: options of train that a GPT does not take (refused rather than ignored)
NOT_FOR_GPT = ("layers", "mnist", "sizes", "activation", "output_activation", "cost",
               "initializer", "schedule", "momentum", "dampening", "nesterov", "lr_decay",
               "initial_accumulator_value", "alpha", "centered", "amsgrad", "step_size",
               "gamma", "t_max", "eta_min")  # fmt: skip


def add_gpt_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("GPT (--model gpt; docs/gpt.md)")
    group.add_argument(
        "--gpt",
        metavar="SPEC",
        help="the GPT's shape, 'n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=true' "
        "(those are the defaults; vocabulary and context come from the task)",
    )
    for flag, kind, default, text in (
        (
            "--digits",
            positive_int,
            1,
            "operand digits of --task addition (--length sizes copy, reverse, sort and brackets)",
        ),
        ("--n-train", positive_int, 1000, "training problems of a text task"),
        ("--grad-clip", non_negative_float, 1.0, "global gradient-norm bound, 0: none"),
        ("--warmup", non_negative_int, 20, "warm-up iterations of the cosine rate"),
        ("--samples", non_negative_int, 5, "test problems answered by the trained GPT"),
    ):
        group.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")


def is_gpt(args: argparse.Namespace) -> bool:
    """``--model gpt``: the literal name (a spec file has a suffix, .json or .toml)."""
    return args.model is not None and str(args.model) == "gpt"


def parse_gpt_spec(text: str | None) -> dict[str, Any]:
    """``--gpt 'n_layer=2, n_embd=64'`` -> GPTConfig's keyword arguments (with defaults)."""
    spec = {k: GPT_DEFAULTS[k] for k in SPEC_FIELDS}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in SPEC_FIELDS:
            raise ValueError(
                f"--gpt: {item!r} is not KEY=VALUE with KEY one of {', '.join(SPEC_FIELDS)}"
            )
        kind = SPEC_FIELDS[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                spec[key] = value.lower() == "true"
            else:
                spec[key] = kind(value)
        except ValueError:
            raise ValueError(f"--gpt: {key} takes a {kind.__name__}, got {value!r}") from None
    return spec


def preflight_gpt(args: argparse.Namespace) -> dict[str, Any]:
    """Every GPT option and output path, before any work; returns GPTConfig's keywords."""
    from manual_bp._files import check_distinct, check_output_file
    from manual_bp.models.gpt import GPTConfig
    from manual_bp.text_data import task_size

    if args.task not in GPT_TASKS:
        raise ValueError(
            f"--model gpt trains on a text task: give --task {', '.join(GPT_TASKS[:-1])} "
            f"or {GPT_TASKS[-1]}"
        )
    task_size(args.task, task_size_of(args), _size_flag(args.task))
    for key in NOT_FOR_GPT:
        if getattr(args, key, None) is not None:
            raise ValueError(f"--{key.replace('_', '-')} does not apply to --model gpt")
    if args.optimizer not in (None, "adamw"):
        raise ValueError(
            f"--model gpt trains with AdamW (two groups), not --optimizer {args.optimizer}"
        )
    if args.lmbda:
        raise ValueError("--lmbda does not apply to --model gpt: give --weight-decay (AdamW's)")
    spec = parse_gpt_spec(args.gpt)
    GPTConfig(vocab_size=2, block_size=1, n_layer=spec["n_layer"], n_head=spec["n_head"],
              n_embd=spec["n_embd"], dropout=spec["dropout"], bias=spec["bias"])  # fmt: skip
    check_distinct({"--save": args.save, "--plot": args.plot})
    if args.save is not None:
        check_output_file(args.save, "the saved model", (".json", ".npz"))
    if args.plot is not None:
        from manual_bp.plotting import check_plot_path

        check_plot_path(args.plot)
    return spec


def _size_flag(task: str) -> str:
    return "--digits" if task == "addition" else "--length"


def task_size_of(args: argparse.Namespace) -> int:
    """The size of ``args.task``: ``--digits`` for addition, ``--length`` for the others."""
    return args.digits if args.task == "addition" else args.length


def run_gpt(args: argparse.Namespace, train: Callable[..., Any]) -> int:
    """The GPT route of ``train``; ``train`` is the command's training entry (its module's
    :func:`~manual_bp.training.train`, passed in: this module does not import the command)."""
    from manual_bp.models.gpt import GPT, GPTConfig
    from manual_bp.schedules_warmup import WarmupCosineLR
    from manual_bp.serialization import save
    from manual_bp.text_data import exact_match, load_text_task, prompts, sample_length, solve
    from manual_bp.training.gpt_train import NanoGPTStep, configure_optimizers

    started = time.perf_counter()
    spec = preflight_gpt(args)
    size = task_size_of(args)
    data = load_text_task(args.task, n_train=args.n_train, digits=size, length=size, seed=args.seed)
    config = GPTConfig(vocab_size=data.n_classes, block_size=sample_length(size, args.task), **spec)
    model = GPT(config, seed=args.seed, dtype=args.dtype)
    given = {k: getattr(args, k) for k in ("lr", "weight_decay", "beta1", "beta2", "eps")}
    hyper = {k: GPT_DEFAULTS[k] if v is None else v for k, v in given.items()}
    iterations = args.epochs * -(-args.n_train // args.batch_size)
    warmup = min(args.warmup, iterations - 1)
    schedule = WarmupCosineLR(warmup_iters=warmup, lr_decay_iters=max(iterations, warmup + 1),
                              min_lr=hyper["lr"] / 10)  # fmt: skip
    optimizer = NanoGPTStep(
        configure_optimizers(
            model,
            hyper["weight_decay"],
            hyper["lr"],
            (hyper["beta1"], hyper["beta2"]),
            hyper["eps"],
        ),
        args.grad_clip or None,
        schedule,
    )
    if not args.quiet:
        print(f"{data.name}: {len(data.x_train)} problems, e.g. {prompts(data, 'train')[0]}")
        print(f"{model!r}, {model.n_parameters} parameters", flush=True)
    history = train(
        model, data.x_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=optimizer, evaluation_data=(data.x_val, data.y_val), seed=args.seed,
        progress=not args.quiet, log=None if args.quiet else sys.stdout,
    )  # fmt: skip
    test_loss = model.total_cost(data.x_test, data.y_test)
    questions = prompts(data)
    answers = solve(model, questions, size, args.task)
    print(
        f"{data.name}: held-out test loss {test_loss:.4f} (answer characters), exact answers "
        f"{exact_match(questions, answers, args.task):.2%} of {len(questions)}; "
        f"{sum(history.epoch_seconds):.1f} s training, {time.perf_counter() - started:.1f} s total"
    )
    for question, answer in zip(questions[: args.samples], answers, strict=False):
        print(f"  {question}{answer}")
    if args.save is not None:
        save(model, args.save)
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from manual_bp.plotting import plot_learning_curves

        plot_learning_curves(history, args.plot, title=f"{data.name} GPT")
        print(f"saved learning curves to {args.plot}")
    return 0
