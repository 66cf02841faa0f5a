"""Checks for the equations no network-level check covers.

``LAYER.dense`` (one layer mid-network, random upstream gradient), ``BP.single``
and ``SGD.average`` (per-sample gradients against ``torch.func.vmap``),
``OPT.sgd`` and ``REG.l2`` (one step against ``torch.optim.SGD``) and
``INIT.default`` (moments of a large draw: a statistical oracle, not torch).
Each check draws one random case from ``rng``; ``python -m manual_bp verify``
runs them N times and tabulates the errors per equation ID.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp import L2, SGD, ActivationLayer, Dense
from manual_bp.initializers import default_initializer
from reference.cases import build_case, random_spec
from reference.checks import register_check
from reference.compare import Comparison
from reference.conditioning import error_scales
from reference.network import torch_per_sample_gradients, torch_run

__all__: list[str] = []


def _small_spec(rng: np.random.Generator):
    return random_spec(rng, max_depth=3, max_width=8, max_batch=6)


@register_check("misc-layer-dense")
def dense_layer_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.dense: a Dense layer in the middle of Dense → tanh → [Dense] → sigmoid → Dense.

    C = Σ upstream ⊙ out with a random upstream gradient; torch autograd gives
    ∂C/∂W, ∂C/∂b of the middle layer and ∂C/∂x at its input.
    """
    n_in, n_mid, n_out, batch = (int(k) for k in rng.integers(1, 13, size=4))
    first, middle, last = (
        Dense(n_in, n_mid, seed=rng),
        Dense(n_mid, n_out, seed=rng),
        Dense(n_out, 3, seed=rng),
    )
    tanh, sigmoid = ActivationLayer("tanh"), ActivationLayer("sigmoid")
    x = rng.standard_normal((batch, n_in))
    upstream = rng.standard_normal((batch, 3))

    a1, _ = tanh.forward(first.forward(x)[0])
    h2, c2 = middle.forward(a1)
    a2, cache_sigmoid = sigmoid.forward(h2)
    _, c3 = last.forward(a2)
    d_h2, _ = sigmoid.backward(last.backward(upstream, c3)[0], cache_sigmoid)
    d_a1, grads = middle.backward(d_h2, c2)

    params = {
        name: torch.tensor(np.array(p), requires_grad=True)
        for layer, tag in ((first, "1"), (middle, "2"), (last, "3"))
        for name, p in (("W" + tag, layer.W), ("b" + tag, layer.b))
    }
    linear = torch.nn.functional.linear
    a1t = torch.tanh(linear(torch.tensor(x), params["W1"], params["b1"]))
    a1t.retain_grad()
    a2t = torch.sigmoid(linear(a1t, params["W2"], params["b2"]))
    (linear(a2t, params["W3"], params["b3"]) * torch.tensor(upstream)).sum().backward()
    return [
        Comparison(
            "LAYER.dense",
            "∂C/∂W",
            grads["weight"],
            params["W2"].grad.numpy(),
            np.abs(d_h2).T @ np.abs(a1),
        ),
        Comparison(
            "LAYER.dense", "∂C/∂b", grads["bias"], params["b2"].grad.numpy(), np.abs(d_h2).sum(0)
        ),
        Comparison("LAYER.dense", "∂C/∂x", d_a1, a1t.grad.numpy(), np.abs(d_h2) @ np.abs(middle.W)),
    ]


@register_check("misc-per-sample")
def per_sample_check(rng: np.random.Generator) -> list[Comparison]:
    """BP.single and SGD.average against torch.func.vmap(grad(C_x)) on a random network.

    BP.single: Nielsen's per-sample loop gives ∂C_x/∂Wˡ, ∂C_x/∂bˡ for every x.
    SGD.average: their mean over the batch is the mini-batch gradient (of torch).
    """
    net, x, y = build_case(_small_spec(rng))
    loop_w, loop_b = net.backprop_per_sample(x, y)
    vmap_w, vmap_b = torch_per_sample_gradients(net, x, y)
    grads = net.backprop(x, y)
    run = torch_run(net, x, y)
    scales = error_scales(net, run, grads._targets.astype(np.float64))
    out = []
    for l in range(len(net.weights)):
        # Per sample, ∂C_x/∂b = δ_x and ∂C_x/∂W = δ_x a_xᵀ: the scale is that of δ_x.
        delta_scale = scales.deltas[l]
        weight_scale = np.einsum("bi,bj->bij", delta_scale, np.abs(run.activations[l]))
        out.append(Comparison("BP.single", f"∂C_x/∂b[{l + 1}]", loop_b[l], vmap_b[l], delta_scale))
        out.append(Comparison("BP.single", f"∂C_x/∂W[{l + 1}]", loop_w[l], vmap_w[l], weight_scale))
        out.append(
            Comparison(
                "SGD.average",
                f"mean ∂C_x/∂W[{l + 1}]",
                loop_w[l].mean(axis=0),
                run.weights[l],
                scales.weights[l],
            )
        )
        out.append(
            Comparison(
                "SGD.average",
                f"mean ∂C_x/∂b[{l + 1}]",
                loop_b[l].mean(axis=0),
                run.biases[l],
                scales.biases[l],
            )
        )
    return out


def _torch_step(net, weight_grads, bias_grads, lr: float, weight_decay: float = 0.0):
    weights = [torch.tensor(np.array(W), requires_grad=True) for W in net.weights]
    biases = [torch.tensor(np.array(b), requires_grad=True) for b in net.biases]
    for t, g in zip([*weights, *biases], [*weight_grads, *bias_grads], strict=True):
        t.grad = torch.tensor(np.array(g))
    groups = [{"params": weights, "weight_decay": weight_decay}, {"params": biases}]
    torch.optim.SGD(groups, lr=lr).step()
    return [w.detach().numpy() for w in weights], [b.detach().numpy() for b in biases]


@register_check("misc-sgd-step")
def sgd_step_check(rng: np.random.Generator) -> list[Comparison]:
    """OPT.sgd: θ ← θ − η ∂C/∂θ against torch.optim.SGD(lr=η) fed the same gradients."""
    net, x, y = build_case(_small_spec(rng))
    eta = float(rng.uniform(0.01, 5.0))
    grads = net.backprop(x, y)
    torch_w, torch_b = _torch_step(net, grads.weights, grads.biases, eta)
    SGD(lr=eta).step([*net.weights, *net.biases], [*grads.weights, *grads.biases])
    out = []
    for l in range(len(net.weights)):
        out.append(Comparison("OPT.sgd", f"W[{l + 1}]", np.array(net.weights[l]), torch_w[l]))
        out.append(Comparison("OPT.sgd", f"b[{l + 1}]", np.array(net.biases[l]), torch_b[l]))
    return out


@register_check("misc-l2-step")
def l2_step_check(rng: np.random.Generator) -> list[Comparison]:
    """REG.l2: w ← (1 − ηλ/N) w − η ∂C₀/∂w against torch SGD with weight_decay = λ/N."""
    net, x, y = build_case(_small_spec(rng))
    eta, lmbda = float(rng.uniform(0.01, 3.0)), float(rng.uniform(0.0, 10.0))
    n_train = int(rng.integers(1, 60001))
    grads = net.backprop(x, y)
    torch_w, torch_b = _torch_step(net, grads.weights, grads.biases, eta, lmbda / n_train)
    before = [np.array(W) for W in net.weights]
    weight_grads = [g.copy() for g in grads.weights]
    L2(lmbda).add_gradient(net.weights, weight_grads, n_train)
    SGD(lr=eta).step([*net.weights, *net.biases], [*weight_grads, *grads.biases])
    out = []
    for l in range(len(net.weights)):
        # (1 − ηλ/N) w and η ∂C₀/∂w may cancel: bound by the sum of their magnitudes.
        scale = np.abs(before[l]) + eta * np.abs(grads.weights[l])
        out.append(Comparison("REG.l2", f"W[{l + 1}]", np.array(net.weights[l]), torch_w[l], scale))
        out.append(Comparison("REG.l2", f"b[{l + 1}]", np.array(net.biases[l]), torch_b[l]))
    return out


#: Standard errors allowed for a sample moment. A 6σ band fails a correct
#: initialiser with probability ≈ 2·10⁻⁹ per moment, yet a missing or doubled
#: 1/√n_in (variance off by a factor n_in ≥ 4 or by 4) is off by > 100σ.
INIT_SIGMAS = 6.0


@register_check("misc-init-default")
def init_default_check(rng: np.random.Generator) -> list[Comparison]:
    """INIT.default: W ~ N(0, 1/n_in), b ~ N(0, 1), from the moments of a large draw.

    Two layers with different fan-in (so a 1/√n_out would be caught) and
    together ≥ 2 000 biases. Normalised moments: n_in·var(W) → 1, √n_in·mean(W)
    → 0, var(b) → 1, mean(b) → 0, with standard errors √(2/N) and 1/√N
    (N = number of draws; the variance of a Gaussian sample variance is 2σ⁴/N).
    """
    fan_ins = rng.choice(np.arange(4, 41), size=2, replace=False)
    fan_outs = rng.integers(1000, 2001, size=2)
    weights = [np.empty((int(o), int(i))) for o, i in zip(fan_outs, fan_ins, strict=True)]
    biases = [np.empty(int(o)) for o in fan_outs]
    default_initializer(np.random.default_rng(rng.integers(2**63)), weights, biases)
    actual, expected, bound, names = [], [], [], []
    for l, W in enumerate(weights):
        n_in = W.shape[1]
        actual += [W.var() * n_in, W.mean() * np.sqrt(n_in)]
        expected += [1.0, 0.0]
        bound += [np.sqrt(2 / W.size), 1 / np.sqrt(W.size)]
        names += [f"n_in·var(W[{l + 1}])", f"√n_in·mean(W[{l + 1}])"]
    b = np.concatenate(biases)
    actual += [b.var(), b.mean()]
    expected += [1.0, 0.0]
    bound += [np.sqrt(2 / b.size), 1 / np.sqrt(b.size)]
    return [
        Comparison(
            "INIT.default",
            ", ".join([*names, "var(b)", "mean(b)"]),
            np.array(actual),
            np.array(expected),
            oracle="statistics",
            atol=INIT_SIGMAS * np.array(bound),
        )
    ]
