"""Random-case checks of manual_bp.curvature against torch.func (docs/curvature.md).

Each check draws a small random case (every activation and cost, saturation, exact
kinks) and returns Comparisons tagged with the CURV.* / ACT2.* IDs they verify.
Models are small (≤ ~150 parameters) so that the whole torch Hessian is cheap.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from manual_bp import Network, Sequential
from manual_bp.activations import ACTIVATIONS, get_activation
from manual_bp.costs import COSTS, get_cost
from manual_bp.curvature import flatten, ggnvp, hvp
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.diagonal import (
    diag_ggn,
    diag_ggn_readable,
    diag_hessian,
    diag_hessian_readable,
)
from manual_bp.curvature.kfac import ggn_block, kflr
from manual_bp.curvature.loss import output_hessian
from manual_bp.curvature.stats import grad_norms, grad_variance, sum_grad_squared
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.dense import Dense
from reference.cases import build_case, random_spec
from reference.checks import register_check
from reference.compare import Comparison, drop_ambiguous_samples
from reference.components import torch_activation, torch_cost
from reference.curvature_oracle import TorchModel, mc_draw_moments

__all__ = [
    "curvature_comparisons",
    "kink_points",
    "mc_tolerance",
    "random_curvature_case",
    "to_sequential",
]

#: Weight scales of the network-level checks (30 saturates; see docs/curvature.md).
CURVATURE_SCALES = (0.1, 1.0, 4.0)


def kink_points(name: str, activation) -> list[float]:
    """The edges of a piecewise activation (where σ' jumps), to test exactly at and beside."""
    if name in ("relu", "leaky-relu", "elu", "selu"):
        return [0.0]
    if name == "hardtanh":
        return [activation.min_val, activation.max_val]
    if name == "softplus":
        return [activation.threshold / activation.beta]
    return []


def to_sequential(net: Network, rng: np.random.Generator) -> Sequential:
    """The same function as ``net`` as a Sequential stack (Dense + activation layers)."""
    layers = []
    for W, act in zip(net.weights, net.activations, strict=True):
        layers += [Dense(W.shape[1], W.shape[0]), ActivationLayer(act)]
    model = Sequential(layers, net.cost)
    state = {}
    for l, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        state[f"{2 * l}.weight"], state[f"{2 * l}.bias"] = W, b
    model.load_state_dict(state)
    return model


def random_curvature_case(rng: np.random.Generator, scales=CURVATURE_SCALES, max_batch=5):
    """``(model, x, y)``: a small random Network (or the same as a Sequential)."""
    spec = random_spec(rng, max_depth=3, max_width=5, max_batch=max_batch)
    spec = type(spec)(**{**spec.__dict__, "weight_scale": float(rng.choice(scales))})
    net, x, y = build_case(spec)
    x, y = drop_ambiguous_samples(net, x, y)
    if x.shape[0] == 0:
        return random_curvature_case(rng, scales, max_batch)
    return (to_sequential(net, rng) if rng.random() < 0.5 else net), x, y


@register_check("curvature-network")
def curvature_network_check(rng: np.random.Generator) -> list[Comparison]:
    """Hv, Gv, ∇²_f ℓ, diag GGN (both forms, per sample), diag H, gradient statistics.

    Scales: ``|J|ᵀ(|H_f| + 1/n)|J|`` for GGN entries, plus ``floor`` (TorchModel.floor)
    for Hessian entries — the magnitude of the terms a saturated softmax cancels.
    """
    model, x, y = random_curvature_case(rng)
    return curvature_comparisons(model, x, y, rng)


def curvature_comparisons(model, x, y, rng: np.random.Generator) -> list[Comparison]:
    """Every whole-model comparison of :func:`curvature_network_check` for one case."""
    tm = TorchModel(model, x, y)
    H, G, Ga, floor = tm.hessian(), tm.ggn(), tm.ggn(absolute=True), tm.floor()
    Hs, Gs = np.abs(H) + Ga + floor, Ga + floor
    v = rng.standard_normal(H.shape[0])
    av = np.abs(v)
    comps = [
        Comparison("CURV.hvp", "H v", flatten(hvp(model, x, y, v)), H @ v, Hs @ av),
        Comparison("CURV.ggnvp", "G v", flatten(ggnvp(model, x, y, v)), G @ v, Gs @ av),
        Comparison(
            "CURV.diag-ggn", "diag G", flatten(diag_ggn(model, x, y)), np.diag(G), np.diag(Gs)
        ),
        Comparison(
            "CURV.diag-ggn",
            "diag G (readable)",
            flatten(diag_ggn_readable(model, x, y)),
            np.diag(G),
            np.diag(Gs),
        ),
        Comparison(
            "CURV.diag-hessian",
            "diag H (factored)",
            flatten(diag_hessian(model, x, y)),
            np.diag(H),
            np.diag(Hs),
        ),
        Comparison(
            "CURV.diag-hessian",
            "diag H (readable)",
            flatten(diag_hessian_readable(model, x, y)),
            np.diag(H),
            np.diag(Hs),
        ),
    ]
    chain = as_chain(model)
    xs, ys = chain.data(x, y)
    f = chain.forward(xs)[1]
    Hf = tm.output_hessian()
    comps.append(
        Comparison(
            "CURV.output-hessian", "∇²_f ℓ", output_hessian(chain, f, ys), Hf, np.abs(Hf) + 1
        )
    )
    # Per-sample diagonal GGN: the GGN of each sample alone (torch), no 1/n.
    singles = [TorchModel(model, x[i : i + 1], ys[i : i + 1]) for i in range(xs.shape[0])]
    expected = np.stack([np.diag(t.ggn()) for t in singles])
    scale = np.stack([np.diag(t.ggn(absolute=True)) + t.floor() for t in singles])
    comps.append(
        Comparison(
            "CURV.diag-ggn",
            "per-sample diag G",
            _flat_rows(model, diag_ggn(model, x, y, per_sample=True)),
            expected,
            scale,
        )
    )
    hessians = [t.hessian() for t in singles]
    comps.append(
        Comparison(
            "CURV.diag-hessian",
            "per-sample diag H (factored)",
            _flat_rows(model, diag_hessian(model, x, y, per_sample=True)),
            np.stack([np.diag(h) for h in hessians]),
            scale + np.stack([np.abs(np.diag(h)) for h in hessians]),
        )
    )
    psg = tm.per_sample_gradients()
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in chain.shapes])
    norms = np.stack([(psg[:, a:b] ** 2).sum(1) for a, b in itertools.pairwise(offsets)], 1)
    # Each gₓ is known to ε·(|gₓ| + √floor) (its own rounding scale), its square to about
    # 2ε·(|gₓ| + √floor)².
    sq = (np.abs(psg) + np.sqrt(floor)) ** 2
    norms_scale = np.stack([sq[:, a:b].sum(1) for a, b in itertools.pairwise(offsets)], 1)
    comps += [
        Comparison(
            "CURV.grad-norms", "‖∇C_x‖²", np.stack(grad_norms(model, x, y), 1), norms, norms_scale
        ),
        Comparison(
            "CURV.sum-grad-squared",
            "Σ g_x²",
            flatten(sum_grad_squared(model, x, y)),
            (psg**2).sum(0),
            sq.sum(0),
        ),
        Comparison(
            "CURV.grad-variance",
            "Var g",
            flatten(grad_variance(model, x, y)),
            psg.var(0),
            scale=sq.mean(0) + psg.mean(0) ** 2,  # the two terms that cancel
        ),
    ]
    return comps


def _flat_rows(model, per_sample: list[np.ndarray]) -> np.ndarray:
    """Per-sample arrays ``(n, *shape)`` -> ``(n, P)`` in flat parameter order."""
    return np.concatenate([p.reshape(p.shape[0], -1) for p in per_sample], axis=1)


@register_check("curvature-kflr")
def curvature_kflr_check(rng: np.random.Generator) -> list[Comparison]:
    """KFLR = exact GGN block at batch size 1; and for a deep linear net with quadratic cost."""
    model, x, y = random_curvature_case(rng, max_batch=1)
    tm = TorchModel(model, x, y)
    G, scale = tm.ggn(), tm.ggn(absolute=True)
    comps = [
        Comparison(
            "CURV.kflr",
            f"B ⊗ A layer {l} (n = 1)",
            np.kron(B, A),
            ggn_block(model, G, l),
            scale=ggn_block(model, scale, l) + tm.floor(),
        )
        for l, (A, B) in enumerate(kflr(model, x, y))
    ]
    depth = int(rng.integers(1, 4))
    sizes = [int(s) for s in rng.integers(1, 5, depth + 1)]
    net = Network(sizes, "identity", "quadratic", seed=rng)
    n = int(rng.integers(1, 6))
    xl, yl = rng.standard_normal((n, sizes[0])), rng.standard_normal((n, sizes[-1]))
    G = TorchModel(net, xl, yl).ggn()
    comps += [
        Comparison("CURV.kflr", f"B ⊗ A deep linear layer {l}", np.kron(B, A), ggn_block(net, G, l))
        for l, (A, B) in enumerate(kflr(net, xl, yl))
    ]
    return comps


@register_check("curvature-loss-hessian")
def curvature_loss_hessian_check(rng: np.random.Generator) -> list[Comparison]:
    """Every cost's per-sample Hessian ∇²ₐC_x and factor S Sᵀ against torch."""
    comps = []
    for name in COSTS.names():
        cost = get_cost(name)
        spec = random_spec(rng, max_depth=1, max_width=5, max_batch=4, costs=[name])
        # Moderate weights: a saturated sigmoid (a = 1 exactly) has an infinite Hessian.
        net, x, y = build_case(type(spec)(**{**spec.__dict__, "weight_scale": 1.0}))
        a = net.feedforward(x)
        y = net.prepare_targets(y, a.shape[0])
        fn = torch_cost(cost)
        if name == "cross-entropy":  # torch's BCE double backward adds an ε (oracle module)

            def fn(at, yt):
                terms = torch.special.xlogy(yt, at) + torch.special.xlogy(1 - yt, 1 - at)
                return -terms.sum() / at.shape[0]

        if name == "multi-margin":
            m = cost.margin

            def fn(at, yt, m=m):
                hinge = torch.relu(m - (at * yt).sum(1, keepdim=True) + at)
                return torch.where(yt == 1, 0.0, hinge).sum() / at.shape[0]

        def one(ai, yi, fn=fn):
            return fn(ai[None], yi[None])

        at, yt = torch.tensor(a), torch.tensor(y)
        expected = torch.func.vmap(torch.func.hessian(one))(at, yt).numpy(force=True)
        H = cost.hessian(a, y)
        S = cost.hessian_factor(a, y)
        # Costs of logits evaluate e^{a − max a}: rounding a − max a by ε·|a| makes a relative
        # error of ε·|a| in every probability, and so in every Hessian entry (measured: 2e-12
        # relative at logits of ~1e4, correct in both libraries).
        # For softmax costs, diag(p) − p pᵀ cancels where one class dominates (p₀ − p₀² with
        # p₀ ≈ 1): its rounding is ε-relative to the terms p_i δ_ij + p_i p_j, not to the
        # result (measured: 1.5e-5 entries off by 3e-17, 2e-12 relative, in both libraries).
        # p ≤ 1, so for other costs these terms are at most 2 and |∇²C| decides.
        p = np.exp(a - a.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        terms = p[:, :, None] * (np.eye(a.shape[1])[None] + p[:, None, :])
        scale = (
            np.maximum(np.abs(expected), terms) * (1.0 + 2.0 * np.abs(a).max(axis=1))[:, None, None]
        )
        comps += [
            Comparison(f"CURV.loss-hessian.{name}", "∇²ₐC_x", H, expected, scale=scale),
            Comparison(
                "CURV.loss-factor",
                f"S Sᵀ ({name})",
                S @ np.swapaxes(S, 1, 2),
                expected,
                scale=scale,
            ),
        ]
    return comps


def _edge_inputs(name: str, act, rng: np.random.Generator) -> np.ndarray:
    z = list(rng.standard_normal(12) * 3)
    for k in kink_points(name, act):
        z += [k, np.nextafter(k, -np.inf), np.nextafter(k, np.inf), k - 1e-3, k + 1e-3]
    return np.array(z)[None, :]


@register_check("curvature-activation-second")
def curvature_activation_check(rng: np.random.Generator) -> list[Comparison]:
    """σ'' (elementwise) and the second-order VJP (softmax, log-softmax) against torch."""
    comps = []
    for name in ACTIVATIONS.names():
        act = _random_activation(name, rng)
        z = _edge_inputs(name, act, rng)
        if not act.elementwise:
            z = z[:, : int(rng.integers(1, 8))].repeat(3, axis=0) + rng.standard_normal((3, 1))
        a = act.forward(z)
        zt = torch.tensor(z, requires_grad=True)
        at = torch_activation(act)(zt)
        g = rng.standard_normal(z.shape)
        dz = rng.standard_normal(z.shape)
        # d/dz ⟨g, J(z)ᵀ ... ⟩: Σₖ gₖ ∇²σₖ dz = ∇_z ⟨∇_z ⟨g, σ(z)⟩, dz⟩ (gradgrad)
        (first,) = torch.autograd.grad(
            at, zt, torch.tensor(g), create_graph=True, retain_graph=True
        )
        second = _grad_or_zero(first, zt, torch.tensor(dz))
        # Scale: the summed terms' magnitude — |g||dz|(1 + z²) elementwise (GELU's φ(2 − z²)
        # and SiLU's 2 + z(1 − 2s) cancel near their zeros), Σₖ|gₖ|·max|dz| for a coupled σ
        # (terms of mass p ≤ 1 that cancel when one p → 1). Measured worst: see docs.
        if act.elementwise:
            mag = np.abs(g) * np.abs(dz) * (1.0 + z * z)
        else:
            mag = np.abs(g).sum(1, keepdims=True) * np.abs(dz).max(1, keepdims=True) + 0 * z
        ours = act.second_vjp(g, dz, z, a)
        comps.append(Comparison(f"ACT2.{name}", "Σ g ∇²σ dz", ours, second.numpy(force=True), mag))
        if act.elementwise:
            ones = torch.ones_like(zt)
            (d1,) = torch.autograd.grad(at, zt, ones, create_graph=True)
            d2 = _grad_or_zero(d1, zt, ones).numpy(force=True)
            ours = act.second_derivative(z, a)
            comps.append(Comparison(f"ACT2.{name}", "σ''", ours, d2, 1.0 + z * z))
    return comps


def _grad_or_zero(out: torch.Tensor, wrt: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``∂⟨seed, out⟩/∂wrt``; zero where ``out`` does not depend on ``wrt`` (linear pieces)."""
    if not out.requires_grad:
        return torch.zeros_like(wrt)
    (grad,) = torch.autograd.grad(out, wrt, seed, allow_unused=True, retain_graph=True)
    return torch.zeros_like(wrt) if grad is None else grad


def _random_activation(name: str, rng: np.random.Generator):
    if name in ("leaky-relu", "elu"):
        return get_activation({"name": name, "alpha": float(rng.uniform(0.01, 2.0))})
    if name == "softplus":
        return get_activation(
            {
                "name": name,
                "beta": float(rng.uniform(0.5, 3)),
                "threshold": float(rng.uniform(1, 20)),
            }
        )
    if name == "gelu":
        return get_activation({"name": name, "approximate": str(rng.choice(["none", "tanh"]))})
    if name == "hardtanh":
        lo = float(rng.uniform(-2, 0))
        return get_activation(
            {"name": name, "min_val": lo, "max_val": lo + float(rng.uniform(0.5, 3))}
        )
    return get_activation(name)


#: (cost, output activation) pairs with a predictive distribution (CURV.diag-ggn-mc).
MC_PAIRS = (
    ("categorical-cross-entropy", "identity"),
    ("log-likelihood", "softmax"),
    ("cross-entropy", "sigmoid"),
    ("quadratic", "identity"),
    ("bce-logits", "identity"),
    ("kl-divergence", "log-softmax"),
)

#: c·ε of the project's comparisons (Comparison.check's default c = 64, float64).
ROUNDING = 64 * float(np.finfo(np.float64).eps)

#: ln(2/δ) of the concentration bound, δ = 1e-9 per entry: a verify run of 500 cases compares
#: ~5·10⁴ entries, so a correct estimator fails somewhere with probability < 10⁻⁴.
MC_LOG_CONFIDENCE = float(np.log(2 / 1e-9))


def mc_tolerance(var: np.ndarray, spread: np.ndarray, draws: int) -> np.ndarray:
    """Bernstein bound on ``|mean of K draws − E|`` from the exact per-sample moments.

    A draw is a sum of independent per-sample terms ``Tₓ`` (variance ``σₓ²``, deviation
    ``|Tₓ − E Tₓ| ≤ Mₓ``); the mean of ``K`` draws is a sum of ``K·n`` such terms, and
    Bernstein's inequality gives, with probability ``1 − δ``,
    ``|mean − E| ≤ √(2 L Σₓσₓ²/K) + 2 L maxₓ Mₓ / K``, ``L = ln(2/δ)``. For the Gaussian
    (unbounded) ``Mₓ = √var`` is the scale of its sub-exponential tail (Laurent–Massart).

    The sample standard error is not used: a class of probability ~1e-3 is drawn 0 or 1 times
    in ``K·n`` draws, so the sample SE can be ~0 while the mean is off by that class's whole
    contribution (measured: 4 of 60 random cases beyond 5 sample SEs, all within 2.3 exact
    SEs; this is why the check once needed a ``0.1·max|target|`` slack, now removed).
    """
    L = MC_LOG_CONFIDENCE
    return np.sqrt(2 * L * var.sum(0) / draws) + 2 * L * spread.max(0) / draws


@register_check("curvature-statistical")
def curvature_statistical_check(rng: np.random.Generator) -> list[Comparison]:
    """MC diag GGN and KFAC's B: the mean of K seeded draws against the exact expectation
    (enumerated over the predictive distribution by torch), within a Bernstein bound from the
    exact variance; the expectation itself against the exact GGN; power iteration on H v vs
    the eigenvalue of largest magnitude of torch's Hessian."""
    from manual_bp.curvature.diagonal import diag_ggn_mc
    from manual_bp.curvature.eigen import top_eigenvalue
    from manual_bp.curvature.kfac import kfac

    cost, output = MC_PAIRS[int(rng.integers(len(MC_PAIRS)))]
    spec = random_spec(rng, max_depth=2, max_width=4, max_batch=4, costs=[cost])
    # Scales up to 4 (saturating, not 30: a top eigenvalue of 1e-36 has no gap to test).
    scale = float(rng.choice(CURVATURE_SCALES))
    spec = type(spec)(**{**spec.__dict__, "weight_scale": scale, "kink_units": (), "dyadic": False})
    net, x, y = build_case(spec)
    net.activations[-1] = get_activation(output)
    K, seed = 200, int(rng.integers(2**31))
    moments = mc_draw_moments(net, x, y)
    floor = TorchModel(net, x, y).floor()
    exact = flatten(diag_ggn(net, x, y))
    b_exact = flatten([B for _, B in kflr(net, x, y)])
    draws = np.stack([flatten(diag_ggn_mc(net, x, y, rng=seed + k)) for k in range(K)])
    bdraws = np.stack([flatten([B for _, B in kfac(net, x, y, rng=seed + k)]) for k in range(K)])
    comps = []
    for eq, samples, target, key in (
        ("CURV.diag-ggn-mc", draws, exact, ""),
        ("CURV.kfac", bdraws, b_exact, "b_"),
    ):
        mean, var, spread = (moments[key + k] for k in ("mean", "var", "range"))
        expectation = mean.sum(0)
        comps += [
            Comparison(
                eq,
                f"mean of {K} draws ({cost})",
                samples.mean(0),
                expectation,
                oracle="statistical",
                # + the rounding model of every curvature entry (c·ε·floor, as for diag G):
                # a saturated sigmoid's p(1 − p) is 0 here and 3e-40 in torch.
                atol=mc_tolerance(var, spread, K) + ROUNDING * (np.abs(expectation) + floor),
            ),
            # E over p(ŷ | f) by enumeration (torch) = the exact GGN quantity (ours): the
            # Fisher identity, with the mass of KL targets.
            Comparison(
                eq,
                f"E_ŷ (enumerated) = exact ({cost})",
                target,
                expectation,
                scale=np.abs(mean).sum(0) + np.sqrt(var.sum(0)) + np.abs(target) + floor,
            ),
        ]
    eigenvalues = np.linalg.eigvalsh(TorchModel(net, x, y).hessian())
    expected = eigenvalues[np.argmax(np.abs(eigenvalues))]
    lam, _ = top_eigenvalue(net, x, y, max_iter=3000, tol=1e-14, rng=seed)
    gap = np.sort(np.abs(eigenvalues))[-2:] if eigenvalues.size > 1 else np.array([0.0, 1.0])
    if gap[0] < 0.99 * gap[1]:  # a clear gap: power iteration converges
        comps.append(
            Comparison(
                "CURV.top-eigenvalue",
                "λ_max",
                np.array([lam]),
                np.array([expected]),
                # Power iteration to 1e-9 relative, and H itself known to c·ε·floor: a dead or
                # saturated network has λ ~ 1e-8 … 1e-27 made of rounding (measured: 7.7e-9
                # relative at λ = 4.8e-8, 0.25 at 6e-27, both |Δ| < 4e-16).
                atol=1e-9 * abs(expected) + ROUNDING * floor,
            )
        )
    return comps
