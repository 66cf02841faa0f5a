"""Fast mini-batch training: the same BP1–BP4 as :meth:`Network.backprop`, fused.

:meth:`Network.backprop` is the readable form of backpropagation; it allocates
every ``zˡ``, ``aˡ``, ``δˡ`` and gradient afresh, and a training step makes
about 35 NumPy calls. At small mini-batches (Nielsen's 10) the time goes into
call overhead and into page faults of fresh temporaries, not into arithmetic.
:class:`FastTrainer` computes exactly the same equations with

* preallocated buffers for every batch- and weight-sized array (one set per
  mini-batch size), written with ``out=`` — no large allocation per step;
* a flat gradient buffer with the layout of the network's flat parameter
  buffer ``net._params`` (weights of all layers, then biases), so plain SGD
  is ONE update call over all parameters;
* the mean's ``1/n`` (and, for plain SGD, the learning rate ``η``) folded into
  ``δᴸ`` once: BP2–BP4 are linear in ``δ``, so scaling ``δᴸ`` by ``s`` scales
  every ``δˡ`` and every gradient by ``s``.

The equations, and the fused line that implements each (``s = 1/n``, or ``η/n``)::

    FWD.dense  zˡ = aˡ⁻¹ Wˡᵀ + bˡ        dot(a_prev, W.T, out=z); z += b
               aˡ = σ(zˡ)               sigmoid: 1/(1 + e^{−z}) in 4 in-place ufuncs
    BP1        δᴸ = ∇ₐC ⊙ σ'(zᴸ)         subtract(a, y, out=d) for C = ½‖a − y‖² or an
                                        a − y shortcut; then d *= σ'; then d *= s
    BP2        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ σ'(zˡ)  dot(d_next, W_next, out=d); d *= σ'(zˡ)
    BP3        ∂C/∂bˡ = (1/n) Σ_x δˡ_x   dot(ones, d, out=gb)          (1/n already in d)
    BP4        ∂C/∂Wˡ = (1/n) δˡᵀ aˡ⁻¹   dot(d.T, a_prev, out=gW)       (1/n already in d)
    OPT.sgd + REG.l2   w ← (1 − ηλ/N) w − η ∂C₀/∂w   params[:n_w] *= 1 − ηλ/N; params -= g

Activations other than sigmoid/tanh/ReLU/identity use their ``forward`` and
``backward``; costs without an ``a − y`` form use :meth:`Cost.delta`; optimizers
other than plain SGD get ``optimizer.step`` on the same per-layer views as the
readable path (so their state layout is the same); regularizers other than L2
their ``add_gradient``. Results equal the readable path's to rounding
(``tests/test_fast_path.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from manual_bp.activations import Activation, Identity, ReLU, Sigmoid, Tanh
from manual_bp.costs import Cost, QuadraticCost
from manual_bp.divergence import check_training_state
from manual_bp.layers.dense import dense_forward
from manual_bp.network import Network
from manual_bp.optimizers import SGD, Optimizer
from manual_bp.parameters import allocate_views
from manual_bp.regularizers import L2, Regularizer

__all__ = ["FastTrainer"]

#: Shortcut equation IDs whose δᴸ is exactly ``a − y`` for valid target rows.
_A_MINUS_Y_SHORTCUTS = frozenset(
    {
        "SHORTCUT.identity-quadratic",
        "SHORTCUT.sigmoid-cross-entropy",
        "SHORTCUT.softmax-log-likelihood",
    }
)


def _kind(activation: Activation) -> str:
    """Which fused code path computes σ and σ' (``"generic"``: the class's own methods)."""
    for cls, kind in ((Sigmoid, "sigmoid"), (Tanh, "tanh"), (ReLU, "relu"), (Identity, "identity")):
        if type(activation) is cls:
            return kind
    return "generic"


def _output_kind(cost: Cost, activation: Activation) -> str:
    """How BP1 is computed: ``"a-y"`` (shortcut), ``"quadratic"`` (a − y then ⊙σ'), generic."""
    shortcut = cost.shortcuts.get(activation.name)
    if shortcut is not None and cost.shortcut_applies(activation):
        return "a-y" if shortcut[0] in _A_MINUS_Y_SHORTCUTS else "generic"
    if type(cost) is QuadraticCost and _kind(activation) != "generic":
        return "quadratic"  # ∇ₐC = a − y exactly; σ' applied by the fused path
    return "generic"


class _Buffers:
    """Every batch-sized array of one step for mini-batches of ``m`` samples."""

    def __init__(self, sizes: Sequence[int], kinds: Sequence[str], m: int, dtype) -> None:
        self.x = np.empty((m, sizes[0]), dtype)
        self.y = np.empty((m, sizes[-1]), dtype)
        self.zs = [np.empty((m, n), dtype) for n in sizes[1:]]
        # Identity: aˡ is zˡ itself (no copy).
        self.activations = [
            z if kind == "identity" else np.empty_like(z)
            for z, kind in zip(self.zs, kinds, strict=True)
        ]
        self.deltas = [np.empty_like(z) for z in self.zs]
        self.scratch = [np.empty_like(z) for z in self.zs]
        self.masks = [np.empty(z.shape, dtype=bool) for z in self.zs]
        # BP3's Σ_x as a product with a row of ones: one BLAS call, faster than sum(axis=0)
        self.ones = np.ones(m, dtype)


class FastTrainer:
    """Fused, allocation-free training steps for ``net`` (BP1–BP4, ``OPT.sgd``, ``REG.l2``).

    Parameters
    ----------
    net : Network
        Trained in place; its flat parameter buffer ``net._params`` is updated.
    optimizer : Optimizer, optional
        Plain :class:`~manual_bp.optimizers.SGD` (no momentum or weight decay) is
        fused into one update call; any other optimizer gets
        ``optimizer.step([*weights, *biases], [*grad_w, *grad_b])`` on views.
    regularizer : Regularizer, optional
        :class:`~manual_bp.regularizers.L2` is fused (``REG.l2``); others use
        ``add_gradient``.
    n_train : int, optional
        ``N``, the training-set size the regularizer is scaled by.

    Examples
    --------
    >>> from manual_bp import Network
    >>> net = Network([4, 3, 2], seed=0)
    >>> trainer = FastTrainer(net, SGD(lr=0.5))
    >>> grad_w, grad_b = trainer.gradients(np.ones((5, 4)), np.zeros((5, 2)))
    >>> [g.shape for g in grad_w]
    [(3, 4), (2, 3)]
    """

    def __init__(
        self,
        net: Network,
        optimizer: Optimizer | None = None,
        regularizer: Regularizer | None = None,
        n_train: int | None = None,
    ) -> None:
        self.net = net
        self.optimizer = optimizer
        self.regularizer = regularizer
        self.n_train = n_train
        self.kinds = [_kind(a) for a in net.activations]
        self.output_kind = _output_kind(net.cost, net.activations[-1])
        self.dtype = net.dtype
        # Views into the network's ONE parameter buffer, and a gradient buffer of the
        # same layout: grad[:n_weights] are all ∂C/∂Wˡ, grad[n_weights:] all ∂C/∂bˡ.
        self.weights = list(net.weights)
        self.biases = list(net.biases)
        self.params = net._params
        self.grad, self.grad_w, self.grad_b = allocate_views(net.sizes, self.dtype)
        self.n_weights = sum(W.size for W in self.weights)
        self._buffers: dict[int, _Buffers] = {}
        self._l2_scratch: np.ndarray | None = None

    # ------------------------------------------------------------------ support
    @staticmethod
    def supports(model: object) -> bool:
        """Whether ``model`` has the fused path: Nielsen's :class:`Network` (Dense + σ only)."""
        return isinstance(model, Network)

    @property
    def fused_update(self) -> bool:
        """Whether the update is plain SGD (``OPT.sgd``), folded into the gradient."""
        opt = self.optimizer
        return (
            type(opt) is SGD
            and not opt.momentum
            and not opt.weight_decay
            and (self.regularizer is None or type(self.regularizer) is L2)
        )

    def check_targets(self, y: np.ndarray) -> None:
        """Validate all target rows once (the readable path's cost checks every batch).

        Each cost's target domain (distributions for class costs, [0, 1] for
        cross-entropy, counts ≥ 0 for Poisson, …): the fused ``a − y`` does not look
        at the targets, so they are checked here, before training.
        """
        self.net.cost.check_targets(y)

    # ------------------------------------------------------------------ one step
    def _buffers_for(self, m: int) -> _Buffers:
        buffers = self._buffers.get(m)
        if buffers is None:
            buffers = self._buffers[m] = _Buffers(self.net.sizes, self.kinds, m, self.dtype)
        return buffers

    def _forward(self, buf: _Buffers) -> None:
        """FWD.dense into the preallocated ``zˡ``, ``aˡ``: ``zˡ = aˡ⁻¹Wˡᵀ + bˡ``, ``aˡ = σ(zˡ)``."""
        a_prev = buf.x
        for W, b, act, kind, z, a in zip(
            self.weights,
            self.biases,
            self.net.activations,
            self.kinds,
            buf.zs,
            buf.activations,
            strict=True,
        ):
            dense_forward(a_prev, W, b, out=z)  # FWD.dense, the library's one dense forward
            if kind == "sigmoid":  # 1/(1 + e^{−z}); e^{−z} = inf for z < −709 gives 0 exactly
                np.negative(z, out=a)
                np.exp(a, out=a)
                a += 1
                np.reciprocal(a, out=a)
            elif kind == "tanh":
                np.tanh(z, out=a)
            elif kind == "relu":
                np.maximum(z, 0, out=a)
            elif kind == "generic":
                a[...] = act.forward(z)
            a_prev = a

    def _times_derivative(self, l: int, g: np.ndarray, buf: _Buffers) -> None:
        """``g ← g ⊙ σ'(zˡ)`` in place (the ⊙ of BP1/BP2); a VJP for a coupled σ."""
        kind, z, a, tmp = self.kinds[l], buf.zs[l], buf.activations[l], buf.scratch[l]
        if kind == "sigmoid":  # σ' = a(1 − a)
            g *= a
            np.subtract(1, a, out=tmp)
            g *= tmp
        elif kind == "tanh":  # tanh' = (1 − a)(1 + a): no cancellation of 1 − a² near |a| = 1
            np.subtract(1, a, out=tmp)
            g *= tmp
            np.add(1, a, out=tmp)
            g *= tmp
        elif kind == "relu":  # relu'(z) = [z > 0]; relu'(0) = 0
            mask = buf.masks[l]
            np.greater(z, 0, out=mask)
            g *= mask
        elif kind == "generic":
            g[...] = self.net.activations[l].backward(g, z, a)

    def _backward(self, buf: _Buffers, scale: float) -> None:
        """BP1–BP4 into ``self.grad``, every gradient multiplied by ``scale`` (= 1/n or η/n)."""
        L = len(self.weights)
        d, a, y = buf.deltas[-1], buf.activations[-1], buf.y
        # BP1: δᴸ = ∇ₐC ⊙ σ'(zᴸ), or the exact shortcut a − y.
        if self.output_kind == "generic":
            d[...] = self.net.cost.delta(buf.zs[-1], a, y, self.net.activations[-1])
        else:
            np.subtract(a, y, out=d)
            if self.output_kind == "quadratic":  # ∇ₐ½‖a − y‖² = a − y, then ⊙ σ'(zᴸ)
                self._times_derivative(L - 1, d, buf)
        d *= scale  # s·δᴸ: BP2–BP4 are linear in δ, so every gradient below carries s
        for l in range(L - 1, -1, -1):
            d = buf.deltas[l]
            a_prev = buf.x if l == 0 else buf.activations[l - 1]
            np.dot(d.T, a_prev, out=self.grad_w[l])  # BP4: (1/n) δˡᵀ aˡ⁻¹
            np.dot(buf.ones, d, out=self.grad_b[l])  # BP3: (1/n) Σ_x δˡ_x = 1ᵀ(δˡ/n)
            if l:  # BP2: δˡ⁻¹ = (δˡ Wˡ) ⊙ σ'(zˡ⁻¹)
                np.dot(d, self.weights[l], out=buf.deltas[l - 1])
                self._times_derivative(l - 1, buf.deltas[l - 1], buf)

    def _load(self, x: np.ndarray, y: np.ndarray, index: np.ndarray | None) -> _Buffers:
        m = x.shape[0] if index is None else index.shape[0]
        buf = self._buffers_for(m)
        if index is None:
            np.copyto(buf.x, x)
            np.copyto(buf.y, y)
        else:  # gather the mini-batch straight into its buffer; "clip" avoids the buffered
            # copy that mode="raise" makes of out= (the indices come from a permutation)
            np.take(x, index, axis=0, out=buf.x, mode="clip")
            np.take(y, index, axis=0, out=buf.y, mode="clip")
        return buf

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(∂C/∂Wˡ, ∂C/∂bˡ)`` of the mean cost on ``(x, y)``, computed by the fused path.

        ``x`` is ``(n, n_in)``; ``y`` ``(n, n_out)`` rows or ``(n,)`` labels. Returns copies.
        """
        x = self.net.prepare_inputs(x)
        y = self.net.prepare_targets(y, x.shape[0])
        buf = self._load(x, y, None)
        with np.errstate(over="ignore", under="ignore"):
            self._forward(buf)
            self._backward(buf, 1.0 / x.shape[0])
        return [g.copy() for g in self.grad_w], [g.copy() for g in self.grad_b]

    def step(self, x: np.ndarray, y: np.ndarray, index: np.ndarray | None = None) -> None:
        """One training step on the mini-batch ``x[index], y[index]`` (all rows if None).

        ``x`` and ``y`` must already be validated arrays of the network's dtype
        (``y`` as ``(N, n_out)`` rows), as :func:`manual_bp.training.train` passes them.
        """
        buf = self._load(x, y, index)
        n = buf.x.shape[0]
        self._forward(buf)
        opt, reg = self.optimizer, self.regularizer
        if self.fused_update:
            lr = float(opt.lr)  # read every step: schedules change it between epochs
            self._backward(buf, lr / n)  # grad = η ∂C₀/∂θ
            if reg is not None and reg.lmbda:  # REG.l2: w ← (1 − ηλ/N) w (weights only)
                self.params[: self.n_weights] *= 1.0 - lr * reg.lmbda / self.n_train
            self.params -= self.grad  # OPT.sgd: θ ← θ − η ∂C₀/∂θ, one call for all layers
            return
        self._backward(buf, 1.0 / n)
        if type(reg) is L2:  # ∂C/∂w += (λ/N) w, on the flat weight segment
            if self._l2_scratch is None:
                self._l2_scratch = np.empty(self.n_weights, self.dtype)
            np.multiply(
                self.params[: self.n_weights], reg.lmbda / self.n_train, out=self._l2_scratch
            )
            self.grad[: self.n_weights] += self._l2_scratch
        elif reg is not None:
            reg.add_gradient(self.weights, self.grad_w, self.n_train)
        # Same per-layer list layout as the readable path, so optimizer state carries over.
        opt.step([*self.weights, *self.biases], [*self.grad_w, *self.grad_b])

    def run_epoch(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batches: Sequence[np.ndarray],
        on_batch: Callable[[], object] | None = None,
        epoch: int = 1,
    ) -> float:
        """One step per index array in ``batches``; returns the last mini-batch's cost.

        Overflow inside the epoch is not an error by itself (the sigmoid's ``e^{−z}``
        reaches inf for ``z < −709`` and gives the correct 0). At the end of the epoch
        the shared divergence check (:func:`manual_bp.divergence.check_training_state`,
        the readable path's) looks at the parameters and at the cost of the last
        mini-batch, computed once from its buffers: a non-finite one raises
        :class:`~manual_bp.divergence.DivergenceError` naming the likely cause.
        """
        buf = None
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            for index in batches:
                self.step(x, y, index)
                if on_batch is not None:
                    on_batch()
            if len(batches):
                buf = self._buffers_for(len(batches[-1]))
        cost = None if buf is None else self._buffer_cost(buf)
        check_training_state(
            [*self.weights, *self.biases], cost, epoch=epoch, optimizer=self.optimizer, x=x
        )
        return float("nan") if cost is None else cost

    def _buffer_cost(self, buf: _Buffers) -> float:
        """The cost of the mini-batch whose forward pass is in ``buf`` (from ``zᴸ`` if stable)."""
        a, z = buf.activations[-1], buf.zs[-1]
        if not (np.isfinite(a).all() and np.isfinite(z).all()):
            return float("nan")  # diverged forward pass: no cost to compute (NaN, no warning)
        with np.errstate(over="ignore", under="ignore"):
            return self.net.cost.value_from_logits(z, a, buf.y, self.net.activations[-1])
