"""Bad input gets a clear error naming the shape or value at fault — never silent broadcasting."""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp import Network, get_activation, get_cost


@pytest.fixture
def net():
    return Network([3, 4, 2], "sigmoid", "quadratic", seed=0)


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="at least two positive layer widths"):
        Network([3])
    with pytest.raises(ValueError, match="at least two positive layer widths"):
        Network([3, 0, 2])
    with pytest.raises(TypeError, match=r"sizes must be integers, got 2\.5"):
        Network([3, 2.5, 2])


def test_activation_and_cost_names_are_checked():
    with pytest.raises(ValueError, match=r"unknown activation 'sigmoidd'; valid names: .*sigmoid"):
        Network([3, 2], "sigmoidd")
    with pytest.raises(ValueError, match=r"unknown cost 'mse2'; valid names: .*quadratic"):
        Network([3, 2], cost="mse2")
    with pytest.raises(ValueError, match="got 3 activations for 2 layers"):
        Network([3, 4, 2], ["relu", "relu", "sigmoid"])
    with pytest.raises(ValueError, match="needs an output activation in"):
        Network([3, 4, 2], "relu", "cross-entropy")
    assert get_activation("Sigmoid") == get_activation("sigmoid")
    assert get_cost("cross_entropy").name == "cross-entropy"
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        Network([3, 2], dtype="int32")


def test_input_shapes_are_checked(net):
    with pytest.raises(ValueError, match=r"x has shape \(5, 4\); expected \(batch, 3\)"):
        net.feedforward(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"single sample must be passed as a batch of one"):
        net.feedforward(np.zeros(3))
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 1\)"):
        net.feedforward(np.zeros((2, 3, 1)))


def test_target_shapes_and_labels_are_checked(net):
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"y has shape \(5, 3\); expected \(5, 2\)"):
        net.backprop(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"y has shape \(4, 2\); expected \(5, 2\)"):
        net.backprop(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="label 2 at index 3 is out of range for 2 classes"):
        net.backprop(x, np.array([0, 1, 1, 2, 0]))
    with pytest.raises(ValueError, match="y has 4 labels for a batch of 5 inputs"):
        net.backprop(x, np.array([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="pass integer class labels"):
        net.backprop(x, np.zeros(5))
    labels = np.array([0, 1, 1, 0, 1])
    one_hot = np.eye(2)[labels]
    np.testing.assert_array_equal(
        net.backprop(x, labels).weights[0], net.backprop(x, one_hot).weights[0]
    )


def test_parameter_assignment_is_checked(net):
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(2, 4\), got \(4, 2\)"):
        net.weights[1] = np.zeros((4, 2))
    with pytest.raises(ValueError, match="expected 2 biases arrays, got 1"):
        net.biases = [np.zeros(4)]
    with pytest.raises(TypeError, match="number of weights arrays is fixed"):
        net.weights.append(np.zeros((2, 4)))
    net.weights[1] = np.ones((2, 4))
    assert net._params[12:20].tolist() == [1.0] * 8  # writes through to the flat buffer
    net.weights = [np.full((4, 3), 2.0), np.zeros((2, 4))]
    np.testing.assert_array_equal(net.weights[0], 2.0)


def test_single_sample_backprop_checks_shape(net):
    with pytest.raises(ValueError, match=r"one sample of shape \(3,\), got \(2, 3\)"):
        net.backprop_single(np.zeros((2, 3)), np.zeros(2))
