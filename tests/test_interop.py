"""Models move between manual_bp and torch with identical parameters and buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from manual_bp import Dense, Sequential
from manual_bp.gradcheck import normalised_error
from manual_bp.layers import LAYERS
from reference.interop import (
    _LAYERS,
    SUPPORTED,
    GRUSequence,
    LSTMSequence,
    RNNSequence,
    SelfAttention,
    from_torch,
    to_torch,
)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.0),
        nn.Linear(8, 8),
        nn.LayerNorm(8),
        nn.GELU(approximate="tanh"),
        nn.Linear(8, 3),
        nn.LogSoftmax(dim=-1),
    ).double()


def test_mlp_round_trip_is_exact_and_gradients_agree():
    """The three-line check of a torch model's gradients against the hand-derived ones."""
    torch_model = _mlp()
    model = from_torch(torch_model, cost="quadratic")
    back = to_torch(model)
    for (name, a), (name_b, b) in zip(
        torch_model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert name == name_b and torch.equal(a, b)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 6)), rng.standard_normal((5, 3))
    ours = model.backprop(x, y)
    out = torch_model(torch.tensor(x))
    (0.5 * ((out - torch.tensor(y)) ** 2).sum() / 5).backward()
    for name, parameter in torch_model.named_parameters():
        np.testing.assert_allclose(
            ours.params[name], parameter.grad.numpy(), rtol=1e-10, atol=1e-13
        )
    np.testing.assert_allclose(ours.output, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    # the training step updated the same running statistics
    for name, buffer in torch_model.named_buffers():
        np.testing.assert_allclose(model.state_dict()[name], buffer.numpy(), rtol=1e-12)


def test_cnn_round_trip():
    pytest.importorskip("manual_bp.layers.convolution")
    torch.manual_seed(1)
    torch_model = (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(3 * 4 * 4, 2),
        )
        .double()
        .eval()
    )
    model = from_torch(torch_model, input_shape=(1, 8, 8))
    assert not model.training
    x = np.random.default_rng(2).standard_normal((4, 1, 8, 8))
    np.testing.assert_allclose(
        model.infer(x), torch_model(torch.tensor(x)).detach().numpy(), rtol=1e-11, atol=1e-13
    )
    back = to_torch(model)
    for a, b in zip(torch_model.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_export_of_a_manual_model():
    model = Sequential([Dense(4, 3), "tanh", Dense(3, 2), "softmax"], seed=0)
    torch_model = to_torch(model)
    x = np.random.default_rng(3).standard_normal((2, 4))
    np.testing.assert_allclose(
        torch_model(torch.tensor(x)).detach().numpy(), model.infer(x), rtol=1e-12
    )


def test_unsupported_modules_are_named_with_the_supported_list():
    with pytest.raises(
        ValueError,
        match=r"module 1 \(PixelShuffle\) has no manual_bp counterpart; "
        r"supported: .*Linear",
    ):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.PixelShuffle(1)))
    with pytest.raises(ValueError, match=r"softmax along the batch axis \(dim=0\)"):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=0)))
    assert "Linear" in SUPPORTED and "ReLU" in SUPPORTED


def _sequence_stack(bidirectional: bool, causal: bool) -> nn.Sequential:
    torch.manual_seed(4)
    H = 3
    width = H * (2 if bidirectional else 1)
    return nn.Sequential(
        nn.Embedding(6, 4, padding_idx=0),
        LSTMSequence(4, H, 2, bidirectional=bidirectional),
        nn.LayerNorm(width),
        SelfAttention(width, 2 if width % 2 == 0 else 1, causal=causal),
        GRUSequence(width, 3, bias=False),
        RNNSequence(3, 4, nonlinearity="relu"),
        nn.Linear(4, 5),
        nn.Softmax(dim=-1),
    ).double()


@pytest.mark.parametrize(("bidirectional", "causal"), [(False, True), (True, False)])
def test_sequence_stack_round_trip_is_exact_and_gradients_agree(bidirectional, causal):
    """Embedding → LSTM (2 layers) → LayerNorm → self-attention → GRU → RNN → dense → softmax:
    parameters bit-equal after from_torch/to_torch, outputs and every gradient equal torch's
    (log-likelihood with labels, i.e. nll_loss(log softmax)), ∂C/∂aᴷ included."""
    torch_model = _sequence_stack(bidirectional, causal)
    model = from_torch(torch_model, cost="log-likelihood", input_shape=(5,))
    assert model.layers[1].num_layers == 2 and model.layers[1].bidirectional == bidirectional
    assert model.layers[3].causal == causal and model.layers[5].nonlinearity == "relu"
    back = to_torch(model)
    for (name, a), (name_b, b) in zip(
        torch_model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert name == name_b and a.dtype == b.dtype and torch.equal(a, b)
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 6, size=(3, 5)), rng.integers(0, 5, size=(3, 5))
    ours = model.backprop(x, y)
    for module in (torch_model, back):
        module.zero_grad()
        out = module(torch.tensor(x))
        out.retain_grad()
        loss = torch.nn.functional.nll_loss(torch.log(out).reshape(-1, 5), torch.tensor(y).ravel())
        loss.backward()
        np.testing.assert_allclose(ours.output, out.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert ours.cost == pytest.approx(float(loss.detach()), rel=1e-13)
        np.testing.assert_allclose(ours.output_grad, out.grad.numpy(), rtol=1e-11, atol=1e-15)
        # Normalised error max|Δ|/max|g| (entries that cancel to ~0 are relative to the
        # largest): measured worst 1.4e-14 over 10 stacks; 1e-12 leaves room for the
        # rounding of a 6-layer stack without per-entry magnitude bounds.
        for name, parameter in module.named_parameters():
            assert normalised_error(ours.params[name], parameter.grad.numpy()) < 1e-12, name


def test_plain_torch_sequence_modules_are_accepted_and_options_refused():
    """A plain nn.LSTM/nn.MultiheadAttention (batch_first=True) maps to the same layer; options
    manual_bp does not model are refused by name."""
    model = from_torch(
        [nn.LSTM(3, 4, batch_first=True), nn.MultiheadAttention(4, 2, batch_first=True)],
        input_shape=(2, 3),
    )
    assert [layer.name for layer in model.layers] == ["lstm", "multihead_attention"]
    assert isinstance(to_torch(model)[0], LSTMSequence)
    refused = [
        (nn.LSTM(3, 4, 2, batch_first=True, dropout=0.5), "dropout=0.5"),
        (nn.LSTM(3, 4, batch_first=True, proj_size=2), "proj_size=2"),
        (nn.MultiheadAttention(4, 2, batch_first=True, kdim=3), "kdim=3"),
        (nn.MultiheadAttention(4, 2, batch_first=True, dropout=0.1), "dropout=0.1"),
        (nn.Bilinear(2, 2, 2), "no manual_bp counterpart; supported: .*LSTMSequence"),
    ]
    for module, message in refused:
        option = message.split("=")[0]
        if option in LAYERS.lookup(_LAYERS.get(type(module).__name__, "dense")).hyperparameters:
            continue  # the library models this option now: converted, not refused
        with pytest.raises(ValueError, match=f"{message} is not supported|{message}"):
            from_torch([module])
    assert {"LSTM", "GRU", "RNN", "MultiheadAttention", "SelfAttention"} <= set(SUPPORTED)
