"""Reading and checking saved model files for :mod:`manual_bp.serialization`.

Byte-level reading (JSON that must be UTF-8 and finite; ``.npz`` archives of numeric
``.npy`` arrays only, never pickle) and the value checks every loaded array goes through:
a rectangular array of real numbers, of the model's shape, finite *after* the cast to the
model's dtype, integer buffers whole and in range, running variances ≥ 0. Every fault is a
:class:`SerializationError` whose message names the field; the caller prefixes the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SerializationError",
    "checked_array",
    "read_json",
    "read_npz",
]

#: The document's format name and version (``manual_bp.serialization``'s module docstring).
FORMAT = "manual_bp.model"
FORMAT_VERSION = 3


class SerializationError(ValueError):
    """A saved model file is unreadable, malformed or inconsistent."""


#: How an .npz archive (a zip file) starts; the empty archive starts with the end record.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``NaN``/``Infinity`` literals and non-objects refused."""
    data = path.read_bytes()
    if not data.strip():
        raise SerializationError("empty file, not a saved model (JSON)")
    if data[:2] == b"PK":
        raise SerializationError("is a zip (.npz) archive, not JSON; rename it .npz")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SerializationError(
            f"not a UTF-8 JSON file (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from None
    document = _parse(text, "corrupt JSON")
    if not isinstance(document, dict):
        raise SerializationError(f"expected a JSON object, got {type(document).__name__}")
    return document


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise SerializationError(f"{what} ({error})") from None
    except RecursionError:
        raise SerializationError("JSON nested too deeply to be a saved model") from None


def _reject_constant(name: str) -> float:
    raise SerializationError(f"non-finite value {name} in the file")


def read_npz(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of an archive: the JSON object in ``config`` and the rest."""
    arrays = _npz_arrays(path)
    if "config" not in arrays:
        raise SerializationError("missing the 'config' entry")
    config = arrays.pop("config")
    if config.shape != () or config.dtype.kind != "U":
        raise SerializationError("'config' must be a single JSON string")
    header = _parse(str(config), "corrupt JSON in 'config'")
    if not isinstance(header, dict):
        raise SerializationError("'config' must hold a JSON object")
    return header, arrays


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the archive, refusing what is not a zip of numeric .npy arrays."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise SerializationError("empty file, not an .npz archive")
    if head[:4] not in ZIP_MAGIC:
        kind = "a file"
        if head.lstrip()[:1] in (b"{", b"["):
            kind = "JSON; rename it .json"
        elif head.startswith(b"\x93NUMPY"):
            kind = "a single .npy array"
        raise SerializationError(f"not an .npz archive (a zip file): it is {kind}")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as error:
                    if "pickle" not in str(error) and "Object arrays" not in str(error):
                        raise
                    raise SerializationError(
                        f"entry {key!r} holds Python objects, which manual_bp never loads "
                        "(a saved model holds numeric arrays and one JSON string)"
                    ) from None
    except SerializationError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise SerializationError(f"corrupt .npz file ({error})") from None
    return arrays


def checked_array(name: str, value: Any, target: np.ndarray) -> np.ndarray:
    """``value`` as an array of ``target``'s shape and dtype, or the fault named."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.array(value)
        except (ValueError, TypeError, OverflowError):
            raise SerializationError(f"{name} is not a rectangular array of numbers") from None
    if array.dtype.kind not in "fiu":  # strings, booleans, objects (ragged or huge ints)
        raise SerializationError(f"{name} is not a rectangular array of numbers")
    if array.shape != target.shape:
        raise SerializationError(f"{name} has shape {array.shape}; the model needs {target.shape}")
    if target.dtype.kind in "iu":  # counters (num_batches_tracked): whole numbers in range
        return _checked_integers(name, array, target.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target.dtype)  # a float64 beyond float32's range becomes inf
    if not np.isfinite(cast).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        if not np.isfinite(array[index]):
            raise SerializationError(f"{name} has a non-finite value at index {index}")
        raise SerializationError(
            f"{name} has a value {float(array[index]):.6g} at index {index} that overflows "
            f"{target.dtype} (not finite once cast)"
        )
    if name.rsplit(".", 1)[-1] == "running_var" and (cast < 0).any():
        index = tuple(int(i) for i in np.argwhere(cast < 0)[0])
        raise SerializationError(f"{name} has a negative variance at index {index}")
    return cast


def _checked_integers(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    values = array.astype(np.float64) if array.dtype.kind == "f" else array
    whole = np.isfinite(values) & (values == np.round(values)) if array.dtype.kind == "f" else True
    if not np.all(whole) or (values < max(info.min, 0)).any() or (values > info.max).any():
        raise SerializationError(f"{name} must hold whole numbers in [0, {info.max}]")
    return array.astype(dtype)
