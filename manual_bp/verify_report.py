"""The verification report: per-equation results and their text, JSON and Markdown forms.

:func:`manual_bp.verify.run_verification` fills a :class:`VerificationReport` with one
:class:`EquationResult` per registered equation ID; this module turns it into the terminal
table, ``docs/verification.json`` and ``docs/verification.md``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manual_bp.equations import EQUATIONS
from manual_bp.gradcheck import bound_ratio
from manual_bp.verify_modules import (
    module_tests_markdown,
    module_tests_problems,
    module_tests_text,
)
from manual_bp.verify_pages import _fmt

__all__ = ["ORACLES", "ORACLE_NOTES", "EquationResult", "VerificationReport"]


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


#: How to regenerate the committed files; written at the top of each.
REGENERATE_REPORT = (
    "python -m manual_bp verify --report docs/verification.md "
    "--json docs/verification.json --pages docs/equations.md"
)


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
    #: ``reference.torch_modules.summary()`` of torch's own module tests (full runs only).
    module_tests: dict[str, Any] | None = None

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
        return not (
            self.failed
            or self.missing
            or self.unregistered
            or self.check_errors
            or module_tests_problems(self.module_tests)
        )

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
            "torch_module_tests": self.module_tests,
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
        walk = [module_tests_text(self.module_tests)] if self.module_tests else []
        text = [*lines, "", *TEXT_LEGEND, "", *self._problems(), *walk, self.summary()]
        return "\n".join(text) + "\n"

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
            "every quantity it computes with its oracle; its case 0 is drawn again after its",
            "other cases and must give the same bits, so any case reruns on its own",
            "(`python -m manual_bp verify --only ID --cases N`). **Cases** counts the cases that",
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
        if self.module_tests:
            lines += ["", *module_tests_markdown(self.module_tests)]
        lines += ["", "Checks run (cases each):", ""]
        lines += [f"- `{name}`: {n}" for name, n in self.checks.items()]
        problems = self._problems()
        if problems:
            lines += ["", "## Problems", "", "```text", *problems, "```"]
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
        out += module_tests_problems(self.module_tests)
        return out


#: What the terminal table's columns mean (the Markdown report explains them at length).
TEXT_LEGEND = (
    "vs torch, vs FD, other: worst normalised error max|Δ|/max|g_ref| per oracle (a measure,",
    "  not the verdict: large where the reference is near zero or ill-conditioned).",
    "Δ/bound: worst |Δ|/bound over a row's comparisons; each comparison passes when it is",
    "  ≤ 1, so a passing row shows ≤ 1 here and the figure is the margin left.",
)


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
