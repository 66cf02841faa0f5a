"""The fused training step, for every model: each layer's fast form, one flat update.

:meth:`Sequential.loss_and_gradients` is the readable training step: it allocates every
activation and gradient afresh and returns a list. At small mini-batches (Nielsen's 10) the
time goes into call overhead and page faults of fresh temporaries, not arithmetic.
:class:`FusedTrainer` runs exactly the same equations through each layer's fast form
(:meth:`Layer.fast_step`: preallocated ``out=`` buffers, in-place ufuncs; the readable
forward/backward for layers without one) and

* writes every parameter gradient straight into one flat gradient buffer laid out like the
  model's flat parameter buffer (torch's state-dict order), so plain SGD is ONE update;
* folds the mean's ``1/n`` (and, for plain SGD, the learning rate ``η``) into the seed of
  the backward pass: every VJP is linear in its cotangent, so scaling the seed by ``s``
  scales every gradient by ``s``;
* takes BP1's ``δᴸ = a − y`` as one subtract where the cost and the output activation fold
  that way (:class:`~manual_bp.costs.Fold`, the costs' one table), and the cost's own
  ``grad_into`` followed by the activation's in-place VJP otherwise.

The equations and the fused line implementing each (``s = 1/n`` or ``η/n``)::

    FWD.dense  zˡ = aˡ⁻¹ Wˡᵀ + bˡ       DenseStep: matmul(a_prev, W.T, out=z); z += b
               aˡ = σ(zˡ)              ActivationStep: σ.forward_into(z, out=a)
    BP1        δᴸ = a − y (folded)      subtract(a, y, out=d); d *= s
               δᴸ = ∇ₐC ⊙ σ'(zᴸ)        cost.grad_into(a, y, out=d); d *= s; σ.backward_inplace
    BP2        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ σ'(zˡ) DenseStep: dot(d, W, out=dx); then σ.backward_inplace
    BP3, BP4   ∂C/∂bˡ, ∂C/∂Wˡ          DenseStep: dot(ones, d, out=gb); dot(d.T, a_prev, out=gW)
    OPT.sgd + REG.l2   w ← (1 − ηλ/N) w − η ∂C₀/∂w    W *= 1 − ηλ/N (weights); θ -= g

Under plain SGD the lowest trainable layer's step may fuse its BP4 with ``OPT.sgd`` (its
``backward_sgd``: :class:`~manual_bp.layers.dense_step.DenseStep` writes ``shrink·W − dzᵀx``
into the weight with one ``gemm``); the flat update then skips the parameters it names in
``updated_in_place``, and after such a step ``grad`` does not hold their gradient
(:meth:`gradients` never fuses).

Optimizers other than plain SGD get ``optimizer.step`` on the same parameter views as the
readable path (so their state layout is the same); regularizers other than L2 their
``add_gradient``. Results equal the readable path's to rounding (``tests/test_fast_path.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from manual_bp._threads import MIN_ELEMENTS, parallel_rows
from manual_bp.divergence import check_training_state
from manual_bp.layers.steps import check_trainer_data, shape_buffers
from manual_bp.models.parameters import offset_in
from manual_bp.models.targets import output_seed
from manual_bp.optimizers import SGD, Optimizer
from manual_bp.regularizers import L2, Regularizer
from manual_bp.training.parallel import PartPlan

__all__ = ["FusedTrainer"]


class _LowestSGD(NamedTuple):
    """The lowest step's BP4 fused with plain SGD (:meth:`FusedTrainer._lowest_sgd`)."""

    #: the step's ``backward_sgd(dz, grads, shrink) -> bool`` (True: it updated in place)
    backward_sgd: Callable[..., bool]
    #: whether ``REG.l2`` shrinks what it updates (its weight is among the decayed);
    #: derivable from the step's parameters and ``decayed_rest``, kept as one flag for
    #: the hot path's single branch
    decays: bool
    #: ``(parameter, gradient)`` slices of the flat buffers outside what it updates
    rest: list[tuple[np.ndarray, np.ndarray]]
    #: the decayed parameters' positions, less what it updates
    decayed_rest: list[int]


class FusedTrainer:
    """Fused, allocation-free training steps for any model (``docs/performance.md``).

    Parameters
    ----------
    model : Sequential (a Network included)
        Trained in place; its flat parameter buffer ``model.flat_parameters`` is updated.
    optimizer : Optimizer, optional (required by :meth:`step`)
        Plain :class:`~manual_bp.optimizers.SGD` (no momentum or weight decay) is fused into
        one update; any other gets ``optimizer.step(params, grads)`` on views.
    regularizer : Regularizer, optional
        :class:`~manual_bp.regularizers.L2` is fused (``REG.l2``); others use ``add_gradient``.
    n_train : int
        ``N``, the training-set size the regularizer is scaled by.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Optimizer | None = None,
        regularizer: Regularizer | None = None,
        n_train: int = 1,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.regularizer = regularizer
        self.n_train = n_train
        self.steps = [layer.fast_step() for layer in model.layers]
        self._forwards = [step.forward for step in self.steps]  # bound once: a step is ~60 µs
        self._backwards = [step.backward for step in self.steps]
        # One gradient buffer laid out like the parameters: grad views share their offsets.
        self.grad = np.zeros_like(model.flat_parameters)
        self.layer_grads = [
            {name: model.same_place(self.grad, array) for name, array in layer.params.items()}
            for layer in model.layers
        ]
        self.params = model.parameter_arrays()
        self.grads = [model.same_place(self.grad, p) for p in self.params]
        self.decayed = model.regularized_indices()
        trainable = [i for i, layer in enumerate(model.layers) if layer.params]
        self.lowest = trainable[0] if trainable else len(model.layers)
        self.seed_kind = _seed_kind(model)
        self._seeds: dict[tuple, tuple[np.ndarray, ...]] = {}
        self._seed_buffer: np.ndarray | None = None
        self._fused = self.fused_update  # the optimizer and regularizer are fixed per run
        self.cost = model.cost
        self._batches: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self._epoch = 1
        self._checked: tuple | None = None  # what step's entry check last passed
        self._own_targets = hasattr(self.cost, "check_prepared")  # a loss's own (values)
        self._parts = PartPlan.for_trainer(self)  # the batch in parts on every core, or None
        self._low_sgd = self._lowest_sgd()  # the lowest step's BP4 fused with OPT.sgd, or None

    @property
    def fused_update(self) -> bool:
        """Whether the update is plain SGD (``OPT.sgd``), folded into the gradient."""
        opt, reg = self.optimizer, self.regularizer
        return (
            type(opt) is SGD
            and not opt.momentum
            and not opt.weight_decay
            and (reg is None or type(reg) is L2)
        )

    def _lowest_sgd(self) -> _LowestSGD | None:
        """What the fused update needs when the lowest trainable step can fuse its BP4
        with plain SGD (it has ``backward_sgd``), else None."""
        if not self._fused or self._parts is not None or self.lowest >= len(self.steps):
            return None
        step, model = self.steps[self.lowest], self.model
        fuse = getattr(step, "backward_sgd", None)
        if fuse is None:
            return None
        layer = model.layers[self.lowest]
        flat, grad = model.flat_parameters, self.grad
        cuts = [0]
        for start, size in sorted(
            (offset_in(flat, layer.params[name]), layer.params[name].size)
            for name in step.updated_in_place
        ):
            cuts += [start, start + size]
        cuts.append(flat.size)
        rest = [(flat[a:b], grad[a:b]) for a, b in zip(cuts[::2], cuts[1::2], strict=True) if b > a]
        ids = {id(layer.params[name]) for name in step.updated_in_place}
        fused = {i for i, p in enumerate(self.params) if id(p) in ids}
        if len(fused) != len(ids):  # the parameter views are not the layer's own arrays
            return None
        decayed = [i for i in self.decayed if i not in fused]
        return _LowestSGD(fuse, bool(fused & set(self.decayed)), rest, decayed)

    # ------------------------------------------------------------------ one step
    def _load(
        self, x: np.ndarray, y: np.ndarray, index: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if index is None:
            return x, y
        m = index.shape[0]
        found = self._batches.get(m)
        if found is None:
            found = self._batches[m] = (
                np.empty((m, *x.shape[1:]), x.dtype),
                np.empty((m, *y.shape[1:]), y.dtype),
            )
        xb, yb = found
        # gather straight into the buffers; "clip" avoids the buffered copy that
        # mode="raise" makes of out= (the indices come from a permutation)
        x.take(index, axis=0, out=xb, mode="clip")  # the method: np.take's wrapper costs µs
        y.take(index, axis=0, out=yb, mode="clip")
        return xb, yb

    def _seed(self, out: np.ndarray, y: np.ndarray, factor: float) -> tuple[np.ndarray, int]:
        """The backward pass's start: ``(g, k)`` with ``g`` the gradient (times ``factor``)
        reaching layer ``k − 1``'s output."""
        K = len(self.steps)
        if self.seed_kind != "generic":
            d = self._seed_buffer
            if d is None or d.shape != out.shape:
                (d,) = shape_buffers(self._seeds, out.shape, lambda: (np.empty_like(out),))
                self._seed_buffer = d
            width = out.shape[-1]
            n_rows = out.size // width
            scale = factor / n_rows
            if self.seed_kind == "minus-target":  # BP1 folded: δᴸ = a − y, at zᴸ
                if out.size >= 2 * MIN_ELEMENTS and out.flags.c_contiguous and y.flags.c_contiguous:
                    a2, y2, d2 = out.reshape(-1, width), y.reshape(-1, width), d.reshape(-1, width)

                    def work(rows: slice) -> None:  # both passes on each thread's rows
                        np.subtract(a2[rows], y2[rows], out=d2[rows])
                        d2[rows] *= scale

                    parallel_rows(work, n_rows, width)  # elementwise: the same bits on any cut
                    return d, K - 1
                np.subtract(out, y, out=d)
                K -= 1
            else:  # ∇ₐC_x into d; the output activation's VJP follows in the sweep
                self.cost.grad_into(out, y, d)
            d *= scale
            return d, K
        model = self.model
        logits = _logits(model, self.steps[-1])
        shortcut = bool(logits) and _takes_shortcut(model)
        seed = output_seed(model.cost, out, y, model.ignore_index, shortcut=shortcut, **logits)
        if self.cost.target_kind == "loss" and not np.isfinite(seed.cost):
            # a loss can be infinite at finite parameters (CTC: an impossible alignment);
            # stop before its NaN gradient reaches the weights, as the readable path does
            check_training_state((), seed.cost, epoch=self._epoch, optimizer=self.optimizer)
        g = seed.input_grad if shortcut else seed.output_grad
        return (g * factor if factor != 1.0 else g), (K - 1 if shortcut else K)

    def _forward_backward(
        self, xb: np.ndarray, yb: np.ndarray, factor: float, shrink: float | None = None
    ) -> bool:
        """Forward, seed and backward; with ``shrink`` (plain SGD: ``factor`` is ``η``) the
        lowest step may fuse its BP4 with the update (:meth:`_lowest_sgd`). Returns whether
        it did."""
        if self._parts is not None and self._parts.count(xb) > 1:
            self._parts.forward_backward(xb, yb, factor)  # training/parallel.py
            return False
        out = xb
        for forward in self._forwards:
            out = forward(out)
        self._last = (out, yb)
        g, start = self._seed(out, yb, factor)
        lowest, backwards, grads = self.lowest, self._backwards, self.layer_grads
        for k in range(start - 1, lowest, -1):
            g = backwards[k](g, grads[k], True)
        if start <= lowest:
            return False
        low = self._low_sgd
        fuse = shrink is not None and low is not None
        if fuse and low.backward_sgd(g, grads[lowest], shrink if low.decays else 1.0):
            return True
        backwards[lowest](g, grads[lowest], False)
        return False

    def gradients(self, x: Any, y: Any) -> list[np.ndarray]:
        """``∂C/∂θ`` of the mean cost on ``(x, y)`` by the fused path, in
        ``parameter_arrays()`` order (copies); ``x`` and ``y`` are validated as the model
        validates them (labels one-hot encoded)."""
        x = self.model.prepare_inputs(x)
        y = self.model.prepare_targets(y, x.shape[0])
        return self._gradients_of_prepared(x, y)

    def _gradients_of_prepared(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """:meth:`gradients` of ``(x, y)`` as ``prepare_inputs``/``prepare_targets`` return
        them, not checked again: no public entry (``curvature.gradient`` calls it after its
        own validation, ``gradients`` after the model's). Running statistics a
        training-mode pass updates are moved, as by a training step."""
        with np.errstate(over="ignore", under="ignore"):
            self._forward_backward(x, y, 1.0)
        return [g.copy() for g in self.grads]

    def step(self, x: np.ndarray, y: np.ndarray, index: np.ndarray | None = None) -> None:
        """One training step on the mini-batch ``x[index], y[index]`` (all rows if None).

        ``x`` and ``y`` are arrays of the model's dtype as :func:`manual_bp.training.train`
        passes them (targets prepared), checked here (:func:`check_trainer_data`).
        """
        # The entry check looks at types, dtypes and shapes only (issue 24): data of the
        # same ones as the last checked passes again, ~4 µs of a 35 µs Nielsen step saved.
        # Rows are checked every time (their values matter), as is a loss's own target form.
        key = (
            (x.dtype, x.shape, y.dtype, y.shape, self.model.dtype)
            if type(x) is np.ndarray and type(y) is np.ndarray and index is None
            else None
        )
        if key is None or key != self._checked or self._own_targets:
            check_trainer_data(self.model, x, y, index)
            self._checked = key
        self._step(x, y, index)

    def _step(self, x: np.ndarray, y: np.ndarray, index: np.ndarray | None) -> None:
        xb, yb = self._load(x, y, index)
        opt, reg = self.optimizer, self.regularizer
        if self._fused:
            lr = float(opt.lr)  # read every step: schedules change it between epochs
            shrink = None
            if reg is not None and reg.lmbda:  # REG.l2: w ← (1 − ηλ/N) w (weights only)
                shrink = 1.0 - lr * reg.lmbda / self.n_train
            if self._forward_backward(xb, yb, lr, 1.0 if shrink is None else shrink):
                low = self._low_sgd  # the lowest weight is updated already
                if shrink is not None:
                    for i in low.decayed_rest:
                        self.params[i] *= shrink
                for p, g in low.rest:
                    p -= g  # OPT.sgd on the other parameters
                return
            if shrink is not None:
                for i in self.decayed:
                    self.params[i] *= shrink
            self.model.flat_parameters -= self.grad  # OPT.sgd: one call for all layers
            return
        self._forward_backward(xb, yb, 1.0)
        if type(reg) is L2:  # ∂C/∂w += (λ/N) w
            for i in self.decayed:
                self.grads[i] += (reg.lmbda / self.n_train) * self.params[i]
        elif reg is not None:
            reg.add_gradient(
                [self.params[i] for i in self.decayed],
                [self.grads[i] for i in self.decayed],
                self.n_train,
            )
        # The readable path's list layout, so optimizer state carries over between paths.
        opt.step(self.params, self.grads)

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
        reaches inf for ``z < −709`` and gives the correct 0). At the end of the epoch the
        shared divergence check (:func:`manual_bp.divergence.check_training_state`) looks
        at the parameters and at the cost of the last mini-batch, computed once from the
        buffers: a non-finite one raises ``DivergenceError`` naming the likely cause.
        """
        check_trainer_data(self.model, x, y, batches=batches)  # once; the steps unchecked
        self._epoch = epoch
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            for index in batches:
                self._step(x, y, index)
                if on_batch is not None:
                    on_batch()
        cost = self._last_cost()
        check_training_state(self.params, cost, epoch=epoch, optimizer=self.optimizer, x=x)
        return float("nan") if cost is None else cost

    def _last_cost(self) -> float | None:
        """The cost of the last mini-batch from its forward pass (from ``zᴸ`` where stable)."""
        if self._last is None:
            return None if self._parts is None else self._parts.last_cost()
        out, y = self._last
        model = self.model
        logits = _logits(model, self.steps[-1])
        z = logits.get("z")
        if not np.isfinite(out).all() or (z is not None and not np.isfinite(z).all()):
            return float("nan")  # diverged forward pass: no cost to compute (NaN, no warning)
        with np.errstate(over="ignore", under="ignore"):
            return output_seed(model.cost, out, y, model.ignore_index, **logits).cost


def _logits(model: Any, last_step: Any) -> dict[str, Any]:
    """``{"z": zᴷ, "activation": σ}`` when the model ends in an activation layer (its step
    keeps the input ``z``), else ``{}``: the cost is then taken from ``zᴷ`` where stable."""
    activation = getattr(model.layers[-1], "activation", None)
    if activation is None:
        return {}
    return {"z": last_step.z, "activation": activation}


def _takes_shortcut(model: Any) -> bool:
    """BP1's shortcut applies at the model's output (the costs' table, :class:`Fold`)."""
    activation = getattr(model.layers[-1], "activation", None)
    fold = None if activation is None else model.cost.fold(activation)
    return fold is not None and fold.delta is not None


def _seed_kind(model: Any) -> str:
    """``"minus-target"`` (δᴸ = a − y folded), ``"cost-gradient"`` (∇ₐC into a buffer, then
    the output activation's VJP) or ``"generic"`` (masks, coupled outputs: the readable seed)."""
    if model.ignore_index is not None or model.cost.target_kind == "loss":
        return "generic"  # a loss as the cost seeds from its own backward
    activation = getattr(model.layers[-1], "activation", None)
    if activation is None:
        return "generic"
    fold = model.cost.fold(activation)
    if fold is not None:
        return "minus-target" if fold.minus_target else "generic"
    flat_output = model.output_shape is not None and len(model.output_shape) == 1
    return "cost-gradient" if flat_output else "generic"
