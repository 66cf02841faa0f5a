"""``nn.Module`` subclasses converted through ``torch.fx``: a residual network written as torch
users write it matches torch (output, input and parameter gradients) and trains here; every
kind of graph manual_bp cannot express is refused in one line naming the node and its line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from manual_bp.layers import Residual as ResidualLayer
from manual_bp.optimizers import SGD
from reference.interop import from_torch, to_torch, torch_parameters
from tests.test_interop_modules import compare


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x)), approximate="tanh"))


class Simple(nn.Module):
    """A conv stem, a residual add written inline, torch.flatten, a residual submodule,
    view, functional activations: a torch model as torch users write one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 3)
        self.block = Block(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), 1, 6, 6)
        x = F.relu(self.conv1(x))
        x = F.relu(x + self.bn(self.conv2(x)))  # the residual add
        x = torch.flatten(self.pool(x), 1)
        return F.softmax(self.block(self.fc(x)), dim=-1)


def _simple() -> Simple:
    torch.manual_seed(0)
    return Simple().double()


def test_a_module_subclass_with_residual_adds_and_flatten_converts_and_matches_torch():
    torch_model = _simple()
    model = from_torch(torch_model, input_shape=(36,), cost="log-likelihood")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:4] == ["Reshape", "Conv2d", "ActivationLayer", "Residual"]
    assert isinstance(model.layers[-2], ResidualLayer)  # Block's x + f(x)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 36))
    compare(torch_model, model, x, rng, torch_parameters(torch_model, input_shape=(36,)))
    torch_model.eval()
    model = from_torch(torch_model, input_shape=(36,))
    compare(torch_model, model, x, rng, torch_parameters(torch_model, input_shape=(36,)))
    # the exported model is the same function with manual_bp's names
    compare(to_torch(model), model, x, rng)


def test_a_converted_module_subclass_trains_here_as_in_torch():
    """Three SGD steps here and in torch from the same start end at the same parameters."""
    torch_model = _simple()
    model = from_torch(torch_model, input_shape=(36,), cost="log-likelihood")
    names = torch_parameters(torch_model, input_shape=(36,))
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 36)), rng.integers(0, 3, size=8)
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    ours, named = SGD(0.1, momentum=0.9), model.named_parameters()
    costs = []
    for _ in range(3):
        grads = model.backprop(x, y)
        ours.step([p for _, p in named], [grads.params[name] for name, _ in named])
        optimizer.zero_grad()
        loss = F.nll_loss(torch.log(torch_model(torch.tensor(x))), torch.tensor(y))
        loss.backward()
        optimizer.step()
        costs.append((grads.cost, float(loss.detach())))
    for cost, loss in costs:
        assert cost == pytest.approx(loss, rel=1e-10)
    state = model.state_dict()
    for name, parameter in names.items():
        np.testing.assert_allclose(state[name], parameter.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert costs[-1][0] < costs[0][0]


class Sequence(nn.Module):
    """Embedding → LSTM (``out, _ = self.lstm(x)``) → self-attention ``attn(x, x, x)[0]`` →
    an encoder layer → ``x.reshape(-1, T·H)`` → linear, every functional form in one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.lstm = nn.LSTM(4, 4, batch_first=True)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.encoder = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        self.out = nn.Linear(5 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = torch.cat([self.encoder(h)], dim=-1)
        return torch.tanh(self.out(h.reshape(-1, 20)))


def test_sequence_modules_tuple_outputs_and_reshapes_trace_and_match_torch():
    torch.manual_seed(2)
    torch_model = Sequence().double()
    model = from_torch(torch_model, input_shape=(5,))
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=(3, 5))
    compare(torch_model, model, x, rng, torch_parameters(torch_model, input_shape=(5,)))


class _Refused(nn.Module):
    def __init__(self, forward) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.lstm = nn.LSTM(4, 4, batch_first=True)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


REFUSALS = {
    "concatenation": (lambda m, x: torch.cat([x, m.a(x)], 1), "joins tensors"),
    "two branches": (lambda m, x: m.a(x) + m.b(x), r"x \+ f\(x\)"),
    "branch from an older value": (lambda m, x: m.b(m.a(x)) * x, "no manual_bp layer"),
    "a projection shortcut": (lambda m, x: m.a(x) + m.b(m.a(x)) + x, "not the previous result"),
    "x + x": (lambda m, x: x + x, r"x \+ f\(x\)|empty"),
    "an unsupported function": (lambda m, x: torch.exp(m.a(x)), "no manual_bp layer"),
    "a constant added": (lambda m, x: m.a(x) + 1.0, r"x \+ f\(x\)"),
    "a reshape of the batch axis": (lambda m, x: m.a(x).view(2, -1), "batch axis first"),
    "indexing": (lambda m, x: m.a(x)[:, :2], "indexing"),
    "cross-attention": (lambda m, x: (lambda k: m.attn(x, k, k)[0])(m.a(x)), "self-attention"),
    "an attention mask": (
        lambda m, x: m.attn(x, x, x, attn_mask=torch.ones(3, 3).bool())[0],
        "options",
    ),
    "the RNN's hidden state": (lambda m, x: m.lstm(x)[1][0], "indexing|output sequence"),
    "a data-dependent branch": (lambda m, x: m.a(x) if x.sum() > 0 else x, "torch.fx"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_what_a_sequential_cannot_express_is_refused_in_one_line_naming_node_and_line(kind):
    forward, message = REFUSALS[kind]
    with pytest.raises(ValueError, match=message) as error:
        from_torch(_Refused(forward))
    text = str(error.value)
    assert "\n" not in text
    if "torch.fx" not in text:  # a traced node: its name and the test's source line
        assert "cannot convert traced node" in text and "test_interop_fx.py:" in text, text


class Pools(nn.Module):
    """Functional pools, whose positional options are ordered unlike their modules'."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv(x), 2, 1, 1, 1, True)  # (kernel, stride, pad, dil, ceil)
        x = F.avg_pool2d(x, 2, 1, 0, False, False)  # (kernel, stride, pad, ceil, count_pad)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def test_functional_pools_keep_their_options():
    torch.manual_seed(3)
    torch_model = Pools().double()
    model = from_torch(torch_model, input_shape=(2, 7, 7))
    assert model.layers[1].ceil_mode and not model.layers[2].count_include_pad
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 7, 7))
    compare(torch_model, model, x, rng, torch_parameters(torch_model, input_shape=(2, 7, 7)))


class DigitsNet(nn.Module):
    """The README's example (the lead's README draft): a torch model as torch users write one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm2d(8), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x.view(x.size(0), 1, 8, 8)))
        x = F.relu(x + self.bn(self.conv2(x)))  # residual add -> Residual block
        return F.softmax(self.fc(torch.flatten(F.max_pool2d(x, 2), 1)), dim=-1)


def test_the_readme_example_converts_checks_and_trains():
    from manual_bp import Adam, load_digits, train

    torch.manual_seed(0)
    net, data = DigitsNet().double(), load_digits()
    model = from_torch(net, cost="log-likelihood", input_shape=(64,))
    x, y = data.x_train[:32], data.y_train[:32]
    grads = model.backprop(x, y)
    F.nll_loss(torch.log(net(torch.tensor(x))), torch.tensor(y)).backward()
    for name, p in torch_parameters(net, input_shape=(64,)).items():
        np.testing.assert_allclose(grads.params[name], p.grad.numpy(), rtol=1e-9, atol=1e-12)
    before = model.accuracy(data.x_test, data.y_test)
    train(model, data.x_train, data.y_train, epochs=2, batch_size=32, optimizer=Adam(lr=1e-3),
          seed=0)  # fmt: skip
    assert model.accuracy(data.x_test, data.y_test) > max(0.5, before)
