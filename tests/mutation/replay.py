"""Replay mutants against chosen tests, each mutant's exact source change in a copy.

Not a test. For the survivors recorded by ``run_mutation.py`` (or ``--names``): copy the
measured commit of the group (``git archive``) to ``--replay-dir``, copy the given test
files from the working tree into it, check that they pass on the clean copy, then for
each mutant write its change (``mutmut show`` in the group's scratch directory) into
the copy, run the tests, and restore the file. Prints one line per mutant::

    python tests/mutation/replay.py --group fast --tests tests/test_blindspots_model.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_mutation import ALIVE, ROOT, _copy_tree


def _hunks(workdir: Path, name: str) -> tuple[str, list[list[str]]]:
    """``(file, hunks)`` from ``mutmut show``: a diff of the one function, its code lines
    dedented (so the change is located by stripped text and re-indented on writing)."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--- "))
    hunks: list[list[str]] = []
    for line in lines[start + 2 :]:
        if line.startswith("@@"):
            hunks.append([])
        elif hunks:
            hunks[-1].append(line if line else " ")
    return lines[start][4:].strip(), hunks


def _width(line: str) -> int:
    return len(line) - len(line.lstrip())


def _apply_hunk(text: list[str], hunk: list[str]) -> list[str]:
    old = [line[1:] for line in hunk if line[0] in " -"]
    key = [line.strip() for line in old]
    places = [
        i for i in range(len(text) - len(old) + 1)
        if [line.strip() for line in text[i : i + len(old)]] == key
    ]  # fmt: skip
    if len(places) != 1:
        raise LookupError(f"the mutated lines are found {len(places)} times, not once")
    i, out, offset = places[0], [], 0
    for line in hunk:
        body = line[1:]
        if line[0] in " -":
            offset = _width(text[i]) - _width(body)
            if line[0] == " ":
                out.append(text[i])
            i += 1
        else:
            out.append(" " * max(0, _width(body) + offset) + body.lstrip())
    return text[: places[0]] + out + text[i:]


def _apply(copy: Path, workdir: Path, name: str) -> tuple[Path, str]:
    """Write the mutant into ``copy``; return the file and its original text."""
    path, hunks = _hunks(workdir, name)
    original = (copy / path).read_text(encoding="utf-8")
    text = original.split("\n")
    for hunk in hunks:
        text = _apply_hunk(text, hunk)
    (copy / path).write_text("\n".join(text), encoding="utf-8")
    return copy / path, original


def _pytest(copy: Path, tests: list[str], select: str | None) -> int:
    env = {**os.environ, "PYTHONPATH": str(copy), "HYPOTHESIS_PROFILE": "mutation"}
    env |= {key: "1" for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    command = ["nice", "-n", "19", sys.executable, "-m", "pytest", *tests]
    command += ["-x", "-q", "-p", "no:cacheprovider"] + (["-k", select] if select else [])
    return subprocess.run(command, cwd=copy, env=env, capture_output=True, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True)
    parser.add_argument("--tests", nargs="+", required=True)
    parser.add_argument("--names", nargs="*", help="default: the group's survivors")
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "manual_bp_mutation"
    )
    parser.add_argument("--replay-dir", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir / args.group
    state = json.loads((workdir / "state.json").read_text(encoding="utf-8"))
    names = args.names or sorted(n for n, s in state["before"].items() if s in ALIVE)
    copy = args.replay_dir or args.workdir / f"replay-{args.group}"
    _copy_tree(copy, state["commit"])
    for test in args.tests:
        (copy / test).write_bytes((ROOT / test).read_bytes())
    if _pytest(copy, args.tests, args.select) != 0:
        print(f"the tests fail on the clean commit {state['commit']}: nothing to replay")
        return 1
    results = {}
    for name in names:
        path, original = _apply(copy, workdir, name)
        try:
            code = _pytest(copy, args.tests, args.select)
        finally:
            path.write_text(original, encoding="utf-8")
        results[name] = "killed" if code == 1 else ("survived" if code == 0 else f"exit {code}")
        print(f"{results[name]:9} {name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
