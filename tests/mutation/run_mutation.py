"""Mutation testing of manual_bp with mutmut, and the page ``docs/mutation.md`` (issue 15).

Not a test (pytest does not collect this directory: see ``conftest.py`` here).
Usage, from the repository root (CPU is shared: the run is niced)::

    python tests/mutation/run_mutation.py --modules manual_bp/activations.py \\
        manual_bp/costs.py --sample 4

Steps, all in a scratch copy of the tree (``--workdir``; the working tree is
never touched, mutmut's ``mutants/`` directory lives in the copy):

1. copy ``manual_bp/``, ``reference/``, ``tests/`` and ``pyproject.toml``; add a
   ``[tool.mutmut]`` section and a hypothesis profile ``mutation`` (no example
   database, no shrinking, derandomized: a mutant's failing example must not be
   replayed into another run, and shrinking a kill is wasted time);
2. "before": generate every mutant of ``--modules``, run every ``--sample``-th of
   them against the ``--tests`` (the suite as it was);
3. "after": rerun the survivors with ``--tests`` plus ``--new-tests`` (a
   superset of tests cannot revive a killed mutant, so killed ones are not rerun);
4. write ``--page`` with the date, the command, both scores and every survivor
   with its diff and its triage from :data:`TRIAGE`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TESTS = ["tests/test_activations.py", "tests/test_costs.py"]
NEW_TESTS = ["tests/test_blindspots_components.py"]

PROFILE = """# Added by tests/mutation/run_mutation.py (only in the scratch copy).
from hypothesis import Phase  # noqa: E402

settings.register_profile(
    "mutation",
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
"""

#: Triage of survivors: substring of a mutant's name -> why no test can see it
#: (equivalent) or which test kills it now. Filled in from the page's survivors.
TRIAGE: dict[str, str] = {
    "xǁHardTanhǁbackward__mutmut_16": (
        "equivalent: `astype(..., copy=True)` instead of `copy=False` only copies the fresh "
        "array `np.where` already returned; values, dtype and aliasing are unchanged."
    ),
    **dict.fromkeys(
        ("second_derivative", "second_vjp", "hessian", "ǁjvp", "_diag_embed", "_softmax_rows"),
        "not reached by the selected tests: a second-order method being added concurrently "
        "(curvature work) and tested by its own tests, which are not in this run's list; "
        "rerun with them once they land (`--tests ... tests/<curvature tests>`).",
    ),
}


def _copy_tree(workdir: Path) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "mutants", "*.tmp")
    for name in ("manual_bp", "reference", "tests"):
        shutil.copytree(ROOT / name, workdir / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", workdir / "pyproject.toml")
    conftest = workdir / "tests" / "conftest.py"
    text = conftest.read_text(encoding="utf-8")
    marker = "settings.load_profile("
    assert marker in text, "tests/conftest.py no longer loads a profile"
    conftest.write_text(text.replace(marker, PROFILE + marker, 1), encoding="utf-8")


def _configure(workdir: Path, modules: list[str], tests: list[str]) -> None:
    """Write the ``[tool.mutmut]`` section (replacing an earlier one) of the copy."""
    path = workdir / "pyproject.toml"
    text = path.read_text(encoding="utf-8").split("\n[tool.mutmut]")[0]
    section = (
        "\n[tool.mutmut]\n"
        'source_paths = ["manual_bp"]\n'
        f"only_mutate = {json.dumps(modules)}\n"
        'also_copy = ["reference"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
    )
    path.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")


def _mutmut(workdir: Path, args: list[str], max_children: int) -> None:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": str(workdir)}
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run"]
    command += ["--max-children", str(max_children), *args]
    subprocess.run(command, cwd=workdir, env=env, check=False)


def _statuses(workdir: Path, modules: list[str]) -> dict[str, str]:
    """Mutant name -> status, from mutmut's ``.meta`` files."""
    sys.path.insert(0, str(workdir))
    from mutmut.stats import status_by_exit_code

    out = {}
    for module in modules:
        meta = workdir / "mutants" / (module + ".meta")
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        out.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return out


def _show(workdir: Path, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(("-", "+"))]
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def _score(statuses: dict[str, str]) -> tuple[int, int]:
    """(killed, tested): a timeout counts as killed, a mutant no test reaches as survived."""
    tested = [s for s in statuses.values() if s in ("killed", "survived", "timeout", "no tests")]
    return sum(s in ("killed", "timeout") for s in tested), len(tested)


def _page(args, before, after, survivors, command: str) -> str:
    kb, nb = _score(before)
    ka, na = _score(after)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Mutation testing",
        "",
        "Generated by `tests/mutation/run_mutation.py` (mutmut "
        f"{_version()}); regenerate with the command below. Issue 15.",
        "",
        f"- Date: {date}",
        f"- Command: `{command}`",
        f"- Modules: {', '.join(f'`{m}`' for m in args.modules)}",
        f"- Tests before: {', '.join(f'`{t}`' for t in args.tests)}",
        f"- Tests added after: {', '.join(f'`{t}`' for t in args.new_tests)}",
        "- Hypothesis profile `mutation`: 10 examples, derandomized, no database, no shrinking.",
        f"- Sample: every {args.sample}-th mutant of {len(before) * args.sample // 1} "
        "(approximately) generated; "
        + ("**a sample, not a full run** (CPU budget)." if args.sample > 1 else "all mutants."),
        "",
        f"Statuses before: {dict(Counter(before.values()))}; "
        f"after: {dict(Counter(after.values()))}."
        " A timeout counts as killed (mutmut's convention; on a shared, niced CPU some are"
        " slow survivors rather than kills); a mutant no selected test reaches counts as"
        " survived.",
        "",
        "| | killed | tested | score |",
        "|---|---|---|---|",
        f"| before | {kb} | {nb} | {100 * kb / max(nb, 1):.1f} % |",
        f"| after | {ka} | {na} | {100 * ka / max(na, 1):.1f} % |",
        "",
        "## Survivors after the new tests, triaged",
        "",
    ]
    for name in survivors:
        reason = next((r for key, r in TRIAGE.items() if key in name), "not yet triaged")
        lines += [f"### `{name}`", "", f"Triage: {reason}", "", "```diff"]
        lines += [_show(args.workdir, name), "```", ""]
    alive = ("survived", "no tests")
    newly = sorted(n for n, s in before.items() if s in alive and after.get(n) not in alive)
    lines += ["## Survivors of the old suite killed by the new tests", ""]
    lines += [f"- `{name}`" for name in newly] or ["(none)"]
    return "\n".join(lines) + "\n"


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=["manual_bp/activations.py"])
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    parser.add_argument("--new-tests", nargs="*", default=NEW_TESTS)
    parser.add_argument("--sample", type=int, default=1, help="run every k-th mutant")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "manual_bp_mutation"
    )
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "mutation.md")
    args = parser.parse_args(argv)
    command = "python tests/mutation/run_mutation.py " + " ".join(argv or sys.argv[1:])

    _copy_tree(args.workdir)
    _configure(args.workdir, args.modules, args.tests)
    _mutmut(args.workdir, ["manual_bp.no_such_mutant*"], args.max_children)  # generate only
    everything = sorted(_statuses(args.workdir, args.modules))
    sample = everything[:: args.sample]
    _mutmut(args.workdir, sample, args.max_children)
    before = {n: s for n, s in _statuses(args.workdir, args.modules).items() if n in sample}
    # "no tests": no selected test reaches the mutated function (e.g. a derivative() that
    # the network path never calls); rerun with the new tests, which may reach it.
    survivors = [n for n, s in before.items() if s in ("survived", "no tests")]
    after = dict(before)
    if survivors and args.new_tests:
        _configure(args.workdir, args.modules, args.tests + args.new_tests)
        _mutmut(args.workdir, survivors, args.max_children)
        statuses = _statuses(args.workdir, args.modules)
        after.update({n: statuses[n] for n in survivors})
    record = args.workdir / "statuses.json"
    record.write_text(json.dumps({"before": before, "after": after}, indent=1), encoding="utf-8")
    left = sorted(n for n, s in after.items() if s in ("survived", "no tests"))
    args.page.write_text(_page(args, before, after, left, command), encoding="utf-8")
    print(f"before {_score(before)}, after {_score(after)}; wrote {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
