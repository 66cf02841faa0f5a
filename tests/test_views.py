"""torch's ``Flatten(start_dim, end_dim)`` and ``Unflatten(dim, unflattened_size)`` (issue 23):
output, input gradient, V-axis products and configs against torch's modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.layers.build import get_layer
from manual_bp.layers.views import Flatten, Unflatten

FLATTENS = [((2, 3, 4, 5), 1, -1), ((2, 3, 4, 5), 0, -1), ((2, 3, 4, 5), -3, -2),
            ((2, 3, 4, 5), 2, 2), ((3, 4, 5), -3, -1), ((4,), 0, -1), ((), 0, -1),
            ((0, 3, 4), 1, -1)]  # fmt: skip
UNFLATTENS = [((3, 4, 5), -2, (2, 2)), ((3, 4, 5), 1, (-1, 2)), ((3,), 0, (1, 3)),
              ((2, 12), 1, (2, 3, 2)), ((6, 5), 0, (2, -1))]  # fmt: skip


def _against_torch(layer, module, shape):
    rng = np.random.default_rng(sum(shape) + 1)
    x = np.asarray(rng.standard_normal(shape))
    out, cache = layer.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    out_t = module(xt)
    g = np.asarray(rng.standard_normal(tuple(out_t.shape)))
    (gt,) = torch.autograd.grad(out_t, xt, torch.tensor(g))
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    dx, grads = layer.backward(g, cache)
    np.testing.assert_array_equal(dx, gt.numpy())
    assert grads == {}
    # V-axis products: each of the V vectors mapped alone (PROD.flatten.*, PROD.reshape.*)
    M = rng.standard_normal((3, *out.shape))
    T = rng.standard_normal((3, *shape))
    vjp, jvp = layer.input_vjp(cache, M), layer.input_jvp(cache, T)
    for v in range(3):
        np.testing.assert_array_equal(vjp[v], layer.backward(np.asarray(M[v]), cache)[0])
        np.testing.assert_array_equal(jvp[v], layer.jvp(cache, np.asarray(T[v])))
    assert layer.residual(cache, g, T)[0].shape == T.shape
    rebuilt = get_layer(layer.get_config())
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    np.testing.assert_array_equal(rebuilt.forward(x)[0], out)


@pytest.mark.parametrize("shape, start, end", FLATTENS)
def test_flatten_start_and_end_dim_match_torch(shape, start, end):
    _against_torch(Flatten(start, end), torch.nn.Flatten(start, end), shape)


@pytest.mark.parametrize("shape, dim, sizes", UNFLATTENS)
def test_unflatten_matches_torch(shape, dim, sizes):
    _against_torch(Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes), shape)


def test_views_refuse_what_torch_refuses_in_one_line():
    with pytest.raises(ValueError, match="start_dim cannot come after end_dim"):
        Flatten(2, 1).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="start_dim=1 is out of range for a 1-d input"):
        Flatten().forward(np.zeros(4))
    with pytest.raises(ValueError, match=r"don't multiply up to the size of dim 1 \(4\)"):
        Unflatten(1, (3, 2)).forward(np.zeros((3, 4, 5)))
    with pytest.raises(TypeError, match="start_dim must be an integer"):
        Flatten(1.0)
    with pytest.raises(TypeError, match="unflattened_size must be a sequence"):
        Unflatten(1, 4)
    with pytest.raises(ValueError, match="merges the batch axis"):
        Flatten(0).output_shape((3, 4))


def test_per_sample_shapes_and_saved_configs():
    assert Flatten().output_shape((3, 4, 5)) == (60,)
    assert Flatten(2).output_shape((3, 4, 5)) == (3, 20)
    assert Unflatten(1, (2, -1)).output_shape((6, 5)) == (2, 3, 5)
    assert Flatten().get_config() == {"name": "flatten"}  # the default saves as before
    assert Flatten(0, 2).get_config() == {"name": "flatten", "start_dim": 0, "end_dim": 2}
    assert repr(Flatten(0, 2)) == "Flatten(start_dim=0, end_dim=2)"
    assert Unflatten(1, [2, 2]).get_config() == {
        "name": "unflatten",
        "dim": 1,
        "unflattened_size": [2, 2],
    }
