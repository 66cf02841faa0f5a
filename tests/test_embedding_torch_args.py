"""``Embedding``'s torch options (issue 23): ``max_norm``/``norm_type`` (EMB.renorm: rows
renormalised in the forward pass, in place on the weight), ``scale_grad_by_freq``
(EMB.lookup's per-row mean), ``padding_idx`` with both, ``sparse=True`` refused,
``device``/``dtype`` — readable form and fused step against ``torch.nn.Embedding``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.layers.build import get_layer
from manual_bp.layers.embedding import Embedding

OPTIONS = [
    {},
    {"padding_idx": 1},
    {"max_norm": 1.0},
    {"max_norm": 0.5, "norm_type": 1.0, "padding_idx": 2},
    {"max_norm": 1.2, "norm_type": 1.5},
    {"max_norm": 0.8, "norm_type": float("inf")},
    {"scale_grad_by_freq": True},
    {"scale_grad_by_freq": True, "padding_idx": 0, "max_norm": 1.0},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("fast", [False, True])
def test_embedding_options_match_torch(options, fast):
    """EMB.renorm and EMB.lookup with torch's options: output, weight gradient, and the
    weight itself after the forward pass (renormalised in place), over two batches."""
    rng = np.random.default_rng(5)
    theirs = torch.nn.Embedding(6, 3, dtype=torch.float64, **options)
    ours = Embedding(6, 3, **options)
    with torch.no_grad():
        theirs.weight.mul_(2.0)  # norms above max_norm
    ours.params["weight"][...] = theirs.weight.detach().numpy()
    for shape in ((4, 5), (3,)):
        x = rng.integers(0, 6, size=shape)
        x.flat[:3] = x.flat[0]  # a repeated index
        yt = theirs(torch.from_numpy(x))
        g = rng.standard_normal(tuple(yt.shape))
        (gw,) = torch.autograd.grad(yt, [theirs.weight], torch.from_numpy(g))
        if fast:
            step = ours.fast_step()
            y = step.forward(x.astype(float)).copy()
            grads = {"weight": np.full((6, 3), np.nan)}
            step.backward(g.copy(), grads, False)
        else:
            y, cache = ours.forward(x)
            _, grads = ours.backward(g, cache)
        np.testing.assert_allclose(ours.params["weight"], theirs.weight.detach().numpy(),
                                   rtol=0, atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-15)
        np.testing.assert_allclose(grads["weight"], gw.numpy(), rtol=0, atol=1e-14)


def test_options_round_trip_and_refusals():
    layer = Embedding(5, 2, 1, 1.0, 1.0, True)
    rebuilt = get_layer(layer.get_config())
    assert rebuilt.get_config() == layer.get_config()
    assert (rebuilt.max_norm, rebuilt.norm_type, rebuilt.scale_grad_by_freq) == (1.0, 1.0, True)
    assert repr(layer) == (
        "Embedding(5, 2, padding_idx=1, max_norm=1.0, norm_type=1.0, scale_grad_by_freq=True)"
    )
    with pytest.raises(ValueError, match="sparse=True has no meaning here"):
        Embedding(5, 2, sparse=True)
    with pytest.raises(ValueError, match="device='cuda' has no meaning here"):
        Embedding(5, 2, device="cuda")
    assert Embedding(5, 2, dtype=torch.float32).params["weight"].dtype == np.float32
    _, cache = layer.forward(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="scale_grad_by_freq rescales the gradient"):
        layer.param_vjp(cache, np.zeros((1, 1, 2, 2)))
