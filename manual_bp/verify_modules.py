"""The verification report's section on torch's own module tests (issue 23).

``reference.torch_modules`` plays every configuration of torch's ``module_db`` and
``common_nn`` module tests of a module class the library has (found by torch's class name,
built from torch's exact arguments) and summarises the outcomes; these functions render that
summary for the terminal and for ``docs/verification.md``. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["module_tests_markdown", "module_tests_problems", "module_tests_text"]

OUTCOMES = ("agree", "disagree", "refused", "crash", "excluded")


def module_tests_text(summary: dict[str, Any]) -> str:
    """One line: configurations, classes and the count of each outcome."""
    counts = ", ".join(f"{summary[o]} {o}" for o in OUTCOMES if summary.get(o))
    return (
        f"torch's own module tests: {summary['configurations']} configurations of "
        f"{summary['classes']} module classes: {counts}; worst agreement "
        f"{summary['worst_agreement']:.1e} (bound {summary['tolerance']:.0e})"
    )


def module_tests_problems(summary: dict[str, Any] | None) -> list[str]:
    """A disagreement or a crash fails the verification; a refusal is a known gap."""
    if not summary:
        return []
    bad = {o: summary.get(o, 0) for o in ("disagree", "crash") if summary.get(o)}
    if not bad:
        return []
    named = [f"  {key}: {detail}" for key, detail in summary.get("failures", {}).items()]
    return [f"TORCH MODULE TESTS: {', '.join(f'{n} {o}' for o, n in bad.items())}", *named]


def module_tests_markdown(summary: dict[str, Any]) -> list[str]:
    """The section of ``docs/verification.md``: counts per source and per class."""
    lines = [
        "## torch's own module tests",
        "",
        "Every configuration of torch's own module tests (`module_db` of",
        "`torch.testing._internal.common_modules` and the module tests of `common_nn`) of a",
        "module class this library has, found by torch's class name and built from torch's",
        "exact constructor arguments, run with the same input and one random upstream",
        "gradient in float64; the output, every input gradient and every parameter gradient",
        "compared (`reference/torch_modules.py`, `tests/test_torch_module_tests.py`).",
        f"A configuration agrees when every relative error is ≤ {summary['tolerance']:.0e};",
        "*refused* means the library declined it in one line (the known gaps, listed in",
        "`tests/data/torch_module_ledger.json`); *excluded* configurations are listed in",
        "`reference.torch_modules.EXCLUDED` with their reason (device, sparse or quantised",
        "only).",
        "",
        f"**{module_tests_text(summary)}.**",
        "",
        *_coverage(summary),
        "| source | " + " | ".join(OUTCOMES) + " |",
        "|---|" + "---:|" * len(OUTCOMES),
    ]
    for source, counts in summary["by_source"].items():
        lines.append(
            f"| `{source}` | " + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES) + " |"
        )
    lines += ["", "| module | " + " | ".join(OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
    for name, counts in summary["by_class"].items():
        lines.append(f"| `{name}` | " + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES) + " |")
    return [*lines, ""]


def _coverage(summary: dict[str, Any]) -> list[str]:
    """The coverage line: how many of module_db's module classes the library has."""
    if "module_db_classes" not in summary:
        return []
    missing = summary["module_db_missing"]
    return [
        f"**Coverage: the library has {summary['module_db_have']} of the "
        f"{summary['module_db_classes']} module classes of torch's `module_db`.** Missing: "
        f"{', '.join(f'`{m}`' for m in missing) if missing else 'none'}.",
        "",
    ]
