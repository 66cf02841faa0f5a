"""The GPT's text tasks and the saved GPT on the command line (issue 28, item 4):

- every task of :mod:`manual_bp.text_data` is seeded, its validation and test problems are
  held out (never a training problem), its counted targets are the answer (checked against
  an independent solver here) and its size is checked in one line at and beyond each edge;
- each task is learnt: a tiny GPT (the CLI's, seed 0) gets below a stated held-out loss;
- ``evaluate`` of a saved GPT reports the loss of the split asked for, its perplexity and
  the exact greedy answers; ``sample`` is greedy with ``--top-k 1`` at any temperature and
  draws among the ``k`` most likely otherwise;
- every hostile input of ``sample``, ``evaluate`` and ``train --model gpt`` is one line on
  stderr and exit status 2.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.cli import main
from manual_bp.text_data import (
    SPLITS,
    TEXT_TASKS,
    decode,
    encode,
    exact_match,
    load_text_task,
    prompts,
    solve,
    split_of,
    task_size,
)
from manual_bp.text_tasks import ALPHABET, TASKS

# --- independent solvers (not the package's) ---------------------------------------------


def _balanced_closers(prefix: str) -> str:
    pairs, stack = {")": "(", "]": "["}, []
    for c in prefix:
        if c in "([":
            stack.append(c)
        else:
            assert stack and stack[-1] == pairs[c], f"{prefix!r} is not a balanced prefix"
            stack.pop()
    return "".join({"(": ")", "[": "]"}[c] for c in stack[::-1])


def _answer(task: str, prompt: str) -> str:
    body = prompt[:-1]
    if task == "addition":
        a, b = body.split("+")
        return str(int(a) + int(b))
    return {"copy": body, "reverse": body[::-1], "sort": "".join(sorted(body)),
            "brackets": _balanced_closers(body) if task == "brackets" else ""}[task]  # fmt: skip


#: the smallest size of each task whose prompts reach every split
SMALLEST = {"addition": 1, "copy": 1, "reverse": 1, "sort": 1, "brackets": 3}


@settings(max_examples=25, deadline=None)
@given(task=st.sampled_from(TEXT_TASKS), extra=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_every_task_is_seeded_held_out_and_counts_its_answer(task, extra, seed):
    size = SMALLEST[task] + extra
    kwargs = dict(n_train=40, n_val=12, n_test=12, digits=size, length=size, seed=seed)
    data = load_text_task(task, **kwargs)
    again = load_text_task(task, **kwargs)
    for split in SPLITS:
        for a, b in zip(data.split(split), again.split(split), strict=True):
            assert np.array_equal(a, b)  # seeded
    other = load_text_task(task, **{**kwargs, "n_train": 41})
    assert np.array_equal(other.x_test, data.x_test)  # the test split ignores n_train
    assert data.n_classes == TASKS[task].vocab_size
    seen = {}
    for split in SPLITS:
        x, y = data.split(split)
        assert x.shape[1] == TASKS[task].sample_length(size) and x.shape == y.shape
        for question, row, target in zip(prompts(data, split), x, y, strict=True):
            assert question.count("=") == 1 and decode(row).startswith(question)
            assert split_of(question) == split
            assert decode(target[target >= 0]) == _answer(task, question) + "."
            assert (target[: len(question) - 1] == -1).all()  # the prompt: nothing to learn
            seen.setdefault(split, set()).add(question)
    assert not seen["train"] & (seen["validation"] | seen["test"])  # held out


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_a_task_size_is_checked_at_and_beyond_each_edge(task):
    top = TASKS[task].max_size
    flag = TASKS[task].size_name
    assert task_size(task, 1) == 1 and task_size(task, np.int64(top)) == top
    for bad in (0, -1, top + 1):
        with pytest.raises(ValueError, match=rf"^{flag} of {task} must be in \[1, {top}\]"):
            task_size(task, bad)
    for bad in (True, 1.5, "2", None):
        with pytest.raises(ValueError, match=f"^{flag} must be an integer"):
            task_size(task, bad)
    label = "digits" if task == "addition" else "length"
    data = load_text_task(task, n_train=1, n_val=1, n_test=1, **{label: top})
    assert data.x_train.shape[1] == TASKS[task].sample_length(top)
    with pytest.raises(ValueError, match="unknown text task 'nope'; valid: addition, copy"):
        load_text_task("nope")
    for n in ("n_train", "n_val", "n_test"):
        with pytest.raises(ValueError, match=f"^{n} must be an integer >= 1, got 0"):
            load_text_task(task, **{n: 0})


def test_a_size_with_too_few_problems_to_hold_out_is_refused():
    with pytest.raises(ValueError, match="--length 2 is too small for brackets: too few"):
        load_text_task("brackets", length=2)
    assert load_text_task("brackets", n_train=5, length=3).x_test.shape == (256, 7)


def test_answers_and_prompts_are_encoded_in_the_task_vocabulary():
    assert ALPHABET[:13] == "0123456789+=." and len(ALPHABET) == 17
    assert decode(encode("([])=")) == "([])="
    with pytest.raises(ValueError, match=r"^prompt holds characters outside the vocabulary "
                                         r"'0123456789\+=\.': '\('$"):  # fmt: skip
        encode("(1=", 13, "prompt")
    assert exact_match(["12=", "3="], ["21", "3"], "reverse") == 1.0
    assert exact_match(["([=", "(="], ["])", "]"], "brackets") == 0.5


# --- learnt from the CLI -------------------------------------------------------------------

#: Stated bounds on the held-out test loss (per answer character, seed 0) after 3 epochs of
#: 400 problems (batch 32, 5 warm-up iterations; ≈ 1.5 s each on a quiet core). For the
#: digit tasks of length ≤ 2 a model that knows only the format (how many digits, then ".")
#: scores 1.41 and an untrained one 2.56: measured copy 0.70, reverse 0.58, sort 0.85 (seeds
#: 1, 2: ≤ 0.90). For brackets of length ≤ 4 a model that knows how many closers but not
#: which scores 0.36, one that knows only the answer's characters log 3 = 1.10: measured 0.13.
LEARNT = {"copy": (2, 1.0), "reverse": (2, 1.0), "sort": (2, 1.0), "brackets": (4, 0.3)}


def _train(task: str, size: int, path, epochs: int = 3, n_train: int = 400) -> str:
    from contextlib import redirect_stdout
    from io import StringIO

    flag = "--digits" if task == "addition" else "--length"
    out = StringIO()
    with redirect_stdout(out):
        code = main(["train", "--model", "gpt", "--task", task, flag, str(size),
                     "--epochs", str(epochs), "--n-train", str(n_train), "--batch-size", "32",
                     "--warmup", "5", "--seed", "0", "--quiet", "--samples", "2",
                     "--save", str(path)])  # fmt: skip
    assert code == 0
    return out.getvalue()


@pytest.mark.parametrize("task", sorted(LEARNT))
def test_each_task_is_learnt_by_a_tiny_gpt_on_held_out_problems(task, tmp_path):
    from manual_bp.serialization import load

    size, bound = LEARNT[task]
    out = _train(task, size, tmp_path / "gpt.npz")
    assert re.search(rf"{task}-{size}: held-out test loss [0-9.]+ .*exact answers", out), out
    model = load(tmp_path / "gpt.npz")
    data = load_text_task(task, n_train=1, length=size, seed=0)
    assert model.total_cost(data.x_test, data.y_test) < bound


# --- evaluate and sample a saved GPT -------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A copy GPT of length 2, trained a little (its splits' losses differ)."""
    path = tmp_path_factory.mktemp("gpt") / "copy.npz"
    _train("copy", 2, path, epochs=1, n_train=64)
    return path


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("split", ["test", "validation", "train", None])
def test_evaluate_reports_the_split_asked_for(saved, split, capsys):
    from manual_bp.serialization import load

    model = load(saved)
    data = load_text_task("copy", n_train=1, length=2, seed=5)
    asked = ["--split", split] if split else []
    code, out, err = _run(["evaluate", str(saved), "--task", "copy", "--length", "2",
                           "--seed", "5", *asked], capsys)  # fmt: skip
    assert code == 0, err
    split = split or "test"  # the held-out split by default
    x, y = data.split(split)
    loss = model.total_cost(x, y)
    other = data.split("validation" if split == "test" else "test")
    assert abs(model.total_cost(*other) - loss) > 1e-3  # the splits are told apart
    questions = prompts(data, split)
    right = round(exact_match(questions, solve(model, questions, 2, "copy"), "copy") * len(x))
    line = out.splitlines()[1]
    assert line == (f"copy-2 {split}: loss {loss:.4f} (answer characters), perplexity "
                    f"{math.exp(loss):.4f}, exact answers {right / len(x):.2%} "
                    f"({right}/{len(x)})")  # fmt: skip


def _greedy(model, text: str, n: int) -> str:
    idx = encode(text)[None]
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size :])[:, -1]
        idx = np.concatenate([idx, logits.argmax(axis=-1)[:, None]], axis=1)
    return decode(idx[0])


def test_sample_with_top_k_one_is_greedy_at_any_temperature(saved, capsys):
    from manual_bp.serialization import load

    model = load(saved)
    for prompt in ("7=", "12345=", "="):  # the second is longer than the context (5)
        expected = _greedy(model, prompt, 6)
        for seed, temperature in ((0, "1"), (1, "100"), (2, "1e-300")):
            code, out, err = _run(["sample", str(saved), prompt, "--max-new-tokens", "6",
                                   "--top-k", "1", "--temperature", temperature,
                                   "--seed", str(seed)], capsys)  # fmt: skip
            assert (code, out, err) == (0, expected + "\n", "")


def test_sample_draws_among_the_top_k_and_follows_its_seed(saved, capsys):
    from manual_bp.serialization import load

    model = load(saved)
    texts = set()
    for seed in range(6):
        argv = ["sample", str(saved), "4=", "--max-new-tokens", "4", "--top-k", "2",
                "--temperature", "50", "--seed", str(seed)]  # fmt: skip
        code, out, _ = _run(argv, capsys)
        assert code == 0 and _run(argv, capsys)[1] == out  # the seed fixes the draws
        text = out.strip()
        texts.add(text)
        for t in range(2, len(text)):  # each drawn character: one of the two most likely
            logits = model(encode(text[max(0, t - 5) : t])[None])[0, -1]
            assert encode(text[t])[0] in np.argsort(logits)[-2:], (text, t)
    assert len(texts) > 1  # at temperature 50 the two are drawn alike
    code, out, _ = _run(["sample", str(saved), "4=", "--max-new-tokens", "0"], capsys)
    assert (code, out) == (0, "4=\n")
    for k in ("13", "14"):  # the vocabulary, and above it: every token kept
        assert _run(["sample", str(saved), "4=", "--top-k", k], capsys)[0] == 0


# --- hostile inputs: one line, exit 2 ------------------------------------------------------


@pytest.fixture(scope="module")
def files(saved, tmp_path_factory):
    from manual_bp import Network
    from manual_bp.serialization import save

    root = tmp_path_factory.mktemp("hostile")
    save(Network([64, 10], seed=0), root / "net.json")
    (root / "corrupt.npz").write_bytes(b"not a zip")
    (root / "model.txt").write_text("x")
    return {"gpt": str(saved), "net": str(root / "net.json"), "dir": str(root),
            "corrupt": str(root / "corrupt.npz"), "txt": str(root / "model.txt"),
            "missing": str(root / "nothing.npz")}  # fmt: skip


HOSTILE = [
    (["sample", "{missing}", "1="], "nothing.npz: no such file"),
    (["sample", "{dir}", "1="], "is a directory"),
    (["sample", "{txt}", "1="], "unsupported file type '.txt'"),
    (["sample", "{corrupt}", "1="], "corrupt.npz"),
    (["sample", "{net}", "1="], "not a GPT (sample needs a saved GPT)"),
    (["sample", "{gpt}", "7-8="], "prompt holds characters outside the vocabulary"),
    (["sample", "{gpt}", "(1="], "outside the vocabulary '0123456789+=.': '('"),
    (["sample", "{gpt}", ""], "prompt: give at least one character"),
    (["sample", "{gpt}", "1=", "--temperature", "0"], "--temperature: expected a positive"),
    (["sample", "{gpt}", "1=", "--temperature", "-1"], "--temperature: expected a positive"),
    (["sample", "{gpt}", "1=", "--temperature", "nan"], "--temperature: expected a finite"),
    (["sample", "{gpt}", "1=", "--temperature", "inf"], "--temperature: expected a finite"),
    (["sample", "{gpt}", "1=", "--temperature", "hot"], "--temperature: expected a number"),
    (["sample", "{gpt}", "1=", "--top-k", "0"], "--top-k: expected a positive integer"),
    (["sample", "{gpt}", "1=", "--top-k", "-1"], "--top-k: expected a positive integer"),
    (["sample", "{gpt}", "1=", "--top-k", "1.5"], "--top-k"),
    (["sample", "{gpt}", "1=", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["sample", "{gpt}"], "the following arguments are required: prompt"),
    (["evaluate", "{gpt}"], "a GPT is evaluated on a text task: give --task addition"),
    (["evaluate", "{gpt}", "--task", "parity"], "give --task addition, copy, reverse"),
    (["evaluate", "{gpt}", "--task", "brackets", "--length", "3"], "does not fit brackets-3"),
    (["evaluate", "{gpt}", "--task", "copy", "--length", "3"], "does not fit copy-3"),
    (["evaluate", "{gpt}", "--task", "copy", "--length", "257"], "--length of copy must"),
    (["evaluate", "{gpt}", "--task", "addition", "--digits", "19"], "--digits of addition"),
    (["evaluate", "{gpt}", "--task", "copy", "--split", "dev"], "invalid choice: 'dev'"),
    (["evaluate", "{net}", "--task", "addition"], "not a GPT (evaluate --task addition"),
    (["evaluate", "{missing}", "--task", "copy"], "nothing.npz: no such file"),
    (["train", "--model", "gpt", "--task", "copy", "--length", "257"], "--length of copy"),
    (["train", "--model", "gpt", "--task", "sort", "--length", "0"], "--length: expected"),
    (["train", "--model", "gpt", "--task", "addition", "--digits", "19"], "--digits of"),
    (["train", "--model", "gpt", "--task", "brackets", "--length", "2", "--quiet"],
     "--length 2 is too small for brackets"),
    (["train", "--model", "gpt", "--task", "nope"], "invalid choice: 'nope'"),
    (["train", "--task", "sort", "--length", "3"], "give --model gpt"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), HOSTILE)
def test_hostile_input_is_one_line_and_exit_2(files, argv, message, capsys):
    code, out, err = _run([a.format(**files) for a in argv], capsys)
    assert code == 2 and out == "", (code, out)
    err = err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err


#: test_cli_robustness's hostile values, walked over every option of ``sample``
FLAG_VALUES = ["", "-1", "0", "nan", "-inf", "1e400", "abc", "9" * 30, "1.5"]


def test_every_option_of_sample_with_hostile_values(files, capsys):
    from manual_bp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["sample"]
    options = sorted(
        a.option_strings[-1]
        for a in sub._actions
        if a.option_strings and a.nargs != 0 and a.option_strings[-1] != "--help"
    )
    assert options == ["--max-new-tokens", "--seed", "--temperature", "--top-k"]
    for option in options:
        for value in FLAG_VALUES:
            argv = ["sample", files["gpt"], "1=", "--max-new-tokens", "2", option, value]
            code, out, err = _run(argv, capsys)
            assert code in (0, 2) and "Traceback" not in err, (argv, err)
            assert (code == 0) == (err == "") and "\n" not in err.strip(), (argv, err)
            assert code == 2 or out.startswith("1=")
