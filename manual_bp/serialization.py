"""Save and load networks as JSON or ``.npz`` — no pickle anywhere.

JSON (``*.json``) carries Nielsen's ``network2.save`` fields — ``sizes``,
``weights`` (one ``(n_out, n_in)`` nested list per layer), ``biases`` (one
``(n_out,)`` list per layer), ``cost`` (a name) — plus ``format``,
``format_version``, ``dtype``, ``activations`` and ``cost_config`` (the
``get_config()`` dicts) and ``initializer``. Floats are written with Python's
``repr``, the shortest string that parses back to the same double, so a round
trip is exact (float32 values are widened to float64 exactly and narrowed back
exactly).

``.npz`` (``*.npz``) stores the same header as a JSON string in the unicode
array ``config`` and the parameters as arrays ``W0, W1, ...`` and ``b0, b1,
...`` in the network's dtype; it is read with ``allow_pickle=False``.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed and fsync'ed, then renamed over the target with
:func:`os.replace`, so a crash or an error never leaves a half-written file or
destroys the previous one; a new file gets the permissions the umask gives, a
replaced one keeps its mode (:func:`manual_bp._files.atomic_write`).

Loading validates the structure, the shapes, the dtype and the finiteness of
every parameter *after* the cast to the model's dtype (``1e300`` in a float32
model is refused, not loaded as ``inf``) and raises :class:`SerializationError`
naming the file and what is wrong; a file of the wrong kind (a directory, JSON
renamed ``.npz``, an archive holding pickled objects) says so. A file written by
Nielsen's ``network2.py`` (biases as ``(n, 1)`` columns, cost ``"CrossEntropyCost"``)
loads too, as a sigmoid network.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from manual_bp import serialization_stack
from manual_bp._files import PathError, atomic_write, check_input_file
from manual_bp.models.network import Network
from manual_bp.models.sequential import Sequential

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SerializationError",
    "atomic_write",
    "load",
    "load_network",
    "network_from_dict",
    "network_to_dict",
    "save",
    "save_network",
]

FORMAT = "manual_bp.models.network"
FORMAT_VERSION = 1
SUFFIXES = (".json", ".npz")

#: Cost class names used by Nielsen's ``network2.save`` -> our registry names.
NIELSEN_COSTS = {"CrossEntropyCost": "cross-entropy", "QuadraticCost": "quadratic"}


class SerializationError(ValueError):
    """A saved network file is unreadable, malformed or inconsistent."""


# ---------------------------------------------------------------------- save
def save(model: Network | Sequential, path: str | os.PathLike[str]) -> Path:
    """Write a :class:`Network` or :class:`Sequential` to ``.json``/``.npz`` atomically.

    A ``Sequential`` file (:mod:`manual_bp.serialization_stack`) holds every layer's
    config, parameters, buffers (running statistics), mode and extra state (dropout
    generators), so a round trip is bit-exact and continues training identically.
    """
    if isinstance(model, Sequential):
        path = Path(path)
        _suffix(path)
        serialization_stack.write_sequential(model, path, atomic_write)
        return path
    if isinstance(model, Network):
        return save_network(model, path)
    raise TypeError(f"can save a Network or a Sequential, got {type(model).__name__}")


def load(path: str | os.PathLike[str]) -> Network | Sequential:
    """Read a file written by :func:`save` (or Nielsen's ``network2.save``)."""
    return load_network(path, allow_sequential=True)


def save_network(net: Network, path: str | os.PathLike[str]) -> Path:
    """Write ``net`` to ``path`` (``.json`` or ``.npz``) atomically; returns the path.

    Raises ``ValueError`` for another suffix or for non-finite parameters (which
    could not be loaded back).
    """
    path = Path(path)
    suffix = _suffix(path)
    params = _parameters(net)
    for name, array in params.items():
        if not np.isfinite(array).all():
            raise ValueError(f"cannot save {path}: parameter {name} contains non-finite values")
    header = _header(net)
    if suffix == ".json":
        document = dict(header)
        document["weights"] = [W.tolist() for W in net.weights]
        document["biases"] = [b.tolist() for b in net.biases]
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
        atomic_write(path, (text + "\n").encode("utf-8"))
    else:
        buffer = io.BytesIO()
        np.savez(buffer, config=np.array(json.dumps(header)), **params)
        atomic_write(path, buffer.getvalue())
    return path


def network_to_dict(net: Network) -> dict[str, Any]:
    """The JSON document of :func:`save_network` as a dict (parameters as nested lists)."""
    document = _header(net)
    document["weights"] = [W.tolist() for W in net.weights]
    document["biases"] = [b.tolist() for b in net.biases]
    return document


def _header(net: Network) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sizes": list(net.sizes),
        "cost": net.cost.name,
        "cost_config": net.cost.get_config(),
        "activations": [activation.get_config() for activation in net.activations],
        "dtype": net.dtype.name,
        "initializer": net.initializer,
    }


def _parameters(net: Network) -> dict[str, np.ndarray]:
    params = {f"W{l}": np.asarray(W) for l, W in enumerate(net.weights)}
    params.update({f"b{l}": np.asarray(b) for l, b in enumerate(net.biases)})
    return params


# ---------------------------------------------------------------------- load
def load_network(path: str | os.PathLike[str], *, allow_sequential: bool = False) -> Network:
    """Read a network written by :func:`save_network` (or by Nielsen's ``network2.save``).

    With ``allow_sequential`` (what :func:`load` passes) a ``Sequential`` file loads too.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    SerializationError
        The file is corrupt or inconsistent; the message names the file and the fault.
    """
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path}: is a directory, not a saved model file")
    suffix = _suffix(path)
    check_input_file(path, "a saved model file", SUFFIXES)
    try:
        document = _read_json(path) if suffix == ".json" else _read_npz(path)
        if serialization_stack.is_sequential_document(document):
            if not allow_sequential:
                raise SerializationError("holds a Sequential model; load it with load()")
            return serialization_stack.sequential_from_dict(document)
        return network_from_dict(document)
    except SerializationError as error:
        raise SerializationError(f"{path}: {error}") from None
    except RecursionError:
        raise SerializationError(f"{path}: nested too deeply to be a saved model") from None
    except MemoryError:
        raise SerializationError(f"{path}: declares a model too large to allocate") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as error:
        # e.g. an unknown activation name: the registry's message lists the valid ones.
        raise SerializationError(f"{path}: {error}") from None


def _read_json(path: Path) -> dict[str, Any]:
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
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise SerializationError(f"corrupt JSON ({error})") from None
    except RecursionError:
        raise SerializationError("JSON nested too deeply to be a saved model") from None
    if not isinstance(document, dict):
        raise SerializationError(f"expected a JSON object, got {type(document).__name__}")
    return document


def _reject_constant(name: str) -> float:
    raise SerializationError(f"non-finite value {name} in the file")


#: How an .npz archive (a zip file) starts; the empty archive starts with the end record.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(path: Path) -> dict[str, Any]:
    arrays = _npz_arrays(path)
    if "config" not in arrays:
        raise SerializationError("missing the 'config' entry")
    config = arrays.pop("config")
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise SerializationError(f"entry {key!r} of the archive is not a .npy array")
    if config.shape != () or config.dtype.kind != "U":
        raise SerializationError("'config' must be a single JSON string")
    try:
        document = json.loads(str(config), parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise SerializationError(f"corrupt JSON in 'config' ({error})") from None
    if not isinstance(document, dict):
        raise SerializationError("'config' must hold a JSON object")
    if serialization_stack.is_sequential_document(document):
        serialization_stack.split_npz_arrays(document, arrays)
        return document
    sizes = document.get("sizes")
    n_layers = len(sizes) - 1 if isinstance(sizes, list) else 0
    expected = {f"W{l}" for l in range(n_layers)} | {f"b{l}" for l in range(n_layers)}
    if set(arrays) != expected:
        raise SerializationError(
            f"arrays {sorted(arrays)} do not match the {n_layers} layers of sizes {sizes} "
            f"(expected {sorted(expected)})"
        )
    document["weights"] = [arrays[f"W{l}"] for l in range(n_layers)]
    document["biases"] = [arrays[f"b{l}"] for l in range(n_layers)]
    return document


def _npz_arrays(path: Path) -> dict[str, Any]:
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
    arrays: dict[str, Any] = {}
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


def network_from_dict(document: dict[str, Any]) -> Network:
    """Build and validate a :class:`Network` from a saved document (see module docstring)."""
    if "format" not in document and document.get("cost") in NIELSEN_COSTS:
        document = _from_nielsen(document)
    _check_format(document)
    sizes = _check_sizes(document.get("sizes"))
    dtype = document.get("dtype")
    if dtype not in ("float32", "float64"):
        raise SerializationError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    activations = document.get("activations")
    if not isinstance(activations, list) or len(activations) != len(sizes) - 1:
        raise SerializationError(
            f"'activations' must list {len(sizes) - 1} activation configs, got {activations!r}"
        )
    cost = document.get("cost_config", document.get("cost"))
    if not isinstance(cost, (str, dict)):
        raise SerializationError(f"'cost' must be a name or a config, got {cost!r}")
    initializer = document.get("initializer", "default")
    if not isinstance(initializer, str):
        raise SerializationError(f"'initializer' must be a name, got {initializer!r}")
    weights = _check_parameters(document, "weights", sizes, dtype)
    biases = _check_parameters(document, "biases", sizes, dtype)
    net = Network(sizes, activations, cost, initializer=initializer, seed=0, dtype=dtype)
    net.weights = weights
    net.biases = biases
    return net


def _check_format(document: dict[str, Any]) -> None:
    if document.get("format") != FORMAT:
        raise SerializationError(
            f"not a manual_bp network file ('format' is {document.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise SerializationError(
            f"unsupported format_version {version!r}; this manual_bp reads version {FORMAT_VERSION}"
        )


def _check_sizes(sizes: Any) -> list[int]:
    if (
        not isinstance(sizes, list)
        or len(sizes) < 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        raise SerializationError(
            f"'sizes' must be a list of at least two positive integers, got {sizes!r}"
        )
    return sizes


def _check_parameters(
    document: dict[str, Any], key: str, sizes: list[int], dtype: str
) -> list[np.ndarray]:
    values = document.get(key)
    n_layers = len(sizes) - 1
    if not isinstance(values, list) or len(values) != n_layers:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise SerializationError(f"'{key}' must list {n_layers} arrays (one per layer), got {got}")
    arrays = []
    for l, value in enumerate(values):
        shape = (sizes[l + 1], sizes[l]) if key == "weights" else (sizes[l + 1],)
        array = _as_float_array(value, f"{key}[{l}]")
        if array.shape != shape:
            raise SerializationError(
                f"{key}[{l}] has shape {array.shape}; sizes {sizes} require {shape}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(dtype)  # a float64 value beyond float32's range becomes inf
        if not np.isfinite(cast).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
            if not np.isfinite(array[index]):
                raise SerializationError(f"{key}[{l}] has a non-finite value at index {index}")
            raise SerializationError(
                f"{key}[{l}] has a value {float(array[index]):.6g} at index {index} that "
                f"overflows {dtype} (not finite once cast)"
            )
        arrays.append(cast)
    return arrays


def _as_float_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise SerializationError(f"{name} must hold numbers, got dtype {value.dtype}")
        return value
    try:
        array = np.array(value)
    except (ValueError, TypeError):
        raise SerializationError(f"{name} is not a rectangular array of numbers") from None
    if array.dtype.kind not in "fiu":  # strings, booleans, objects (ragged or huge ints)
        raise SerializationError(f"{name} is not a rectangular array of numbers")
    return array.astype(np.float64)


def _from_nielsen(document: dict[str, Any]) -> dict[str, Any]:
    """Nielsen's ``network2.save`` format: biases as ``(n, 1)`` columns, sigmoid layers."""
    sizes = _check_sizes(document.get("sizes"))
    biases = document.get("biases")
    if isinstance(biases, list):
        biases = [np.asarray(b, dtype=np.float64).reshape(-1) for b in biases]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sizes": sizes,
        "cost": NIELSEN_COSTS[document["cost"]],
        "activations": [{"name": "sigmoid"}] * (len(sizes) - 1),
        "dtype": "float64",
        "weights": document.get("weights"),
        "biases": biases,
    }


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .json or .npz"
        )
    return suffix
