"""Nielsen's feedforward network, with backpropagation in matrix and per-sample form.

Conventions (``docs/conventions.md``): arrays are batch-major ``(batch, features)``;
``Wˡ`` is ``(n_l, n_{l−1})``; ``zˡ = aˡ⁻¹ Wˡᵀ + bˡ``; ``aˡ = σˡ(zˡ)``;
``δˡ_x = ∂C_x/∂zˡ_x`` is the *per-sample* error (Nielsen's definition); the
cost of a mini-batch is ``C = (1/n) Σ_x C_x``, and the parameter gradients
returned by :meth:`Network.backprop` are those of ``C``.

The four equations of backpropagation (derived in ``docs/backprop.md``)::

    BP1  δᴸ = ∇ₐC ⊙ σ'(zᴸ)                 (a VJP for a coupled σ such as softmax)
    BP2  δˡ = ((Wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)       row-wise: δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ σ'(zˡ)
    BP3  ∂C/∂bˡ = (1/n) Σ_x δˡ_x
    BP4  ∂C/∂Wˡ = (1/n) Σ_x δˡ_x (aˡ⁻¹_x)ᵀ  = (1/n) δˡᵀ aˡ⁻¹
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._validation import as_inputs, as_targets
from manual_bp.activations import Activation, get_activation
from manual_bp.costs import Cost, get_cost
from manual_bp.initializers import get_initializer
from manual_bp.layers.dense import dense_forward
from manual_bp.network_parts import (
    ActivationSpec,
    Gradients,
    check_lmbda,
    check_sizes,
    per_layer_activations,
)
from manual_bp.parameters import ParameterList, allocate_views

__all__ = ["Gradients", "Network"]


class Network:
    """A fully connected feedforward network (Nielsen's ``network.py``/``network2.py``).

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first: ``[784, 30, 10]``.
    activation : name, Activation, or a sequence of them
        One activation for every layer, or one per layer (``len(sizes) − 1``).
    cost : name or Cost
        ``"quadratic"`` (default), ``"cross-entropy"``, ... (see :mod:`manual_bp.costs`).
    output_activation : name or Activation, optional
        Overrides the activation of the last layer.
    initializer : {"default", "large"}
        ``default``: ``W ~ N(0, 1/n_in)``, ``b ~ N(0, 1)``; ``large``: all ``N(0, 1)``.
    seed : int or Generator, optional
        Seed of the initialiser.
    dtype : float64 (default) or float32
        Precision of parameters and computation.

    Examples
    --------
    >>> net = Network([2, 2, 2], activation="sigmoid", cost="quadratic", seed=0)
    >>> net.feedforward(np.zeros((3, 2))).shape
    (3, 2)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: ActivationSpec | Sequence[ActivationSpec] = "sigmoid",
        cost: str | Cost | type[Cost] | dict[str, Any] = "quadratic",
        *,
        output_activation: ActivationSpec | None = None,
        initializer: str = "default",
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
    ) -> None:
        self.sizes = check_sizes(sizes)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        n_layers = len(self.sizes) - 1
        self.activations: list[Activation] = per_layer_activations(activation, n_layers)
        if output_activation is not None:
            self.activations[-1] = get_activation(output_activation)
        self.cost: Cost = get_cost(cost)
        self.cost.check_output_activation(self.activations[-1])
        self.initializer = initializer
        self._params, weights, biases = allocate_views(self.sizes, self.dtype)
        self._weights = ParameterList(weights, "weights")
        self._biases = ParameterList(biases, "biases")
        get_initializer(initializer)(np.random.default_rng(seed), weights, biases)

    # ------------------------------------------------------------------ parameters
    @property
    def weights(self) -> ParameterList:
        """``[W¹, …, Wᴸ]``, each ``(n_l, n_{l−1})``; assign a list or items to set them."""
        return self._weights

    @weights.setter
    def weights(self, values: Sequence[np.ndarray]) -> None:
        self._weights.assign(values)

    @property
    def biases(self) -> ParameterList:
        """``[b¹, …, bᴸ]``, each ``(n_l,)``; assign a list or items to set them."""
        return self._biases

    @biases.setter
    def biases(self, values: Sequence[np.ndarray]) -> None:
        self._biases.assign(values)

    @property
    def num_layers(self) -> int:
        """Number of layers including the input layer (Nielsen's ``num_layers``)."""
        return len(self.sizes)

    @property
    def output_activation(self) -> Activation:
        return self.activations[-1]

    @property
    def n_parameters(self) -> int:
        return int(self._params.size)

    # ------------------------------------------------------------------ forward
    def feedforward(self, x: np.ndarray) -> np.ndarray:
        """Output ``aᴸ`` for inputs ``x`` of shape ``(batch, n_in)``: ``(batch, n_out)``."""
        a = as_inputs(x, self.sizes[0], self.dtype)
        for W, b, activation in zip(self.weights, self.biases, self.activations, strict=True):
            a = activation.forward(dense_forward(a, W, b))
        return a

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """All intermediates: ``(zs, activations)`` with ``activations[0] = x``.

        Equation ``FWD.dense``: ``zˡ = aˡ⁻¹ Wˡᵀ + bˡ``, ``aˡ = σˡ(zˡ)``.
        """
        a = as_inputs(x, self.sizes[0], self.dtype)
        zs, activations = [], [a]
        for W, b, activation in zip(self.weights, self.biases, self.activations, strict=True):
            z = dense_forward(a, W, b)
            a = activation.forward(z)
            zs.append(z)
            activations.append(a)
        return zs, activations

    # ------------------------------------------------------------------ backward
    def backprop(self, x: np.ndarray, y: np.ndarray) -> Gradients:
        """Backpropagation in matrix form over a mini-batch (BP1–BP4).

        Parameters
        ----------
        x : (n, n_in) array
        y : (n, n_out) target rows, or (n,) integer class labels

        Returns
        -------
        Gradients
            Gradients of the mean cost ``C = (1/n) Σ_x C_x`` plus the per-sample
            errors ``δˡ_x`` and the forward intermediates.
        """
        zs, activations = self.forward(x)
        n = activations[0].shape[0]
        y = as_targets(y, self.sizes[-1], n, self.dtype)
        n_layers = len(zs)
        deltas: list[np.ndarray] = [np.empty(0)] * n_layers

        # BP1: δᴸ = ∇ₐC ⊙ σ'(zᴸ), or the cost's exact shortcut (a − y) where one applies.
        deltas[-1] = self.cost.delta(zs[-1], activations[-1], y, self.activations[-1])
        # BP2: δˡ = ((Wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ); with samples as rows, (Wᵀδ)ᵀ = δ W.
        for l in range(n_layers - 2, -1, -1):
            upstream = deltas[l + 1] @ self.weights[l + 1]
            deltas[l] = self.activations[l].backward(upstream, zs[l], activations[l + 1])

        # BP3: ∂C/∂bˡ = (1/n) Σ_x δˡ_x.  BP4: ∂C/∂Wˡ = (1/n) Σ_x δˡ_x (aˡ⁻¹_x)ᵀ = δˡᵀ aˡ⁻¹ / n.
        grad_b = [delta.sum(axis=0) / n for delta in deltas]
        grad_w = [
            delta.T @ a_prev / n for delta, a_prev in zip(deltas, activations[:-1], strict=True)
        ]
        # BP.input: ∂C/∂x = (1/n) δ¹ W¹ — BP2 continued one layer down, with no σ'.
        input_grad = deltas[0] @ self.weights[0] / n
        return Gradients(
            weights=grad_w,
            biases=grad_b,
            deltas=deltas,
            zs=zs,
            activations=activations,
            input_grad=input_grad,
            cost=self.cost.value_from_logits(zs[-1], activations[-1], y, self.activations[-1]),
            _cost_fn=self.cost,
            _targets=y,
        )

    def backprop_single(self, x: np.ndarray, y: np.ndarray) -> Gradients:
        """Backpropagation for ONE sample, written as Nielsen's seed equations (``BP.single``).

        The readable reference form: column-vector algebra on 1-D arrays, one
        sample at a time (``x`` of shape ``(n_in,)``, ``y`` of shape ``(n_out,)``
        or an integer label). Returns a :class:`Gradients` whose arrays have no
        batch axis: ``weights[l]`` is ``∂C_x/∂Wˡ``, ``deltas[l]`` is ``δˡ_x``.
        """
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(
                f"backprop_single takes one sample of shape ({self.sizes[0]},), got {x.shape}"
            )
        x2 = as_inputs(x[None, :], self.sizes[0], self.dtype)
        y = np.asarray(y)
        y2 = as_targets(y[None] if y.ndim == 0 else y[None, :], self.sizes[-1], 1, self.dtype)
        a, target = x2[0], y2[0]
        zs, activations = [], [a]
        for W, b, activation in zip(self.weights, self.biases, self.activations, strict=True):
            z = W @ a + b  # zˡ = Wˡ aˡ⁻¹ + bˡ
            a = activation.forward(z[None, :])[0]
            zs.append(z)
            activations.append(a)

        n_layers = len(zs)
        deltas: list[np.ndarray] = [np.empty(0)] * n_layers
        # BP1 (per sample)
        deltas[-1] = self.cost.delta(
            zs[-1][None, :], activations[-1][None, :], target[None, :], self.activations[-1]
        )[0]
        # BP2 (per sample): δˡ = (Wˡ⁺¹)ᵀ δˡ⁺¹ ⊙ σ'(zˡ)
        for l in range(n_layers - 2, -1, -1):
            upstream = self.weights[l + 1].T @ deltas[l + 1]
            deltas[l] = self.activations[l].backward(
                upstream[None, :], zs[l][None, :], activations[l + 1][None, :]
            )[0]
        # BP3 ∂C_x/∂bˡ = δˡ;  BP4 ∂C_x/∂Wˡ = δˡ (aˡ⁻¹)ᵀ
        grad_b = [delta.copy() for delta in deltas]
        grad_w = [
            np.outer(delta, a_prev) for delta, a_prev in zip(deltas, activations[:-1], strict=True)
        ]
        input_grad = self.weights[0].T @ deltas[0]
        return Gradients(
            weights=grad_w,
            biases=grad_b,
            deltas=deltas,
            zs=zs,
            activations=activations,
            input_grad=input_grad,
            cost=self.cost.value_from_logits(
                zs[-1][None, :], activations[-1][None, :], target[None, :], self.activations[-1]
            ),
            _cost_fn=self.cost,
            _targets=target[None, :],
        )

    def backprop_per_sample(self, x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
        """Per-sample gradients by Nielsen's loop over the batch.

        Returns ``(weights, biases)``: ``weights[l]`` has shape ``(n, n_l, n_{l−1})``
        (``∂C_x/∂Wˡ`` for each sample ``x``), ``biases[l]`` has shape ``(n, n_l)``.
        Their mean over the batch axis is the mini-batch gradient
        (``Δw = (1/n) Σ_x Δw_x``, equation ``SGD.average``).
        """
        x = as_inputs(x, self.sizes[0], self.dtype)
        y = as_targets(y, self.sizes[-1], x.shape[0], self.dtype)
        per_sample = [self.backprop_single(xi, yi) for xi, yi in zip(x, y, strict=True)]
        weights = [np.stack([g.weights[l] for g in per_sample]) for l in range(len(self.weights))]
        biases = [np.stack([g.biases[l] for g in per_sample]) for l in range(len(self.biases))]
        return weights, biases

    # ------------------------------------------------------------------ evaluation
    def total_cost(
        self, x: np.ndarray, y: np.ndarray, lmbda: float = 0.0, n: int | None = None
    ) -> float:
        """Mean cost on ``(x, y)`` plus the L2 term ``(λ/2n) Σ‖W‖²`` (Nielsen's ``total_cost``).

        ``n`` is the size of the training set that ``λ`` is scaled by (default ``len(x)``).
        """
        check_lmbda(lmbda)
        value, a = self.cost_and_outputs(x, y)
        if lmbda:
            n = a.shape[0] if n is None else n
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"n (the training-set size) must be a positive integer, got {n!r}")
            value += 0.5 * (lmbda / n) * sum(float(np.vdot(W, W)) for W in self.weights)
        return value

    def cost_and_outputs(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """``(C, aᴸ)``: the mean cost on ``(x, y)`` and the outputs, from one forward pass.

        The cost is evaluated from ``zᴸ`` where the output activation has a stable logit
        form (:meth:`Cost.value_from_logits`: cross-entropy of a sigmoid, log-likelihood of
        a softmax), so a saturated output at a finite logit gives a finite cost.
        """
        zs, activations = self.forward(x)
        a = activations[-1]
        y = self.prepare_targets(y, a.shape[0])
        return self.cost.value_from_logits(zs[-1], a, y, self.activations[-1]), a

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class labels ``argmax aᴸ``, shape ``(batch,)``."""
        return np.argmax(self.feedforward(x), axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of samples whose predicted class equals the label (labels or one-hot).

        ``x`` and ``y`` get the checks of training data (:meth:`prepare_inputs`,
        :meth:`prepare_targets`): labels in range, rows of the output's width, finite.
        """
        x = self.prepare_inputs(x)
        return self.output_accuracy(self.feedforward(x), self.prepare_targets(y, x.shape[0]))

    def output_accuracy(self, a: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of outputs ``a`` against prepared target rows ``y`` (argmax against argmax)."""
        return float(np.mean(np.argmax(a, axis=1) == np.argmax(y, axis=1)))

    # ------------------------------------------------------------------ training protocol
    # What manual_bp.training needs of a model (shared with Sequential); the trainer
    # imports the model, never the reverse: train(net, x, y, ...), nielsen_sgd(net, ...).
    def prepare_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` as a finite ``(batch, n_in)`` array of the network's dtype."""
        return as_inputs(x, self.sizes[0], self.dtype, name)

    def prepare_targets(self, y: Any, batch: int, name: str = "y") -> np.ndarray:
        """Target rows ``(batch, n_out)``, finite and in the cost's target domain.

        Integer labels are range-checked and one-hot encoded; rows must match the output
        width exactly; the cost's domain (e.g. [0, 1] for cross-entropy) is checked here,
        so every entry point (training, evaluation data, ``accuracy``, ``total_cost``)
        refuses the same targets.
        """
        y = as_targets(y, self.sizes[-1], batch, self.dtype, name)
        self.cost.check_targets(y)
        return y

    def parameter_arrays(self) -> list[np.ndarray]:
        """``[W¹, …, Wᴸ, b¹, …, bᴸ]`` (views of the flat buffer), the optimizers' order."""
        return [*self.weights, *self.biases]

    def regularized_indices(self) -> list[int]:
        """Regularisers act on the weights only (Nielsen's L2), positions 0 … L−1."""
        return list(range(len(self.weights)))

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``(C, [∂C/∂W¹ …, ∂C/∂b¹ …])`` by BP1–BP4 (the readable training step)."""
        grads = self.backprop(x, y)
        return grads.cost, [*grads.weights, *grads.biases]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Outputs for monitoring; a Network has no train/eval difference."""
        return self.feedforward(x)

    def train(self, mode: bool = True) -> Network:
        """Mode switch of the model protocol (no effect: no dropout or batch norm here)."""
        return self

    def eval(self) -> Network:
        return self

    # ------------------------------------------------------------------ misc
    def get_config(self) -> dict[str, Any]:
        """Architecture (no parameters), JSON-serialisable."""
        return {
            "sizes": list(self.sizes),
            "activations": [activation.get_config() for activation in self.activations],
            "cost": self.cost.get_config(),
            "dtype": self.dtype.name,
        }

    def copy(self) -> Network:
        """An independent network with the same architecture and parameters."""
        clone = Network(
            self.sizes, self.activations, self.cost, initializer=self.initializer, dtype=self.dtype
        )
        clone._params[...] = self._params
        return clone

    def __repr__(self) -> str:
        names = [activation.name for activation in self.activations]
        shown = names[0] if len(set(names)) == 1 else names
        return (
            f"Network({self.sizes}, activation={shown!r}, cost={self.cost.name!r}, "
            f"dtype={self.dtype.name})"
        )
