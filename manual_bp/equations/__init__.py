"""The machine-readable registry of equation IDs.

Every equation the project derives has an :class:`Equation` entry naming

* ``doc``: the Markdown file and anchor that derive it (``docs/backprop.md#BP1``;
  the file carries ``<a id="BP1"></a>`` before the section's heading),
* ``code``: the dotted path of the object that implements it (its source names the ID),
* ``test``: the pytest node that verifies it (its source names the ID).

Entries live in the chapter modules of this package (one per docs chapter),
each defining a list ``EQUATIONS``; they are collected here automatically.
``tests/test_equation_registry.py`` fails when an ID lacks any of the three.
Export: ``python -m manual_bp.equations`` prints the registry as JSON.
"""

from __future__ import annotations

import importlib
import pkgutil

from manual_bp.equations._base import Equation

__all__ = ["EQUATIONS", "Equation", "by_chapter"]


def _collect() -> dict[str, Equation]:
    registry: dict[str, Equation] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for equation in getattr(module, "EQUATIONS", []):
            if equation.id in registry:
                raise ValueError(f"equation ID {equation.id!r} is registered twice")
            registry[equation.id] = equation
    return registry


#: ID -> Equation, for every chapter.
EQUATIONS: dict[str, Equation] = _collect()


def by_chapter() -> dict[str, list[Equation]]:
    """Equations grouped by their docs file, in registry order."""
    chapters: dict[str, list[Equation]] = {}
    for equation in EQUATIONS.values():
        chapters.setdefault(equation.doc_file, []).append(equation)
    return chapters
