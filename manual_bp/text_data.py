"""Character-level corpora the package makes itself (no download), for a language model.

``addition``: one problem per sample, ``"a+b=c."`` with ``a, b`` drawn uniformly from
``[0, 10^digits)`` and padded with ``"."`` to a fixed length, over the 13 characters
:data:`ALPHABET`. A sample of length ``L + 1`` gives the inputs ``x = s[:L]`` and the
next-character targets ``y = s[1:]``; the targets of the prompt (``"a+b="``: random digits,
nothing to learn) and of the padding after the first ``"."`` are ``-1`` (the GPT's
``ignore_index``), so the loss is the answer's alone: ``c``'s digits and the ``"."`` that
ends it. Its entropy is 0 (``c`` is a function of the prompt): a model that has learnt the
sum drives the loss to 0, one that has learnt only the format stays near ``log 10`` per digit.
"""

from __future__ import annotations

import numpy as np

from manual_bp.data import Dataset

__all__ = ["ALPHABET", "TEXT_TASKS", "decode", "encode", "load_text_task", "solve"]

#: The characters of every text task, in token order (token ``i`` is ``ALPHABET[i]``).
ALPHABET = "0123456789+=."
TEXT_TASKS = ("addition",)
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
STOP = _INDEX["."]


def encode(text: str) -> np.ndarray:
    """Token indices (int64) of ``text`` (characters of :data:`ALPHABET` only)."""
    unknown = sorted(set(text) - set(ALPHABET))
    if unknown:
        raise ValueError(f"text holds characters outside {ALPHABET!r}: {''.join(unknown)!r}")
    return np.array([_INDEX[c] for c in text], dtype=np.int64)


def decode(tokens: np.ndarray) -> str:
    """The text of token indices (a row)."""
    return "".join(ALPHABET[int(t)] for t in np.asarray(tokens).reshape(-1))


def _problems(n: int, digits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    top = 10**digits
    return rng.integers(0, top, n), rng.integers(0, top, n)


def sample_length(digits: int) -> int:
    """``L``: the longest ``"a+b=c."`` (``2·digits + 2 + digits + 1 + 1``) less the one
    character only predicted."""
    return 3 * digits + 3


def _make(n: int, digits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = _problems(n, digits, rng)
    length = sample_length(digits)
    x = np.empty((n, length), np.int64)
    y = np.empty((n, length), np.int64)
    for i in range(n):
        prompt = f"{a[i]}+{b[i]}="
        text = (prompt + f"{a[i] + b[i]}.").ljust(length + 1, ".")
        tokens = encode(text)
        x[i], y[i] = tokens[:-1], tokens[1:]
        end = len(prompt) + len(str(a[i] + b[i]))  # the closing "."'s index in text
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
    seed: int = 0,
) -> Dataset:
    """Train/validation/test splits of a text task (the module docstring), from ``seed``;
    ``n_classes`` is the alphabet's size."""
    if name not in TEXT_TASKS:
        raise ValueError(f"unknown text task {name!r}; valid: {', '.join(TEXT_TASKS)}")
    for label, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test),
                         ("digits", digits)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    splits = [_make(n, digits, rng) for n in (n_train, n_val, n_test)]
    arrays = [a for pair in splits for a in pair]
    return Dataset(*arrays, name=f"{name}-{digits}digit", n_classes=len(ALPHABET))


def prompts(dataset: Dataset, split: str = "test") -> list[str]:
    """The ``"a+b="`` prompts of a split's samples."""
    x, _ = dataset.split(split)
    return [decode(row).split("=")[0] + "=" for row in x]


def solve(model, prompt_texts: list[str], digits: int) -> list[str]:
    """Greedy answers (``top_k = 1``) of ``model`` to ``"a+b="`` prompts, up to the ``"."``."""
    answers = []
    for text in prompt_texts:
        out = model.generate(encode(text)[None], digits + 2, top_k=1, rng=0)
        answers.append(decode(out[0, len(text) :]).split(".")[0])
    return answers


def exact_match(prompt_texts: list[str], answers: list[str]) -> float:
    """The fraction of answers equal to the sum of their prompt."""
    right = [
        str(sum(int(v) for v in p[:-1].split("+"))) == a
        for p, a in zip(prompt_texts, answers, strict=True)
    ]
    return float(np.mean(right))
