"""Products on the V axis of pooling and the structural layers (``docs/products.md``).

MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, Identity, Reshape and Residual: every
product against ``torch.func`` in float64 with random vectors, plus the identities
(:func:`reference.products.product_comparisons`), on drawn options and at the input a random
stack feeds them (:func:`reference.layer_cases.layer_case`); float32 kept in float32; the
stack walks of ``manual_bp.layers.containers_products`` as a chain's Hessian-vector product.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from manual_bp.layers import (
    ActivationLayer,
    AvgPool2d,
    BatchCouplingError,
    Dense,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    Layer,
    MaxPool2d,
    Reshape,
    Residual,
    stack_forward,
)
from manual_bp.layers.containers import stack_param_vjp, stack_residual, stack_tangents
from reference.checks_convolution import draw_pool_kwargs
from reference.checks_structure import product_oracle_forward
from reference.layer_cases import layer_case
from reference.products import product_comparisons
from reference.stack import BLOCKS, torch_layer_forward

seeds = st.integers(0, 2**31 - 1)
CLASSES = ("MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Identity", "Reshape")


def _check(layer: Layer, x: np.ndarray, seed: int, c: float = 64.0) -> None:
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        comparison.check(c=c)


def _batch(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 4))


@given(seed=seeds)
@settings(max_examples=15, deadline=None)
def test_maxpool2d_products_match_torch_func(seed):
    """PROD.maxpool2d.vjp, PROD.maxpool2d.jvp, PROD.maxpool2d.residual: drawn kernel,
    stride, padding, dilation and ceil_mode, both implementations, on normal inputs and on
    small integers (ties: the first maximum wins, in the JVP's gather as in the VJP)."""
    rng = np.random.default_rng(seed)
    kwargs = draw_pool_kwargs(rng, "max")
    size = kwargs.pop("size")
    layer = MaxPool2d(**kwargs, implementation=str(rng.choice(["fast", "readable"])))
    shape = (_batch(rng), int(rng.integers(1, 4)), *size)
    ties = bool(rng.integers(2))
    x = rng.integers(-2, 3, size=shape).astype(float) if ties else rng.standard_normal(shape)
    _check(layer, x, seed)


@pytest.mark.parametrize("special", ["nan", "inf", "-inf"])
@given(seed=seeds)
@settings(max_examples=6, deadline=None)
def test_maxpool2d_products_follow_the_winner_rule_on_non_finite_inputs(special, seed):
    """PROD.maxpool2d.jvp and PROD.maxpool2d.vjp where the winner rule has its edge cases:
    NaN (the last NaN wins), ±inf, windows of −∞ whose padding must not win. The JVP's
    gather equals torch.func's exactly, the VJP (cotangents holding NaN and ±inf, which
    reach only their window's winner) torch's and the readable backward's."""
    rng = np.random.default_rng(seed)
    kwargs = draw_pool_kwargs(rng, "max")
    size = kwargs.pop("size")
    layer = MaxPool2d(**kwargs)
    x = rng.integers(-2, 3, size=(_batch(rng), 2, *size)).astype(float)
    x[rng.random(x.shape) < rng.choice([0.3, 0.7, 1.0])] = float(special)
    out, cache = layer.forward(x)
    T, M = rng.standard_normal((3, *x.shape)), rng.standard_normal((3, *out.shape))
    M[rng.random(M.shape) < 0.2] = rng.choice([np.nan, np.inf, -np.inf])  # must not leak

    def pool(xin: torch.Tensor) -> torch.Tensor:
        return torch_layer_forward(layer, {}, {}, xin, cache)

    xt = torch.tensor(x)
    jvp = torch.func.vmap(lambda t: torch.func.jvp(pool, (xt,), (t,))[1])(torch.tensor(T))
    np.testing.assert_array_equal(layer.input_jvp(cache, T), jvp.numpy())
    _, vjp_fn = torch.func.vjp(pool, xt)
    (vjp,) = torch.func.vmap(vjp_fn)(torch.tensor(M))
    ours = layer.input_vjp(cache, M)
    finite = np.abs(M[np.isfinite(M)])
    atol = 64 * np.finfo(float).eps * finite.max(initial=0.0)  # windows add in any order
    np.testing.assert_allclose(ours, vjp.numpy(), rtol=0, atol=atol)
    readable = MaxPool2d(**kwargs, implementation="readable")
    np.testing.assert_allclose(ours[1], readable.backward(M[1], cache)[0], rtol=0, atol=atol)


@given(seed=seeds)
@settings(max_examples=15, deadline=None)
def test_avgpool2d_products_match_torch_func(seed):
    """PROD.avgpool2d.vjp, PROD.avgpool2d.jvp, PROD.avgpool2d.residual: drawn kernel,
    stride, padding, ceil_mode, count_include_pad and divisor_override."""
    rng = np.random.default_rng(seed)
    kwargs = draw_pool_kwargs(rng, "avg")
    size = kwargs.pop("size")
    x = rng.standard_normal((_batch(rng), int(rng.integers(1, 4)), *size))
    _check(AvgPool2d(**kwargs), x, seed)


@given(seed=seeds)
@settings(max_examples=8, deadline=None)
def test_global_avgpool2d_products_match_torch_func(seed):
    """PROD.global-avgpool2d.vjp, PROD.global-avgpool2d.jvp, PROD.global-avgpool2d.residual."""
    rng = np.random.default_rng(seed)
    shape = (_batch(rng), *(int(k) for k in rng.integers(1, 6, size=3)))
    _check(GlobalAvgPool2d(), rng.standard_normal(shape), seed)


def _per_sample_shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(k) for k in rng.integers(1, 5, size=int(rng.integers(1, 4))))


@given(seed=seeds)
@settings(max_examples=8, deadline=None)
def test_flatten_products_match_torch_func(seed):
    """PROD.flatten.vjp, PROD.flatten.jvp, PROD.flatten.residual on 1 to 3 per-sample axes."""
    rng = np.random.default_rng(seed)
    _check(Flatten(), rng.standard_normal((_batch(rng), *_per_sample_shape(rng))), seed)


@given(seed=seeds)
@settings(max_examples=6, deadline=None)
def test_identity_products_match_torch_func(seed):
    """PROD.identity.vjp, PROD.identity.jvp, PROD.identity.residual."""
    rng = np.random.default_rng(seed)
    _check(Identity(), rng.standard_normal((_batch(rng), *_per_sample_shape(rng))), seed)


def _draw_reshape(rng: np.random.Generator, shape: tuple[int, ...]) -> Reshape:
    """A target shape of the same size: the size's prime factors dealt to 1–3 axes (and
    an axis of 1 at random), one axis given as −1 at random."""
    size, factors, p = math.prod(shape), [], 2
    while size > 1:
        while size % p == 0:
            factors.append(p)
            size //= p
        p += 1
    axes = [1] * int(rng.integers(1, 4))
    for factor in factors:
        axes[int(rng.integers(len(axes)))] *= factor
    if rng.integers(2):
        axes[int(rng.integers(len(axes)))] = -1
    return Reshape(*axes)


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_reshape_products_match_torch_func(seed):
    """PROD.reshape.vjp, PROD.reshape.jvp, PROD.reshape.residual on drawn shapes (−1 too)."""
    rng = np.random.default_rng(seed)
    shape = _per_sample_shape(rng)
    _check(_draw_reshape(rng, shape), rng.standard_normal((_batch(rng), *shape)), seed)


# ----------------------------------------------------------------------------- residual blocks
def _has_products(layer: Layer) -> bool:
    """Whether every product the layer needs is its own (a container: of all its children)."""
    if layer.children():
        return all(_has_products(child) for child in layer.children())
    cls = type(layer)
    needed = ["input_vjp", "input_jvp"] + (["param_vjp", "param_jvp"] if layer.params else [])
    needed += [] if cls.hessian_is_zero else ["residual"]
    return all(getattr(cls, name) is not getattr(Layer, name) for name in needed)


def _branch(rng: np.random.Generator, shape: tuple[int, ...], depth: int = 0) -> list[Layer]:
    """1–3 random pieces mapping ``shape`` back to itself: a dense layer and an activation,
    any registered stack block (of every layer class whose products exist), an identity, a
    nested residual block; a final map back to ``shape`` (images: Flatten, Dense, Reshape)."""
    kind = "features" if len(shape) == 1 else "images"
    layers: list[Layer] = []
    h = tuple(shape)
    for _ in range(int(rng.integers(1, 4))):
        piece = int(rng.integers(4 if depth < 2 else 3))
        if piece == 0 and kind == "features":
            width = int(rng.integers(1, 6))
            act = str(rng.choice(["tanh", "relu", "sigmoid", "softplus", "elu"]))
            new, h_new = [Dense(h[-1], width, seed=rng), ActivationLayer(act)], (width,)
        elif piece == 0:
            cls = MaxPool2d if rng.integers(2) else AvgPool2d
            new, h_new = [cls(3, 1, 1)], h  # same size: a 3×3 window, stride 1, padding 1
        elif piece == 1:
            block = BLOCKS[kind][str(rng.choice(sorted(BLOCKS[kind])))]
            new, h_new = block(rng, h)
            new, h_new = (new, tuple(h_new)) if all(map(_has_products, new)) else ([], h)
        elif piece == 2:
            new, h_new = [Identity()], h
        else:
            new, h_new = [Residual(_branch(rng, h, depth + 1))], h
        layers += new
        h = h_new
    if h != tuple(shape) or not layers:
        if kind == "features":
            layers.append(Dense(h[-1], shape[0], seed=rng))
        else:
            layers += [Flatten(), Dense(math.prod(h), math.prod(shape), seed=rng)]
            layers.append(Reshape(*shape))
    return layers


@given(seed=seeds)
@settings(max_examples=15, deadline=None)
@example(seed=330)  # a batch norm without affine parameters, training, above a dense layer
def test_residual_products_match_torch_func(seed):
    """PROD.residual.vjp, PROD.residual.jvp, PROD.residual.residual: residual blocks on
    feature vectors and images whose random branches hold dense layers, activations, the
    registered stack blocks, pooling, flatten/reshape and residual blocks nested in them, in
    training or evaluation mode (the branch's products walked: containers_products)."""
    rng = np.random.default_rng(seed)
    if rng.integers(2):
        shape: tuple[int, ...] = (int(rng.integers(1, 6)),)
    else:
        shape = (int(rng.integers(1, 3)), int(rng.integers(3, 6)), int(rng.integers(3, 6)))
    layer = Residual(_branch(rng, shape))
    layer.train(bool(rng.integers(2)))
    # A branch is a chain of up to ~10 layers: rounding accumulates along it under
    # cancellation; reference.products' sensitivity (two shakes, times 4) covers it at 64ε
    # (one shake alone missed a 6.7e-14 error where 64ε gave 1.4e-14, 1 seed in ~300).
    _check(layer, rng.standard_normal((int(rng.integers(2, 5)), *shape)), seed)


@pytest.mark.parametrize("name", [*CLASSES, "Residual"])
@given(seed=seeds)
@settings(max_examples=3, deadline=None)
def test_products_in_the_middle_of_stacks(name, seed):
    """PROD.maxpool2d.*, PROD.avgpool2d.*, PROD.global-avgpool2d.*, PROD.flatten.*,
    PROD.identity.*, PROD.reshape.*, PROD.residual.* at the input a random stack feeds
    the layer (reference.layer_cases)."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    _check(layer, x, seed)


def _float32_case(name: str, rng: np.random.Generator) -> tuple[Layer, np.ndarray]:
    image = rng.standard_normal((2, 2, 5, 4))
    if name == "MaxPool2d":
        return MaxPool2d(3, 2, 1, ceil_mode=True), image
    if name == "AvgPool2d":
        return AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), image
    if name == "Residual":
        f32 = np.float32
        branch = [Dense(4, 3, seed=rng, dtype=f32), ActivationLayer("tanh")]
        inner = Residual([Dense(3, 3, seed=rng, dtype=f32), ActivationLayer("sigmoid")])
        return Residual([*branch, inner, Dense(3, 4, seed=rng, dtype=f32)]), image[0, 0]
    layer = {"GlobalAvgPool2d": GlobalAvgPool2d, "Flatten": Flatten, "Identity": Identity}
    return (layer[name]() if name in layer else Reshape(4, -1)), image


@pytest.mark.parametrize("name", [*CLASSES, "Residual"])
def test_products_keep_float32(name):
    """PROD.maxpool2d.*, PROD.avgpool2d.*, PROD.global-avgpool2d.*, PROD.flatten.*,
    PROD.identity.*, PROD.reshape.*, PROD.residual.*: float32 in, float32 out, and close
    to the float64 products of the same float32 numbers."""
    rng = np.random.default_rng(5)
    layer, x = _float32_case(name, rng)
    twin = copy.deepcopy(layer)  # the same numbers in float64
    for leaf in _leaves(twin):
        leaf.params.update({n: p.astype(np.float64) for n, p in leaf.params.items()})
    x = x.astype(np.float32)
    out, cache = layer.forward(x)
    M = rng.standard_normal((3, *out.shape)).astype(np.float32)
    T = rng.standard_normal((3, *x.shape)).astype(np.float32)
    g = rng.standard_normal(out.shape).astype(np.float32)
    Tp = {n: rng.standard_normal((3, *p.shape)).astype(np.float32) for n, p in layer.params.items()}
    ours = _all_products(layer, cache, M, T, Tp, g)
    cache64 = twin.forward(x.astype(np.float64))[1]
    wide = {n: v.astype(np.float64) for n, v in Tp.items()}
    want = _all_products(twin, cache64, M.astype(float), T.astype(float), wide, g.astype(float))
    for key, value in ours.items():
        assert value.dtype == np.float32, f"{name} {key}: {value.dtype}"
        scale = max(1.0, float(np.abs(want[key]).max(initial=0.0)))
        np.testing.assert_allclose(value, want[key], rtol=0, atol=1e-5 * scale, err_msg=key)


def _leaves(layer: Layer) -> list[Layer]:
    if not layer.children():
        return [layer]
    return [leaf for child in layer.children() for leaf in _leaves(child)]


def _all_products(layer, cache, M, T, Tp, g) -> dict[str, np.ndarray]:
    found = {"input_vjp": layer.input_vjp(cache, M), "input_jvp": layer.input_jvp(cache, T)}
    r_x, r_p = layer.residual(cache, g, T, Tp or None)
    found["residual_x"] = r_x
    if layer.params:
        found["param_jvp"] = layer.param_jvp(cache, Tp)
        for per_sample in (True, False):
            grads = layer.param_vjp(cache, M, sum_batch=per_sample)
            found.update({f"param_vjp[{n}, {per_sample}]": v for n, v in grads.items()})
        found.update({f"residual[{n}]": v for n, v in r_p.items()})
    return found


# ----------------------------------------------------------------------------- stack walks
@given(seed=seeds)
@settings(max_examples=8, deadline=None)
def test_stack_residual_is_the_hessian_vector_product_of_a_chain(seed):
    """PROD.residual.residual as a model will use it: for a random chain and the cost
    C = ⟨g, out⟩ + ½‖out‖², stack_residual with dout = g + out and R{dout} = J·(T, T_θ)
    (the output tangent of stack_tangents) is the Hessian-vector product of C in (x, θ),
    against torch.func's forward-over-reverse."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 5)),)
    layers = _branch(rng, shape)
    for layer in layers:
        layer.train(bool(rng.integers(2)))
    x = rng.standard_normal((int(rng.integers(2, 4)), *shape))
    out, caches = stack_forward(layers, x)
    g = rng.standard_normal(out.shape)
    T = rng.standard_normal((2, *x.shape))
    named = {f"{i}.{n}": p for i, layer in enumerate(layers) for n, p in layer.params.items()}
    Tp = {n: rng.standard_normal((2, *p.shape)) for n, p in named.items()}
    tangents = stack_tangents(layers, caches, T, Tp)
    r_x, r_p = stack_residual(layers, caches, g + out, T, Tp, R_dout=tangents[-1])

    def cost(params: dict, xin: torch.Tensor) -> torch.Tensor:
        h = xin
        for i, (layer, cache) in enumerate(zip(layers, caches, strict=True)):
            own = {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".")[0] == str(i)}
            buffers = {k: torch.tensor(v) for k, v in layer.named_buffers()}  # eval-mode BN
            h = product_oracle_forward(layer, own, buffers, h, cache)
        return (torch.tensor(g) * h).sum() + 0.5 * (h * h).sum()

    params = {n: torch.tensor(p.astype(float)) for n, p in named.items()}
    gradient = torch.func.grad(cost, argnums=(0, 1))

    def hvp(tp, tx):
        return torch.func.jvp(lambda p, xin: gradient(p, xin), (params, torch.tensor(x)), (tp, tx))[
            1
        ]

    want_p, want_x = torch.func.vmap(hvp)(
        {n: torch.tensor(v) for n, v in Tp.items()}, torch.tensor(T)
    )
    scale = max(1.0, float(np.abs(want_x.numpy()).max()))
    np.testing.assert_allclose(r_x, want_x.numpy(), rtol=0, atol=1e-10 * scale)
    assert sorted(r_p) == sorted(named)
    for n in named:
        scale = max(1.0, float(np.abs(want_p[n].numpy()).max()))
        np.testing.assert_allclose(r_p[n], want_p[n].numpy(), rtol=0, atol=1e-10 * scale)


@given(seed=seeds)
@settings(max_examples=6, deadline=None)
def test_residual_product_oracle_equals_the_first_order_oracle(seed):
    """PROD.residual.vjp: the residual block's product oracle (its children's plain twins,
    reference.checks_structure) has the same forward and first derivatives as the torch
    forward the stack checks use."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 5)),)
    layer = Residual(_branch(rng, shape))
    x = rng.standard_normal((3, *shape))
    _, cache = layer.forward(x)
    params = {n: torch.tensor(p.astype(float)) for n, p in layer.params.items()}
    cotangent = torch.tensor(rng.standard_normal(x.shape))
    results = []
    buffers = {k: torch.tensor(v) for k, v in layer.named_buffers()}  # the branch's batch norms
    for forward in (product_oracle_forward, torch_layer_forward):
        value, vjp_fn = torch.func.vjp(
            lambda p, xin, f=forward: f(
                layer, p, {k: b.clone() for k, b in buffers.items()}, xin, cache
            ),
            params,
            torch.tensor(x),
        )
        results.append((value, *vjp_fn(cotangent)))
    (out_a, dp_a, dx_a), (out_b, dp_b, dx_b) = results
    np.testing.assert_allclose(out_a.numpy(), out_b.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_a.numpy(), dx_b.numpy(), rtol=1e-12, atol=1e-12)
    for n in params:
        np.testing.assert_allclose(dp_a[n].numpy(), dp_b[n].numpy(), rtol=1e-12, atol=1e-12)


class _Coupling(Identity):
    """An identity that says its output couples the samples (batch norm in training does)."""

    def param_vjp(self, cache, M, sum_batch=True):
        if not sum_batch:
            raise BatchCouplingError("couples the samples")
        return {}


def test_per_sample_walk_refuses_a_coupling_layer_above_parameters():
    """PROD.residual.vjp per sample: a layer coupling the samples above a dense layer makes
    sample n's share meaningless (BatchCouplingError); below every parameter it does not."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2))
    M = rng.standard_normal((2, 3, 2))
    above = [Dense(2, 2, seed=0), _Coupling()]
    below = [_Coupling(), Dense(2, 2, seed=0)]
    with pytest.raises(BatchCouplingError):
        stack_param_vjp(above, stack_forward(above, x)[1], M, sum_batch=False)
    per_sample = stack_param_vjp(below, stack_forward(below, x)[1], M, sum_batch=False)
    summed = stack_param_vjp(below, stack_forward(below, x)[1], M)
    np.testing.assert_allclose(per_sample["1.weight"].sum(axis=1), summed["1.weight"])
