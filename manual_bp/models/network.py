"""Nielsen's feedforward network: the named form of a :class:`Sequential` ``[Dense, σ, …]``.

``Network([784, 30, 10], "sigmoid", "quadratic")`` builds the stack
``[Dense(784, 30), σ, Dense(30, 10), σ]`` and keeps the book's names on it: ``weights``
and ``biases`` (lists of views into the model's one parameter buffer), ``sizes``,
``activations``, ``feedforward``, and ``backprop`` returning the per-sample errors ``δˡ``.
It is not a second implementation: training, saving, curvature and the fused fast path see a
``Sequential`` like any other, in torch's parameter order (``0.weight, 0.bias, 2.weight, …``).

Conventions (``docs/conventions.md``): arrays are batch-major ``(batch, features)``;
``Wˡ`` is ``(n_l, n_{l−1})``; ``zˡ = aˡ⁻¹ Wˡᵀ + bˡ``; ``aˡ = σˡ(zˡ)``;
``δˡ_x = ∂C_x/∂zˡ_x`` is the *per-sample* error (Nielsen's definition); the cost of a
mini-batch is ``C = (1/n) Σ_x C_x``.

The four equations of backpropagation (derived in ``docs/backprop.md``) are the VJPs of the
stack's layers (``STACK.chain``)::

    BP1  δᴸ = ∇ₐC ⊙ σ'(zᴸ)              the output activation's VJP of the cost gradient
    BP2  δˡ = ((Wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)    Dense.input_vjp, then the activation's VJP
    BP3  ∂C/∂bˡ = (1/n) Σ_x δˡ_x        Dense.param_vjp (bias)
    BP4  ∂C/∂Wˡ = (1/n) δˡᵀ aˡ⁻¹        Dense.param_vjp (weight)

:meth:`Network.backprop_single` keeps the book's per-sample column-vector form (``BP.single``)
as the short readable function the docs derive, checked against the stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from manual_bp._validation import as_array, as_inputs, as_targets
from manual_bp.activations import Activation, get_activation
from manual_bp.costs import Cost
from manual_bp.initializers import get_initializer
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.dense import Dense
from manual_bp.models.parameters import ParameterList
from manual_bp.models.records import Gradients
from manual_bp.models.sequential import MODELS, Sequential

__all__ = ["Gradients", "Network", "ParameterList", "check_lmbda", "check_sizes"]

ActivationSpec = str | Activation | type[Activation] | dict[str, Any]


class Network(Sequential):
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
    >>> [name for name, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    name = "network"

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
        sizes = check_sizes(sizes)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        activations = per_layer_activations(activation, len(sizes) - 1)
        if output_activation is not None:
            activations[-1] = get_activation(output_activation)
        init = get_initializer(initializer)  # an unknown name fails before any allocation
        layers: list[Dense | ActivationLayer] = []
        for (n_in, n_out), act in zip(pairwise(sizes), activations, strict=True):
            layers += [Dense(n_in, n_out, weight_init="zeros", bias_init="zeros", dtype=dtype)]
            layers += [ActivationLayer(act)]
        super().__init__(layers, cost, dtype=dtype)
        self.sizes = sizes
        self.initializer = initializer
        dense = self.layers[::2]
        self._weights = ParameterList([d.params["weight"] for d in dense], "weights")
        self._biases = ParameterList([d.params["bias"] for d in dense], "biases")
        init(np.random.default_rng(seed), list(self._weights), list(self._biases))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Network:
        """The network :meth:`get_config` describes (parameters initialised, seed 0)."""
        return cls(
            config["sizes"],
            config["activations"],
            config["cost"],
            initializer=config.get("initializer", "default"),
            seed=0,
            dtype=config.get("dtype", "float64"),
        )

    # ------------------------------------------------------------------ Nielsen's names
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
    def activations(self) -> list[Activation]:
        """``[σ¹, …, σᴸ]``: the activation of every layer."""
        return [layer.activation for layer in self.layers[1::2]]

    @property
    def num_layers(self) -> int:
        """Number of layers including the input layer (Nielsen's ``num_layers``)."""
        return len(self.sizes)

    @property
    def output_activation(self) -> Activation:
        return self.layers[-1].activation

    @property
    def _params(self) -> np.ndarray:
        """The flat parameter buffer (``flat_parameters``), in torch's state-dict order."""
        return self.flat_parameters

    # ------------------------------------------------------------------ forward
    def feedforward(self, x: np.ndarray) -> np.ndarray:
        """Output ``aᴸ`` for inputs ``x`` of shape ``(batch, n_in)``: ``(batch, n_out)``."""
        return self._stack_forward(self.prepare_inputs(x))[0]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:  # type: ignore[override]
        """Nielsen's intermediates ``(zs, activations)`` with ``activations[0] = x``.

        Equation ``FWD.dense``: ``zˡ = aˡ⁻¹ Wˡᵀ + bˡ``, ``aˡ = σˡ(zˡ)`` (the stack's forward).
        """
        a = self.prepare_inputs(x)
        _, caches = self._stack_forward(a)
        return _nielsen_intermediates(a, caches)

    # ------------------------------------------------------------------ backward
    def backprop(self, x: np.ndarray, y: np.ndarray) -> Gradients:  # type: ignore[override]
        """Backpropagation in matrix form over a mini-batch (BP1–BP4 as the stack's VJPs).

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
        received: list[np.ndarray | None] = [None] * len(self.layers)
        result = self._backprop(x, y, input_grad=True, received=received)
        n = result.caches[0].input.shape[0]
        # δˡ_x = n ∂C/∂zˡ: the gradient each Dense layer received, of the mean cost (BP1 at
        # the top, BP2 below). BP.input: ∂C/∂x = (1/n) δ¹ W¹ is the bottom layer's input VJP.
        deltas = [n * received[k] for k in range(0, len(self.layers), 2)]
        zs, activations = _nielsen_intermediates(result.caches[0].input, result.caches)
        grads = result.layers[::2]
        return Gradients(
            weights=[g["weight"] for g in grads],
            biases=[g["bias"] for g in grads],
            deltas=deltas,
            zs=zs,
            activations=activations,
            input_grad=result.input_grad,
            cost=result.cost,
            _cost_fn=self.cost,
            _targets=result.targets,
            _caches=result.caches,
        )

    def backprop_single(self, x: np.ndarray, y: np.ndarray) -> Gradients:
        """Backpropagation for ONE sample, written as Nielsen's seed equations (``BP.single``).

        The readable reference form the docs derive: column-vector algebra on 1-D arrays
        (``x`` of shape ``(n_in,)``, ``y`` of shape ``(n_out,)`` or an integer label).
        Returns a :class:`Gradients` whose arrays have no batch axis: ``weights[l]`` is
        ``∂C_x/∂Wˡ``, ``deltas[l]`` is ``δˡ_x``. ``tests/test_backprop.py`` checks it
        against :meth:`backprop` (the stack's VJPs).
        """
        x = as_array(x, "x")  # None, complex, object, strings: named, never np.asarray'd
        if x.ndim != 1:
            raise ValueError(
                f"backprop_single takes one sample x of shape ({self.sizes[0]},), got {x.shape}"
            )
        x2 = as_inputs(x[None, :], self.sizes[0], self.dtype)
        y = np.asarray(y)
        y2 = as_targets(y[None] if y.ndim == 0 else y[None, :], self.sizes[-1], 1, self.dtype)
        a, target = x2[0], y2[0]
        sigmas = self.activations
        zs, activations = [], [a]
        for W, b, activation in zip(self.weights, self.biases, sigmas, strict=True):
            z = W @ a + b  # zˡ = Wˡ aˡ⁻¹ + bˡ
            a = activation.forward(z[None, :])[0]
            zs.append(z)
            activations.append(a)
        n_layers = len(zs)
        deltas: list[np.ndarray] = [np.empty(0)] * n_layers
        # BP1 (per sample)
        deltas[-1] = self.cost.delta(
            zs[-1][None, :], activations[-1][None, :], target[None, :], sigmas[-1]
        )[0]
        # BP2 (per sample): δˡ = (Wˡ⁺¹)ᵀ δˡ⁺¹ ⊙ σ'(zˡ)
        for l in range(n_layers - 2, -1, -1):
            upstream = self.weights[l + 1].T @ deltas[l + 1]
            deltas[l] = sigmas[l].backward(
                upstream[None, :], zs[l][None, :], activations[l + 1][None, :]
            )[0]
        # BP3 ∂C_x/∂bˡ = δˡ;  BP4 ∂C_x/∂Wˡ = δˡ (aˡ⁻¹)ᵀ
        grad_b = [delta.copy() for delta in deltas]
        grad_w = [
            np.outer(delta, a_prev) for delta, a_prev in zip(deltas, activations[:-1], strict=True)
        ]
        return Gradients(
            weights=grad_w,
            biases=grad_b,
            deltas=deltas,
            zs=zs,
            activations=activations,
            input_grad=self.weights[0].T @ deltas[0],
            cost=self.cost.value_from_logits(
                zs[-1][None, :], activations[-1][None, :], target[None, :], sigmas[-1]
            ),
            _cost_fn=self.cost,
            _targets=target[None, :],
        )

    def backprop_per_sample(self, x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
        """Per-sample gradients ``∂C_x/∂Wˡ``, ``∂C_x/∂bˡ`` from one backward pass.

        Returns ``(weights, biases)``: ``weights[l]`` has shape ``(n, n_l, n_{l−1})``,
        ``biases[l]`` ``(n, n_l)``. Each dense layer's per-sample parameter VJP
        (``PROD.dense.vjp`` with ``sum_batch=False``) of the per-sample errors ``δˡ_x``;
        their mean over the batch is the mini-batch gradient (``SGD.average``).
        """
        grads = self.backprop(x, y)
        weights, biases = [], []
        for l, dense in enumerate(self.layers[::2]):
            shares = dense.param_vjp(grads._caches[2 * l], grads.deltas[l][None], sum_batch=False)
            weights.append(shares["weight"][0])
            biases.append(shares["bias"][0])
        return weights, biases

    # ------------------------------------------------------------------ evaluation
    def total_cost(  # type: ignore[override]
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

    # ------------------------------------------------------------------ data
    def prepare_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` as a finite ``(batch, n_in)`` array of the network's dtype."""
        return as_inputs(x, self.sizes[0], self.dtype, name)

    def prepare_targets(self, y: Any, batch: int, name: str = "y") -> np.ndarray:
        """Target rows ``(batch, n_out)``, finite and in the cost's target domain.

        Integer labels are range-checked and one-hot encoded; rows must match the output
        width exactly; the cost's domain (e.g. [0, 1] for cross-entropy) is checked here,
        so every entry point refuses the same targets.
        """
        y = as_targets(y, self.sizes[-1], batch, self.dtype, name)
        self.cost.check_targets(y)
        return y

    # ------------------------------------------------------------------ misc
    def get_config(self) -> dict[str, Any]:
        """Architecture (no parameters), JSON-serialisable; :meth:`from_config` inverts it."""
        return {
            "name": self.name,
            "sizes": list(self.sizes),
            "activations": [activation.get_config() for activation in self.activations],
            "cost": self.cost.get_config(),
            "dtype": self.dtype.name,
            "initializer": self.initializer,
        }

    def __repr__(self) -> str:
        names = [activation.name for activation in self.activations]
        shown = names[0] if len(set(names)) == 1 else names
        return (
            f"Network({self.sizes}, activation={shown!r}, cost={self.cost.name!r}, "
            f"dtype={self.dtype.name})"
        )


MODELS[Network.name] = Network


def _nielsen_intermediates(
    x: np.ndarray, caches: Sequence[Any]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(zs, activations)`` from the stack's caches: each activation layer's input and
    output (``ActivationCache``)."""
    zs = [cache.input for cache in caches[1::2]]
    return zs, [x, *(cache.output for cache in caches[1::2])]


# ---------------------------------------------------------------------- constructor checks
def check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"sizes must be integers, got {s!r} in {sizes!r}")
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(
            f"sizes must list at least two positive layer widths (input and output), got {sizes}"
        )
    return [int(s) for s in sizes]


def per_layer_activations(
    activation: ActivationSpec | Sequence[ActivationSpec], n_layers: int
) -> list[Activation]:
    if isinstance(activation, (str, dict, Activation, type)):
        return [get_activation(activation) for _ in range(n_layers)]
    activations = [get_activation(a) for a in activation]
    if len(activations) != n_layers:
        raise ValueError(
            f"got {len(activations)} activations for {n_layers} layers; pass one name, "
            f"or one per layer (len(sizes) - 1)"
        )
    return activations


def check_lmbda(lmbda: Any) -> None:
    """Nielsen's L2 strength λ: a finite real number ≥ 0."""
    if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float, np.integer, np.floating)):
        raise TypeError(f"lmbda must be a real number, got {lmbda!r}")
    if not np.isfinite(lmbda) or lmbda < 0:
        raise ValueError(f"lmbda must be a finite number >= 0, got {lmbda!r}")
