"""The user-facing gradient checker: ``check_layer`` and ``check_vjp`` of manual_bp.gradcheck.

Correct layers must pass (Dense, ActivationLayer, a user-written layer, a
correct softmax); deliberately wrong ones must be caught with a message that
names the gradient at fault (a missing transpose, a wrong ReLU mask, a
forgotten bias sum, a softmax with an elementwise "derivative", a missing
parameter gradient). Both oracles are exercised: finite differences alone and
torch autograd via ``torch_forward``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import ActivationLayer, Dense
from manual_bp.gradcheck import GradcheckReport, check_layer, check_vjp
from manual_bp.layers.dense import dense_forward


def _dense_torch(x, p):
    return torch.nn.functional.linear(x, p["weight"], p["bias"])


@st.composite
def dense_setups(draw, min_size: int = 1):
    n_in, n_out = draw(st.integers(min_size, 6)), draw(st.integers(min_size, 6))
    batch = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    return n_in, n_out, batch, seed


# ------------------------------------------------------------------- correct layers pass


@given(dense_setups())
def test_dense_layer_passes(setup):
    """The built-in Dense layer (LAYER.dense) passes against FD and torch."""
    n_in, n_out, batch, seed = setup
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out, seed=rng)
    report = check_layer(layer, rng.standard_normal((batch, n_in)), torch_forward=_dense_torch)
    assert isinstance(report, GradcheckReport)
    assert set(report.finite_differences) == set(report.torch) == {"x", "weight", "bias"}
    assert max(report.torch.values()) < 1e-13
    assert max(report.finite_differences.values()) < 1e-5


TORCH_ACTIVATIONS = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
@given(seed=st.integers(0, 2**31 - 1))
def test_activation_layers_pass(name, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((3, 4)) * 3
    report = check_layer(
        ActivationLayer(name), z, seed=rng, torch_forward=lambda x, p: TORCH_ACTIVATIONS[name](x)
    )
    assert set(report.finite_differences) == {"x"}
    assert "x" in str(report)


class Affine:
    """A user-written layer: out = x ⊙ γ + β (per-feature scale and shift)."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.params = {"gamma": rng.standard_normal(n), "beta": rng.standard_normal(n)}

    def forward(self, x):
        return x * self.params["gamma"] + self.params["beta"], x

    def backward(self, dout, x):
        return dout * self.params["gamma"], {
            "gamma": (dout * x).sum(axis=0),
            "beta": dout.sum(axis=0),
        }


def test_user_written_layer_passes():
    rng = np.random.default_rng(0)
    layer = Affine(5, rng)
    report = check_layer(
        layer, rng.standard_normal((4, 5)), torch_forward=lambda x, p: x * p["gamma"] + p["beta"]
    )
    assert report.worst < 1e-6


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax_vjp(dout, z):
    """Correct: (∂s/∂z)ᵀ dout = s ⊙ (dout − Σ_k dout_k s_k), row-wise."""
    s = _softmax(z)
    return s * (dout - (dout * s).sum(axis=1, keepdims=True))


def test_softmax_vjp_passes():
    z = np.random.default_rng(1).standard_normal((3, 5)) * 2
    report = check_vjp(_softmax, _softmax_vjp, z, torch_function=lambda x: torch.softmax(x, 1))
    assert set(report.torch) == {"x"}


# ------------------------------------------------------------------- wrong layers are caught


class DenseMissingTranspose(Dense):
    """dW = xᵀ dz instead of dzᵀ x: the transpose of the right answer."""

    def backward(self, dz, cache):
        x, W = cache.input, cache.weight
        return dz @ W, {"weight": x.T @ dz, "bias": dz.sum(axis=0)}


class DenseNoBiasSum(Dense):
    """db = dz: the batch sum of BP3 forgotten (shape (batch, n_out) instead of (n_out,))."""

    def backward(self, dz, cache):
        x, W = cache.input, cache.weight
        return dz @ W, {"weight": dz.T @ x, "bias": dz}


class DenseBiasMean(Dense):
    """db = mean of dz over the batch instead of the sum: right shape, wrong value."""

    def backward(self, dz, cache):
        x, W = cache.input, cache.weight
        return dz @ W, {"weight": dz.T @ x, "bias": dz.mean(axis=0)}


class DenseMissingBiasGradient(Dense):
    def backward(self, dz, cache):
        x, W = cache.input, cache.weight
        return dz @ W, {"weight": dz.T @ x}


class DenseCopiedParams(Dense):
    """params returns copies: the checker cannot perturb what forward reads."""

    def __init__(self, *args, **kwargs):
        plain = Dense(*args, **kwargs)
        state = dict(plain.__dict__)
        self._params = state.pop("params")
        self.__dict__.update(state)

    @property
    def params(self):
        return {name: array.copy() for name, array in self._params.items()}

    @params.setter
    def params(self, value):
        self._params = value


class ReLUWrongMask:
    """Masks by the sign of the upstream gradient instead of the sign of z."""

    params: dict = {}

    def forward(self, z):
        return np.maximum(z, 0.0), z

    def backward(self, dout, z):
        return dout * (dout > 0), {}


@given(dense_setups(min_size=2))
def test_missing_transpose_is_caught(setup):
    """A square W hides a missing transpose from any shape check; its values do not."""
    n, _, batch, seed = setup
    rng = np.random.default_rng(seed)
    layer = DenseMissingTranspose(n, n, seed=rng)
    with pytest.raises(
        AssertionError, match=r"parameter 'weight' ∂C/∂weight \(vs central finite"
    ) as info:
        check_layer(layer, rng.standard_normal((batch, n)))
    message = str(info.value)
    assert "expected" in message and "actual" in message and "at (" in message
    assert "∂C/∂x" not in message and "'bias'" not in message  # only W is wrong


def test_missing_transpose_is_caught_by_torch_and_shape():
    rng = np.random.default_rng(3)
    layer = DenseMissingTranspose(3, 2, seed=rng)  # non-square: the shapes differ
    with pytest.raises(AssertionError) as info:
        check_layer(layer, rng.standard_normal((4, 3)), torch_forward=_dense_torch)
    message = str(info.value)
    assert "parameter 'weight' ∂C/∂weight (vs central finite differences): shape (3, 2)" in message
    assert "parameter 'weight' ∂C/∂weight (vs torch): shape (3, 2)" in message


def test_forgotten_bias_sum_is_caught():
    rng = np.random.default_rng(4)
    with pytest.raises(AssertionError, match=r"parameter 'bias' ∂C/∂bias .*shape \(4, 2\)"):
        check_layer(DenseNoBiasSum(3, 2, seed=rng), rng.standard_normal((4, 3)))
    with pytest.raises(AssertionError, match=r"parameter 'bias' ∂C/∂bias \(vs central") as info:
        check_layer(DenseBiasMean(3, 2, seed=rng), rng.standard_normal((4, 3)))
    # The worst elements are listed with both values: the mean is 1/4 of the sum.
    match = re.search(r"expected ([-0-9.e]+), actual ([-0-9.e]+)", str(info.value))
    assert match and float(match[2]) == pytest.approx(float(match[1]) / 4, rel=1e-5)


def test_missing_parameter_gradient_is_caught():
    rng = np.random.default_rng(5)
    with pytest.raises(AssertionError, match="backward returned no gradient for parameter 'bias'"):
        check_layer(DenseMissingBiasGradient(3, 2, seed=rng), rng.standard_normal((2, 3)))


def test_copied_params_get_a_hint():
    rng = np.random.default_rng(6)
    with pytest.raises(AssertionError, match="return copies"):
        check_layer(DenseCopiedParams(3, 2, seed=rng), rng.standard_normal((2, 3)))


@given(seed=st.integers(0, 2**31 - 1))
def test_wrong_relu_mask_is_caught(seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((4, 6))
    z[0, :2] = [1.5, -1.5]  # at least one unit on each side of the kink
    with pytest.raises(AssertionError, match=r"input ∂C/∂x \(vs central finite differences\)"):
        check_layer(ReLUWrongMask(), z, seed=rng)


def test_elementwise_softmax_derivative_is_caught():
    """s ⊙ (1 − s) ⊙ dout is only the diagonal of the softmax Jacobian."""
    z = np.random.default_rng(7).standard_normal((3, 5))

    def wrong_vjp(dout, z):
        s = _softmax(z)
        return dout * s * (1 - s)

    with pytest.raises(AssertionError, match=r"input ∂C/∂x \(vs torch\)"):
        check_vjp(_softmax, wrong_vjp, z, torch_function=lambda x: torch.softmax(x, 1))
    with pytest.raises(AssertionError, match=r"input ∂C/∂x \(vs central finite differences\)"):
        check_vjp(_softmax, wrong_vjp, z)


def test_wrong_torch_forward_is_reported():
    rng = np.random.default_rng(8)
    with pytest.raises(AssertionError, match="forward output"):
        check_layer(
            Dense(3, 2, seed=rng), rng.standard_normal((2, 3)), torch_forward=lambda x, p: x
        )


def test_bad_arguments():
    rng = np.random.default_rng(9)
    layer = Dense(3, 2, seed=rng)
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"upstream has shape \(4, 3\), but the output has shape"):
        check_layer(layer, x, upstream=np.ones((4, 3)))
    layer32 = Dense(3, 2, seed=rng, dtype=np.float32)
    with pytest.raises(TypeError, match="parameter 'weight' must be a float64"):
        check_layer(layer32, x)


def test_upstream_is_random_and_seeded():
    layer = Dense(3, 2, seed=0)
    x = np.random.default_rng(1).standard_normal((4, 3))
    a, b = check_layer(layer, x, seed=2), check_layer(layer, x, seed=2)
    np.testing.assert_array_equal(a.upstream, b.upstream)
    assert np.unique(a.upstream).size == a.upstream.size  # never all-ones


def test_forward_reuses_dense_forward():
    """check_layer leaves the layer's parameters as they were (perturbed and restored)."""
    layer = Dense(3, 2, seed=0)
    W, b = layer.W.copy(), layer.b.copy()
    x = np.random.default_rng(1).standard_normal((4, 3))
    check_layer(layer, x)
    np.testing.assert_array_equal(layer.W, W)
    np.testing.assert_array_equal(layer.b, b)
    np.testing.assert_array_equal(layer.forward(x)[0], dense_forward(x, W, b))
