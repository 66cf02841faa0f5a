"""The pairwise, margin and embedding losses in torch's input forms and configurations
(``docs/losses_pairs.md``): ``reduction='none'`` shapes of the batched, unbatched and
broadcast forms; torch's own ``module_db`` and ``common_nn`` configurations of these
classes, built from torch's exact arguments; bad input; the registry.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.losses import (
    LOSSES,
    CosineEmbeddingLoss,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    MarginRankingLoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    SoftMarginLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
    get_loss,
)
from reference.checks_losses_pairs import NAMES, loss_case, run_torch

# ------------------------------------------------------------------ shapes and forms
FORMS = [
    ("hinge-embedding-loss", [(), ()]), ("hinge-embedding-loss", [(5,), (5,)]),
    ("hinge-embedding-loss", [(2, 3), (3,)]),
    ("margin-ranking-loss", [(), (), ()]), ("margin-ranking-loss", [(4,), (1,), (4,)]),
    ("soft-margin-loss", [(), ()]), ("soft-margin-loss", [(2, 3), (2, 3)]),
    ("multilabel-soft-margin-loss", [(4,), (4,)]),
    ("multilabel-soft-margin-loss", [(2, 3, 4), (4,)]),
    ("multilabel-margin-loss", [(), ()]), ("multilabel-margin-loss", [(4,), (4,)]),
    ("multilabel-margin-loss", [(3, 4), (3, 4)]),
    ("cosine-embedding-loss", [(4,), (4,), ()]), ("cosine-embedding-loss", [(3, 4), (1, 4), (3,)]),
    ("triplet-margin-loss", [(), (), ()]), ("triplet-margin-loss", [(4,), (4,), (4,)]),
    ("triplet-margin-loss", [(2, 3, 4), (1, 3, 4), (2, 1, 4)]),
    ("triplet-margin-with-distance-loss", [(3, 4), (3, 4), (3, 4)]),
    ("gaussian-nll-loss", [(4,), (4,), ()]), ("gaussian-nll-loss", [(2, 3), (2, 3), (2,)]),
    ("gaussian-nll-loss", [(2, 3), (3,), (2, 1)]),
    ("gaussian-nll-loss", [(2, 3, 4), (2, 3, 4), (1, 3, 4)]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "shapes"), FORMS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_none_shapes_and_input_forms(name, shapes, reduction):
    """``reduction='none'`` keeps torch's unreduced shape, 'mean'/'sum' give 0-d, for the
    batched, unbatched and broadcast forms; values and gradients as torch's."""
    rng = np.random.default_rng(len(FORMS))
    arrays = [np.asarray(rng.standard_normal(s)) for s in shapes]
    if name == "multilabel-margin-loss":
        n_class = shapes[0][-1] if shapes[0] else 1
        arrays[1] = np.asarray(rng.integers(-1, n_class, size=shapes[1]))
    signs = ("cosine-embedding-loss", "margin-ranking-loss", "hinge-embedding-loss",
             "soft-margin-loss")  # fmt: skip
    if name in signs:
        arrays[-1] = np.sign(arrays[-1]) + (arrays[-1] == 0)
    if name == "gaussian-nll-loss":
        arrays[2] = np.asarray(np.abs(arrays[2]))
    loss = LOSSES[name](reduction=reduction)
    value = loss(*arrays)
    ref_value, _ = run_torch(loss, arrays, np.ones(np.shape(value)) * 0.5)
    assert np.shape(value) == np.shape(ref_value)
    for comparison in loss_case(loss, arrays, seed=3):
        comparison.check()


# -------------------------------------------------------------- torch's configurations
#: the pair, margin and embedding losses this file covers (the other torch-named losses
#: have their own form tests and a walk of their own configurations)
TORCH_NAMES = {
    cls.__name__: cls
    for cls in LOSSES.classes()
    if cls.__module__.rsplit(".", 1)[1] in ("margins", "embeddings", "gaussian")
}


def _module_db_configurations():
    from torch.testing._internal import common_modules

    out = []
    for torch_name in sorted(TORCH_NAMES):
        make = getattr(common_modules, f"module_inputs_torch_nn_{torch_name}", None)
        if make is None:
            continue
        for module_input in make(None, "cpu", torch.float64, True, False):
            args = module_input.constructor_input.args
            kwargs = dict(module_input.constructor_input.kwargs)
            inputs = module_input.forward_input.args
            out.append((f"{torch_name}_{module_input.desc}", torch_name, args, kwargs, inputs))
    return out


def _closure(function) -> dict:
    """The variables a function closes over, by name."""
    cells = (c.cell_contents for c in function.__closure__)
    return dict(zip(function.__code__.co_freevars, cells, strict=True))


def _criterion_configurations():
    from torch.testing._internal.common_nn import criterion_tests, get_new_module_tests

    with torch.random.fork_rng():  # get_new_module_tests reseeds torch's global generator
        tests = criterion_tests + get_new_module_tests()
    out = []
    for test in tests:
        fullname = test.get("fullname", "")
        torch_name = next((n for n in TORCH_NAMES if fullname.startswith(f"{n}_")), None)
        if torch_name is None:
            continue
        torch.manual_seed(len(out))
        if "target_fn" in test:  # the no-batch-dim tests: the module with a reduction
            reduction = fullname.rsplit("_", 1)[1]
            first = test["input_fn"]()
            first = first if isinstance(first, tuple) else (first,)
            inputs = (*first, test["target_fn"]())
            out.append((fullname, torch_name, (), {"reduction": reduction}, inputs))
            continue
        # The functional no-reduce tests: F.<loss>(i, t, ..., reduction='none').
        fn = _closure(test["constructor"].forward)["fn"]  # wrap_functional's lambda
        cells = _closure(fn)
        kwargs = {"reduction": "none"}
        if "margin" in fullname:
            kwargs["margin"] = 0.5
        if "weights" in cells:
            kwargs["weight"] = cells["weights"].double()
        inputs = (test["input_fn"]().double(), cells["t"])
        out.append((fullname, torch_name, (), kwargs, inputs))
    return out


CONFIGURATIONS = _module_db_configurations() + _criterion_configurations()


def _as_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    return value


@pytest.mark.parametrize(
    ("label", "torch_name", "args", "kwargs", "inputs"), CONFIGURATIONS,
    ids=[c[0] for c in CONFIGURATIONS],
)  # fmt: skip
def test_torch_module_configurations(label, torch_name, args, kwargs, inputs):
    """torch's own ``module_db`` and ``common_nn`` criterion configurations of these classes
    (LOSS.* values and LOSS.*.grad gradients), built from torch's exact arguments."""
    kwargs = {k: _as_numpy(v).tolist() if k == "weight" else v for k, v in kwargs.items()}
    loss = TORCH_NAMES[torch_name](*args, **kwargs)
    arrays = [_as_numpy(t) for t in inputs]
    arrays = [np.asarray(a, dtype=np.float64) if a.dtype == np.float32 else a for a in arrays]
    for comparison in loss_case(loss, arrays, seed=len(label)):
        comparison.check()


def test_configurations_are_walked():
    """Every class with a torch configuration is walked: module_db (42), common_nn's
    criterion tests (21) and its functional no-reduce module tests (9)."""
    names = {c[1] for c in CONFIGURATIONS}
    assert names == set(TORCH_NAMES) - {"TripletMarginWithDistanceLoss"}  # torch has none
    assert len(CONFIGURATIONS) == 72


# ------------------------------------------------------------------ errors and registry
@pytest.mark.parametrize(
    ("make", "call", "match"),
    [
        (lambda: TripletMarginLoss(margin=0.0), None, "margin must be greater than 0"),
        (lambda: TripletMarginWithDistanceLoss(margin=-1.0), None, "margin must be greater"),
        (lambda: TripletMarginWithDistanceLoss(distance_function=abs), None, "distance_funct"),
        (lambda: SoftMarginLoss(reduction="avg"), None, "reduction must be one of"),
        (GaussianNLLLoss, ([1.0, 2.0], [0.0, 0.0], [1.0, -1.0]), "var has negative"),
        (GaussianNLLLoss, ([[1.0, 2.0]], [[0.0, 0.0]], [1.0, 1.0, 1.0]), "var is of incorrect"),
        (MultiLabelMarginLoss, ([1.0, 2.0], [2, 0]), r"target values must lie in \[-1, 2\)"),
        (MultiLabelMarginLoss, ([1.0, 2.0], [1.0, 0.0]), "target must hold integer"),
        (MultiLabelMarginLoss, (np.zeros((1, 2, 3)), np.zeros((1, 2, 3), int)), "input must"),
        (CosineEmbeddingLoss, (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(())), "target must"),
        (MarginRankingLoss, ([1.0], [[1.0]], [1.0]), "same number of dimensions"),
        (TripletMarginLoss, ([1.0], [[1.0]], [[1.0]]), "same number of dimensions"),
        (SoftMarginLoss, ([1, 2], [1, -1]), "input must be a floating-point array"),
        (SoftMarginLoss, ([1.0, 2.0], [[1.0], [-1.0]]), "does not broadcast to the input"),
        (MultiLabelSoftMarginLoss, (np.float64(1.0), np.float64(1.0)), "class axis"),
    ],
)
def test_bad_input_gets_one_clear_line(make, call, match):
    """A bad argument is refused with one line naming it."""
    with pytest.raises((ValueError, TypeError), match=match) as info:
        loss = make()
        if call is not None:
            loss(*call)
    assert "\n" not in str(info.value)


def test_registry_names_configs_and_torch_spellings():
    """Every class registers under its lower-case name and torch's class name; a config
    (MultiLabelSoftMargin's weight as a list) rebuilds an equal loss."""
    for cls in TORCH_NAMES.values():
        assert cls.name in NAMES
        assert get_loss(cls.__name__).__class__ is cls
        assert hasattr(torch.nn, cls.__name__)
    loss = MultiLabelSoftMarginLoss(weight=[0.5, 2.0], reduction="sum")
    assert get_loss(loss.get_config()) == loss
    assert HingeEmbeddingLoss(size_average=False).reduction == "sum"
    assert HingeEmbeddingLoss(reduce=False).reduction == "none"


@pytest.mark.parametrize("name", NAMES)
def test_float32_as_torch(name):
    """float32 arguments give float32 values and gradients (a target that is only compared
    does not promote), within float32's bound of torch's float32 results."""
    from reference.checks_losses_pairs import draw_arrays, draw_options

    rng = np.random.default_rng(32)
    for _ in range(15):
        options = draw_options(name, rng)
        loss = LOSSES[name](**options)
        arrays = [a if type(a) is float or a.dtype.kind != "f" else a.astype(np.float32)
                  for a in draw_arrays(name, options, rng)]  # fmt: skip
        value, cache = loss.forward(*arrays)
        assert np.asarray(value).dtype == np.float32
        assert all(d is None or d.dtype == np.float32 for d in loss.backward(value, cache))
        for comparison in loss_case(loss, arrays, seed=int(rng.integers(2**31))):
            comparison.check(dtype=np.float32)
