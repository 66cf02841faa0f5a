"""The verification runner behind ``python -m manual_bp verify``, and the equation index.

:func:`run_verification` runs every registered check of
:mod:`reference.checks` (``check(rng) -> list[Comparison]``, each comparison
tagged with an equation ID) on N random cases and collects, per equation ID,
the number of cases, the worst normalised error ``max|Δ| / max|g_ref|`` against
each oracle (torch autograd, central finite differences, statistics) and the
failures. The result renders as a terminal table, a Markdown report
(``docs/verification.md``) and JSON, with the versions and the date, so that
the evidence can be cited.

:func:`equations_page` renders ``docs/equations.md``, the index of all equation
IDs, from the registry :data:`manual_bp.equations.EQUATIONS` and the figures of
a verification JSON, so that the index never drifts from the registry.

NumPy only at import: :mod:`reference` (and so torch) is imported when the
checks are run, with a clear message when torch is missing.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import importlib
import json
import os
import platform
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from manual_bp._files import atomic_write
from manual_bp.equations import EQUATIONS
from manual_bp.verify_pages import (  # re-exported: the equation index lives beside the report
    REGENERATE_PAGES,
    equations_page,
    read_figures,
)
from manual_bp.verify_report import (  # re-exported: the report's classes
    EquationResult,
    VerificationReport,
)

__all__ = [
    "DEFAULT_CASES",
    "PROBE_CASES",
    "QUICK_CASES",
    "REGENERATE_PAGES",
    "TORCH_MISSING",
    "EquationResult",
    "TorchMissingError",
    "VerificationReport",
    "case_rng",
    "equations_page",
    "load_checks",
    "read_figures",
    "recorded_coverage",
    "run_verification",
    "versions",
]

#: Random cases per check of a full run, and of ``--quick``.
DEFAULT_CASES = 500
QUICK_CASES = 100

#: With ``only``, a check producing no selected ID in this many cases is skipped
#: (checks that draw one component at random need a few cases to reach a given one).
PROBE_CASES = 20

#: The last full report: which checks produced which IDs, so that ``only`` runs the
#: checks of the selected IDs instead of probing every check (see :func:`recorded_coverage`).
RECORDED_REPORT = Path(__file__).resolve().parent.parent / "docs" / "verification.json"


TORCH_MISSING = (
    "the verification needs torch (the autograd oracle), which is not installed. "
    'Install the test extra: pip install -e ".[test]" -c constraints.txt'
)


Check = Callable[[np.random.Generator], list]


class TorchMissingError(RuntimeError):
    """Raised by :func:`load_checks` when torch (the oracle) cannot be imported."""


def load_checks() -> dict[str, Check]:
    """The registered checks, ``{name: check}`` (imports :mod:`reference` and torch)."""
    try:
        checks = importlib.import_module("reference.checks")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "torch":
            raise TorchMissingError(TORCH_MISSING) from error
        raise
    return dict(checks.CHECKS)


def load_module_walk() -> Callable[[], dict[str, Any]]:
    """``reference.torch_modules.walk_summary``: torch's own module tests, summarised."""
    try:
        walk = importlib.import_module("reference.torch_modules")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in ("torch", "expecttest"):
            raise TorchMissingError(TORCH_MISSING) from error
        raise
    return walk.walk_summary


def case_rng(seed: int, check: str, case: int) -> np.random.Generator:
    """The generator of case ``case`` of ``check``: reproducible one case at a time.

    Keyed by the check's *name* (CRC-32), so selecting or adding checks does
    not change the cases drawn for the others.
    """
    return np.random.default_rng([seed, zlib.crc32(check.encode()), case])


def versions() -> dict[str, str]:
    """Versions of manual_bp, NumPy, torch (if importable), Python and the platform."""
    from manual_bp import __version__

    try:
        import torch

        torch_version = torch.__version__
    except ModuleNotFoundError:
        torch_version = "not installed"
    return {
        "manual_bp": __version__,
        "numpy": np.__version__,
        "torch": torch_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_verification(
    *,
    cases: int = DEFAULT_CASES,
    seed: int = 0,
    only: str | None = None,
    checks: dict[str, Check] | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    module_walk: Callable[[], dict[str, Any]] | None = None,
    coverage: tuple[dict[str, list[str]], set[str]] | None = None,
) -> VerificationReport:
    """Run every check on ``cases`` random cases and collect the results per equation ID.

    Parameters
    ----------
    cases : int
        Random cases per check.
    seed : int
        Seeds :func:`case_rng`; the same seed reproduces the same cases.
    only : str, optional
        A glob (``"BP*"``, ``"COST.*"``) or a list of them separated by commas:
        only equation IDs matching it are recorded, and coverage is demanded of
        matching registered IDs only. The checks that run are chosen first from
        ``coverage``: those that produced a matching ID in the recorded run. A check the
        record does not know (new), or every check when a matching ID is not in the
        record, is probed: skipped if it produced no matching ID in its first
        :data:`PROBE_CASES` cases.
    checks : dict, optional
        ``{name: check}``; default :func:`load_checks` (needs torch).
    progress : bool
        Show a :class:`~manual_bp.progress.ProgressBar` on ``stream`` (stderr).
    module_walk : callable, optional
        Returns the summary of torch's own module tests for the report; default
        :func:`load_module_walk` on a full run (no ``only``, the registered checks), none
        otherwise.
    coverage : (dict, set), optional
        ``({equation ID: [check names]}, {check names run})`` of a recorded run; default
        :func:`recorded_coverage` of :data:`RECORDED_REPORT` for the registered checks,
        nothing known (every check probed) for ``checks`` given.

    Raises
    ------
    TorchMissingError
        When torch is not installed and ``checks`` is not given.
    ValueError
        For ``cases < 1`` or a pattern matching no registered ID.
    """
    from manual_bp.progress import ProgressBar

    if int(cases) != cases or cases < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    selected = _matcher(only)
    if only is not None and not any(selected(i) for i in EQUATIONS):
        raise ValueError(
            f"--only {only!r} matches no registered equation ID; IDs: {', '.join(EQUATIONS)}"
        )
    if module_walk is None and checks is None and only is None:
        module_walk = load_module_walk()
    if coverage is None:
        coverage = recorded_coverage() if checks is None else ({}, set())
    checks = load_checks() if checks is None else checks
    plan = _plan(checks, only, selected, *coverage)
    checks = {name: checks[name] for name in plan}
    results = {
        e.id: EquationResult(e.id, e.name, e.doc) for e in EQUATIONS.values() if selected(e.id)
    }
    counts: dict[str, int] = {}
    errors: list[str] = []
    start = time.perf_counter()
    bar = ProgressBar(cases * len(checks), "verify", stream=stream, enabled=progress)
    with bar, warnings.catch_warnings():
        # torch's "performance drop ... batching rule" notes would break the table.
        warnings.filterwarnings("ignore", message=".*performance drop.*", category=UserWarning)
        # torch's notes about its own kernels (raised in C++, "Triggered internally at …",
        # e.g. padding='same' with an even kernel copying the input) concern the oracle's
        # speed, not the math verified; stderr carries the progress bar only (docs/cli.md).
        warnings.filterwarnings(
            "ignore", message=r"(?s).*Triggered internally at", category=UserWarning
        )
        for name, check in checks.items():
            relevant = plan[name]
            first = None
            for case in range(cases):
                produced, comparisons = _run_case(
                    name, check, seed, case, selected, results, errors
                )
                relevant |= produced
                if case == 0 and comparisons is not None:
                    first = _digest(comparisons)
                bar.update(1)
                if not relevant and case + 1 >= PROBE_CASES:
                    bar.update(cases - case - 1)  # this check verifies nothing selected
                    break
                counts[name] = case + 1
                failures = sum(r.failures for r in results.values()) + len(errors)
                bar.postfix = f"{failures} failures" if failures else ""
            if relevant and first is not None and _digest(_draw(name, check, seed)) != first:
                errors.append(
                    f"check {name!r} case 0 (seed {seed}): not reproducible — drawn again "
                    "after the other cases it gave other values (a draw outside its "
                    "generator: an unseeded layer or global state)"
                )
    module_tests = module_walk() if module_walk is not None else None
    return VerificationReport(
        seed=seed,
        cases=cases,
        only=only,
        results=_ordered(results),
        checks=counts,
        check_errors=errors,
        versions=versions(),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - start,
        module_tests=module_tests,
    )


def _draw(name: str, check: Check, seed: int) -> list | None:
    """Case 0 of ``check`` drawn again (None when it raises: reported by the case itself)."""
    try:
        return check(case_rng(seed, name, 0))
    except Exception:
        return None


def _digest(comparisons: list | None) -> str | None:
    """A hash of every array of a case's comparisons.

    Case 0 is hashed when it runs and again after the check's other cases: a case is a
    function of its generator alone (:func:`case_rng`), so the two must be equal —
    otherwise a report's case could not be rerun on its own (an unseeded layer, a
    module-level generator, leftover state).
    """
    if comparisons is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for comparison in comparisons:
        digest.update(f"{comparison.equation}|{comparison.name}".encode())
        for array in (comparison.actual, comparison.expected, comparison.scale):
            if array is not None:
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


def _run_case(name, check, seed, case, selected, results, errors) -> tuple[bool, list | None]:
    """One case of one check: whether it produced a selected comparison, and its
    comparisons (None when it raised)."""
    where = f"check {name!r} case {case} (seed {seed})"
    try:
        comparisons = check(case_rng(seed, name, case))
    except Exception as error:  # a crash is a failure of the check, reported, not raised
        lines = traceback.format_exception_only(type(error), error)
        errors.append(f"{where}: {''.join(lines).strip()}")
        return True, None
    seen = set()
    for comparison in comparisons:
        if not selected(comparison.equation):
            continue
        result = results.get(comparison.equation)
        if result is None:  # an ID the registry does not know
            result = results[comparison.equation] = EquationResult(
                comparison.equation, "(not registered)", ""
            )
        result.record(comparison, where)
        if comparison.equation not in seen:
            seen.add(comparison.equation)
            result.cases += 1
            if name not in result.checks:
                result.checks.append(name)
    return bool(seen), comparisons


def recorded_coverage(
    path: str | os.PathLike = RECORDED_REPORT,
) -> tuple[dict[str, list[str]], set[str]]:
    """``({equation ID: [checks that produced it]}, {checks that ran})`` of a verification
    JSON (a full run's: ``docs/verification.json``); nothing known if it cannot be read."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        ran = {str(name) for name in document["checks"]}
        by_id = {str(e["id"]): [str(c) for c in e["checks"]] for e in document["equations"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}, set()
    if document.get("only") is not None:  # a partial run says nothing of the other IDs
        return {}, set()
    return by_id, ran


def _plan(
    checks: dict[str, Check],
    only: str | None,
    selected: Callable[[str], bool],
    by_id: dict[str, list[str]],
    ran: set[str],
) -> dict[str, bool]:
    """The checks to run, in registry order: ``{name: known relevant}`` (False: probed).

    With ``only``, the checks the record saw produce a matching registered ID run in full;
    checks the record did not run (new ones) are probed; a matching ID the record lacks
    (new) makes every check a probe, as no record says which check produces it."""
    if only is None:
        return dict.fromkeys(checks, True)
    wanted = [i for i in EQUATIONS if selected(i)]
    if any(not by_id.get(i) for i in wanted):
        return dict.fromkeys(checks, False)
    known = {name for i in wanted for name in by_id[i]}
    return {name: name in known for name in checks if name in known or name not in ran}


def _matcher(only: str | None) -> Callable[[str], bool]:
    if only is None:
        return lambda _id: True
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    return lambda equation_id: any(fnmatch.fnmatchcase(equation_id, p) for p in patterns)


def _ordered(results: dict[str, EquationResult]) -> dict[str, EquationResult]:
    """Registry order, unregistered IDs last."""
    order = {equation_id: k for k, equation_id in enumerate(EQUATIONS)}
    return dict(sorted(results.items(), key=lambda kv: order.get(kv[0], len(order))))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8, ``\\n`` line ends) atomically; the directory must
    exist (a report never creates directories the user did not ask for)."""
    atomic_write(path, text.encode("utf-8"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m manual_bp verify --help")
