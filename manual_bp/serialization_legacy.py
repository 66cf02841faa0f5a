"""Files of release 0.1 and format version 2, upgraded in memory to the current document
(:mod:`manual_bp.serialization` then takes its one loading path).

* ``manual_bp.network`` v1 (Nielsen's ``sizes``, ``weights``, ``biases``; also his own
  ``network2.save`` files with ``(n, 1)`` bias columns and cost ``"CrossEntropyCost"``) and
  ``manual_bp.sequential`` v1 become version-2 documents, one small function each.
* Version 2 → 3: recurrent layers and attention were batch-major; they get
  ``batch_first=True`` (:func:`_batch_major_sequences`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._registry import canonical_name
from manual_bp.serialization_checks import FORMAT, FORMAT_VERSION, SerializationError

__all__ = ["LEGACY_NETWORK", "LEGACY_SEQUENTIAL", "legacy_npz_arrays", "upgraded"]

#: Cost class names used by Nielsen's ``network2.save`` -> our registry names.
NIELSEN_COSTS = {"CrossEntropyCost": "cross-entropy", "QuadraticCost": "quadratic"}
#: Format names of release 0.1 (and their short-lived ``models.`` spellings from main).
LEGACY_NETWORK = ("manual_bp.network",)
LEGACY_SEQUENTIAL = ("manual_bp.sequential",)


def upgraded(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as a version-2 document (release 0.1 and Nielsen's files upgraded)."""
    if "format" not in document and NIELSEN_COSTS.get(str(document.get("cost"))):
        document = _from_nielsen(document)
    kind = document.get("format")
    upgrade = _upgrade_network if kind in LEGACY_NETWORK else None
    upgrade = _upgrade_sequential if kind in LEGACY_SEQUENTIAL else upgrade
    expected = (1,) if upgrade else (2, FORMAT_VERSION)
    if upgrade is None and kind != FORMAT:
        raise SerializationError(
            f"not a manual_bp model file ('format' is {kind!r}, expected {FORMAT!r})"
        )
    version = document.get("format_version")
    if version not in expected or isinstance(version, bool):
        raise SerializationError(
            f"unsupported format_version {version!r} of {kind!r}; this manual_bp reads "
            f"{FORMAT!r} versions 2 and {FORMAT_VERSION} and release 0.1's files (version 1)"
        )
    document = upgrade(document) if upgrade else document
    if document.get("format_version") == 2:
        document = {**document, "format_version": FORMAT_VERSION}
        document["config"] = _batch_major_sequences(document.get("config"))
    return document


#: Layers whose default layout became torch's time-major one in format version 3.
TIME_MAJOR_SINCE_V3 = ("rnn", "lstm", "gru", "multihead-attention")


def _batch_major_sequences(config: Any) -> Any:
    """Version 2 → 3: recurrent layers and attention were batch-major, and their configs
    carried no ``batch_first`` (torch's default, False, is the default since version 3).
    Every such layer config, nested ones included, gets ``batch_first=True``."""
    if isinstance(config, list):
        return [_batch_major_sequences(item) for item in config]
    if not isinstance(config, dict):
        return config
    upgraded = {key: _batch_major_sequences(value) for key, value in config.items()}
    name = config.get("name")
    if isinstance(name, str) and canonical_name(name) in TIME_MAJOR_SINCE_V3:
        upgraded.setdefault("batch_first", True)
    return upgraded


def _upgrade_network(document: dict[str, Any]) -> dict[str, Any]:
    """``manual_bp.network`` v1: ``weights[l]``/``biases[l]`` are ``2l.weight``/``2l.bias``."""
    parameters = {}
    for key, name in (("weights", "weight"), ("biases", "bias")):
        values = document.get(key)
        if not isinstance(values, list):
            raise SerializationError(f"'{key}' must list one array per layer")
        parameters.update({f"{2 * l}.{name}": value for l, value in enumerate(values)})
    config = {
        "name": "network",
        "sizes": document.get("sizes"),
        "activations": document.get("activations"),
        "cost": document.get("cost_config", document.get("cost")),
        "dtype": document.get("dtype"),
        "initializer": document.get("initializer", "default"),
    }
    return _v2(config, True, {}, parameters, {})


def _upgrade_sequential(document: dict[str, Any]) -> dict[str, Any]:
    """``manual_bp.sequential`` v1: the config's fields at the top level."""
    config = {
        "name": "sequential",
        "layers": document.get("layers"),
        "cost": document.get("cost_config"),
        "input_shape": document.get("input_shape"),
        "dtype": document.get("dtype"),
    }
    if document.get("ignore_index") is not None:
        config["ignore_index"] = document["ignore_index"]
    return _v2(
        config,
        document.get("training", True),
        document.get("extra_state", {}),
        document.get("parameters"),
        document.get("buffers"),
    )


def _v2(config, training, extra_state, parameters, buffers) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": 2,  # then upgraded to the current version by upgraded
        "config": config,
        "training": training,
        "extra_state": extra_state,
        "parameters": parameters,
        "buffers": buffers,
    }


def legacy_npz_arrays(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
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


def _from_nielsen(document: dict[str, Any]) -> dict[str, Any]:
    """Nielsen's ``network2.save``: biases as ``(n, 1)`` columns, sigmoid layers, float64."""
    sizes, biases = document.get("sizes"), document.get("biases")
    if isinstance(biases, list):  # a column [[b1], [b2], …] -> [b1, b2, …]
        biases = [
            [r[0] if isinstance(r, list) and len(r) == 1 else r for r in b]
            if isinstance(b, list)
            else b
            for b in biases
        ]
    return {
        "format": LEGACY_NETWORK[0],
        "format_version": 1,
        "sizes": sizes,
        "cost": NIELSEN_COSTS[str(document["cost"])],
        "activations": [{"name": "sigmoid"}] * (len(sizes) - 1 if isinstance(sizes, list) else 0),
        "dtype": "float64",
        "weights": document.get("weights"),
        "biases": biases,
    }
