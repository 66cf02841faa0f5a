"""Describe a layer stack in one line or in a small JSON/TOML file.

Text form (``--layers`` on the command line), comma-separated, sizes inferred from the
data::

    reshape(1, 28, 28), conv2d(6, 5, padding=2), relu, maxpool2d(2), flatten,
    dense(100), batchnorm1d, relu, dropout(p=0.2), dense, softmax

Each item is a layer or activation name, optionally called with literal arguments;
``residual([dense(30), relu, dense])`` nests. Names may use ``_`` for ``-``
(``leaky_relu(alpha=0.2)``). A bare ``dense`` maps to the data's number of classes.

File form (``--model spec.json`` or ``spec.toml``)::

    {"layers": ["flatten", {"name": "dense", "args": [30]}, "relu", "dense", "softmax"],
     "cost": "log-likelihood"}

Parsing uses :mod:`ast` with literal arguments only — nothing is evaluated.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path
from typing import Any

from manual_bp._files import check_input_file

__all__ = ["load_spec_file", "parse_layers"]


class SpecError(ValueError):
    """A layer spec that cannot be parsed; the message names the offending item."""


def parse_layers(text: str) -> list[dict[str, Any]]:
    """``"dense(30), relu, dense"`` -> ``[{"name": "dense", "args": [30]}, "relu", ...]``."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("the layer spec is empty")
    text = _hyphenated_names(text)
    try:
        tree = ast.parse(f"[{text}]", mode="eval")
        return [_item(node, text) for node in tree.body.elts]  # type: ignore[attr-defined]
    except SyntaxError as error:
        raise SpecError(f"cannot parse layer spec {_short(text)!r}: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise SpecError(f"layer spec {_short(text)!r} is nested too deeply") from None


def _hyphenated_names(text: str) -> str:
    """``leaky-relu`` -> ``leaky_relu``: a registry's hyphenated name written as listed.

    Python would read ``leaky-relu`` as a subtraction; a hyphen joining two names with no
    space (outside string literals) is part of the name. ``a - b`` and ``x=-1`` are left as
    they are (and refused, or read, as before)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return text  # ast.parse below names the problem
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    joins = [
        offsets[minus.start[0] - 1] + minus.start[1]
        for before, minus, after in zip(tokens, tokens[1:], tokens[2:], strict=False)
        if before.type == tokenize.NAME and minus.string == "-" and after.type == tokenize.NAME
        and before.end == minus.start and minus.end == after.start
    ]  # fmt: skip
    for at in reversed(joins):
        text = text[:at] + "_" + text[at + 1 :]
    return text


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _item(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Name):
        return {"name": node.id}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_argument(arg, text) for arg in node.args]
        kwargs = {kw.arg: _argument(kw.value, text) for kw in node.keywords if kw.arg}
        if len(kwargs) != len(node.keywords):
            raise SpecError(
                f"'**' is not allowed in a layer spec: {ast.get_source_segment(text[1:], node)}"
            )
        return {"name": node.func.id, "args": args, **kwargs}
    segment = ast.get_source_segment(f"[{text}]", node)
    raise SpecError(f"not a layer: {segment!r} (expected a name or name(arguments))")


def _argument(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.List) and any(isinstance(e, (ast.Name, ast.Call)) for e in node.elts):
        return [_item(e, text) for e in node.elts]  # a nested stack: residual([...])
    if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        segment = ast.get_source_segment(f"[{text}]", node)
        raise SpecError(f"layer arguments must be literals, got {segment!r}") from None


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """``{"layers": [...], "cost": ..., ...}`` from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    try:
        check_input_file(path, "a model spec file", (".json", ".toml"))
        data = path.read_bytes()
    except ValueError as error:  # a directory, a wrong suffix (PathError)
        raise SpecError(str(error)) from None
    except OSError as error:  # missing, unreadable
        cause = str(error) if error.filename is None else f"{path}: {error.strerror}"
        raise SpecError(cause) from None
    suffix = path.suffix.lower()
    if not data.strip():
        raise SpecError(f"{path}: empty file, not a model spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not a UTF-8 text file (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); a model spec is JSON or TOML text"
        ) from None
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the standard library has no TOML
            raise SpecError(f"{path}: TOML specs need Python ≥ 3.11; use JSON") from None
    try:
        document = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a model spec") from None
    except ValueError as error:  # JSONDecodeError, TOMLDecodeError, over-long integers
        language = "JSON" if suffix == ".json" else "TOML"
        raise SpecError(f"{path}: corrupt {language}, not a model spec ({error})") from None
    if isinstance(document, dict) and str(document.get("format", "")).startswith("manual_bp."):
        raise SpecError(
            f"{path}: is a saved model ({document['format']}), not a model spec; "
            "evaluate it with 'manual-bp evaluate'"
        )
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list):
        raise SpecError(f"{path}: the spec must be an object with a 'layers' list")
    unknown = set(document) - {"layers", "cost", "input_shape"}
    if unknown:
        raise SpecError(
            f"{path}: unknown key(s) {sorted(unknown)}; valid: layers, cost, input_shape"
        )
    return document
