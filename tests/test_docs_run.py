"""Every fenced block of README.md and docs/*.md runs as written (issue 24, item 10).

The blocks are found by reading the Markdown, so a new block in any of those files is
covered without new test code. Each block is one of:

* ``python`` — executed, in a temporary directory standing for the repository root (the
  repository importable), in a namespace shared with the earlier ``python`` blocks of the
  same file, as a reader runs them in order; NumPy's default error handling (a reader's).
* ``bash``/``sh``/``shell``/``console``, or untagged when its lines are commands — every
  command is checked by the program it names (:func:`_run_command`):

  - ``python -m manual_bp …`` / ``manual-bp …``: through :func:`manual_bp.cli.main`, the
    real parser, pre-flight checks (flags, spec files, output paths), data loading and model
    building (a ``--layers`` spec must build on the data's shape), and error reporting.
    Only the long work is cut short: ``train`` runs the real training loop for ONE epoch on
    two mini-batches (why not stop before it: a block's later commands read what the
    earlier ones wrote — ``train --save mnist.json`` then ``evaluate mnist.json`` — and
    ``--save``/``--plot`` then write for real); ``verify`` stops after its own argument
    checks (``--cases``, ``--only`` patterns), before the first check runs.
  - ``python benchmarks/X.py …``: the script's own ``argparse`` parser must accept the
    arguments (the script runs up to its ``parse_args`` and stops there); a script without
    a parser must be documented without arguments. No benchmark runs.
  - ``python -m pytest``, ``pip install …``, ``git worktree add …``: checked for their form
    (extras that pyproject.toml defines, a constraints file that exists, a revision).
* ``text`` (output, diagrams), ``json``/``toml`` (formats): not commands. A block preceded
  by ``<!-- file: NAME -->`` is a file the reader writes: it is written to NAME in the
  working directory before the document's commands run (a command may show its file after
  it).
* A ``python`` block preceded by ``<!-- not run: REASON -->`` is a deliberate fragment; the
  markers are pinned in :data:`FRAGMENTS` so they cannot silently grow.

The MNIST directory the documents name (``../shared/data/mnist``) is the real one when
present (``$MANUAL_BP_MNIST_DIR`` or ``<repo>/../shared/data/mnist``); when absent, only
the data loading of those commands is replaced by a stand-in of MNIST's files and shapes
(written as IDX files, read by the real loader), and the test says so with a warning.
Either way each split keeps its first 500 images: evaluating 10 000 is long work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import io
import os
import re
import runpy
import shlex
import shutil
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from tests.docs_blocks import BLOCKS, REPO, command_lines, kind_of

MNIST_TOKEN = "../shared/data/mnist"

#: The deliberate fragments: (document, first line of the block) -> why it is not run.
FRAGMENTS = {
    ("docs/gradcheck.md", "layer.params  # {name: float64 array} — the arrays forward reads"): (
        "the layer protocol's shape"
    ),
    ("docs/stack.md", "out, cache = layer.forward(x)          # cache: a dataclass whose "
     "first field is `input`"): "the layer protocol's shape",
    ("docs/interop.md", "from reference.interop import from_torch, to_torch, torch_parameters"): (
        "the converters' signatures; a full example is in README.md"
    ),
    ("docs/sequences.md", "from reference.interop import from_torch, LSTMSequence   # "
     "torch_model = nn.Sequential("): "the conversion's shape; tested in tests/test_interop.py",
}  # fmt: skip


# ----------------------------------------------------------------------------- commands
class _LongWorkSkipped(SystemExit):
    """Raised where a command's long work would start (after its checks); a SystemExit so
    that the CLI's error reporting lets it through unchanged."""

    def __init__(self) -> None:
        super().__init__(0)


@dataclass
class _Session:
    """One document's run: the MNIST directory it names, and whether it is the stand-in."""

    mnist: Path
    stand_in_mnist: bool


def _run_command(line: str, session: _Session, where: str) -> None:
    for command in _split_and(line, where):
        words = shlex.split(command, comments=True)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words.pop(0)  # OMP_NUM_THREADS=1 …: an environment for the process
        if words[:1] == ["nice"]:
            words.pop(0)
        words = [str(session.mnist) if w == MNIST_TOKEN else w for w in words]
        if words[:3] in (["python", "-m", "manual_bp"], ["python3", "-m", "manual_bp"]):
            _run_cli(words[3:], session, where)
        elif words[:1] == ["manual-bp"]:
            _run_cli(words[1:], session, where)
        elif words[:1] in (["python"], ["python3"]) and words[1:2] and words[1].endswith(".py"):
            _check_script_arguments(REPO / words[1], words[2:], where)
        elif words[:3] == ["python", "-m", "pytest"]:
            pytest.importorskip("pytest")
        elif words[:2] == ["pip", "install"]:
            _check_pip_install(words[2:], where)
        elif words[:3] == ["git", "worktree", "add"]:
            assert len(words) == 5 and re.fullmatch(r"[0-9a-f]{7,40}", words[4]), (
                f"{where}: expected `git worktree add PATH REVISION`: {command}"
            )
        else:
            raise AssertionError(
                f"{where}: a command this test does not know how to check: {command!r} "
                "(teach tests/test_docs_run.py::_run_command, or tag the block text)"
            )


def _split_and(line: str, where: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts, current = [], []
    for token in lexer:
        if token == "&&":
            parts.append(shlex.join(current))
            current = []
        elif set(token) <= set("&|;<>"):
            raise AssertionError(f"{where}: only && chains are checked, not {token!r}: {line}")
        else:
            current.append(token)
    return [*parts, shlex.join(current)]


def _run_cli(argv: list[str], session: _Session, where: str) -> None:
    from manual_bp import data, verify
    from manual_bp.cli import main
    from manual_bp.commands import train as train_command

    real_train, real_verification = train_command.train, verify.run_verification
    reached = []  # the long work each command got to, after its checks

    def short_train(net, x, y, *, epochs, batch_size, evaluation_data=None, **kwargs):
        reached.append("training")
        n = 2 * batch_size
        if evaluation_data is not None:
            evaluation_data = tuple(a[:n] for a in evaluation_data)
        return real_train(net, x[:n], y[:n], epochs=1, batch_size=batch_size,
                          evaluation_data=evaluation_data, **kwargs)  # fmt: skip

    def checked_verification(**kwargs):
        real_verification(**{**kwargs, "checks": {}, "progress": False})  # argument checks
        reached.append("verification")
        raise _LongWorkSkipped

    out, err = io.StringIO(), io.StringIO()
    loader = _mnist_loader(data.load_mnist, session.stand_in_mnist)
    with (
        mock.patch.object(train_command, "train", short_train),
        mock.patch.object(verify, "run_verification", checked_verification),
        mock.patch.object(data, "load_mnist", loader),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(argv)
        except _LongWorkSkipped:
            code = 0
    assert code == 0, (
        f"{where}: `manual-bp {shlex.join(argv)}` exited {code}: {err.getvalue().strip()[:600]}"
    )
    # the stand-ins above are where the work starts: a command that ran without reaching
    # them did its long work for real (a stale patch) or none at all
    expected = {"train": ["training"], "verify": [] if "--figures" in argv else ["verification"]}
    assert reached == expected.get(argv[0], []), f"{where}: {shlex.join(argv)} reached {reached}"


class _ParsedError(Exception):
    pass


def _check_script_arguments(script: Path, arguments: list[str], where: str) -> None:
    """The script's own argparse parser accepts ``arguments``; nothing after it runs."""
    assert script.is_file(), f"{where}: no script {script.relative_to(REPO)}"
    source = script.read_text(encoding="utf-8")
    if "argparse" not in source:
        assert not arguments, f"{where}: {script.name} takes no arguments, given {arguments}"
        return
    real_parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(parser, args=None, namespace=None):
        raise _ParsedError(real_parse(parser, arguments, namespace))

    err = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop),
        mock.patch.object(sys, "argv", [str(script), *arguments]),
        mock.patch.object(sys, "path", [str(script.parent), *sys.path]),
        mock.patch.dict(os.environ),  # scripts pin thread counts at import
        contextlib.redirect_stderr(err),
    ):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except _ParsedError:
            return
        except SystemExit as exit_:
            raise AssertionError(
                f"{where}: {script.name} refuses {shlex.join(arguments)!r}: "
                f"{err.getvalue().strip()[-400:]} (exit {exit_.code})"
            ) from None
    raise AssertionError(f"{where}: {script.name} ended without parsing its arguments")


def _check_pip_install(words: list[str], where: str) -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python ≥ 3.11 reads pyproject.toml")
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"])  # fmt: skip
    rest = list(words)
    while rest:
        flag = rest.pop(0)
        assert flag in ("-e", "-c") and rest, f"{where}: unexpected pip argument {flag!r}"
        value = rest.pop(0)
        if flag == "-c":
            assert (REPO / value).is_file(), f"{where}: constraints file {value} does not exist"
        else:
            match = re.fullmatch(r"\.(?:\[([a-z,]+)\])?", value)
            assert match, f"{where}: pip install -e of {value!r}, not the project"
            missing = set((match[1] or "").split(",")) - extras - {""}
            assert not missing, f"{where}: pyproject.toml defines no extra {sorted(missing)}"


# ------------------------------------------------------------------------------- MNIST
def _mnist_dir() -> Path:
    configured = os.environ.get("MANUAL_BP_MNIST_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data" / "mnist"


def _write_stand_in_mnist(directory: Path) -> Path:
    """MNIST's four gzipped IDX files with MNIST's shapes but few images."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">I", 0x0800 | array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            (directory / f"{prefix}-{kind}-ubyte.gz").write_bytes(
                gzip.compress(header + array.tobytes())
            )
    return directory


def _mnist_loader(real_load, stand_in: bool):
    """The real loader; on the stand-in, any counts and a small validation split. Each split
    then keeps its first 500 images (the commands' evaluation of 10 000 is long work)."""

    def load_mnist(directory, **kwargs):
        if stand_in:
            kwargs = {**kwargs, "counts": None, "validation_size": 10}
        data = real_load(directory, **kwargs)
        return dataclasses.replace(data, **{
            f"{xy}_{split}": getattr(data, f"{xy}_{split}")[:500]
            for xy in "xy" for split in ("train", "val", "test")})  # fmt: skip

    return load_mnist


# ------------------------------------------------------------------------------- tests
def test_every_block_is_recognised():
    counts: dict[str, int] = {}
    for blocks in BLOCKS.values():
        for block in blocks:
            kind = kind_of(block)
            counts[kind] = counts.get(kind, 0) + 1
    # every kind the classifier knows is met (a parser that stopped finding blocks fails)
    assert set(counts) == {"python", "fragment", "shell", "file", "output"}, counts


def test_fragments_are_the_pinned_ones():
    found = {
        (b.document, b.first_line.strip()): b.not_run
        for blocks in BLOCKS.values()
        for b in blocks
        if kind_of(b) == "fragment"
    }
    assert set(found) == set(FRAGMENTS), (
        "the `<!-- not run: … -->` fragments changed; a block that can run should run. "
        f"New: {sorted(set(found) - set(FRAGMENTS))}; gone: {sorted(set(FRAGMENTS) - set(found))}"
    )
    assert found == FRAGMENTS, "a fragment's reason differs from the one pinned here"


@pytest.mark.parametrize("document", sorted(name for name, blocks in BLOCKS.items() if blocks))
def test_document_runs_as_written(document, tmp_path, monkeypatch):
    """The document's python blocks, files and commands, in order, in one working
    directory that stands for the repository root."""
    cwd = tmp_path / "repo"
    (cwd / "docs").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "verification.json", cwd / "docs")  # verify --figures reads it
    mnist = _mnist_dir()
    stand_in = not mnist.is_dir()
    if stand_in:
        mnist = _write_stand_in_mnist(tmp_path / "mnist")
    session = _Session(mnist=mnist, stand_in_mnist=stand_in)
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__main__"}
    named_mnist = False
    files = [block for block in BLOCKS[document] if kind_of(block) == "file"]
    assert len({block.file for block in files}) == len(files), f"{document}: a file shown twice"
    for block in files:  # the files a document shows exist for all its commands
        (cwd / block.file).write_text(block.text + "\n", encoding="utf-8")
    for block in BLOCKS[document]:
        kind = kind_of(block)
        if kind == "python":
            code = compile(block.text, block.where, "exec")
            with np.errstate(all="warn", under="ignore"), contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)  # a reader's numpy: warnings, not errors
        elif kind == "shell":
            for line in command_lines(block):
                named_mnist |= MNIST_TOKEN in line
                _run_command(line, session, block.where)
    if stand_in and named_mnist:
        warnings.warn(
            f"{document}: MNIST is absent ({_mnist_dir()}): its commands loaded a stand-in of "
            "MNIST's files and shapes instead of the real data",
            stacklevel=1,
        )
