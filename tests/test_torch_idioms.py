"""torch's container and parameter idioms on ``Sequential`` (issue 23, item 2), each checked
against ``torch.nn.Sequential`` doing the same thing: names, order, sharing, errors."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from manual_bp import BatchNorm1d, Dense, Network, Sequential
from manual_bp.models.parameters import StateDictError


def _pair():
    """A model here and the same one in torch (parameters copied by state-dict name)."""
    ours = Sequential(
        OrderedDict([("fc1", Dense(4, 5)), ("bn", BatchNorm1d(5)), ("fc2", Dense(5, 3))]),
        seed=0,
    )
    theirs = nn.Sequential(
        OrderedDict([("fc1", nn.Linear(4, 5)), ("bn", nn.BatchNorm1d(5)), ("fc2", nn.Linear(5, 3))])
    ).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def test_three_constructor_forms_build_the_same_model():
    layers = lambda: [Dense(3, 4), "tanh", Dense(4, 2)]  # noqa: E731
    a = Sequential(*layers(), cost="quadratic", seed=1)
    b = Sequential(layers(), seed=1)
    c = Sequential(layers(), "quadratic", seed=1)  # the earlier positional cost, kept
    d = Sequential(OrderedDict((str(i), layer) for i, layer in enumerate(layers())), seed=1)
    for other in (b, c, d):
        assert other.get_config() == a.get_config()
        assert np.array_equal(other.flat_parameters, a.flat_parameters)
    with pytest.raises(ValueError, match="cost given twice"):
        Sequential([Dense(3, 2)], "quadratic", cost="quadratic")


def test_ordered_dict_names_are_torchs_state_dict_keys_in_order():
    ours, theirs = _pair()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # order and names
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    x = np.random.default_rng(0).standard_normal((6, 4))
    out = theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(ours(x), out, rtol=1e-13, atol=1e-13)
    grads = ours.backprop(x, np.zeros((6, 3)))
    assert set(grads.params) == {n for n, _ in theirs.named_parameters()}


def test_names_survive_save_load_and_copy(tmp_path):
    from manual_bp import load, save

    ours, _ = _pair()
    for clone in (
        ours.copy(),
        load(save(ours, tmp_path / "m.json")),
        load(save(ours, tmp_path / "m.npz")),
    ):
        assert clone.names == ["fc1", "bn", "fc2"]
        assert list(clone.state_dict()) == list(ours.state_dict())


def test_indexing_len_iteration_children():
    ours, theirs = _pair()
    assert len(ours) == len(theirs) == 3
    assert ours[0] is ours.layers[0] and ours[-1] is ours.layers[2]
    assert list(ours) == ours.layers == ours.children()
    assert ours.modules()[0] is ours and len(ours.modules()) == len(list(theirs.modules()))
    with pytest.raises(IndexError, match="index 3 is out of range for 3 layers"):
        ours[3]
    with pytest.raises(TypeError, match="index must be an int or a slice"):
        ours["fc1"]


def test_slice_shares_layers_and_memory_both_ways():
    ours, theirs = _pair()
    tail, ttail = ours[1:], theirs[1:]
    assert list(tail.state_dict()) == list(ttail.state_dict())  # torch keeps the keys
    assert tail[0] is ours[1]
    assert np.shares_memory(tail.flat_parameters, ours.flat_parameters)
    tail.flat_parameters[:] += 1.0  # an update through the slice ...
    assert np.array_equal(ours.state_dict()["fc2.bias"], tail.state_dict()["fc2.bias"])
    ours.layers[2].params["bias"][:] = 7.0  # ... and through the parent
    assert np.all(tail.flat_parameters[-3:] == 7.0)
    x = np.random.default_rng(1).standard_normal((4, 5))
    expected = ours.layers[2].forward(ours.layers[1].forward(x)[0])[0]
    np.testing.assert_array_equal(tail(x), expected)
    assert tail.input_shape == (5,) and tail.output_shape == (3,)
    with pytest.raises(ValueError, match="append on a slice"):
        tail.append(Dense(3, 2))
    with pytest.raises(ValueError, match="contiguous"):
        ours[::2]


def test_slice_of_a_network_is_a_sequential_sharing_its_buffer():
    net = Network([3, 4, 2], seed=0)
    head = net[:2]
    assert type(head) is Sequential and head.names == ["0", "1"]
    head.flat_parameters[:] = 0.5
    assert np.all(net.weights[0] == 0.5) and np.all(net.biases[0] == 0.5)


def test_append_names_reallocates_and_keeps_values():
    model = Sequential(Dense(3, 4), "tanh", seed=0)
    before = model.state_dict()
    old = model.flat_parameters
    assert model.append(Dense(4, 2)) is model
    assert model.names == ["0", "1", "2"] and model.output_shape == (2,)
    assert not np.shares_memory(old, model.flat_parameters)  # re-allocated (documented)
    assert all(np.array_equal(before[k], model.state_dict()[k]) for k in before)
    assert all(np.shares_memory(p, model.flat_parameters) for p in model.parameters())
    assert [n for n, _ in model.named_parameters()][-2:] == ["2.weight", "2.bias"]


def test_parameters_are_views_in_state_dict_order():
    ours, theirs = _pair()
    names = [n for n, _ in theirs.named_parameters()]
    assert len(ours.parameters()) == len(names)
    for array, name in zip(ours.parameters(), names, strict=True):
        assert array is dict(ours.named_parameters())[name]
        assert np.shares_memory(array, ours.flat_parameters)


def test_load_state_dict_with_torchs_wording_and_result():
    ours, theirs = _pair()
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert ours.load_state_dict(state) == ([], [])
    bad = dict(state)
    del bad["fc1.weight"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(
        RuntimeError,
        match=r"^Error\(s\) in loading state_dict for Sequential: "
        r'Missing key\(s\) in state_dict: "fc1.weight". '
        r'Unexpected key\(s\) in state_dict: "extra".$',
    ):
        ours.load_state_dict(bad)
    with pytest.raises(RuntimeError) as torch_error:
        theirs.load_state_dict({k: torch.tensor(v) for k, v in bad.items()})
    assert 'Missing key(s) in state_dict: "fc1.weight"' in str(torch_error.value)
    assert ours.load_state_dict(bad, strict=False) == (["fc1.weight"], ["extra"])
    wrong = dict(state, **{"fc2.bias": np.zeros(4)})
    with pytest.raises(StateDictError, match=r"size mismatch for fc2.bias"):
        ours.load_state_dict(wrong)


def test_train_and_eval_return_the_model():
    ours, _ = _pair()
    assert ours.eval() is ours and not ours.training
    assert ours.train() is ours and ours.training


def test_training_a_slice_trains_the_parents_layers():
    from manual_bp import train

    model = Sequential(Dense(3, 4), "tanh", Dense(4, 2), seed=0)
    head = model[2:]
    before = model.state_dict()
    rng = np.random.default_rng(0)
    train(
        head,
        rng.standard_normal((8, 4)),
        rng.standard_normal((8, 2)),
        epochs=1,
        batch_size=4,
        eta=0.1,
    )
    after = model.state_dict()
    assert np.array_equal(after["0.weight"], before["0.weight"])  # not in the slice
    assert not np.array_equal(after["2.weight"], before["2.weight"])  # trained through it
    assert np.array_equal(after["2.weight"], head.state_dict()["2.weight"])


def test_a_torch_state_dict_loads_as_it_is():
    """``load_state_dict(torch_model.state_dict())``: tensors (detached, float32 or float64)
    go in without conversion code, and the outputs then agree with torch's."""
    ours, _ = _pair()
    theirs = nn.Sequential(
        OrderedDict([("fc1", nn.Linear(4, 5)), ("bn", nn.BatchNorm1d(5)), ("fc2", nn.Linear(5, 3))])
    )  # float32, torch's own initialisation
    theirs(torch.randn(7, 4))  # running statistics away from their start
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    expected = theirs.eval()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(ours.eval()(x.astype(np.float64)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "names, message",
    [
        ("ab", "names must list 2 distinct layer names"),
        (["a"], "names must list 2 distinct layer names"),
        (["a", "a"], "names must list 2 distinct layer names"),
        (["a", 3], "layer names must be non-empty strings"),
        (["a", "b.c"], "layer names must be non-empty strings without '.'"),
    ],
)
def test_a_file_with_bad_names_is_one_clear_error(tmp_path, names, message):
    import json

    from manual_bp import load, save
    from manual_bp.serialization import SerializationError

    model = Sequential(OrderedDict([("fc", Dense(2, 2)), ("act", "tanh")]))
    path = save(model, tmp_path / "m.json")
    document = json.loads(path.read_text())
    document["config"]["names"] = names
    path.write_text(json.dumps(document))
    with pytest.raises(SerializationError, match=rf"m\.json: {message}"):
        load(path)


def test_curvature_and_the_torch_export_follow_the_layer_names():
    """A model built from an OrderedDict keeps its names everywhere parameters are keyed:
    the curvature walk (which maps layers to parameter keys) and ``to_torch``'s module names."""
    from manual_bp.curvature import gradient, hvp
    from reference.interop import to_torch

    def build(named: bool) -> Sequential:
        layers = [Dense(4, 3), "tanh", Dense(3, 2)]
        if named:
            layers = OrderedDict(zip(("fc1", "act", "fc2"), layers, strict=True))
        return Sequential(layers, cost="quadratic", seed=0)

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    named, plain = build(True), build(False)
    v = [rng.standard_normal(p.shape) for p in plain.parameters()]
    for ours, theirs in zip(gradient(named, x, y), gradient(plain, x, y), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(hvp(named, x, y, v), hvp(plain, x, y, v), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert list(to_torch(named).state_dict()) == [n for n, _ in named.named_parameters()]


@pytest.mark.parametrize(
    "dim, input_shape, refused",
    [(-1, (3,), False), (1, (3,), False), (None, (3,), False), (2, (5, 3), False),
     (0, (3,), True), (1, (5, 3), True), (None, (5, 3), True)],
)  # fmt: skip
def test_a_folded_softmax_must_act_on_the_classes_axis(dim, input_shape, refused):
    """log-likelihood folds softmax into δ = a − y along the last axis; a softmax along
    another dim (torch's legacy dim=None picks axis 0 of a 3-d output) would make that δ
    wrong: refused when the model is built, naming the dim."""
    from manual_bp.activations import Softmax
    from manual_bp.layers import ActivationLayer

    layers = [Dense(3, 4), ActivationLayer(Softmax(dim=dim))]
    if refused:
        with pytest.raises(
            ValueError, match=rf"folds its output softmax .* dim={dim}\b.*: use dim=-1"
        ):
            Sequential(layers, cost="log-likelihood", input_shape=input_shape)
    else:
        Sequential(layers, cost="log-likelihood", input_shape=input_shape)


@pytest.mark.parametrize("where", ["top level", "inside a residual block", "append"])
def test_a_layer_placed_twice_is_refused_naming_both_places(where):
    """torch shares a module placed twice; here it is refused (docs/conventions.md): both
    places named in one line, and a refused ``append`` leaves the model unchanged."""
    from manual_bp.layers import Residual

    d = Dense(3, 3, seed=0)
    pattern = r"layer Dense\(3, 3\) sits twice in the model \(at '0(\.0)?' and '(0\.)?2'\)"
    if where == "top level":
        with pytest.raises(ValueError, match=pattern):
            Sequential([d, "tanh", d], "quadratic", input_shape=(3,))
    elif where == "inside a residual block":
        with pytest.raises(ValueError, match=pattern):
            Sequential([Residual([d, "tanh", d])], "quadratic", input_shape=(3,))
    else:
        model = Sequential([d, "tanh"], "quadratic", input_shape=(3,), seed=0)
        before = model.flat_parameters.copy()
        with pytest.raises(ValueError, match=pattern):
            model.append(d)
        assert len(model) == 2 and model.output_shape == (3,)
        np.testing.assert_array_equal(model.flat_parameters, before)
        assert model.append(Dense(3, 2)).output_shape == (2,)


def test_a_parameterless_layer_may_sit_twice():
    """An activation layer object used twice holds no parameter: accepted, as in torch."""
    from manual_bp.layers import ActivationLayer

    act = ActivationLayer("tanh")
    model = Sequential([Dense(3, 3), act, Dense(3, 3), act], "quadratic", input_shape=(3,))
    assert len(model) == 4


@pytest.mark.parametrize(
    "family", ["Conv2d", "BatchNorm1d (train)", "LSTM", "TransformerEncoderLayer"]
)
def test_deepcopy_gives_a_model_whose_layers_view_its_own_buffer(family):
    """torch's ``copy.deepcopy(model)`` idiom: the copy's parameters are views of the copy's
    flat buffer (ndarray's own deep copy would copy each view alone, and the copy's
    training would then move its buffer but not its layers), equal to the original's;
    a training step on the copy moves the copy's layers only; the copy starts without
    the original's derived caches (the curvature gradient's kept trainer)."""
    from manual_bp.curvature import gradient
    from manual_bp.optimizers import SGD
    from manual_bp.training.fused import FusedTrainer
    from reference.curvature_families import build

    model, x, y = build(family, 2)
    gradient(model, x, y)  # keeps a trainer in model.derived
    twin = copy.deepcopy(model)
    assert twin.derived == {}
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert np.array_equal(a, b) and not np.shares_memory(a, b), name
        assert np.shares_memory(b, twin.flat_parameters), name
    before = model.flat_parameters.copy()
    x, y = twin.prepare_inputs(x), twin.prepare_targets(y, len(x))
    FusedTrainer(twin, SGD(lr=0.5)).step(x, y)
    assert np.array_equal(model.flat_parameters, before)
    assert not np.array_equal(twin.flat_parameters, before)
    moved = np.concatenate([p.ravel() for p in twin.parameter_arrays()])
    assert np.array_equal(moved, twin.flat_parameters)
