"""RNN, LSTM, GRU in every form torch accepts (issue 23), against ``torch.nn`` in float64.

torch's constructor arguments and defaults (``batch_first=False``: time-major), unbatched
``(T, F)`` inputs, ``hx`` given or not, the LSTM's ``proj_size`` (``LSTM.proj``), dropout
between stacked layers (``RNN.dropout``: torch's own masks cannot be reproduced, so torch
runs layer by layer with OUR masks in between), zero-size batches, torch's call returning
``(output, h_n)``, the products and fast steps in every layout, serialisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers import GRU, LSTM, RNN, get_layer
from manual_bp.layers.recurrent_fast import LSTMStep
from manual_bp.layers.steps import GenericStep
from manual_bp.models.sequential import Sequential

seeds = st.integers(0, 2**31 - 1)
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def _pair(kind: str, input_size: int, hidden: int, rng, **options):
    """Our layer and torch's module of ``kind`` with the same (our) parameters."""
    if kind.startswith("rnn"):
        options["nonlinearity"] = kind[4:]
    cls, module_cls = {"rnn": (RNN, torch.nn.RNN), "lstm": (LSTM, torch.nn.LSTM),
                       "gru": (GRU, torch.nn.GRU)}[kind[:4].rstrip("_")]  # fmt: skip
    ours = cls(input_size, hidden, **options, seed=rng)
    options.pop("dropout", None)
    module = module_cls(input_size, hidden, **options, dtype=torch.float64)
    module.load_state_dict({k: torch.tensor(v) for k, v in ours.params.items()})
    return ours, module


def _torch_run(module, x, hx, d_out, d_final):
    """torch's output, final states and gradients for ``C = Σ d_out ⊙ out + Σ d_final ⊙ h_n``."""
    xt = torch.tensor(x, requires_grad=True)
    given_ = None if hx is None else tuple(torch.tensor(h, requires_grad=True) for h in hx)
    call = (xt,) if given_ is None else (xt, given_ if len(given_) == 2 else given_[0])
    out, final = module(*call)
    final = final if isinstance(final, tuple) else (final,)
    loss = (out * torch.tensor(d_out)).sum()
    for f, d in zip(final, d_final, strict=True):
        loss = loss + (f * torch.tensor(d)).sum()
    loss.backward()
    d_hx = None if given_ is None else [h.grad.numpy() for h in given_]
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return out.detach().numpy(), [f.detach().numpy() for f in final], xt.grad.numpy(), d_hx, grads


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    form=st.sampled_from(["time", "batch", "unbatched"]),
    batch=st.integers(0, 3),
    length=st.integers(1, 4),
    input_size=st.integers(1, 4),
    hidden=st.integers(2, 4),
    num_layers=st.integers(1, 3),
    bias=st.booleans(),
    bidirectional=st.booleans(),
    proj=st.booleans(),
    with_hx=st.booleans(),
    seed=seeds,
)
def test_torch_forms_match_torch(
    kind, form, batch, length, input_size, hidden, num_layers, bias, bidirectional, proj,
    with_hx, seed,
):  # fmt: skip
    """BPTT.sequence, LSTM.proj in torch's forms: time-major (the default), batch-major,
    unbatched, from ``hx`` or zeros, an empty batch, projected LSTM states; outputs,
    ``h_n``/``c_n``, ∂input, ∂hx and every parameter gradient vs torch."""
    rng = np.random.default_rng(seed)
    options = dict(num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    if form != "time":
        options["batch_first"] = form == "batch"  # time-major: torch's default, not passed
    if kind == "lstm" and proj:
        options["proj_size"] = int(rng.integers(1, hidden))
    ours, module = _pair(kind, input_size, hidden, rng, **options)
    assert ours.batch_first == (form == "batch")
    shape = {"time": (length, batch, input_size), "batch": (batch, length, input_size),
             "unbatched": (length, input_size)}[form]  # fmt: skip
    x = rng.standard_normal(shape)
    rows = num_layers * ours.directions
    units = [options.get("proj_size") or hidden, hidden][: ours.cell.n_states]
    lead = (rows,) if form == "unbatched" else (rows, batch)
    hx = [rng.standard_normal((*lead, u)) for u in units] if with_hx else None
    out_shape = (*shape[:-1], ours.output_size)
    d_out = rng.standard_normal(out_shape)
    d_final = [rng.standard_normal((*lead, u)) for u in units]
    expected = _torch_run(module, x, hx, d_out, d_final)

    if ours.cell.n_states == 2:
        out, final, cache = ours.forward_sequence(x, *(hx or (None, None)))
        dx, *d_hx, grads = ours.backward_sequence(d_out, *d_final, cache)
    else:
        out, h_n, cache = ours.forward_sequence(x, None if hx is None else hx[0])
        final = (h_n,)
        dx, dh0, grads = ours.backward_sequence(d_out, d_final[0], cache)
        d_hx = [dh0]
    # a state rounds ε-relative to the magnitudes of the terms summed into it, not to the
    # (possibly cancelled) result: the bound of reference.checks_sequences
    inputs = max([1.0, *(float(np.abs(a).max(initial=0.0)) for a in [x, *(hx or [])])])
    terms = inputs * max(float(np.abs(w).sum(axis=1).max()) for k, w in ours.params.items()
                         if k.startswith("weight"))  # fmt: skip
    terms += 2.0 * max((float(np.abs(b).max()) for k, b in ours.params.items()
                        if k.startswith("bias")), default=0.0)  # fmt: skip
    for name, ours_s, theirs_s in zip(("output", "h_n", "c_n"), (out, *final),
                                      (expected[0], *expected[1]), strict=False):  # fmt: skip
        scale = np.maximum(np.abs(theirs_s), terms)
        assert_gradients_close(ours_s, theirs_s, name=name, scale=scale)
    assert_gradients_close(dx, expected[2], name="∂input")
    if hx is not None:
        for ours_d, theirs_d in zip(d_hx, expected[3], strict=True):
            assert_gradients_close(ours_d, theirs_d, name="∂hx")
    assert list(grads) == list(expected[4])  # torch's names and order
    for name, grad in grads.items():
        assert_gradients_close(grad, expected[4][name], name=f"∂{name}")
    # the Layer protocol: torch's first output; the final states give no gradient
    out2, cache2 = ours.forward(x, None if hx is None else tuple(hx))
    np.testing.assert_array_equal(out2, out)
    dx2, _ = ours.backward(d_out, cache2)
    assert dx2.shape == x.shape
    # torch's call: (output, h_n) or (output, (h_n, c_n))
    called = ours(x, None if hx is None else (tuple(hx) if len(hx) == 2 else hx[0]))
    theirs = module(torch.tensor(x))
    np.testing.assert_array_equal(called[0], out)
    assert isinstance(called[1], tuple) == isinstance(theirs[1], tuple)
    if batch == 0 and form != "unbatched":
        assert out.size == 0 and all(not g.any() for g in grads.values())


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    batch_first=st.booleans(),
    num_layers=st.integers(2, 3),
    bidirectional=st.booleans(),
    p=st.sampled_from([0.3, 0.5, 1.0]),
    seed=seeds,
)
def test_dropout_between_layers_matches_torch_with_our_masks(
    kind, batch_first, num_layers, bidirectional, p, seed
):
    """RNN.dropout: in training the output of every layer but the last is multiplied by
    ``m/(1 − p)`` (the layer's own generator); torch run layer by layer with the masks we
    drew gives the same output and gradients; evaluation mode is torch's (no dropout)."""
    rng = np.random.default_rng(seed)
    options = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    ours, module = _pair(kind, 3, 4, rng, dropout=p, **options)
    x = rng.standard_normal((5, 2, 3))
    out, cache = ours.forward(x)
    masks = cache.masks
    assert len(masks) == num_layers and masks[-1] is None
    assert all(m is not None for m in masks[:-1])
    d_out = rng.standard_normal(out.shape)
    dx, grads = ours.backward(d_out, cache)

    # torch, one layer at a time, our masks (batch-major in the core) in between
    params = {k: torch.tensor(v, requires_grad=True) for k, v in ours.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    h = xt if batch_first else xt.transpose(0, 1)
    for layer in range(num_layers):
        single = type(module)(
            h.shape[-1], 4, bidirectional=bidirectional, batch_first=True, dtype=torch.float64,
            **({"nonlinearity": ours.nonlinearity} if kind.startswith("rnn") else {}),
        )  # fmt: skip
        own = {name.replace(f"_l{layer}", "_l0"): t for name, t in params.items()
               if f"_l{layer}" in name}  # fmt: skip
        h, _ = torch.func.functional_call(single, own, (h,))
        if masks[layer] is not None:
            h = h * torch.tensor(masks[layer])
    out_t = h if batch_first else h.transpose(0, 1)
    out_t.backward(torch.tensor(d_out))
    assert_gradients_close(out, out_t.detach().numpy(), name="RNN.dropout output")
    assert_gradients_close(dx, xt.grad.numpy(), name="RNN.dropout ∂x")
    for name, tensor in params.items():
        assert_gradients_close(grads[name], tensor.grad.numpy(), name=f"RNN.dropout ∂{name}")

    # evaluation: the identity, as torch's eval mode
    ours.eval()
    module.eval()
    out_eval, cache_eval = ours.forward(x)
    assert all(m is None for m in cache_eval.masks)
    expected = module(torch.tensor(x))[0].detach().numpy()
    assert_gradients_close(out_eval, expected, name="RNN.dropout eval")


def test_dropout_masks_are_seeded_and_saved():
    """RNN.dropout: the same seed draws the same masks; the generator's state is the
    layer's extra state (a reloaded layer continues the same sequence of masks); without
    dropout the layer has no generator and no extra state (seeded inits unchanged)."""
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    a, b = LSTM(3, 5, 3, dropout=0.4, seed=7), LSTM(3, 5, 3, dropout=0.4, seed=7)
    first = [m.copy() for m in a.forward(x)[1].masks[:-1]]
    for ma, mb in zip(first, b.forward(x)[1].masks[:-1], strict=True):
        np.testing.assert_array_equal(ma, mb)
    state = a.get_extra_state()
    clone = get_layer(a.get_config())
    clone.set_extra_state(state)
    clone.params.update({k: v.copy() for k, v in a.params.items()})
    np.testing.assert_array_equal(a.forward(x)[0], clone.forward(x)[0])
    assert LSTM(3, 5, 3).get_extra_state() == {}
    np.testing.assert_array_equal(
        LSTM(3, 5, 3, seed=1).params["weight_ih_l0"],
        LSTM(3, 5, 3, dropout=0.5, seed=1).params["weight_ih_l0"],
    )
    with pytest.raises(ValueError, match="dropout must be a number in"):
        GRU(3, 4, 2, dropout=1.5)


def test_torch_signatures_and_defaults():
    """torch's positional order and defaults; spec strings build batch-major layers (the
    library's Sequential is batch-major), the constructor's default is torch's time-major."""
    lstm = LSTM(3, 4, 2, False, True, 0.25, True, 2, None, "float32")
    assert (lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout) == (2, False, True, 0.25)
    assert (lstm.bidirectional, lstm.proj_size, lstm.dtype) == (True, 2, np.float32)
    rnn = RNN(3, 4, 1, "relu", False, True)
    assert (rnn.nonlinearity, rnn.bias, rnn.batch_first) == ("relu", False, True)
    for cls in (RNN, LSTM, GRU):
        layer = cls(3, 4)
        assert layer.batch_first is False and layer.dropout == 0.0
        assert get_layer(layer.get_config()).get_config() == layer.get_config()
        with pytest.raises(ValueError, match="device"):
            cls(3, 4, device="cuda")
    assert repr(LSTM(3, 4, batch_first=True, proj_size=2)) == (
        "LSTM(3, 4, batch_first=True, proj_size=2)"
    )
    model = Sequential.from_spec([("lstm", (4,), {}), ("gru", (3,), {})], input_shape=(5, 2))
    assert all(layer.batch_first for layer in model.layers)
    with pytest.raises(ValueError, match=r"time-major .* build it with batch_first=True"):
        Sequential.from_spec([("rnn", (3,), {"batch_first": False})], input_shape=(5, 2))
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(TypeError, match="proj_size"):
        GRU(3, 4, proj_size=1)
    with pytest.raises(TypeError, match="batch_first"):
        RNN(3, 4, batch_first="yes")
    with pytest.raises(ValueError, match=r"hx must be \(h0, c0\)"):
        LSTM(3, 4).forward(np.zeros((2, 1, 3)), np.zeros((1, 1, 4)))


def test_fast_steps_in_every_form():
    """The fused steps serve the batch-major one-layer case; every other configuration
    (time-major, projected, stacked) trains through the readable form, and both agree."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3))
    assert isinstance(LSTM(3, 4, batch_first=True).fast_step(), LSTMStep)
    for layer in (LSTM(3, 4), LSTM(3, 4, batch_first=True, proj_size=2), GRU(3, 4), RNN(3, 4)):
        step = layer.fast_step()
        assert isinstance(step, GenericStep), layer
        np.testing.assert_array_equal(step.forward(x), layer.forward(x)[0])


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_products_in_every_layout(cls):
    """PROD.rnn.vjp, PROD.lstm.jvp, PROD.gru.residual (and the rest) on time-major and
    unbatched inputs are the batch-major layer's products in that layout; with dropout in
    training, V = 1 of input_vjp/param_vjp is backward and ⟨M, J T⟩ = ⟨Jᵀ M, T⟩; a
    projected LSTM's products are refused in one line."""
    rng = np.random.default_rng(5)
    base = cls(3, 4, 2, bidirectional=True, batch_first=True, seed=1)
    x = rng.standard_normal((2, 5, 3))
    out, cache = base.forward(x)
    M = rng.standard_normal((2, *out.shape))
    T = rng.standard_normal((2, *x.shape))
    Tp = {k: rng.standard_normal((2, *p.shape)) for k, p in base.params.items()}
    reference = _products(base, cache, out, M, T, Tp)
    for form in ("time", "unbatched"):
        layer = cls(3, 4, 2, bidirectional=True, batch_first=False)
        layer.params = {k: v.copy() for k, v in base.params.items()}
        if form == "time":
            swap = lambda a: a.swapaxes(-3, -2)  # noqa: E731
            x_f, out_f, M_f, T_f = swap(x), swap(out), swap(M), swap(T)
        else:
            swap = lambda a: a[..., 0, :, :]  # noqa: E731
            x_f, out_f, M_f, T_f = x[0], out[0], M[:, :1], T[:, :1]
            reference = _products(base, base.forward(x[:1])[1], out[:1], M_f, T_f, Tp)
            M_f, T_f = swap(M_f), swap(T_f)
        found = _products(layer, layer.forward(x_f)[1], out_f, M_f, T_f, Tp)
        for key, value in reference.items():
            moved = swap(value) if key in ("input_vjp", "input_jvp", "param_jvp", "R_x") else value
            assert_gradients_close(found[key], moved, name=f"{cls.__name__} {form} {key}")

    drop = cls(3, 4, 3, dropout=0.5, bidirectional=True, batch_first=True, seed=2)
    out, cache = drop.forward(x)
    dx, grads = drop.backward(M[0], cache)
    assert_gradients_close(drop.input_vjp(cache, M[:1])[0], dx, name="dropout input_vjp")
    for name, grad in drop.param_vjp(cache, M[:1]).items():
        assert_gradients_close(grad[0], grads[name], name=f"dropout param_vjp {name}")
    lhs = float((M * drop.input_jvp(cache, T)).sum())
    rhs = float((drop.input_vjp(cache, M) * T).sum())
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + 1.0)
    if cls is LSTM:
        projected = LSTM(3, 4, proj_size=2)
        out, cache = projected.forward(x)
        with pytest.raises(NotImplementedError, match="proj_size"):
            projected.input_vjp(cache, out[None])


def _products(layer, cache, out, M, T, Tp) -> dict[str, np.ndarray]:
    found = {"input_vjp": layer.input_vjp(cache, M), "input_jvp": layer.input_jvp(cache, T)}
    found["param_jvp"] = layer.param_jvp(cache, Tp)
    R_x, R_p = layer.residual(cache, out, T, Tp)
    found["R_x"] = R_x
    found.update({f"param_vjp {k}": v for k, v in layer.param_vjp(cache, M).items()})
    found.update({f"R {k}": v for k, v in R_p.items()})
    return found
