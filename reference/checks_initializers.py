"""Checks of the initialisation schemes (``INIT.schemes``): moments of large seeded draws.

Each scheme's variance (derived in ``docs/layers.md#INIT.schemes``) is compared with the
sample moments of a large draw, bounded by the draw's standard errors (seeded, never flaky),
and with the moments of ``torch.nn.init`` on the same shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from manual_bp.initializers import calculate_gain, fans, initialize
from reference.checks import register_check
from reference.compare import Comparison

INIT_SIGMAS = 6.0
INIT_DRAWS = 20_000


def scheme_variance(name: str, fan_in: int, fan_out: int, gain: float, mode: str) -> float:
    """The variance each scheme is derived to have (``docs/layers.md#INIT.schemes``)."""
    fan = fan_in if mode == "fan_in" else fan_out
    return {
        "nielsen": 1.0 / fan_in,
        "normal": 1.0,
        "xavier-uniform": gain**2 * 2.0 / (fan_in + fan_out),
        "xavier-normal": gain**2 * 2.0 / (fan_in + fan_out),
        "kaiming-uniform": gain**2 / fan,
        "kaiming-normal": gain**2 / fan,
        "torch": 1.0 / (3.0 * fan_in),
    }[name]


def kurtosis(name: str) -> float:
    """E[w⁴]/E[w²]²: 3 for Gaussians, 9/5 for a symmetric uniform."""
    return 1.8 if name.endswith("uniform") or name == "torch" else 3.0


def torch_init(name: str, shape, gain: float, options: dict) -> np.ndarray:
    """The same scheme drawn by ``torch.nn.init`` (for the moments, not the values)."""
    tensor = torch.empty(shape, dtype=torch.float64)
    fan_in, _ = fans(shape)
    nonlinearity = options.get("nonlinearity", "leaky_relu")
    a = options.get("param", 0.0) or 0.0
    mode = options.get("mode", "fan_in")
    init = torch.nn.init
    if name == "xavier-uniform":
        init.xavier_uniform_(tensor, gain=gain)
    elif name == "xavier-normal":
        init.xavier_normal_(tensor, gain=gain)
    elif name == "kaiming-uniform":
        init.kaiming_uniform_(tensor, a=a, mode=mode, nonlinearity=nonlinearity)
    elif name == "kaiming-normal":
        init.kaiming_normal_(tensor, a=a, mode=mode, nonlinearity=nonlinearity)
    elif name == "torch":
        init.kaiming_uniform_(tensor, a=math.sqrt(5))  # nn.Linear / nn.Conv's reset
    elif name == "nielsen":
        init.normal_(tensor, std=1.0 / math.sqrt(fan_in))
    else:
        init.normal_(tensor)
    return tensor.numpy()


def random_scheme(rng: np.random.Generator) -> tuple[str, dict, float]:
    """A random scheme spec, its options and the gain torch would use."""
    name = str(rng.choice(["nielsen", "normal", "xavier-uniform", "xavier-normal",
                           "kaiming-uniform", "kaiming-normal", "torch"]))  # fmt: skip
    options: dict = {}
    gain = 1.0
    if name.startswith("xavier"):
        nonlinearity = str(rng.choice(["linear", "tanh", "relu", "sigmoid"]))
        options = {"nonlinearity": nonlinearity}
        gain = calculate_gain(nonlinearity)
    elif name.startswith("kaiming"):
        options = {"mode": str(rng.choice(["fan_in", "fan_out"]))}
        if rng.random() < 0.5:
            options["nonlinearity"] = str(rng.choice(["relu", "leaky_relu", "tanh"]))
        if options.get("nonlinearity") == "leaky_relu" and rng.random() < 0.5:
            options["param"] = float(rng.choice([0.01, 0.2]))
        gain = calculate_gain(options.get("nonlinearity", "leaky_relu"), options.get("param", 0.0))
    return name, options, gain


def moment_comparisons(name, samples, fan_in, fan_out, gain, mode, label, reference=None):
    """Normalised mean and variance of ``samples`` (and of ``reference``) vs the derivation."""
    var = scheme_variance(name, fan_in, fan_out, gain, mode)
    n, k = samples.size, kurtosis(name)
    actual = [samples.var() / var, samples.mean() / math.sqrt(var)]
    bound = [math.sqrt((k - 1) / n), 1 / math.sqrt(n)]
    names = [f"var/σ²({label})", f"mean/σ({label})"]
    if reference is not None:  # ours vs torch.nn.init: a difference of two samples
        actual += [(samples.var() - reference.var()) / var + 1.0]
        bound += [math.sqrt(2 * (k - 1) / min(n, reference.size))]
        names += [f"(var − var_torch)/σ² + 1 ({label})"]
    expected = [1.0, 0.0] + [1.0] * (reference is not None)
    return Comparison(
        "INIT.schemes",
        ", ".join(names),
        np.array(actual),
        np.array(expected),
        oracle="statistics",
        atol=INIT_SIGMAS * np.array(bound),
    )


@register_check("layers-init-schemes")
def init_schemes_check(rng: np.random.Generator) -> list[Comparison]:
    """INIT.schemes: moments of a large draw vs the derived variance and vs torch.nn.init."""
    name, options, gain = random_scheme(rng)
    if rng.random() < 0.5:
        shape = (int(rng.integers(1, 200)), int(rng.integers(1, 200)))
    else:
        shape = (int(rng.integers(1, 20)), int(rng.integers(1, 10)), 3, int(rng.integers(1, 4)))
    reps = max(1, INIT_DRAWS // math.prod(shape))
    draw = np.random.default_rng(rng.integers(2**63))
    ours = np.concatenate([initialize({"name": name, **options}, draw, shape).ravel()
                           for _ in range(reps)])  # fmt: skip
    torch.manual_seed(int(rng.integers(2**31)))
    theirs = np.concatenate([torch_init(name, shape, gain, options).ravel() for _ in range(reps)])
    fan_in, fan_out = fans(shape)
    mode = options.get("mode", "fan_in")
    return [
        moment_comparisons(name, ours, fan_in, fan_out, gain, mode, f"{name} {shape}", theirs),
        moment_comparisons(name, theirs, fan_in, fan_out, gain, mode, f"torch {name} {shape}"),
    ]
