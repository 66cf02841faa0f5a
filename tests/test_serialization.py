"""Save/load: exact round trips (JSON and .npz, float64 and float32) and atomic writes.
Corrupt, inconsistent and hostile files: tests/test_serialization_documents.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import manual_bp.serialization as serialization
import manual_bp.serialization_checks as serialization_checks
from manual_bp.layers.containers import stack_forward
from manual_bp.models.network import Network
from manual_bp.serialization import (
    FORMAT,
    FORMAT_VERSION,
    SerializationError,
    load,
    load_network,
    network_to_dict,
    save,
    save_network,
)
from reference.cases import build_case
from tests.strategies import network_specs

SUFFIXES = (".json", ".npz")


def extreme_parameters(net: Network, seed: int) -> None:
    """Fill the parameters with finite values over the whole exponent range of the dtype
    (subnormals, huge, negative zero): only an exact format survives these."""
    rng = np.random.default_rng(seed)
    info = np.finfo(net.dtype)
    n = net._params.size
    exponents = rng.integers(int(np.log10(info.smallest_subnormal)) + 1, info.maxexp // 4, n)
    values = rng.standard_normal(n) * 10.0 ** exponents.astype(np.float64)
    with np.errstate(over="ignore"):
        values = values.astype(net.dtype)
    values[~np.isfinite(values)] = info.max
    values[:: max(n // 3, 1)] = -0.0
    net._params[...] = values


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------- round trips
@given(
    spec=network_specs(max_depth=3, max_width=8, max_batch=4),
    dtype=st.sampled_from([np.float64, np.float32]),
    suffix=st.sampled_from(SUFFIXES),
)
def test_round_trip_is_bit_exact(tmp_path_factory, spec, dtype, suffix):
    net, x, _ = build_case(spec, dtype=dtype)
    path = tmp_path_factory.mktemp("net") / f"net{suffix}"
    save_network(net, path)
    loaded = load_network(path)
    assert loaded.get_config() == net.get_config()
    assert same_bits(loaded._params, net._params)
    with np.errstate(all="ignore"):  # saturating activations may overflow: same on both
        assert same_bits(loaded.feedforward(x), net.feedforward(x))


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]))
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_of_extreme_values(tmp_path_factory, suffix, seed, dtype):
    net = Network([3, 4, 2], ["tanh", "sigmoid"], "quadratic", dtype=dtype)
    extreme_parameters(net, seed)
    path = tmp_path_factory.mktemp("net") / f"net{suffix}"
    save_network(net, path)
    assert same_bits(load_network(path)._params, net._params)


def test_round_trip_keeps_hyperparameters(tmp_path):
    net = Network(
        [4, 5, 3],
        [{"name": "leaky-relu", "alpha": 0.3}, "softmax"],
        "log-likelihood" if "log-likelihood" in _costs() else "cross-entropy",
        initializer="large",
        seed=3,
    )
    for suffix in SUFFIXES:
        loaded = load_network(save_network(net, tmp_path / f"n{suffix}"))
        assert loaded.activations == net.activations
        assert loaded.cost == net.cost
        assert loaded.initializer == "large"


def _costs() -> list[str]:
    from manual_bp.costs import COSTS

    return COSTS.names()


def test_json_carries_config_and_state_dict_with_exact_floats(tmp_path):
    net = Network([3, 2, 2], "sigmoid", "cross-entropy", seed=0)
    net.weights[0][0, 0] = 0.1  # not representable: repr must write the shortest exact form
    path = save_network(net, tmp_path / "net.json")
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT == "manual_bp.model"
    assert document["format_version"] == FORMAT_VERSION == 3
    config = document["config"]
    assert config == net.get_config()
    assert config["name"] == "network" and config["sizes"] == [3, 2, 2]
    assert config["cost"]["name"] == "cross-entropy"
    assert config["dtype"] == "float64"
    assert [a["name"] for a in config["activations"]] == ["sigmoid", "sigmoid"]
    assert list(document["parameters"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert np.array(document["parameters"]["2.weight"]).shape == (2, 2)
    assert np.array(document["parameters"]["0.bias"]).shape == (2,)
    assert document["parameters"]["0.weight"][0][0] == 0.1
    assert document["buffers"] == {} and document["extra_state"] == {}
    assert document["training"] is True
    assert document == json.loads(json.dumps(network_to_dict(net)))


def test_npz_loads_without_pickle(tmp_path):
    net = Network([3, 2, 2], "sigmoid", seed=0, dtype=np.float32)
    path = save_network(net, tmp_path / "net.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == [
            "config",
            "param:0.bias",
            "param:0.weight",
            "param:2.bias",
            "param:2.weight",
        ]
        assert archive["param:0.weight"].dtype == np.float32
        assert json.loads(str(archive["config"]))["config"]["sizes"] == [3, 2, 2]
    for module in (serialization, serialization_checks):
        source = Path(module.__file__).read_text()
        assert "import pickle" not in source and "allow_pickle=True" not in source


def test_loads_nielsens_network2_file(tmp_path):
    net = Network([3, 4, 2], "sigmoid", "cross-entropy", seed=1)
    nielsen = {  # network2.Network.save: biases as (n, 1) columns, cost class name
        "sizes": [3, 4, 2],
        "weights": [W.tolist() for W in net.weights],
        "biases": [b[:, None].tolist() for b in net.biases],
        "cost": "CrossEntropyCost",
    }
    path = tmp_path / "nielsen.json"
    path.write_text(json.dumps(nielsen))
    loaded = load_network(path)
    assert type(loaded) is Network
    assert loaded.cost.name == "cross-entropy"
    assert same_bits(loaded._params, net._params)


# ---------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_keeps_original_and_leaves_no_temp_file(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"net{suffix}"
    first = Network([2, 2], seed=0)
    save_network(first, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_network(Network([2, 2], seed=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_non_finite_parameters_are_refused_before_writing(tmp_path):
    path = tmp_path / "net.json"
    net = Network([2, 3, 2], seed=0)
    save_network(net, path)
    before = path.read_bytes()
    net.biases[1][1] = np.nan
    with pytest.raises(ValueError, match=r"parameter 2\.bias contains non-finite values"):
        save_network(net, path)
    assert path.read_bytes() == before


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "net.npz"
    save_network(Network([2, 2], seed=0), path)
    second = Network([2, 3, 2], seed=1)
    save_network(second, path)
    assert load_network(path).sizes == [2, 3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]


def test_bad_paths(tmp_path):
    net = Network([2, 2], seed=0)
    with pytest.raises(ValueError, match=r"unsupported file type '\.pkl'"):
        save_network(net, tmp_path / "net.pkl")
    with pytest.raises(FileNotFoundError, match=r"directory .* does not exist"):
        save_network(net, tmp_path / "missing" / "net.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_network(tmp_path / "nothing.json")


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_ignore_index_survives_save_and_load(tmp_path, suffix):
    """SEQ.ignore_index is part of the model: a loaded model masks the same positions (its
    cost on padded labels equals the original's) and a hostile value is named."""
    from manual_bp import Sequential, load, save
    from manual_bp.layers import Dense

    model = Sequential([Dense(3, 4), "softmax"], "log-likelihood", ignore_index=-1, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    y = np.array([0, -1, 3, -1, 2])
    path = tmp_path / f"model{suffix}"
    save(model, path)
    loaded = load(path)
    assert loaded.ignore_index == -1
    assert loaded.total_cost(x, y) == model.total_cost(x, y)
    if suffix == ".json":
        document = json.loads(path.read_text())
        document["config"]["ignore_index"] = "pad"
        path.write_text(json.dumps(document))
        with pytest.raises(SerializationError, match=r"model\.json: ignore_index must be"):
            load(path)


# ---------------------------------------------------------------------- every model, one path
ROUND_TRIPS = (".json", ".npz", "copy")


def _random_model(data, kind: str):
    """``(model, x, y)``: a random stack of ``kind`` (reference.stack.random_stack) or a
    random Network, with a random training/evaluation mode per layer path."""
    import reference.checks_attention
    import reference.checks_convolution
    import reference.checks_layers
    import reference.checks_sequences  # noqa: F401  (they register the blocks)
    from reference.stack import BLOCKS, random_stack

    assert all(BLOCKS.values()), "a data kind without registered blocks"

    if kind == "network":
        spec = data.draw(network_specs(max_depth=3, max_width=6, max_batch=4))
        model, x, y = build_case(spec, dtype=data.draw(st.sampled_from(DTYPES)))
    else:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        model, x, y = random_stack(rng, kind, max_blocks=2)
    for _, layer in model.named_layers():
        layer.training = data.draw(st.booleans())
    return model, model.prepare_inputs(x), model.prepare_targets(y, len(x))


DTYPES = (np.float64, np.float32)


def _modes(model) -> dict[str, bool]:
    return {path: layer.training for path, layer in model.named_layers()}


def _extra(model) -> dict[str, dict]:
    return {path: layer.get_extra_state() for path, layer in model.named_layers()}


def _same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(same_bits(sa[name], sb[name]) for name in sa)
    assert _extra(a) == _extra(b)  # dropout generators: the same masks from here on
    assert _modes(a) == _modes(b)


def _step(model, x, y):
    """Output and gradients in the model's current modes (moves running statistics and
    generators exactly as training would)."""
    with np.errstate(all="ignore"):  # saturating activations may overflow: same on both
        out = stack_forward(model.layers, x)[0]  # in the current modes, for every model
        cost, grads = model.loss_and_gradients(x, y)
    return out, cost, grads


@given(data=st.data(), how=st.sampled_from(ROUND_TRIPS))
@pytest.mark.parametrize("kind", ["features", "images", "sequences", "network"])
def test_every_model_round_trips_bit_for_bit(tmp_path_factory, kind, data, how):
    """One writer and one reader for every model: a random stack of every data kind and a
    random Network come back through JSON, .npz and copy() of the same class and config,
    with the same parameters, buffers, modes and generator states, and then give the same
    outputs, costs and gradients bit for bit (and stay equal: the same buffers after)."""
    model, x, y = _random_model(data, kind)
    _step(model, x, y)  # running statistics and generators away from their initial state
    if how == "copy":
        clone = model.copy()
    else:
        clone = load(save(model, tmp_path_factory.mktemp("m") / f"m{how}"))
    assert type(clone) is type(model)
    assert clone.get_config() == model.get_config()
    _same_state(clone, model)
    (out_a, cost_a, grads_a), (out_b, cost_b, grads_b) = _step(model, x, y), _step(clone, x, y)
    assert same_bits(out_a, out_b)
    assert np.array_equal(cost_a, cost_b, equal_nan=True)
    assert all(same_bits(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    _same_state(clone, model)


def test_version_2_sequence_layers_load_batch_major(tmp_path):
    """Format 2 → 3: recurrent layers and attention were batch-major and their configs had
    no ``batch_first``; a version-2 file (nested layers included) loads batch-major, the
    model it was saved from, not torch's time-major default."""
    from manual_bp.model_spec import parse_layers
    from manual_bp.models.sequential import Sequential

    model = Sequential.from_spec(
        parse_layers("lstm(6), residual([mha(2)]), gru(4), rnn(4), dense"),
        (5, 3), 2, cost="quadratic", seed=0,
    )  # fmt: skip
    path = tmp_path / "v3.json"
    save(model, path)
    document = json.loads(path.read_text())
    assert document["format_version"] == 3

    def strip(config):
        if isinstance(config, list):
            return [strip(c) for c in config]
        if isinstance(config, dict):
            return {k: strip(v) for k, v in config.items() if k != "batch_first"}
        return config

    stripped = strip(document["config"])
    assert "batch_first" not in json.dumps(stripped)
    old = tmp_path / "v2.json"
    old.write_text(json.dumps({**document, "format_version": 2, "config": stripped}))
    x = np.random.default_rng(0).standard_normal((4, 5, 3))
    assert np.array_equal(load(old).infer(x), model.infer(x))
    # a version-3 file means what it says: without batch_first, torch's time-major default,
    # which a (batch-major) Sequential refuses, naming the layer
    path.write_text(json.dumps({**document, "config": stripped}))
    with pytest.raises(SerializationError, match=r"v3\.json: LSTM\(3, 6\) is time-major"):
        load(path)
