"""The character-level tasks of :mod:`manual_bp.text_data`: one generator per task, each a
prompt ending ``"="`` and the answer that is a function of it (entropy 0 given the prompt).

Every task draws its problems from a seeded ``numpy`` generator; ``size`` is the task's one
size (``addition``: operand digits; the others: the longest string). The alphabets are
prefixes of one alphabet (:data:`ALPHABET`), so a vocabulary size names its characters.

=========  =====================  ===============  =================================
task       prompt (size n)        answer           structure to learn
=========  =====================  ===============  =================================
addition   ``a+b=``, a, b < 10^n  ``a + b``        carrying, digit by digit
copy       ``s=``, 1 ≤ |s| ≤ n     ``s``            attend to the position |s| + 1 back
reverse    ``s=``                 ``s`` reversed   attend to the mirrored position
sort       ``s=``                 ``s``'s digits   count each digit, emit in order
                                  in order
brackets   ``p=``, p a prefix of  the closers of   a stack: close the open brackets,
           a balanced ``()[]``    ``p``'s open     innermost first (``""`` when ``p``
           string, 1 ≤ |p| ≤ n     brackets         is balanced)
=========  =====================  ===============  =================================

``s`` is a string of digits of uniform length in ``[1, n]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHABET", "TASKS", "TextTask"]

#: Every task's characters in token order (token ``i`` is ``ALPHABET[i]``); a task's
#: alphabet is a prefix: the first 13 for the digit tasks, all 17 for ``brackets``.
ALPHABET = "0123456789+=.()[]"
_DIGITS = 13
_CLOSER = {"(": ")", "[": "]"}


@dataclass(frozen=True)
class TextTask:
    """A task: ``draw(size, rng)`` -> one prompt (ending ``"="``), ``answer(prompt)`` its
    answer (without the closing ``"."``), ``answer_length(size)`` the longest answer,
    ``prompt_length(size)`` the longest prompt, ``vocab_size`` its alphabet's prefix,
    ``size_name`` the CLI flag of its size and ``max_size`` the largest size."""

    name: str
    draw: Callable[[int, np.random.Generator], str]
    answer: Callable[[str], str]
    prompt_length: Callable[[int], int]
    answer_length: Callable[[int], int]
    vocab_size: int
    size_name: str
    max_size: int

    def sample_length(self, size: int) -> int:
        """``L``: the longest ``prompt + answer + "."`` less the one character only
        predicted (the model's context, its ``block_size``)."""
        return self.prompt_length(size) + self.answer_length(size)


def _digit_string(size: int, rng: np.random.Generator) -> str:
    length = int(rng.integers(1, size + 1))
    return "".join(str(int(d)) for d in rng.integers(0, 10, length)) + "="


def _addition(size: int, rng: np.random.Generator) -> str:
    a, b = rng.integers(0, 10**size, 2)
    return f"{a}+{b}="


def _add(prompt: str) -> str:
    return str(sum(int(v) for v in prompt[:-1].split("+")))


def _brackets(size: int, rng: np.random.Generator) -> str:
    """A uniform length in ``[1, size]``, then each character: close the innermost open
    bracket or open one of the two kinds (closing only when one is open)."""
    length = int(rng.integers(1, size + 1))
    text, stack = [], []
    for _ in range(length):
        if stack and rng.random() < 0.5:
            text.append(_CLOSER[stack.pop()])
        else:
            stack.append("(["[int(rng.integers(0, 2))])
            text.append(stack[-1])
    return "".join(text) + "="


def _close(prompt: str) -> str:
    stack = []
    for c in prompt[:-1]:
        if c in _CLOSER:
            stack.append(c)
        else:
            stack.pop()
    return "".join(_CLOSER[c] for c in reversed(stack))


def _string_task(name: str, answer: Callable[[str], str]) -> TextTask:
    return TextTask(name, _digit_string, lambda p: answer(p[:-1]), lambda n: n + 1,
                    lambda n: n, _DIGITS, "--length", 256)  # fmt: skip


TASKS: dict[str, TextTask] = {
    "addition": TextTask(
        "addition", _addition, _add, lambda n: 2 * n + 2, lambda n: n + 1, _DIGITS, "--digits", 18
    ),
    "copy": _string_task("copy", lambda s: s),
    "reverse": _string_task("reverse", lambda s: s[::-1]),
    "sort": _string_task("sort", lambda s: "".join(sorted(s))),
    "brackets": TextTask(
        "brackets", _brackets, _close, lambda n: n + 1, lambda n: n, len(ALPHABET), "--length", 256
    ),
}
