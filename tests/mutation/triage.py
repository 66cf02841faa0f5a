"""Triage of mutation survivors for ``run_mutation.py``: substring of a mutant's name ->
why no test can see it ("equivalent: ...") or which new test kills it ("killed: ...")."""

from __future__ import annotations

TRIAGE: dict[str, str] = {}
