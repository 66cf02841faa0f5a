"""``docs/equations.md``, the equation index, generated from the registry and a verification
JSON (``python -m manual_bp verify --figures docs/verification.json --pages docs/equations.md``).

Split from :mod:`manual_bp.verify` (the runner and its report); both names are re-exported
there.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from manual_bp._files import check_input_file
from manual_bp.equations import EQUATIONS, Equation

__all__ = ["REGENERATE_PAGES", "equations_page", "read_figures"]

REGENERATE_PAGES = (
    "python -m manual_bp verify --figures docs/verification.json --pages docs/equations.md"
)


def _fmt(x: float | str | None) -> str:
    if x is None:
        return "—"
    x = float(x)
    return f"{x:.1e}" if x != 0 else "0"


# --------------------------------------------------------------------------- equation index

#: Sections of docs/conventions.md an equation depends on, by ID prefix.
_CONVENTIONS = {
    "shapes": ("shapes and symbols", "shapes-and-symbols"),
    "gradients": ("what the gradients are gradients of", "what-the-gradients-are-gradients-of"),
    "regularisation": (
        "regularisation and training-set size",
        "regularisation-and-training-set-size",
    ),
    "torch": ("where torch differs", "where-torch-differs-and-how-the-oracle-maps-it"),
    "precision": ("precision and tolerances", "precision-and-tolerances"),
}
_CONVENTIONS_BY_PREFIX = (
    ("REG.", ("shapes", "regularisation", "torch", "precision")),
    ("OPT.", ("shapes", "gradients", "regularisation", "torch", "precision")),
    ("INIT.", ("shapes",)),
    ("ACT.", ("shapes", "torch", "precision")),
    ("", ("shapes", "gradients", "torch", "precision")),
)


def _conventions_for(equation_id: str) -> tuple[str, ...]:
    return next(keys for prefix, keys in _CONVENTIONS_BY_PREFIX if equation_id.startswith(prefix))


def _code_file(dotted: str) -> str:
    """The repository path of the module holding ``dotted`` (``manual_bp/network.py``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        root = Path(importlib.import_module("manual_bp").__file__).resolve().parent.parent
        return Path(module.__file__).resolve().relative_to(root).as_posix()
    raise ImportError(f"cannot import any module of {dotted!r}")


def _figure(equation_id: str, figures: dict[str, dict] | None) -> str:
    if figures is None or equation_id not in figures:
        return "not in docs/verification.json yet — regenerate it (command above)"
    f = figures[equation_id]
    worst = f.get("worst", {})
    parts = [f"{f['cases']} cases"]
    for oracle in worst:
        label = {"torch": "torch autograd", "finite-differences": "finite differences"}
        parts.append(f"worst {_fmt(worst[oracle])} vs {label.get(oracle, oracle)}")
    parts.append("passed" if f.get("passed") else "**FAILED**")
    return ", ".join(parts)


def equations_page(
    figures: dict[str, Any] | None = None, equations: Iterable[Equation] | None = None
) -> str:
    """``docs/equations.md``: every equation ID with statement and links, from the registry.

    ``figures`` is a verification JSON (:meth:`VerificationReport.to_dict`);
    each entry shows its cases and worst errors from it.
    """
    equations = list(EQUATIONS.values() if equations is None else equations)
    by_id = {e["id"]: e for e in figures["equations"]} if figures else None
    lines = [
        "# Equation index",
        "",
        "<!-- Generated from the registry manual_bp/equations/ by manual_bp.verify.equations_page;",
        "     do not edit by hand. tests/test_verify.py fails when it is stale. -->",
        "",
        "Every equation the project derives, with its statement, the section that derives",
        "it (chain rule written out), the conventions it depends on, the code that",
        "implements it, the test that verifies it and its figure from the",
        "[verification report](verification.md). Regenerate after changing the registry:",
        "",
        "```",
        REGENERATE_PAGES,
        "```",
        "",
    ]
    if figures:
        lines += [f"Figures: {figures['summary']}", ""]
    chapters: dict[str, list[Equation]] = {}
    for e in equations:
        chapters.setdefault(e.doc_file, []).append(e)
    lines += ["| ID | name | derivation |", "|---|---|---|"]
    for doc_file, chapter in chapters.items():
        for e in chapter:
            page = doc_file.removeprefix("docs/")
            lines.append(f"| [`{e.id}`](#{e.id}) | {e.name} | [{page}]({page}#{e.anchor}) |")
    for doc_file, chapter in chapters.items():
        page = doc_file.removeprefix("docs/")
        lines += ["", f"## [{page}]({page})"]
        for e in chapter:
            conventions = ", ".join(
                f"[{_CONVENTIONS[k][0]}](conventions.md#{_CONVENTIONS[k][1]})"
                for k in _conventions_for(e.id)
            )
            code_file, test_file = _code_file(e.code), e.test_file
            lines += [
                "",
                f'<a id="{e.id}"></a>',
                f"### `{e.id}` — {e.name}",
                "",
                f"> {e.statement}",
                "",
                f"- **Derivation:** [{page} § {e.id}]({page}#{e.anchor})",
                f"- **Conventions:** {conventions}",
                f"- **Code:** [`{e.code}`](../{code_file}) in `{code_file}`",
                f"- **Test:** [`{e.test}`](../{test_file})",
                f"- **Verified:** {_figure(e.id, by_id)} ([report](verification.md))",
            ]
    return "\n".join(lines) + "\n"


def read_figures(path: str | os.PathLike) -> dict[str, Any]:
    """A verification JSON written by ``--json``, checked to be one (``ValueError`` if not)."""
    path = check_input_file(path, "a verification JSON", (".json",))
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: empty file, not a verification JSON")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 JSON file, not a verification JSON") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a verification JSON") from None
    except ValueError as error:  # JSONDecodeError, over-long integers
        raise ValueError(f"{path}: corrupt JSON, not a verification JSON ({error})") from None
    problem = _figures_problem(document)
    if problem:
        raise ValueError(f"{path}: not a verification JSON (written by --json): {problem}")
    return document


def _figures_problem(document: Any) -> str | None:
    """What makes ``document`` unusable by :func:`equations_page`, or ``None``."""
    if not isinstance(document, dict):
        return f"expected a JSON object, got {type(document).__name__}"
    if not isinstance(document.get("summary"), str):
        return "no 'summary' sentence"
    equations = document.get("equations")
    if not isinstance(equations, list):
        return "no 'equations' list"
    for k, entry in enumerate(equations):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            return f"equations[{k}] has no 'id'"
        cases = entry.get("cases")
        if isinstance(cases, bool) or not isinstance(cases, int):
            return f"equations[{k}] ({entry['id']}) has no integer 'cases'"
        worst = entry.get("worst", {})
        if not isinstance(worst, dict) or not all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in worst.values()
        ):
            return f"equations[{k}] ({entry['id']}) has a malformed 'worst'"
        try:
            [float(v) for v in worst.values()]
        except ValueError:
            return f"equations[{k}] ({entry['id']}) has a non-numeric 'worst'"
    return None
