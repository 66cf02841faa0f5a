"""The layer-stack surface of ``train`` as a careless user meets it (issue 24, items 5 and 8):
every flag applies or is refused, registry names work in either spelling, a spec item of the
wrong type is named, float class labels get the message ``Network`` gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

import manual_bp.data as data
from manual_bp.activations import ACTIVATIONS
from manual_bp.cli import main
from manual_bp.commands.train import NETWORK_ONLY_FLAGS
from manual_bp.layers import LAYERS
from manual_bp.layers.build import build_layer
from manual_bp.model_spec import parse_layers
from manual_bp.models.network import Network
from manual_bp.models.sequential import Sequential
from manual_bp.training import train

STACK = "dense(16), relu, dense, softmax"
FLAG_VALUES = {
    "sizes": ["30"],
    "activation": ["tanh"],
    "output_activation": ["softmax"],
    "initializer": ["large"],
}


@pytest.fixture
def no_data(monkeypatch):
    """Loading data means the refusal came too late: fail loudly."""

    def loaded(*args, **kwargs):
        raise AssertionError("data were loaded before the flags were checked")

    monkeypatch.setattr(data, "load_digits", loaded)
    monkeypatch.setattr(data, "load_mnist", loaded)


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("manual-bp train: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def test_every_network_only_flag_is_listed():
    """The table covers every flag of the --sizes form (a new one must be added here)."""
    assert set(NETWORK_ONLY_FLAGS) == set(FLAG_VALUES)


@pytest.mark.parametrize("source", ["--layers", "--model"])
@pytest.mark.parametrize("key", NETWORK_ONLY_FLAGS)
def test_network_flags_refused_with_a_stack(key, source, tmp_path, capsys, no_data):
    flag = "--" + key.replace("_", "-")
    if source == "--layers":
        model = ["--layers", STACK]
    else:
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"layers": ["dense", "softmax"]}))
        model = ["--model", spec]
    code, out, err = _run(["train", *model, flag, *FLAG_VALUES[key]], capsys)
    assert code == 2 and out == ""
    _one_line(err, flag, "does not apply to a layer stack", source)


def test_network_flags_still_apply_without_a_stack(capsys):
    argv = ["train", "--sizes", "8", "--activation", "tanh", "--output-activation", "sigmoid",
            "--initializer", "large", "--epochs", "1", "--quiet"]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0 and err == "", err


def test_cost_contradicting_the_spec_refused(tmp_path, capsys, no_data):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"layers": ["dense", "softmax"], "cost": "log-likelihood"}))
    code, _, err = _run(["train", "--model", spec, "--cost", "quadratic"], capsys)
    assert code == 2
    _one_line(err, "--cost 'quadratic' contradicts the spec's cost 'log-likelihood'")


@pytest.mark.parametrize("given, used", [(None, "log-likelihood"), ("log-likelihood", None)])
def test_cost_from_either_place(given, used, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    layers = {"layers": ["dense", "softmax"], **({"cost": used} if used else {})}
    spec.write_text(json.dumps(layers))
    argv = ["train", "--model", spec, "--epochs", "1", "--quiet", "--save", tmp_path / "m.json"]
    code, _, err = _run(argv + (["--cost", given] if given else []), capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "m.json").read_text())
    assert "log-likelihood" in json.dumps(saved)


def _hyphenated():
    for registry in (LAYERS, ACTIVATIONS):
        for name in registry.names():
            # sorted, not a set: pytest-xdist's workers must collect the same order
            for spelling in sorted({name.replace("_", "-"), name.replace("-", "_")}):
                yield registry, name, spelling


@pytest.mark.parametrize(
    "registry, name, spelling", list(_hyphenated()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_registry_name_parses_in_either_spelling(registry, name, spelling):
    """``leaky-relu`` as listed, or ``leaky_relu``: the same class, bare or called."""
    for text in (spelling, f"{spelling}()"):
        (item,) = parse_layers(text)
        assert registry.lookup(item["name"]) is registry.lookup(name)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hardtanh(min_val=-2)", {"name": "hardtanh", "args": [], "min_val": -2}),
        ("leaky-relu(negative_slope=-0.5)",
         {"name": "leaky_relu", "args": [], "negative_slope": -0.5}),
        ("activation('leaky-relu')", {"name": "activation", "args": ["leaky-relu"]}),
    ],
)  # fmt: skip
def test_hyphens_elsewhere_keep_their_meaning(text, expected):
    """Negative numbers and hyphens inside strings are not names."""
    assert parse_layers(text) == [expected]


@pytest.mark.parametrize("text", ["a - b", "dense(3-1)", "dense - relu"])
def test_a_spaced_minus_is_still_refused(text):
    with pytest.raises(ValueError, match=r"not a layer|must be literals"):
        parse_layers(text)


@pytest.mark.parametrize(
    "item, message",
    [
        ({"name": "dense", "args": 30}, r"'args' must be a list of positional arguments, got int"),
        ({"name": "dense", "args": "30"}, r"'args' must be a list .* got str"),
        ({"name": "dense", "args": {"a": 1}}, r"'args' must be a list .* got dict"),
        ({"name": 3}, r"'name' must be a string, got 3"),
        ({"args": [3]}, r"has no 'name'"),
        ({"name": "dense", "args": [4], "bogus": 1},
         r"layer 'dense' has no option\(s\) \['bogus'\]"),
    ],
)  # fmt: skip
def test_spec_items_of_the_wrong_kind_named(item, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build_layer(item, (6,), n_outputs=3)


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 2.0, 1.0]), np.array([0.5, 1, 2, 0])])
def test_float_labels_get_networks_message_from_a_stack(labels):
    x = np.random.default_rng(0).standard_normal((4, 5))
    net = Network([5, 4, 3], "sigmoid", "cross-entropy")
    stack = Sequential.from_spec(["dense", "softmax"], (5,), 3, cost="log-likelihood")
    messages = []
    for model in (net, stack):
        with pytest.raises(ValueError) as caught:
            model.accuracy(x, labels)
        messages.append(str(caught.value))
        with pytest.raises(ValueError) as caught:
            train(model, x, labels, epochs=1, batch_size=2, eta=0.1)
        messages.append(str(caught.value))
    assert len(set(messages)) == 1, messages
    assert ("these look like labels" in messages[0]) == bool(np.all(labels == labels.round()))
