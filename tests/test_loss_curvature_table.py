"""docs/losses.md's table of second-order quantities stays true: every registered
torch-named loss has one row, and the row names the method the class has
(``hessian_diagonal``, ``input_hessian``) or says none (issue 26's "say which quantities
each loss supports")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from manual_bp.losses import LOSSES

DOC = Path(__file__).resolve().parents[1] / "docs" / "losses.md"
METHODS = ("hessian_diagonal", "input_hessian")


def _rows() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Second-order quantities of every torch-named loss")
    section = text[start : text.index("\n## ", start + 1)]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.+?) \|", section,
                                                       re.MULTILINE)}  # fmt: skip


@pytest.mark.parametrize("cls", LOSSES.classes(), ids=lambda c: c.__name__)
def test_every_loss_states_its_second_order_quantity(cls):
    rows = _rows()
    assert cls.__name__ in rows, f"docs/losses.md's table has no row for {cls.__name__}"
    stated = [m for m in METHODS if f"`{m}`" in rows[cls.__name__]]
    has = [m for m in METHODS if callable(getattr(cls, m, None))]
    assert stated == has, f"{cls.__name__}: the table says {stated or 'none'}, the class has {has}"
    if not has:
        assert rows[cls.__name__].startswith("none: "), "a loss without one says why"


def test_the_table_names_only_registered_losses():
    assert set(_rows()) == {cls.__name__ for cls in LOSSES.classes()}
