"""Mazur's "step by step backpropagation example": the 2-2-2 sigmoid network by hand.

Figures from the worked example (quadratic cost E = Σ ½(target − out)², one sample).
See docs/backprop.md#worked-example.
"""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp import Network
from manual_bp.training import train


@pytest.fixture
def mazur_net():
    net = Network([2, 2, 2], activation="sigmoid", cost="quadratic")
    net.weights = [np.array([[0.15, 0.20], [0.25, 0.30]]), np.array([[0.40, 0.45], [0.50, 0.55]])]
    net.biases = [np.array([0.35, 0.35]), np.array([0.60, 0.60])]
    return net


def test_mazur_forward_pass(mazur_net):
    zs, activations = mazur_net.forward(np.array([[0.05, 0.10]]))
    np.testing.assert_allclose(zs[0], [[0.3775, 0.3925]], rtol=1e-12)
    np.testing.assert_allclose(activations[1], [[0.593269992, 0.596884378]], atol=1e-9)
    np.testing.assert_allclose(activations[2], [[0.75136507, 0.772928465]], atol=1e-8)


def test_mazur_gradients_and_update(mazur_net):
    x, y = np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]])
    grads = mazur_net.backprop(x, y)
    assert grads.cost == pytest.approx(0.298371109, abs=1e-9)
    # ∂E/∂w5 (= W²[0, 0]) and ∂E/∂w1 (= W¹[0, 0]) as in the example.
    assert grads.weights[1][0, 0] == pytest.approx(0.082167041, abs=1e-9)
    assert grads.weights[0][0, 0] == pytest.approx(0.000438568, abs=1e-9)
    train(mazur_net, x, y, epochs=1, batch_size=1, eta=0.5, monitor=())
    # Mazur's updated weights after one step with η = 0.5 (biases are also updated here,
    # which the example leaves fixed; the weights do not depend on that within one step).
    np.testing.assert_allclose(
        mazur_net.weights[1], [[0.35891648, 0.408666186], [0.511301270, 0.561370121]], atol=1e-9
    )
    np.testing.assert_allclose(
        mazur_net.weights[0], [[0.149780716, 0.19956143], [0.24975114, 0.29950229]], atol=1e-8
    )
