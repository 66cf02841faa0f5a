"""Save/load of corrupt, inconsistent and hostile files (a clear error naming the file and
the field, never a non-finite model), and the per-layer-path modes of a document. Split from
tests/test_serialization.py (round trips and atomic writes)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import manual_bp.serialization as serialization
from manual_bp.models.network import Network
from manual_bp.serialization import (
    SerializationError,
    load,
    load_network,
    save,
    save_network,
)

SUFFIXES = (".json", ".npz")


# ---------------------------------------------------------------------- corrupt files
def saved_document(tmp_path) -> dict:
    path = save_network(Network([3, 2, 2], "sigmoid", seed=0), tmp_path / "good.json")
    return json.loads(path.read_text())


def corrupt(document: dict, change) -> dict:
    change(document)
    return document


CORRUPTIONS = {
    "not an object": (lambda d: [1, 2], "expected a JSON object"),
    "wrong format": (lambda d: corrupt(d, lambda d: d.update(format="x")), "not a manual_bp"),
    "future version": (
        lambda d: corrupt(d, lambda d: d.update(format_version=99)),
        "unsupported format_version 99",
    ),
    "bad sizes": (
        lambda d: corrupt(d, lambda d: d["config"].update(sizes=[3, -2, 2])),
        "sizes must list at least two positive layer widths",
    ),
    "weight shape": (
        lambda d: corrupt(d, lambda d: d["parameters"]["2.weight"].append([0.0, 0.0])),
        r"parameter 2\.weight has shape \(3, 2\); the model needs \(2, 2\)",
    ),
    "ragged weights": (
        lambda d: corrupt(d, lambda d: d["parameters"]["0.weight"][0].pop()),
        r"parameter 0\.weight is not a rectangular array",
    ),
    "missing biases": (
        lambda d: corrupt(d, lambda d: d["parameters"].pop("0.bias")),
        r"'parameters' lacks \['0\.bias'\]",
    ),
    "unknown parameter": (
        lambda d: corrupt(d, lambda d: d["parameters"].update({"4.weight": [[0.0]]})),
        "'parameters' has '4.weight', which the model does not",
    ),
    "bias shape": (
        lambda d: corrupt(d, lambda d: d["parameters"]["0.bias"].pop()),
        r"parameter 0\.bias has shape \(1,\)",
    ),
    "string weight": (
        lambda d: corrupt(d, lambda d: d["parameters"]["0.weight"][0].__setitem__(1, "x")),
        r"parameter 0\.weight is not a rectangular array of numbers",
    ),
    "huge weight": (
        lambda d: corrupt(d, lambda d: d["parameters"]["0.weight"][1].__setitem__(2, "__huge__")),
        r"parameter 0\.weight has a non-finite value at index \(1, 2\)",
    ),
    "bad dtype": (
        lambda d: corrupt(d, lambda d: d["config"].update(dtype="float16")),
        "dtype must be 'float32' or 'float64'",
    ),
    "unknown activation": (
        lambda d: corrupt(d, lambda d: d["config"]["activations"][0].update(name="swishy")),
        "unknown activation 'swishy'; valid names:",
    ),
    "activation count": (
        lambda d: corrupt(d, lambda d: d["config"]["activations"].pop()),
        "got 1 activations for 2 layers",
    ),
    "unknown model": (
        lambda d: corrupt(d, lambda d: d["config"].update(name="forest")),
        "unknown model 'forest'",
    ),
    "config not an object": (
        lambda d: corrupt(d, lambda d: d.update(config=[1])),
        "'config' must be an object",
    ),
    "config field missing": (
        lambda d: corrupt(d, lambda d: d["config"].pop("sizes")),
        "the model config lacks the field 'sizes'",
    ),
    "bad mode": (
        lambda d: corrupt(d, lambda d: d.update(training="yes")),
        "'training' must be true, false or an object naming every layer path",
    ),
    "mode of one layer": (
        lambda d: corrupt(d, lambda d: d.update(training={"0": True, "1": 1, "2": 1, "3": 1})),
        r"training\['1'\] must be true or false",
    ),
    "extra state of no layer": (
        lambda d: corrupt(d, lambda d: d.update(extra_state={"7": {}})),
        "extra_state names no layer '7'",
    ),
    "extra state for a stateless layer": (
        lambda d: corrupt(d, lambda d: d.update(extra_state={"0": {"generator": 1}})),
        r"extra_state\['0'\]: Dense has no extra state",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_inconsistent_json_names_file_and_fault(tmp_path, case):
    change, message = CORRUPTIONS[case]
    path = tmp_path / "bad.json"
    text = json.dumps(change(saved_document(tmp_path)))
    path.write_text(text.replace('"__huge__"', "1e400"))
    with pytest.raises(SerializationError, match=message) as info:
        load_network(path)
    assert str(info.value).startswith(f"{path}: ")
    assert path.read_text() == text.replace('"__huge__"', "1e400")  # a failed load never writes


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_file(tmp_path, suffix):
    path = save_network(Network([3, 4, 2], seed=0), tmp_path / f"net{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = "corrupt JSON" if suffix == ".json" else r"corrupt \.npz file"
    with pytest.raises(SerializationError, match=rf"net\{suffix}: {message}"):
        load_network(path)


def test_nan_literal_in_json(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(saved_document(tmp_path)).replace("[[", "[[NaN,", 1))
    with pytest.raises(SerializationError, match="non-finite value NaN"):
        load_network(path)


def test_npz_with_wrong_arrays(tmp_path):
    path = save_network(Network([3, 2, 2], seed=0), tmp_path / "net.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["param:2.weight"] = np.zeros((2, 5))
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(SerializationError, match=r"parameter 2\.weight has shape \(2, 5\)"):
        load_network(tmp_path / "shape.npz")
    arrays.pop("param:0.bias")
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(SerializationError, match=r"'parameters' lacks \['0\.bias'\]"):
        load_network(tmp_path / "missing.npz")
    arrays["W0"] = np.zeros((2, 3))
    np.savez(tmp_path / "stray.npz", **arrays)
    with pytest.raises(SerializationError, match="unexpected array 'W0' in the archive"):
        load_network(tmp_path / "stray.npz")
    arrays = {"param:0.weight": np.zeros((2, 3))}
    np.savez(tmp_path / "noconfig.npz", **arrays)
    with pytest.raises(SerializationError, match="missing the 'config' entry"):
        load_network(tmp_path / "noconfig.npz")


def test_npz_with_object_array_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    with zipfile.ZipFile(path, "w") as archive, archive.open("config.npy", "w") as handle:
        np.lib.format.write_array(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(
        SerializationError, match=r"pickled\.npz: entry 'config' holds Python"
    ) as info:
        load_network(path)
    assert "allow_pickle" not in str(info.value)  # not a hint to load it unsafely


# ---------------------------------------------------------------------- hostile files (issue 14)
STACK_SPEC = "dense(4), batchnorm1d, relu, dropout(0.2), dense, sigmoid"


def _model(kind: str, dtype=np.float64):
    """A Network, or a Sequential with parameters, buffers (batch norm) and extra state
    (dropout's generator): every section a saved file has."""
    from manual_bp.model_spec import parse_layers
    from manual_bp.models.sequential import Sequential

    if kind == "network":
        return Network([3, 4, 2], ["tanh", "sigmoid"], "quadratic", seed=0, dtype=dtype)
    return Sequential.from_spec(parse_layers(STACK_SPEC), (3,), 2, seed=0, dtype=dtype)


def _arrays(model) -> dict[str, np.ndarray]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _rewrite(path: Path, change) -> None:
    """Apply ``change(document, arrays)`` to a saved file, JSON or .npz, in place."""
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        change(document, None)
        path.write_text(json.dumps(document))
        return
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    document = json.loads(str(arrays["config"]))
    change(document, arrays)
    arrays["config"] = np.array(json.dumps(document))
    np.savez(path, **arrays)


def _set_value(kind: str, entry: str, index: tuple, value: float):
    """A change setting element ``index`` of a parameter or buffer in either format."""
    is_buffer = "running" in entry or "tracked" in entry

    def change(document, arrays):
        if arrays is not None:  # .npz: the arrays themselves, widened to float64
            key = f"{'buffer' if is_buffer else 'param'}:{entry}"
            array = arrays[key].astype(np.float64)
            array[index] = value
            arrays[key] = array
            return
        parent = document["buffers" if is_buffer else "parameters"]
        where = (entry, *index)
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value

    return change


class TestLoadNeverYieldsNonFinite:
    """Every load path (Network, Sequential; JSON, .npz): no non-finite parameter or
    buffer, also after the cast to the model's dtype; counters whole; variances ≥ 0."""

    @pytest.mark.parametrize("suffix", SUFFIXES)
    @pytest.mark.parametrize(
        "kind, entry, index",
        [
            ("network", "0.weight", (1, 2)),
            ("network", "2.bias", (0,)),
            ("sequential", "0.weight", (2, 1)),
        ],
    )
    def test_float64_value_overflowing_float32_is_refused(
        self, tmp_path, kind, entry, index, suffix
    ):
        path = save(_model(kind, np.float32), tmp_path / f"m{suffix}")
        _rewrite(path, _set_value(kind, entry, index, 1e300))
        with pytest.raises(SerializationError, match=r"(overflows|not finite in) float32"):
            load(path)
        _rewrite(path, _set_value(kind, entry, index, 3e38))  # the largest float32s: fine
        assert np.all([np.isfinite(a).all() for a in _arrays(load(path)).values()])

    @pytest.mark.parametrize("suffix", SUFFIXES)
    @pytest.mark.parametrize(
        "entry, index, value, message",
        [
            ("1.running_var", (2,), -0.5, "negative variance"),
            ("1.num_batches_tracked", (), 1.5, "whole numbers"),
            ("1.num_batches_tracked", (), -1, "whole numbers"),
            ("1.num_batches_tracked", (), 1e300, "whole numbers"),
        ],
    )
    def test_buffers_out_of_their_domain_are_refused(
        self, tmp_path, suffix, entry, index, value, message
    ):
        path = save(_model("sequential"), tmp_path / f"m{suffix}")
        _rewrite(path, _set_value("sequential", entry, index, value))
        with pytest.raises(SerializationError, match=message):
            load(path)

    @given(data=st.data())
    @pytest.mark.parametrize("kind", ["network", "sequential"])
    def test_any_corrupted_leaf_is_an_error_or_a_finite_model(self, tmp_path_factory, kind, data):
        """Replace one value anywhere in a saved JSON document with a hostile one: loading
        raises SerializationError naming the file, or gives a model whose every parameter
        and buffer is finite with the original shapes — never another exception."""
        model = _model(kind, data.draw(st.sampled_from([np.float64, np.float32])))
        path = save(model, tmp_path_factory.mktemp("fuzz") / "m.json")
        document = json.loads(path.read_text())
        leaves = list(_leaves(document))
        where = data.draw(st.sampled_from(leaves))
        value = data.draw(HOSTILE_JSON)
        _replace(document, where, value)
        path.write_text(json.dumps(document))
        try:
            loaded = load(path)
        except SerializationError as error:
            assert str(error).startswith(str(path))
            assert "\n" not in str(error)
            return
        shapes = {k: a.shape for k, a in _arrays(model).items()}
        arrays = _arrays(loaded)
        assert {k: a.shape for k, a in arrays.items()} == shapes
        assert all(np.isfinite(a).all() for a in arrays.values())


HOSTILE_JSON = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 1e39, 3.5e38, -0.0, 0, -1, 2**63, 10**30, True, None]),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _leaves(node, where=()):
    """Paths to every scalar in a JSON document (and to small lists, as a whole)."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, (*where, key))
    elif isinstance(node, list):
        if where:
            yield where
        for k, child in enumerate(node):
            yield from _leaves(child, (*where, k))
    else:
        yield where


def _replace(document, where, value):
    for key in where[:-1]:
        document = document[key]
    document[where[-1]] = value


def test_mixed_modes_are_saved_per_layer_path(tmp_path):
    model = _model("sequential")
    model.train()
    model.layers[2].eval()  # the relu at path "2"; dropout (with a generator) at "3"
    document = serialization.model_to_document(model)
    assert document["training"] == {
        "0": True,
        "1": True,
        "2": False,
        "3": True,
        "4": True,
        "5": True,
    }
    assert set(document["extra_state"]) == {"3"}
    model.eval()
    assert serialization.model_to_document(model)["training"] is False
