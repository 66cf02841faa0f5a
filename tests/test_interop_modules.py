"""Every module manual_bp ships, in random configurations, converted both ways: the converted
model gives torch's output, input gradient and parameter gradients in float64 for a random
upstream gradient (``from_torch`` against the torch model, ``to_torch`` against manual_bp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from manual_bp.layers import LAYERS
from reference.interop import from_torch, to_torch, torch_parameters
from reference.interop_modules import Reshape, Residual

ACTIVATIONS = [
    lambda r: nn.ReLU(), lambda r: nn.Tanh(), lambda r: nn.Sigmoid(), lambda r: nn.SELU(),
    lambda r: nn.LeakyReLU(float(r.uniform(0.01, 0.5))), lambda r: nn.ELU(float(r.uniform(0.5, 2))),
    lambda r: nn.GELU(approximate=str(r.choice(["none", "tanh"]))), lambda r: nn.SiLU(),
    lambda r: nn.Softplus(beta=float(r.uniform(0.5, 2)), threshold=float(r.uniform(5, 20))),
    lambda r: nn.Hardtanh(float(r.uniform(-2, -0.5)), float(r.uniform(0.5, 2))),
    lambda r: nn.Identity(),
]  # fmt: skip


def _padding_modes(name: str) -> list[str]:
    """The padding modes the library's convolution takes today (others are its refusal, tested
    with the layer): the conversion passes every one through by torch's name."""
    modes = []
    for mode in ("zeros", "reflect", "replicate", "circular"):
        try:
            LAYERS.lookup(name)(1, 1, 1, padding_mode=mode)
        except ValueError:
            continue
        modes.append(mode)
    return modes


def _flag(rng: np.random.Generator) -> bool:
    return bool(rng.integers(2))


def _mlp(rng):
    n, h = int(rng.integers(2, 6)), int(rng.integers(2, 7))
    modules = [nn.Linear(n, h, bias=_flag(rng)), ACTIVATIONS[rng.integers(len(ACTIVATIONS))](rng)]
    modules += [nn.BatchNorm1d(h, affine=_flag(rng), track_running_stats=_flag(rng))]
    modules += [nn.LayerNorm(h, elementwise_affine=_flag(rng)), nn.Dropout(0.0)]
    modules += [nn.Linear(h, 3), [nn.Softmax(-1), nn.LogSoftmax(1), nn.Tanh()][rng.integers(3)]]
    return modules, (n,)


def _conv1d(rng):
    c, g = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k, pad = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    mode = str(rng.choice(_padding_modes("conv1d")))
    conv = nn.Conv1d(c * g, 2 * g, k, stride=int(rng.integers(1, 3)), padding=pad,
                     dilation=int(rng.integers(1, 3)), groups=g, bias=_flag(rng),
                     padding_mode=mode)  # fmt: skip
    return [conv, nn.ReLU(), nn.Flatten()], (c * g, 9)


def _conv2d(rng):
    c, k = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    mode = str(rng.choice(_padding_modes("conv2d")))
    modules = [
        nn.Conv2d(c, 4, k, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 2)),
                  bias=_flag(rng), padding_mode=mode),
        nn.BatchNorm2d(4, affine=_flag(rng), track_running_stats=_flag(rng)),
        nn.MaxPool2d(2, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 2)),
                     ceil_mode=_flag(rng)),
        nn.AvgPool2d(2, stride=1, padding=int(rng.integers(0, 2)), ceil_mode=_flag(rng),
                     count_include_pad=_flag(rng), divisor_override=[None, 3][rng.integers(2)]),
        [nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((1, 1)), nn.AdaptiveAvgPool2d((2, None)),
         nn.AdaptiveAvgPool2d(3), nn.Identity()][rng.integers(5)],
        nn.Flatten(),
    ]  # fmt: skip
    return modules, (c, 9, 9)


def _conv_transpose(rng):
    g, s = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k, pad, dil = int(rng.integers(1, 4)), int(rng.integers(0, 2)), int(rng.integers(1, 3))
    conv = nn.ConvTranspose2d(2 * g, 2 * g, k, stride=s, padding=pad, dilation=dil, groups=g,
                              output_padding=int(rng.integers(s)), bias=_flag(rng))  # fmt: skip
    return [conv, nn.Dropout2d(0.0), nn.Flatten(1, 2)], (2 * g, 4, 5)


def _reshapes(rng):
    a, b = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    modules = [nn.Linear(6, a * b * 2), nn.Unflatten(1, (a, b, 2)), nn.Flatten(2), Reshape(b, a, 2),
               nn.Flatten(1, 2), nn.Tanh(), nn.Flatten()]  # fmt: skip
    return modules, (6,)


def _residual(rng):
    h = int(rng.integers(2, 6))
    inner = Residual(nn.Linear(h, h), nn.Tanh())
    return [nn.Linear(3, h), Residual(nn.LayerNorm(h), inner, nn.Linear(h, h)), nn.ReLU()], (3,)


def _sequence(rng):
    kind = [nn.LSTM, nn.GRU, nn.RNN][rng.integers(3)]
    layers, bidir = int(rng.integers(1, 3)), _flag(rng)
    options = {"nonlinearity": str(rng.choice(["tanh", "relu"]))} if kind is nn.RNN else {}
    h = int(rng.integers(2, 4)) * 2
    width = h * (2 if bidir else 1)
    from reference.interop_modules import GRUSequence, LSTMSequence, RNNSequence, SelfAttention

    stand_in = {nn.LSTM: LSTMSequence, nn.GRU: GRUSequence, nn.RNN: RNNSequence}[kind]
    modules = [
        nn.Embedding(7, 4, padding_idx=[None, 0][rng.integers(2)]),
        stand_in(4, h, layers, bias=_flag(rng), bidirectional=bidir, **options),
        SelfAttention(width, 2, bias=_flag(rng), causal=_flag(rng)),
        nn.Linear(width, 3),
    ]
    return modules, (5,)


def _encoder(rng):
    d = 4
    layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=int(rng.integers(3, 9)), dropout=0.0,
                                       activation=str(rng.choice(["relu", "gelu"])),
                                       batch_first=True, norm_first=_flag(rng))  # fmt: skip
    return [nn.Linear(3, d), layer], (5, 3)


CASES = {f.__name__[1:]: f for f in (_mlp, _conv1d, _conv2d, _conv_transpose, _reshapes,
                                     _residual, _sequence, _encoder)}  # fmt: skip


def _input(modules, shape, rng):
    if isinstance(modules[0], nn.Embedding):
        return rng.integers(0, modules[0].num_embeddings, size=(3, *shape))
    return rng.standard_normal((3, *shape))


def compare(torch_model: nn.Module, model, x: np.ndarray, rng, names=None) -> None:
    """Output, ∂C/∂x and every parameter gradient of ``model`` equal ``torch_model``'s."""
    xt = torch.tensor(x)
    if xt.is_floating_point():
        xt.requires_grad_(True)
    torch_model.zero_grad()
    out_t = torch_model(xt)
    upstream = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.tensor(upstream))
    out, caches = model.forward(x)
    dx, grads = model.backward(upstream, caches)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    if xt.is_floating_point():
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    ours = {f"{i}.{k}": g for i, layer in enumerate(grads) for k, g in layer.items()}
    names = names if names is not None else dict(torch_model.named_parameters())
    assert set(ours) == set(names)
    for name, parameter in names.items():
        np.testing.assert_allclose(ours[name], parameter.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("case", sorted(CASES))
def test_random_models_convert_both_ways_and_match_torch(case, seed):
    rng = np.random.default_rng(1000 * seed + len(case))
    torch.manual_seed(seed)
    modules, shape = CASES[case](rng)
    torch_model = nn.Sequential(*modules).double().train(_flag(rng))
    x = _input(modules, shape, rng)
    model = from_torch(torch_model, input_shape=shape)
    names = torch_parameters(torch_model, input_shape=shape)
    compare(torch_model, model, x, rng, names)
    back = to_torch(model)  # to_torch: manual_bp model -> torch, same state, same numbers
    assert set(back.state_dict()) == set(model.state_dict())
    for name, value in back.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[name])
    compare(back, from_torch(back, input_shape=shape), x, rng)
    compare(back, model, x, rng)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN", "MultiheadAttention"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_the_batch_first_flag_is_converted_faithfully(kind, batch_first):
    """torch's ``batch_first`` reaches manual_bp's layer as it is; a time-major module is
    refused in one line naming it, since a ``Sequential``'s data is batch-major (torch's
    ``nn.Sequential`` cannot hold a plain recurrent module or attention either)."""
    torch.manual_seed(0)
    from reference.interop_modules import GRUSequence, LSTMSequence, RNNSequence, SelfAttention

    stand_in = {"LSTM": LSTMSequence, "GRU": GRUSequence, "RNN": RNNSequence}.get(kind)
    module = (
        SelfAttention(4, 2, batch_first=batch_first)
        if stand_in is None
        else stand_in(4, 4, batch_first=batch_first)
    ).double()
    if not batch_first:
        with pytest.raises(ValueError, match=r"is time-major .* build it with batch_first=True"):
            from_torch([module])
        return
    model = from_torch([module])
    assert getattr(model.layers[0], "batch_first", True) == batch_first
    rng = np.random.default_rng(1)
    compare(nn.Sequential(module), model, rng.standard_normal((3, 5, 4)), rng)
    exported = to_torch(model)[0]
    assert exported.batch_first == batch_first


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Flatten(0), "flattening the batch axis"),
        (nn.Unflatten(0, (2, 2)), r"unflattening the batch axis \(dim=0\)"),
        (nn.Embedding(4, 2, sparse=True), "sparse"),
        (nn.Softmax(dim=0), r"softmax along the batch axis \(dim=0\)"),
        (nn.Bilinear(2, 2, 2), r"module 0 \(Bilinear\) has no manual_bp counterpart"),
        (
            nn.TransformerEncoderLayer(
                4, 2, activation=torch.sigmoid, batch_first=True, dropout=0.0
            ),
            "activation .* has no manual_bp counterpart",
        ),
    ],
)
def test_modules_and_options_without_a_counterpart_are_refused_in_one_line(module, message):
    with pytest.raises(ValueError, match=message) as error:
        from_torch([module])
    assert "\n" not in str(error.value)


def _option_modules():
    from reference.interop_modules import GRUSequence, LSTMSequence, RNNSequence, SelfAttention

    return {
        "LSTM proj_size, 2 layers, bidirectional": lambda: LSTMSequence(
            4, 3, 2, bidirectional=True, proj_size=2, dropout=0.5
        ),
        "GRU no bias, dropout": lambda: GRUSequence(4, 3, 2, bias=False, dropout=0.5),
        "RNN relu": lambda: RNNSequence(4, 3, nonlinearity="relu"),
        "attention bias_kv, zero_attn, dropout": lambda: SelfAttention(
            4, 2, add_bias_kv=True, add_zero_attn=True, dropout=0.5
        ),
    }


@pytest.mark.parametrize("case", sorted(_option_modules()))
def test_torch_options_of_sequence_modules_convert_both_ways(case):
    """Options the layers now model (issue 23) convert instead of being refused: output,
    input and parameter gradients equal torch's (eval mode: dropout is the identity), and
    ``to_torch`` gives back a module with the same options."""
    torch.manual_seed(0)
    module = _option_modules()[case]().double().eval()
    model = from_torch([module], input_shape=(5, 4))
    model.eval()
    rng = np.random.default_rng(0)
    compare(nn.Sequential(module), model, rng.standard_normal((3, 5, 4)), rng)
    back = to_torch(model)[0]
    for option in ("dropout", "proj_size", "bias", "add_zero_attn", "nonlinearity"):
        if hasattr(module, option) and not isinstance(getattr(module, option), torch.Tensor):
            assert getattr(back, option) == getattr(module, option), option


def test_cells_and_norms_convert_both_ways():
    """RNNCell/GRUCell (a tensor out) and the normalisation modules of issue 25 convert
    from torch and back, with torch's output and gradients."""
    torch.manual_seed(0)
    modules = [nn.RNNCell(3, 4, nonlinearity="relu"), nn.GRUCell(4, 6, bias=False),
               nn.Unflatten(1, (2, 3)), nn.GroupNorm(2, 2), nn.Tanh(),
               nn.InstanceNorm1d(2, affine=True), nn.Flatten(), nn.Linear(6, 6), nn.RMSNorm(6),
               nn.Linear(6, 2)]  # fmt: skip
    torch_model = nn.Sequential(*modules).double()
    model = from_torch(torch_model, input_shape=(3,))
    rng = np.random.default_rng(0)
    compare(torch_model, model, rng.standard_normal((5, 3)), rng)
    back = to_torch(model)
    assert [type(m).__name__ for m in back] == [type(m).__name__ for m in modules]
    compare(back, model, rng.standard_normal((5, 3)), rng)
