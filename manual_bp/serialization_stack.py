"""Save and load :class:`~manual_bp.models.sequential.Sequential` models — JSON or ``.npz``, no pickle.

The document (JSON object, or the ``config`` string of an ``.npz``)::

    {"format": "manual_bp.models.sequential", "format_version": 1, "dtype": "float64",
     "layers": [layer configs], "cost_config": {...}, "input_shape": [...] | null,
     "ignore_index": null | int,                                   # SEQ.ignore_index
     "training": true, "extra_state": {"<layer path>": {...}},   # e.g. dropout generators
     "parameters": {"0.weight": [[...]], ...},                     # JSON only
     "buffers": {"1.running_mean": [...], ...}}                    # JSON only

In an ``.npz`` the arrays are entries ``param:<name>`` and ``buffer:<name>`` in their own
dtypes. Floats in JSON are written with ``repr`` (shortest round-tripping form), so round
trips are bit-exact in float64 and float32. Loading checks every name, shape and value
(finite, and still finite after the cast to the model's dtype; counters whole and in range;
running variances ≥ 0) and names the fault.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from manual_bp.layers.build import get_layer
from manual_bp.models.sequential import Sequential

__all__ = ["FORMAT", "sequential_from_dict", "sequential_header", "write_sequential"]

FORMAT = "manual_bp.models.sequential"
FORMAT_VERSION = 1


class _Error(ValueError):
    """Reported by :func:`manual_bp.serialization.load` as a ``SerializationError``."""


def sequential_header(model: Sequential) -> dict[str, Any]:
    """Everything but the arrays: architecture, cost, dtype, mode and extra layer state."""
    config = model.get_config()
    extra = {path: layer.get_extra_state() for path, layer in model.named_layers()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": config["dtype"],
        "layers": config["layers"],
        "cost_config": config["cost"],
        "input_shape": config["input_shape"],
        "ignore_index": config.get("ignore_index"),
        "training": model.training,
        "extra_state": {path: state for path, state in extra.items() if state},
    }


def write_sequential(model: Sequential, path: Path, atomic_write) -> None:
    """Serialise ``model`` to ``path`` (suffix already checked) with ``atomic_write``."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name, array in {**params, **buffers}.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"cannot save {path}: {name} contains non-finite values")
    header = sequential_header(model)
    if path.suffix.lower() == ".json":
        document = dict(header)
        document["parameters"] = {name: array.tolist() for name, array in params.items()}
        document["buffers"] = {name: array.tolist() for name, array in buffers.items()}
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
        atomic_write(path, (text + "\n").encode("utf-8"))
        return
    arrays = {f"param:{name}": np.asarray(a) for name, a in params.items()}
    arrays.update({f"buffer:{name}": np.asarray(a) for name, a in buffers.items()})
    buffer = io.BytesIO()
    np.savez(buffer, config=np.array(json.dumps(header)), **arrays)
    atomic_write(path, buffer.getvalue())


def split_npz_arrays(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Move ``param:*``/``buffer:*`` arrays of an ``.npz`` into the document."""
    document["parameters"], document["buffers"] = {}, {}
    for key, array in arrays.items():
        kind, _, name = key.partition(":")
        if kind == "param":
            document["parameters"][name] = array
        elif kind == "buffer":
            document["buffers"][name] = array
        else:
            raise _Error(f"unexpected array {key!r} in the archive")


def sequential_from_dict(document: dict[str, Any]) -> Sequential:
    """Build and validate a :class:`Sequential` from a saved document."""
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise _Error(
            f"unsupported format_version {version!r}; this manual_bp reads {FORMAT_VERSION}"
        )
    dtype = document.get("dtype")
    if dtype not in ("float32", "float64"):
        raise _Error(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    layers = document.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _Error("'layers' must be a non-empty list of layer configs")
    model = Sequential(
        [get_layer(config) for config in layers],
        document.get("cost_config"),
        input_shape=document.get("input_shape"),
        dtype=dtype,
        ignore_index=document.get("ignore_index"),
    )
    state: dict[str, np.ndarray] = {}
    targets = dict(model.named_parameters()) | dict(model.named_buffers())
    for section in ("parameters", "buffers"):
        values = document.get(section)
        if not isinstance(values, dict):
            raise _Error(f"'{section}' must be an object of named arrays")
        for name, value in values.items():
            state[name] = _checked_array(name, value, targets.get(name))
    model.load_state_dict(state)
    extra = document.get("extra_state", {})
    if not isinstance(extra, dict):
        raise _Error("'extra_state' must be an object")
    layers_by_path = dict(model.named_layers())
    for path, layer_state in extra.items():
        if path not in layers_by_path:
            raise _Error(f"extra_state names no layer {path!r}")
        layers_by_path[path].set_extra_state(layer_state)
    training = document.get("training", True)
    if not isinstance(training, bool):
        raise _Error(f"'training' must be true or false, got {training!r}")
    model.train(training)
    return model


def _checked_array(name: str, value: Any, target: np.ndarray | None) -> np.ndarray:
    if target is None:
        raise _Error(f"the file has {name!r}, which the model's layers do not")
    try:
        array = np.asarray(value) if isinstance(value, np.ndarray) else np.array(value)
    except (ValueError, TypeError):
        raise _Error(f"{name} is not a rectangular array of numbers") from None
    if array.dtype.kind not in "fiub":
        raise _Error(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape != target.shape:
        raise _Error(f"{name} has shape {array.shape}; the model needs {target.shape}")
    if target.dtype.kind in "iu":  # counters (num_batches_tracked): whole numbers in range
        return _checked_integers(name, array, target.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target.dtype)  # a float64 beyond float32's range becomes inf
    if not np.isfinite(cast).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        raise _Error(f"{name} has a value at index {index} that is not finite in {target.dtype}")
    if name.rsplit(".", 1)[-1] == "running_var" and (cast < 0).any():
        index = tuple(int(i) for i in np.argwhere(cast < 0)[0])
        raise _Error(f"{name} has a negative variance at index {index}")
    return cast


def _checked_integers(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    values = array.astype(np.float64) if array.dtype.kind == "f" else array
    whole = np.isfinite(values) & (values == np.round(values)) if array.dtype.kind == "f" else True
    if not np.all(whole) or (values < max(info.min, 0)).any() or (values > info.max).any():
        raise _Error(f"{name} must hold whole numbers in [0, {info.max}]")
    return array.astype(dtype)


def is_sequential_document(document: dict[str, Any]) -> bool:
    return document.get("format") == FORMAT
