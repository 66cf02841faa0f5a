"""Hostile scalar arguments of the GPT (issue 24's rule for a new model): ``GPTConfig``'s
constructor arguments and ``GPT.generate``'s ``max_new_tokens``, ``temperature``, ``top_k``
and ``rng``. The data arguments (``x``, ``y``, ``idx``, ``out``, ``targets``, ``dout``) are
driven by ``tests/test_hostile_layers.py::test_hostile_inputs_to_every_model_method``.

The property: either the value is taken (and then the result is what a valid value gives)
or one ``TypeError``/``ValueError`` raised by manual_bp, one line, naming the argument.
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import GPT, GPTConfig

VALID = dict(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4)
#: hostile values of a scalar argument (and the edges of the integer ones)
HOSTILE = [None, "3", b"3", 1.5, -1, 0, 1, True, False, float("nan"), float("inf"),
           -float("inf"), 1e-300, complex(1, 0), np.array([2]), [2], np.int64(2),
           np.float32(0.5), object(), 2**70]  # fmt: skip


def _ours(error: BaseException) -> bool:
    last = traceback.extract_tb(error.__traceback__)[-1]
    return "/manual_bp/" in last.filename.replace("\\", "/") and "raise" in (last.line or "")


def _refused_in_one_line(call: Any, name: str) -> Any:
    """``call()``'s result, or None after checking its refusal names ``name`` in one line."""
    try:
        return call()
    except (TypeError, ValueError) as error:
        message = str(error)
        assert _ours(error), f"not manual_bp's raise: {message!r}"
        assert "\n" not in message and f"{name} " in message, message
        return None


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from([*VALID, "dropout", "bias", "tie_weights"]),
       value=st.sampled_from(HOSTILE))  # fmt: skip
def test_gpt_config_arguments_are_refused_in_one_line(name, value):
    kwargs = {**VALID, name: value}
    config = _refused_in_one_line(lambda: GPTConfig(**kwargs), name)
    if config is not None:  # taken: stored as Python's own scalar (saved as JSON)
        stored = getattr(config, name)
        assert type(stored) in (int, float, bool) and stored == value
        model = _refused_in_one_line(lambda: GPT(config, seed=0), "config")  # 2**70 layers
        assert model is not None or value == 2**70
        if model is not None:
            assert model.get_config()["config"][name] == stored


@pytest.mark.parametrize(
    ("name", "taken", "refused"),
    [
        ("n_head", 4, 3),  # divides n_embd 4 / does not
        ("dropout", 0.0, 1.0),  # [0, 1): both ends
        ("vocab_size", 1, 0),
    ],
)
def test_gpt_config_edges(name, taken, refused):
    width = {"n_head": {"n_embd": 4}}.get(name, {})
    GPTConfig(**{**VALID, **width, name: taken})
    with pytest.raises(ValueError, match=f"GPTConfig: {name}"):
        GPTConfig(**{**VALID, **width, name: refused})


@pytest.fixture(scope="module")
def model() -> GPT:
    return GPT(GPTConfig(**VALID), seed=0)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(["max_new_tokens", "temperature", "top_k", "rng"]),
       value=st.sampled_from(HOSTILE))  # fmt: skip
def test_generate_scalars_are_refused_in_one_line(model, name, value):
    idx = np.array([[1, 2], [3, 0]])
    kwargs = {"max_new_tokens": 3, name: value}
    out = _refused_in_one_line(lambda: model.generate(idx, **kwargs), name)
    if out is not None:
        steps = kwargs["max_new_tokens"]
        assert out.shape == (2, 2 + steps) and out.dtype == np.int64
        assert np.array_equal(out[:, :2], idx) and ((out >= 0) & (out < 5)).all()


def test_generate_edges(model):
    """``max_new_tokens`` 0 (the prompt back) / 1; ``top_k`` 1 (greedy: argmax) / 0 refused;
    ``top_k`` ≥ vocab_size is no restriction (nanoGPT's ``min(top_k, V)``); an empty batch
    gives an empty result, as torch; the context is cropped at ``block_size``."""
    idx = np.array([[1, 2, 3], [0, 4, 4]])
    assert np.array_equal(model.generate(idx, 0), idx)
    assert model.generate(idx, 1, rng=0).shape == (2, 4)
    greedy = model.generate(idx, 6, top_k=1, rng=0)
    for t in range(3, 9):
        last = model.infer(greedy[:, max(0, t - 4) : t])[:, -1]
        assert np.array_equal(greedy[:, t], last.argmax(-1))
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        model.generate(idx, 1, top_k=0)
    full = model.generate(idx, 5, rng=7)
    for k in (5, 6, 1000):
        assert np.array_equal(model.generate(idx, 5, top_k=k, rng=7), full)
    assert model.generate(idx[:0], 3).shape == (0, 6)
    with pytest.raises(ValueError, match="temperature must be a finite real number > 0"):
        model.generate(idx, 1, temperature=0.0)


def test_train_fuses_a_gpt_step_and_refuses_fast_with_dropout_in_one_line(model):
    """``train(..., fast=True)`` on a GPT with dropout: one line naming ``fast=False``, before
    any step (the parameters unchanged); without ``fast`` it trains on the readable step
    (the masks drawn), and the model's ``fast_training`` is left as it was."""
    from manual_bp.training import train

    dropped = GPT(GPTConfig(5, 4, 1, 1, 4, dropout=0.1), seed=0)
    x = np.random.default_rng(0).integers(0, 5, (8, 4))
    before = dropped.state_dict()
    with pytest.raises(ValueError, match=r"^GPT: the fast step does not fuse dropout .*fast=False"):
        train(dropped, x, x, epochs=1, batch_size=4, optimizer="adam", fast=True)
    assert all(np.array_equal(v, dropped.state_dict()[k]) for k, v in before.items())
    train(dropped, x, x, epochs=1, batch_size=4, optimizer="adam", seed=0)
    assert not dropped.fast_training
    with pytest.raises(ValueError, match=r"^GPT: its parts have no per-layer fused step"):
        model.layers[0].fast_step()


def test_targets_with_no_counted_position_are_refused_naming_the_argument(model):
    """torch's mean over no target is NaN; the library refuses it, naming the caller's name."""
    x, none = np.array([[1, 2]]), np.full((1, 2), -1)
    for call, name in ((model.backprop, "y"), (model.loss, "targets"), (model.accuracy, "y"),
                       (model.cost_and_outputs, "y")):  # fmt: skip
        with pytest.raises(ValueError, match=f"GPT: {name} has no counted position"):
            call(x, none)
    with pytest.raises(ValueError, match="GPT: targets has no counted position"):
        model.output_cost(model.infer(x), none)


def test_nanogpt_step_is_the_train_step(model):
    """:class:`NanoGPTStep` (what ``train`` runs) is ``train_step``'s iteration: clipping (an
    active bound), AdamW in two groups, the warm-up cosine rate per iteration."""
    from manual_bp.schedules_warmup import WarmupCosineLR
    from manual_bp.training.gpt_train import NanoGPTStep, configure_optimizers, train_step

    rng = np.random.default_rng(1)
    a, b = model.copy(), model.copy()
    step = NanoGPTStep(configure_optimizers(a, 0.1, 1e-2), 1e-3, WarmupCosineLR(None, 2, 5))
    plain = configure_optimizers(b, 0.1, 1e-2)
    schedule = WarmupCosineLR(plain, 2, 5)
    for _ in range(4):
        x, y = rng.integers(0, 5, (3, 4)), rng.integers(0, 5, (3, 4))
        loss, grads = a.loss_and_gradients(x, y)
        step.step(a.parameter_arrays(), grads)
        assert loss == train_step(b, plain, x, y, 1e-3, schedule)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[name], err_msg=name)
    assert step.lr == plain.lr


@pytest.mark.parametrize(
    ("entry", "position", "name"),
    [("forward", 0, "x"), ("infer", 0, "x"), ("predict", 0, "x"), ("backprop", 0, "x"),
     ("backprop", 1, "y"), ("loss", 0, "idx"), ("loss", 1, "targets"), ("generate", 0, "idx"),
     ("accuracy", 1, "y"), ("cost_and_outputs", 0, "x"), ("output_cost", 1, "targets")],
)  # fmt: skip
def test_every_entry_names_the_argument_the_caller_passed(model, entry, position, name):
    """A wrong shape is refused with the caller's own name first (``x`` of ``forward``,
    ``idx`` of ``loss``): the hostile driver's check ("x " in "idx ") cannot tell them apart."""
    x = np.array([[1, 2, 3]])
    args = {"generate": [x, 1], "forward": [x], "infer": [x], "predict": [x]}.get(entry, [x, x])
    if entry == "output_cost":
        args[0] = model.infer(x)
    args[position] = x[..., None]  # rank + 1
    with pytest.raises(ValueError) as caught:
        getattr(model, entry)(*args)
    assert str(caught.value).startswith(f"GPT: {name} has shape"), caught.value
