"""Character-level corpora the package makes itself (no download), for a language model.

Five tasks (:mod:`manual_bp.text_tasks`): ``addition`` (``"a+b=c."``), ``copy``,
``reverse``, ``sort`` (``"s=t."`` with ``s`` a digit string) and ``brackets`` (``"p=c."``, ``c``
the closers that balance the prefix ``p``). One problem per sample: the prompt, the answer
and ``"."``, padded with ``"."`` to a fixed length, over a prefix of :data:`ALPHABET`. A
sample of length ``L + 1`` gives the inputs ``x = s[:L]`` and the next-character targets
``y = s[1:]``; the targets of the prompt (random, nothing to learn) and of the padding after
the first ``"."`` are ``-1`` (the GPT's ``ignore_index``), so the loss is the answer's alone:
its characters and the ``"."`` that ends it. Its entropy is 0 (the answer is a function of
the prompt): a model that has learnt the task drives the loss to 0; one that has learnt only
the format stays near ``log 10`` per digit (addition).

**Held out.** Each distinct prompt belongs to one split, by a fixed hash of its text
(CRC-32 mod 10: 0 test, 1 validation, 2–9 train) whatever the seed; each split draws its
problems (with repetition) from its own seeded stream. A test or validation problem is thus
never a training problem, and the test split does not depend on ``n_train`` or on the seed
of the others.
"""

from __future__ import annotations

import zlib

import numpy as np

from manual_bp.data import Dataset
from manual_bp.text_tasks import ALPHABET, TASKS, TextTask

__all__ = [
    "ALPHABET", "SPLITS", "TEXT_TASKS", "decode", "encode", "exact_match", "load_text_task",
    "prompts", "sample_length", "solve", "split_of", "task_size",
]  # fmt: skip

TEXT_TASKS = tuple(TASKS)
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
STOP = _INDEX["."]
#: split name -> the CRC-32 residues (mod 10) of its prompts
SPLITS = {"train": range(2, 10), "validation": (1,), "test": (0,)}


def encode(text: str, vocab_size: int | None = None, name: str = "text") -> np.ndarray:
    """Token indices (int64) of ``text``, characters of ``ALPHABET[:vocab_size]`` only
    (all of :data:`ALPHABET` by default); else one line naming ``name``."""
    alphabet = ALPHABET[:vocab_size] if vocab_size is not None else ALPHABET
    unknown = sorted(set(text) - set(alphabet))
    if unknown:
        raise ValueError(
            f"{name} holds characters outside the vocabulary {alphabet!r}: {''.join(unknown)!r}"
        )
    return np.array([_INDEX[c] for c in text], dtype=np.int64)


def decode(tokens: np.ndarray) -> str:
    """The text of token indices (a row)."""
    return "".join(ALPHABET[int(t)] for t in np.asarray(tokens).reshape(-1))


def task_of(name: str) -> TextTask:
    """The task ``name``, else one line listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown text task {name!r}; valid: {', '.join(TEXT_TASKS)}")
    return TASKS[name]


def task_size(name: str, size: object, label: str | None = None) -> int:
    """``size`` checked for task ``name``: an integer in ``[1, max_size]``."""
    task = task_of(name)
    label = label or task.size_name
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"{label} must be an integer, got {size!r}")
    if not 1 <= size <= task.max_size:
        raise ValueError(f"{label} of {name} must be in [1, {task.max_size}], got {size}")
    return int(size)


def sample_length(size: int, task: str = "addition") -> int:
    """``L``: the longest ``prompt + answer + "."`` less the one character only predicted
    (addition: ``2·digits + 2 + digits + 1 + 1 - 1``)."""
    return task_of(task).sample_length(size)


def split_of(prompt: str) -> str:
    """The split a prompt belongs to (the module docstring)."""
    residue = zlib.crc32(prompt.encode()) % 10
    return next(name for name, residues in SPLITS.items() if residue in residues)


def _draw(task: TextTask, size: int, n: int, split: str, rng: np.random.Generator) -> list[str]:
    """``n`` prompts of ``split``: draws outside it are rejected."""
    share = len(SPLITS[split]) / 10
    budget = int(20 * n / share) + 1000
    found: list[str] = []
    for draws in range(budget):
        if draws == 3000 and not found:  # the split holds (next to) none of the problems
            break
        prompt = task.draw(size, rng)
        if split_of(prompt) == split:
            found.append(prompt)
            if len(found) == n:
                return found
    raise ValueError(
        f"{task.size_name} {size} is too small for {task.name}: too few distinct problems "
        f"to hold out a {split} split; give a larger {task.size_name}"
    )


def _make(task: TextTask, size: int, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    length = task.sample_length(size)
    x = np.empty((len(texts), length), np.int64)
    y = np.empty((len(texts), length), np.int64)
    for i, prompt in enumerate(texts):
        answer = task.answer(prompt)
        tokens = encode((prompt + answer + ".").ljust(length + 1, "."))
        x[i], y[i] = tokens[:-1], tokens[1:]
        end = len(prompt) + len(answer)  # the closing "."'s index in the text
        y[i, : len(prompt) - 1] = -1  # y[j] predicts text[j + 1]: the prompt's own characters
        y[i, end:] = -1  # the padding after the closing "." (y[end - 1])
    return x, y


def load_text_task(
    name: str,
    *,
    n_train: int = 4000,
    n_val: int = 256,
    n_test: int = 256,
    digits: int = 2,
    length: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Train/validation/test splits of a text task (the module docstring), from ``seed``;
    ``digits`` sizes ``addition``, ``length`` the others (default: ``digits``);
    ``n_classes`` is the task's alphabet's size."""
    task = task_of(name)
    for label, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    if name == "addition":
        size = task_size(name, digits, "digits")
    else:
        size = task_size(name, digits if length is None else length, "length")
    arrays = []
    for k, (split, n) in enumerate((("train", n_train), ("validation", n_val),
                                    ("test", n_test))):  # fmt: skip
        rng = np.random.default_rng([int(seed), k])
        arrays.extend(_make(task, size, _draw(task, size, int(n), split, rng)))
    label = f"{name}-{size}digit" if name == "addition" else f"{name}-{size}"
    return Dataset(*arrays, name=label, n_classes=task.vocab_size)


def prompts(dataset: Dataset, split: str = "test") -> list[str]:
    """The prompts (up to their ``"="``) of a split's samples."""
    x, _ = dataset.split(split)
    return [decode(row).split("=")[0] + "=" for row in x]


def solve(model, prompt_texts: list[str], size: int, task: str = "addition") -> list[str]:
    """Greedy answers (``top_k = 1``) of ``model`` to the prompts of ``task`` of ``size``, up
    to the ``"."``; prompts of equal length are answered as one batch."""
    new = task_of(task).answer_length(size) + 1
    answers: dict[int, str] = {}
    by_length: dict[int, list[int]] = {}
    for i, text in enumerate(prompt_texts):
        by_length.setdefault(len(text), []).append(i)
    for n, rows in by_length.items():
        idx = np.stack([encode(prompt_texts[i]) for i in rows])
        out = model.generate(idx, new, top_k=1, rng=0)
        for i, row in zip(rows, out, strict=True):
            answers[i] = decode(row[n:]).split(".")[0]
    return [answers[i] for i in range(len(prompt_texts))]


def exact_match(prompt_texts: list[str], answers: list[str], task: str = "addition") -> float:
    """The fraction of answers equal to their prompt's answer under ``task``."""
    answer = task_of(task).answer
    right = [answer(p) == a for p, a in zip(prompt_texts, answers, strict=True)]
    return float(np.mean(right))
