"""The fenced blocks of README.md and docs/*.md, and what kind each is (see
tests/test_docs_run.py, which runs them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

PYTHON_TAGS = {"python", "py"}
SHELL_TAGS = {"bash", "sh", "shell", "console"}
#: Output, diagrams and formats: never commands.
NOT_COMMAND_TAGS = {"text", "json", "toml"}


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|file):\s*(?P<value>.*?)\s*-->\s*$")
COMMAND_HEAD = re.compile(r"^(python3?|manual-bp|pip|git|nice|[A-Z_][A-Z0-9_]*=\S*)(\s|$)")


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository
    line: int  # of the opening fence
    info: str  # the fence's info string: the language tag, nothing else
    text: str
    not_run: str | None  # the reason of a `<!-- not run: … -->` marker
    file: str | None  # the name of a `<!-- file: … -->` marker

    @property
    def tag(self) -> str:
        return self.info.split()[0].lower() if self.info else ""

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((line for line in self.text.splitlines() if line.strip()), "")


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        assert end < len(lines), f"{path.name}:{i + 1}: unclosed code fence"
        # an indented block (in a list item) loses its indentation, as Markdown reads it
        body = "\n".join(line[indent:] if not line[:indent].strip() else line
                         for line in lines[i + 1 : end])  # fmt: skip
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        blocks.append(
            Block(
                document=path.relative_to(REPO).as_posix(),
                line=i + 1,
                info=match["info"].strip(),
                text=body,
                not_run=marker["value"] if marker and marker["kind"] == "not run" else None,
                file=marker["value"] if marker and marker["kind"] == "file" else None,
            )
        )
        i = end + 1
    return blocks


BLOCKS = {path.relative_to(REPO).as_posix(): blocks_of(path) for path in DOCUMENTS}


def kind_of(block: Block) -> str:
    """``python``, ``fragment``, ``shell``, ``file`` or ``output``; an unclear block fails."""
    assert len(block.info.split()) <= 1, (
        f"{block.where}: the fence says {block.info!r}; give the language only (a fragment "
        "is marked `<!-- not run: REASON -->` on the line before)"
    )
    if block.file is not None:
        assert block.tag in NOT_COMMAND_TAGS - {"text"}, (
            f"{block.where}: a file block is tagged json or toml, not {block.tag!r}"
        )
        return "file"
    if block.tag in PYTHON_TAGS:
        return "fragment" if block.not_run is not None else "python"
    assert block.not_run is None, f"{block.where}: only python blocks may be marked not run"
    commands = [line for line in command_lines(block) if COMMAND_HEAD.match(line)]
    if block.tag in SHELL_TAGS or (block.tag == "" and commands):
        return "shell"
    if block.tag in NOT_COMMAND_TAGS:
        assert not any(re.match(r"(python -m manual_bp|manual-bp) ", c) for c in commands), (
            f"{block.where}: a {block.tag} block holds manual_bp commands: tag it bash"
        )
        return "output"
    raise AssertionError(
        f"{block.where}: a block tagged {block.tag!r} is neither python, commands nor output: "
        "tag output and diagrams ```text, commands ```bash"
    )


def command_lines(block: Block) -> list[str]:
    """The commands of a shell block; in a ``console`` block, the lines after a ``$`` prompt
    (the others are output)."""
    lines = logical_lines(block.text)
    if block.tag == "console":
        return [line[2:] for line in lines if line.startswith("$ ")]
    return lines


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, blank and comment-only lines dropped."""
    joined, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            joined.append(current.strip())
        current = ""
    return joined
