"""Files written by release 0.1 (``tests/data/release_0_1/``, see its README) still load,
to the same model: every file's evaluation-mode output equals the one the old release gave,
bit for bit. Their formats (``manual_bp.network`` v1, ``manual_bp.sequential`` v1) are
upgraded to the current document in memory and then take the one loading path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from manual_bp.layers.build import get_layer
from manual_bp.layers.containers import Flatten, Reshape, stack_forward
from manual_bp.models.network import Network
from manual_bp.models.sequential import Sequential
from manual_bp.serialization import FORMAT, SerializationError, load, save

DATA = Path(__file__).parent / "data" / "release_0_1"
FILES = sorted(
    p for p in DATA.iterdir() if p.suffix in (".json", ".npz") and p.stem != "expected_outputs"
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_every_old_file_is_covered():
    stems = {p.stem for p in FILES}
    with np.load(DATA / "expected_outputs.npz", allow_pickle=False) as expected:
        assert {key.split(":")[0] for key in expected.files} == stems
    assert len(FILES) == 2 * len(stems)  # each model in JSON and in .npz


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_old_file_loads_to_the_same_model(path, tmp_path):
    with np.load(DATA / "expected_outputs.npz", allow_pickle=False) as expected:
        x, out = expected[f"{path.stem}:x"], expected[f"{path.stem}:out"]
    model = load(path)
    kind = json.loads(path.read_text() if path.suffix == ".json" else _npz_header(path))
    assert type(model) is (Network if kind["format"] == "manual_bp.network" else Sequential)
    model.eval()
    assert same_bits(stack_forward(model.layers, x)[0], out)
    # Saved again, it is a current file and still the same model.
    again = load(save(model, tmp_path / f"again{path.suffix}"))
    assert same_bits(stack_forward(again.layers, x)[0], out)


def _npz_header(path: Path) -> str:
    with np.load(path, allow_pickle=False) as archive:
        return str(archive["config"])


def test_resaved_old_file_is_the_current_format(tmp_path):
    model = load(DATA / "stack_cnn.json")
    document = json.loads(save(model, tmp_path / "cnn.json").read_text())
    assert document["format"] == FORMAT
    assert document["config"]["layers"][0] == {"name": "reshape", "shape": [1, 6, 6]}


def test_reshape_and_flatten_round_trip_through_their_configs():
    for layer in (Reshape(1, 28, 28), Reshape(shape=[1, 6, 6]), Reshape(-1, 4), Flatten()):
        rebuilt = get_layer(layer.get_config())
        assert type(rebuilt) is type(layer)
        assert rebuilt.get_config() == layer.get_config()
        assert rebuilt.shape == layer.shape
    assert Reshape(shape=(2, 3)).shape == Reshape(2, 3).shape == Reshape((2, 3)).shape
    with pytest.raises(ValueError, match="not both"):
        Reshape(2, shape=[2])
    with pytest.raises(ValueError, match="positive sizes"):
        Reshape(shape="ab")


def _old(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("network_sigmoid_f64.json", lambda d: d.pop("biases"), "'biases' must list one array"),
        (
            "network_sigmoid_f64.json",
            lambda d: d["weights"][1].append([0.0] * 4),
            r"parameter 2\.weight has shape \(4, 4\); the model needs \(3, 4\)",
        ),
        ("network_sigmoid_f64.json", lambda d: d.update(format_version=3), "format_version 3"),
        (
            "stack_dense_bn_dropout.json",
            lambda d: d["buffers"].update({"3.running_var": [-1.0] * 8}),
            "negative variance",
        ),
        (
            "stack_dense_bn_dropout.json",
            lambda d: d.update(extra_state={"2": {"generator": 5}}),
            r"extra_state\['2'\] is not a valid state of Dropout",
        ),
    ],
)
def test_hostile_old_documents_are_named(tmp_path, name, change, message):
    document = _old(name)
    change(document)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    with pytest.raises(SerializationError, match=message) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_old_npz_with_wrong_arrays(tmp_path):
    with np.load(DATA / "network_sigmoid_f64.npz", allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays.pop("b0")
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(SerializationError, match="do not match the 2 layers"):
        load(tmp_path / "missing.npz")
