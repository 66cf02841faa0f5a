"""Save and load any model as JSON or ``.npz`` — one format, one writer, one reader, no pickle.

The document (format ``manual_bp.model``, version 3) is built from the model's own protocol
(``get_config``, ``named_layers``, state dict, extra state, modes), so a ``Network`` and a
``Sequential`` of any layers are saved the same way::

    {"format": "manual_bp.model", "format_version": 3,
     "config": model.get_config(),            # {"name": "network" | "sequential", ...}
     "training": true | {"<layer path>": bool},   # one bool when every layer agrees
     "extra_state": {"<layer path>": {...}},      # e.g. a dropout layer's generator
     "parameters": {"0.weight": [[...]], ...},    # torch's state-dict names; JSON only
     "buffers": {"1.running_mean": [...], ...}}   # JSON only

Loading builds the model with :func:`~manual_bp.models.model_from_config` (a ``Network``
file loads as a ``Network``: its config says so), checks and loads the state dict, then the
extra state and the modes. JSON floats are written by ``repr``, the shortest string that
parses back to the same double, so round trips are bit-exact (float32 is widened to float64
exactly and narrowed back exactly). An ``.npz`` holds the same header, without the arrays,
as one JSON string ``config`` and the arrays as ``param:<name>``/``buffer:<name>`` in their
own dtypes; it is read with ``allow_pickle=False``.

Version 3 differs from version 2 in one default only: recurrent layers and multi-head
attention follow torch's time-major layout unless ``batch_first=True``; a version-2 file's
layers were batch-major, so loading one sets ``batch_first=True`` on them
(:mod:`manual_bp.serialization_legacy`).

Writes are atomic (:func:`manual_bp._files.atomic_write`): a crash or an error never leaves
a half-written file or destroys the previous one. Loading checks every name, shape and value
(finite after the cast to the model's dtype, counters whole, running variances ≥ 0;
:mod:`manual_bp.serialization_checks`) and raises :class:`SerializationError` naming the
file and the field at fault.

Files of release 0.1 still load: ``manual_bp.network`` v1 (Nielsen's ``sizes``, ``weights``,
``biases``, also his own ``network2.save`` files with ``(n, 1)`` bias columns and cost
``"CrossEntropyCost"``) and ``manual_bp.sequential`` v1 are upgraded to the version-2
document in memory, one small function each (:mod:`manual_bp.serialization_legacy`), and
then take the one loading path.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from manual_bp._files import PathError, atomic_write, check_input_file
from manual_bp.models.sequential import Sequential, model_from_config
from manual_bp.serialization_checks import (
    FORMAT,
    FORMAT_VERSION,
    SerializationError,
    checked_array,
    read_json,
    read_npz,
)
from manual_bp.serialization_legacy import LEGACY_NETWORK, legacy_npz_arrays, upgraded

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SerializationError",
    "atomic_write",
    "load",
    "load_network",
    "model_from_document",
    "model_to_document",
    "network_from_dict",
    "network_to_dict",
    "save",
    "save_network",
]

SUFFIXES = (".json", ".npz")
SECTIONS = ("parameters", "buffers")
#: The prefix of a section's arrays in an ``.npz``.
NPZ_PREFIX = {"parameters": "param", "buffers": "buffer"}


# ---------------------------------------------------------------------- save
def save(model: Sequential, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (any model) to ``path`` (``.json`` or ``.npz``) atomically.

    Raises ``ValueError`` for another suffix or for non-finite parameters or buffers (which
    could not be loaded back), before anything is written.
    """
    return _save(model, path, "model")


def _save(model: Any, path: Any, argument: str) -> Path:
    """:func:`save`, its model argument called ``argument`` in messages."""
    path = _as_path(path)
    suffix = _suffix(path)
    if not isinstance(model, Sequential):
        raise TypeError(f"{argument} must be a manual_bp model (Network or Sequential), "
                        f"got {type(model).__name__}")  # fmt: skip
    _check_writable(path)
    header, arrays = _header_and_arrays(model)
    for section, named in arrays.items():
        for name, array in named.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                kind = section[:-1]
                raise ValueError(f"cannot save {path}: {kind} {name} contains non-finite values")
    if suffix == ".json":
        document = header | {s: {n: a.tolist() for n, a in arrays[s].items()} for s in SECTIONS}
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
        atomic_write(path, (text + "\n").encode("utf-8"))
    else:
        entries = {f"{NPZ_PREFIX[s]}:{n}": a for s in SECTIONS for n, a in arrays[s].items()}
        buffer = io.BytesIO()
        np.savez(buffer, config=np.array(json.dumps(header)), **entries)
        atomic_write(path, buffer.getvalue())
    return path


def _as_path(path: Any) -> Path:
    """``path`` (``str``, ``bytes`` or ``os.PathLike``) as a :class:`Path`, or one error
    naming it: ``TypeError`` for another type, ``ValueError`` for an empty path or one with
    a NUL byte (Python's own messages name neither the argument nor the path)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):  # a PathLike returning bytes
        text = os.fsdecode(text)
    if not text:
        raise ValueError("path is empty; expected a .json or .npz file")
    if "\0" in text:
        raise ValueError(f"path {text!r} contains a NUL byte")
    return Path(text)


def _check_writable(path: Path) -> None:
    """``path`` can be written, checked before any work: its directory exists
    (``FileNotFoundError``), it is no directory (``PathError``) and it can be written
    (``PermissionError``, naming ``path``, not the temporary file's name)."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save {path}: directory {directory} does not exist")
    if path.is_dir():
        raise PathError(f"cannot save {path}: is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save {path}: directory {directory} is not writable")
    if path.is_file() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot save {path}: the file is not writable")


def model_to_document(model: Sequential) -> dict[str, Any]:
    """The JSON document :func:`save` writes, as a dict (arrays as nested lists)."""
    header, arrays = _header_and_arrays(model)
    return header | {s: {n: a.tolist() for n, a in arrays[s].items()} for s in SECTIONS}


def _header_and_arrays(model: Sequential) -> tuple[dict[str, Any], dict[str, dict]]:
    layers = model.named_layers()
    modes = {path: bool(layer.training) for path, layer in layers}
    extra = {path: layer.get_extra_state() for path, layer in layers}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "training": modes if len(set(modes.values())) > 1 else model.training,
        "extra_state": {path: state for path, state in extra.items() if state},
    }
    arrays = {
        "parameters": {name: np.asarray(a) for name, a in model.named_parameters()},
        "buffers": {name: np.asarray(a) for name, a in model.named_buffers()},
    }
    return header, arrays


# ---------------------------------------------------------------------- load
def load(path: str | os.PathLike[str]) -> Sequential:
    """The model in a file written by :func:`save`, by release 0.1 or by Nielsen's
    ``network2.save``, of the class its config names.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    SerializationError
        The file is corrupt, of the wrong kind or inconsistent; the message names the file
        and the fault.
    """
    path = _as_path(path)
    if path.is_dir():
        raise PathError(f"{path}: is a directory, not a saved model file")
    suffix = _suffix(path)
    check_input_file(path, "a saved model file", SUFFIXES)
    try:
        return model_from_document(_read(path, suffix))
    except SerializationError as error:
        raise SerializationError(f"{path}: {error}") from None
    except RecursionError:
        raise SerializationError(f"{path}: nested too deeply to be a saved model") from None
    except MemoryError:
        raise SerializationError(f"{path}: declares a model too large to allocate") from None
    except (ValueError, TypeError) as error:
        # The model's and the registries' own checks: one line naming the field (an
        # unknown activation's message lists the valid names).
        raise SerializationError(f"{path}: {error}") from None
    except KeyError as error:
        raise SerializationError(f"{path}: the model config lacks the field {error}") from None
    except (IndexError, AttributeError, OverflowError):
        raise SerializationError(f"{path}: the model config is malformed") from None


def _read(path: Path, suffix: str) -> dict[str, Any]:
    """The document in ``path``; an ``.npz``'s arrays are moved into its sections."""
    if suffix == ".json":
        return read_json(path)
    document, arrays = read_npz(path)
    if document.get("format") in LEGACY_NETWORK:  # release 0.1: W0, W1, …, b0, b1, …
        legacy_npz_arrays(document, arrays)
        return document
    document["parameters"], document["buffers"] = {}, {}
    sections = {prefix: section for section, prefix in NPZ_PREFIX.items()}
    for key, array in arrays.items():
        prefix, _, name = key.partition(":")
        if prefix not in sections:
            raise SerializationError(f"unexpected array {key!r} in the archive")
        document[sections[prefix]][name] = array
    return document


def model_from_document(document: dict[str, Any]) -> Sequential:
    """Build and check the model a saved document (any supported version) describes."""
    document = upgraded(document)
    config = document.get("config")
    if not isinstance(config, dict):
        raise SerializationError("'config' must be an object (the model's get_config())")
    if config.get("dtype", "float64") not in ("float32", "float64"):
        raise SerializationError(
            f"dtype must be 'float32' or 'float64', got {config.get('dtype')!r}"
        )
    model = model_from_config(config)
    _load_arrays(model, document)
    _load_extra_state(model, document.get("extra_state", {}))
    _load_modes(model, document.get("training", True))
    return model


def _load_arrays(model: Sequential, document: dict[str, Any]) -> None:
    state = {}
    named = {"parameters": model.named_parameters(), "buffers": model.named_buffers()}
    for section in SECTIONS:
        targets, values = dict(named[section]), document.get(section, {})
        if not isinstance(values, dict):
            raise SerializationError(f"'{section}' must be an object of named arrays")
        missing = [name for name in targets if name not in values]
        if missing:
            raise SerializationError(f"'{section}' lacks {missing} (the model has {list(targets)})")
        for name, value in values.items():
            if name not in targets:
                raise SerializationError(
                    f"'{section}' has {name!r}, which the model does not (it has {list(targets)})"
                )
            state[name] = checked_array(f"{section[:-1]} {name}", value, targets[name])
    model.load_state_dict(state)


def _load_extra_state(model: Sequential, extra: Any) -> None:
    if not isinstance(extra, dict):
        raise SerializationError("'extra_state' must be an object of layer states")
    layers = dict(model.named_layers())
    for path, state in extra.items():
        if path not in layers:
            raise SerializationError(f"extra_state names no layer {path!r}")
        if not isinstance(state, dict):
            raise SerializationError(f"extra_state[{path!r}] must be an object")
        try:
            layers[path].set_extra_state(state)
        except ValueError as error:
            raise SerializationError(f"extra_state[{path!r}]: {error}") from None
        except (TypeError, KeyError, AttributeError, IndexError, OverflowError):
            raise SerializationError(
                f"extra_state[{path!r}] is not a valid state of {layers[path]!r}"
            ) from None


def _load_modes(model: Sequential, training: Any) -> None:
    if isinstance(training, bool):
        model.train(training)
        return
    layers = dict(model.named_layers())
    if not isinstance(training, dict) or set(training) != set(layers):
        raise SerializationError(
            f"'training' must be true, false or an object naming every layer path {sorted(layers)}"
        )
    for path, mode in training.items():
        if not isinstance(mode, bool):
            raise SerializationError(f"training[{path!r}] must be true or false, got {mode!r}")
        layers[path].training = mode


# ---------------------------------------------------------------------- the old names
def save_network(net: Sequential, path: str | os.PathLike[str]) -> Path:
    """:func:`save` (the name of release 0.1)."""
    return _save(net, path, "net")


def load_network(path: str | os.PathLike[str]) -> Sequential:
    """:func:`load` (the name of release 0.1): the model the file holds."""
    return load(path)


def network_to_dict(net: Sequential) -> dict[str, Any]:
    """:func:`model_to_document` (the name of release 0.1)."""
    return model_to_document(net)


def network_from_dict(document: dict[str, Any]) -> Sequential:
    """:func:`model_from_document` (the name of release 0.1)."""
    return model_from_document(document)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .json or .npz"
        )
    return suffix
