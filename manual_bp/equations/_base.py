"""The :class:`Equation` record (kept apart so chapter modules can import it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Equation"]


@dataclass(frozen=True)
class Equation:
    """One derived equation: its ID, a readable name and statement, and its three homes."""

    id: str
    name: str
    statement: str
    doc: str
    code: str
    test: str

    @property
    def doc_file(self) -> str:
        return self.doc.split("#", 1)[0]

    @property
    def anchor(self) -> str:
        return self.doc.split("#", 1)[1]

    @property
    def test_file(self) -> str:
        return self.test.split("::", 1)[0]

    @property
    def test_function(self) -> str:
        return self.test.split("::", 1)[1]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
