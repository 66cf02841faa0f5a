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
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from manual_bp._files import atomic_write
from manual_bp.equations import EQUATIONS
from manual_bp.gradcheck import bound_ratio
from manual_bp.verify_pages import (  # re-exported: the equation index lives beside the report
    REGENERATE_PAGES,
    _fmt,
    equations_page,
    read_figures,
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
    "run_verification",
    "versions",
]

#: Random cases per check of a full run, and of ``--quick``.
DEFAULT_CASES = 500
QUICK_CASES = 100

#: With ``only``, a check producing no selected ID in this many cases is skipped
#: (checks that draw one component at random need a few cases to reach a given one).
PROBE_CASES = 20

#: Oracles in the order the table shows them.
ORACLES = ("torch", "finite-differences")

#: What the figure of each further oracle means (shown under the Markdown table).
ORACLE_NOTES = {
    "statistics": "moments of a large random draw against their expectation "
    "(`INIT.default`: deviation of normalised sample moments, bounded by 6 standard errors); "
    "the figure is a sampling deviation, not a rounding error",
    "general BP1": "an output shortcut `δᴸ` against the general path `J_σᵀ ∇ₐC` of our own "
    "code (where that path is finite)",
}

TORCH_MISSING = (
    "the verification needs torch (the autograd oracle), which is not installed. "
    'Install the test extra: pip install -e ".[test]" -c constraints.txt'
)

#: How to regenerate the committed files; written at the top of each.
REGENERATE_REPORT = (
    "python -m manual_bp verify --report docs/verification.md "
    "--json docs/verification.json --pages docs/equations.md"
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


@dataclass
class EquationResult:
    """What the verification found for one equation ID."""

    id: str
    name: str
    doc: str
    #: Random cases (check calls) that produced at least one comparison for this ID.
    cases: int = 0
    comparisons: int = 0
    failures: int = 0
    #: oracle -> worst normalised error, and the quantity it was found on.
    worst: dict[str, float] = field(default_factory=dict)
    worst_quantity: dict[str, str] = field(default_factory=dict)
    #: Largest |Δ| / bound over all comparisons (≤ 1 passes), and its quantity.
    worst_ratio: float = 0.0
    worst_ratio_quantity: str = ""
    #: oracle -> largest |Δ| / bound against it (what the summary's headline cites).
    worst_ratio_by_oracle: dict[str, float] = field(default_factory=dict)
    first_failure: str | None = None
    checks: list[str] = field(default_factory=list)

    @property
    def doc_file(self) -> str:
        return self.doc.split("#", 1)[0]

    @property
    def anchor(self) -> str:
        return self.doc.split("#", 1)[-1]

    @property
    def registered(self) -> bool:
        return self.id in EQUATIONS

    @property
    def passed(self) -> bool:
        return self.cases > 0 and self.failures == 0 and self.registered

    def record(self, comparison: Any, where: str) -> None:
        """Check one comparison; count it and keep the worst error and first failure."""
        self.comparisons += 1
        try:
            error = comparison.error
        except ValueError:  # shapes differ: check() below reports it
            error = math.inf
        oracle = comparison.oracle
        current = self.worst.get(oracle)
        # Keep the maximum; a NaN error (NaN on one side) sticks.
        if current is None or (not math.isnan(current) and not error <= current):
            self.worst[oracle] = error
            self.worst_quantity[oracle] = comparison.name
        ratio = _bound_ratio(comparison)
        current = self.worst_ratio_by_oracle.get(oracle)
        if current is None or (not math.isnan(current) and not ratio <= current):
            self.worst_ratio_by_oracle[oracle] = ratio
        if not ratio <= self.worst_ratio:
            self.worst_ratio = ratio
            self.worst_ratio_quantity = f"{comparison.name} (vs {oracle})"
        try:
            comparison.check()
        except AssertionError as failure:
            self.failures += 1
            if self.first_failure is None:
                self.first_failure = f"{where}: {failure}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "doc": self.doc,
            "cases": self.cases,
            "comparisons": self.comparisons,
            "failures": self.failures,
            "worst": {k: _json_float(v) for k, v in self.worst.items()},
            "worst_quantity": self.worst_quantity,
            "worst_bound_ratio": _json_float(self.worst_ratio),
            "worst_bound_ratio_quantity": self.worst_ratio_quantity,
            "worst_bound_ratio_by_oracle": {
                k: _json_float(v) for k, v in self.worst_ratio_by_oracle.items()
            },
            "first_failure": self.first_failure,
            "checks": self.checks,
            "passed": self.passed,
        }


@dataclass
class VerificationReport:
    """All results of one run, with what is needed to cite it."""

    seed: int
    cases: int
    only: str | None
    results: dict[str, EquationResult]
    #: check name -> cases run.
    checks: dict[str, int]
    #: Failures of a check itself (an exception other than a failed comparison).
    check_errors: list[str]
    versions: dict[str, str]
    date: str
    seconds: float

    @property
    def missing(self) -> list[str]:
        """Registered IDs (matching ``only``) that no check produced a case for."""
        return [r.id for r in self.results.values() if r.registered and r.cases == 0]

    @property
    def unregistered(self) -> list[str]:
        """IDs named by a comparison but absent from the equation registry."""
        return [r.id for r in self.results.values() if not r.registered]

    @property
    def failed(self) -> list[str]:
        return [r.id for r in self.results.values() if r.failures]

    @property
    def passed(self) -> bool:
        return not (self.failed or self.missing or self.unregistered or self.check_errors)

    def worst(self, oracle: str = "torch") -> tuple[float, str | None]:
        """The worst error against ``oracle`` over all IDs, and its ID."""
        found = [(r.worst[oracle], r.id) for r in self.results.values() if oracle in r.worst]
        return max(found, key=lambda t: (math.isnan(t[0]), t[0])) if found else (0.0, None)

    def worst_ratio(self, oracle: str | None = None) -> tuple[float, str | None]:
        """The largest |Δ| / bound over all comparisons (against ``oracle`` if given), and
        its ID."""
        if oracle is None:
            found = [(r.worst_ratio, r.id) for r in self.results.values() if r.comparisons]
        else:
            found = [
                (r.worst_ratio_by_oracle[oracle], r.id)
                for r in self.results.values()
                if oracle in r.worst_ratio_by_oracle
            ]
        return max(found, key=lambda t: (math.isnan(t[0]), t[0])) if found else (0.0, None)

    def summary(self) -> str:
        """One citable sentence. Its figures are errors relative to their bounds — the
        normalisation of the pass/fail judgement — since a normalised error
        ``max|Δ| / max|g_ref|`` is meaningless where the reference is (nearly) zero."""
        worst, worst_id = self.worst_ratio("torch")
        ratio, ratio_id = self.worst_ratio()
        verdict = "all passed" if self.passed else "FAILED"
        comparisons = sum(r.comparisons for r in self.results.values())
        return (
            f"manual_bp {self.versions['manual_bp']} verified against torch "
            f"{self.versions['torch']} autograd (float64; NumPy {self.versions['numpy']}, "
            f"Python {self.versions['python']}) on {self.date[:10]}: "
            f"{sum(r.registered for r in self.results.values())} equations, "
            f"{self.cases} random cases per check ({len(self.checks)} checks, seed {self.seed}), "
            f"{comparisons} comparisons, largest error relative to its bound vs torch "
            f"{worst:.2f}{f' ({worst_id})' if worst_id else ''}, over all oracles "
            f"{ratio:.2f}{f' ({ratio_id})' if ratio_id else ''}; {verdict}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "passed": self.passed,
            "versions": self.versions,
            "date": self.date,
            "seed": self.seed,
            "cases": self.cases,
            "only": self.only,
            "seconds": round(self.seconds, 1),
            "checks": self.checks,
            "equations": [r.to_dict() for r in self.results.values()],
            "missing": self.missing,
            "unregistered": self.unregistered,
            "check_errors": self.check_errors,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        """The table for a terminal, then the problems found."""
        header = ("ID", "name", "derivation", "cases", "vs torch", "vs FD", "other", "Δ/bound")
        header = (*header, "result")
        rows = [
            (
                r.id,
                _clip(r.name, 40),
                r.doc,
                str(r.cases),
                *_error_cells(r),
                _ratio_cell(r),
                _verdict(r),
            )
            for r in self.results.values()
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*lines, "", *self._problems(), self.summary()]) + "\n"

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as Markdown; links are relative to ``path``'s directory (``docs/``)."""
        base = Path(path).parent if path is not None else Path("docs")
        v = self.versions
        lines = [
            "# Verification report",
            "",
            "<!-- Generated by manual_bp.verify; do not edit by hand. Regenerate with:",
            f"     {REGENERATE_REPORT}",
            f"     (this run of {self.cases} cases per check took {self.seconds:.0f} s). -->",
            "",
            "Regenerate this file (and `docs/verification.json`, `docs/equations.md`) with",
            "",
            "```",
            REGENERATE_REPORT,
            "```",
            "",
            f"**{self.summary()}**",
            "",
            "| | |",
            "|---|---|",
            f"| manual_bp | {v['manual_bp']} |",
            f"| torch | {v['torch']} |",
            f"| NumPy | {v['numpy']} |",
            f"| Python | {v['python']} |",
            f"| platform | {v['platform']} |",
            f"| date (UTC) | {self.date} |",
            f"| seed | {self.seed} |",
            f"| cases per check | {self.cases} |",
            f"| equations selected | {self.only or 'all'} |",
            f"| run time | {self.seconds:.0f} s |",
            "",
            "Each *check* draws one random case (network, layer, targets, step ...)",
            "from `numpy.random.default_rng([seed, crc32(check name), case])` and compares",
            "every quantity it computes with its oracle. **Cases** counts the cases that",
            "exercised an equation; the errors are the worst **normalised error**",
            "`max|Δ| / max|g_ref|` over them, all in float64. A comparison *passes* when",
            "`|Δ| ≤ 64·ε·max(max|g_ref|, scale)` elementwise (see",
            f"[conventions]({_rel('docs/conventions.md', base)}#precision-and-tolerances));"
            " the `scale` bound lets through the",
            "rounding of ill-conditioned results (cancellation, saturated outputs), which is",
            "why a few normalised errors exceed 64·ε ≈ 1.4e-14 yet pass. Finite differences",
            "(central, h = 1e-6) carry their own truncation and rounding error (~1e-6 relative",
            "and more where the gradient is tiny against the cost), so their figures measure",
            "the oracle as much as the code; they are an independent second oracle, bounded by",
            "an error estimate of the difference quotient. The *other* column names any",
            "further oracle:",
            "",
            *[f"- `{o}`: {note}" for o, note in ORACLE_NOTES.items() if o in self._oracles()],
            "",
            "**Δ/bound** is the largest `|Δ| / bound` over all of an equation's comparisons",
            "and oracles: a comparison passes when it is ≤ 1, so it shows the margin left,",
            "comparable across well- and ill-conditioned quantities (the normalised error of",
            "a saturated `tanh′ = 1 − tanh²` or of `ln(1 − a)` at `a ≈ 1` is large by nature;",
            "its bound is too).",
            "",
            "| ID | name | derivation | cases | vs torch | vs FD | other | Δ/bound | result |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.results.values():
            doc = "(not registered)"
            if r.registered:
                doc = f"[{r.doc.removeprefix('docs/')}]({_rel(r.doc_file, base)}#{r.anchor})"
            torch_cell, fd_cell, other_cell = _error_cells(r)
            lines.append(
                f"| `{r.id}` | {r.name} | {doc} | {r.cases} | {torch_cell} | {fd_cell} | "
                f"{other_cell} | {_ratio_cell(r)} | {_verdict(r)} |"
            )
        lines += ["", "Checks run (cases each):", ""]
        lines += [f"- `{name}`: {n}" for name, n in self.checks.items()]
        problems = self._problems()
        if problems:
            lines += ["", "## Problems", "", "```", *problems, "```"]
        return "\n".join(lines) + "\n"

    def _oracles(self) -> set[str]:
        return {o for r in self.results.values() for o in r.worst}

    def _problems(self) -> list[str]:
        out = []
        for r in self.results.values():
            if r.failures:
                out.append(f"FAIL {r.id}: {r.failures} of {r.comparisons} comparisons failed.")
                out.append(f"  first failure: {r.first_failure}")
        if self.missing:
            out.append(f"NOT COVERED (no check produced a case): {', '.join(self.missing)}")
        if self.unregistered:
            out.append(
                f"NOT REGISTERED (checked but absent from the registry): "
                f"{', '.join(self.unregistered)}"
            )
        out += [f"CHECK ERROR {e}" for e in self.check_errors]
        return out


def run_verification(
    *,
    cases: int = DEFAULT_CASES,
    seed: int = 0,
    only: str | None = None,
    checks: dict[str, Check] | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
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
        only equation IDs matching it are recorded, a check that produced
        none of them in its first :data:`PROBE_CASES` cases is skipped, and
        coverage is demanded of matching registered IDs only.
    checks : dict, optional
        ``{name: check}``; default :func:`load_checks` (needs torch).
    progress : bool
        Show a :class:`~manual_bp.progress.ProgressBar` on ``stream`` (stderr).

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
    checks = load_checks() if checks is None else checks
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
        for name, check in checks.items():
            relevant = only is None
            for case in range(cases):
                relevant |= _run_case(name, check, seed, case, selected, results, errors)
                bar.update(1)
                if not relevant and case + 1 >= PROBE_CASES:
                    bar.update(cases - case - 1)  # this check verifies nothing selected
                    break
                counts[name] = case + 1
                failures = sum(r.failures for r in results.values()) + len(errors)
                bar.postfix = f"{failures} failures" if failures else ""
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
    )


def _run_case(name, check, seed, case, selected, results, errors) -> bool:
    """One case of one check; returns whether it produced a selected comparison."""
    where = f"check {name!r} case {case} (seed {seed})"
    try:
        comparisons = check(case_rng(seed, name, case))
    except Exception as error:  # a crash is a failure of the check, reported, not raised
        lines = traceback.format_exception_only(type(error), error)
        errors.append(f"{where}: {''.join(lines).strip()}")
        return True
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
    return bool(seen)


def _matcher(only: str | None) -> Callable[[str], bool]:
    if only is None:
        return lambda _id: True
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    return lambda equation_id: any(fnmatch.fnmatchcase(equation_id, p) for p in patterns)


def _ordered(results: dict[str, EquationResult]) -> dict[str, EquationResult]:
    """Registry order, unregistered IDs last."""
    order = {equation_id: k for k, equation_id in enumerate(EQUATIONS)}
    return dict(sorted(results.items(), key=lambda kv: order.get(kv[0], len(order))))


def _bound_ratio(comparison: Any) -> float:
    """``max |Δ| / bound`` of a comparison, with the bound :meth:`Comparison.check` applies."""
    method = getattr(comparison, "bound_ratio", None)
    if callable(method):
        return float(method())
    atol = comparison.atol
    return bound_ratio(
        comparison.actual,
        comparison.expected,
        scale=comparison.scale,
        atol=atol,
        rtol=0.0 if atol is not None else None,
    )


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _error_cells(r: EquationResult) -> tuple[str, str, str]:
    other = [f"{o}: {_fmt(e)}" for o, e in r.worst.items() if o not in ORACLES]
    return (
        _fmt(r.worst.get("torch")),
        _fmt(r.worst.get("finite-differences")),
        "; ".join(other) or "—",
    )


def _ratio_cell(r: EquationResult) -> str:
    return f"{r.worst_ratio:.2f}" if r.comparisons else "—"


def _verdict(r: EquationResult) -> str:
    if not r.registered:
        return "FAIL (not registered)"
    if r.cases == 0:
        return "FAIL (no cases)"
    return "pass" if r.failures == 0 else f"FAIL ({r.failures}/{r.comparisons})"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


#: The repository (or source tree) root: registry paths like ``docs/x.md`` are relative to it.
ROOT = Path(__file__).resolve().parent.parent


def _rel(target: str, base: Path) -> str:
    """``target`` (relative to :data:`ROOT`) as a link from a file in directory ``base``."""
    if not (ROOT / "docs").is_dir():  # an installed package: no docs to link to
        return target
    base = base if base.is_absolute() else Path.cwd() / base
    return Path(os.path.relpath(ROOT / target, base.resolve())).as_posix()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8, ``\\n`` line ends) atomically; the directory must
    exist (a report never creates directories the user did not ask for)."""
    atomic_write(path, text.encode("utf-8"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m manual_bp verify --help")
