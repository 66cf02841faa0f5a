"""Mini-batch training with per-epoch monitoring (Nielsen's ``SGD``), for any model.

A model is a :class:`~manual_bp.models.sequential.Sequential` (a Nielsen
:class:`~manual_bp.models.network.Network` is one); training uses its protocol:
``prepare_inputs``/``prepare_targets``
(validation), ``parameter_arrays`` (views updated in place), ``regularized_indices``,
``loss_and_gradients`` (one mini-batch: cost and gradients of the mean cost), ``infer``
(evaluation-mode outputs), ``cost_and_outputs`` and ``output_accuracy`` (monitoring),
``train``/``eval`` (mode) and ``cost``. Training imports the
models' protocol, never the other way round (CLI → training → model → layers → costs).

Each epoch shuffles the training set with a seeded generator, splits it into
mini-batches of ``batch_size`` samples (the last one may be smaller), and for
each mini-batch computes the gradient of the mean cost (``SGD.average``:
``∂C/∂θ = (1/m) Σ_x ∂C_x/∂θ``), adds the regulariser's gradient, and lets the
optimizer update the parameters (plain SGD: ``θ ← θ − η ∂C/∂θ``, ``OPT.sgd``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from manual_bp._arguments import check_number
from manual_bp.divergence import DivergenceError, check_parameters_finite, check_training_state
from manual_bp.optimizers import SGD, Optimizer, get_optimizer
from manual_bp.progress import ProgressBar
from manual_bp.regularizers import L2, Regularizer, get_regularizer
from manual_bp.schedules import Schedule as _Schedule
from manual_bp.training.fused import FusedTrainer

if TYPE_CHECKING:
    from manual_bp.models.sequential import Sequential as Model

__all__ = ["DivergenceError", "History", "iterate_minibatches", "nielsen_sgd", "train"]

MONITORS = ("cost", "accuracy")


@dataclass
class History:
    """Per-epoch learning curves. Lists are empty for what was not monitored."""

    training_cost: list[float] = field(default_factory=list)
    training_accuracy: list[float] = field(default_factory=list)
    evaluation_cost: list[float] = field(default_factory=list)
    evaluation_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)

    def best_evaluation_accuracy(self) -> tuple[int, float]:
        """``(epoch, accuracy)`` of the best evaluation accuracy (epochs count from 1)."""
        if not self.evaluation_accuracy:
            raise ValueError("evaluation accuracy was not monitored")
        best = int(np.argmax(self.evaluation_accuracy))
        return best + 1, self.evaluation_accuracy[best]

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)


def iterate_minibatches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays of one shuffled epoch, ``ceil(n / batch_size)`` of them."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def train(
    net: Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    eta: float | None = None,
    optimizer: Optimizer | None = None,
    lmbda: float = 0.0,
    regularizer: Regularizer | None = None,
    evaluation_data: tuple[np.ndarray, np.ndarray] | None = None,
    monitor: Sequence[str] = MONITORS,
    seed: int | np.random.Generator | None = None,
    progress: bool = False,
    log: TextIO | None = None,
    callbacks: Sequence[Callable[[int, History], Any]] = (),
    schedule: _Schedule | None = None,
    fast: bool | None = None,
) -> History:
    """Train ``net`` in place with mini-batch gradient descent.

    Parameters
    ----------
    net : Sequential (a Network included)
    x : (N, *input_shape) array
        Training inputs.
    y : (N, n_out) array or (N,) integer labels
        Training targets.
    epochs, batch_size : int
        Passes over the data; samples per mini-batch (Nielsen's ``mini_batch_size``).
    eta : float, optional
        Learning rate of plain SGD (Nielsen's η). Give ``eta`` or ``optimizer``.
    optimizer : Optimizer, optional
        Any :class:`~manual_bp.optimizers.Optimizer`, e.g. ``Adam(lr=1e-3)``.
    lmbda : float
        Nielsen's L2 strength λ: the weight decay ``(1 − ηλ/N)`` (``REG.l2``).
    regularizer : Regularizer, optional
        Instead of ``lmbda``: any :class:`~manual_bp.regularizers.Regularizer`.
    evaluation_data : (x, y), optional
        Monitored after every epoch alongside the training data.
    monitor : subset of {"cost", "accuracy"}
        What to record per epoch, on training and evaluation data.
    seed : int or Generator, optional
        Seed of the shuffling.
    progress : bool
        Show a progress bar per epoch on stderr.
    log : text stream, optional
        Where to print one line per epoch (cost and accuracy).
    callbacks : callables ``f(epoch, history)``
        Called after every epoch (epochs count from 1).
    schedule : Schedule, optional
        Learning-rate schedule (:mod:`manual_bp.schedules`), bound to the optimizer
        and stepped after every epoch (before the callbacks).
    fast : bool, optional
        Use the fused step (:class:`~manual_bp.training.fused.FusedTrainer`: every layer's
        fast form, preallocated buffers, one update; parameters checked for divergence once
        per epoch) instead of the readable ``loss_and_gradients`` step. Default: fused. A
        model that fuses its whole step itself (a ``fused_step_refusal`` method; a GPT) trains
        through its ``loss_and_gradients`` with ``fast_training`` on; where it cannot fuse
        (a GPT with dropout), ``fast=True`` is refused in one line and the default trains
        on the readable step.

    Returns
    -------
    History
    """
    if (eta is None) == (optimizer is None):
        raise ValueError("give exactly one of eta (plain SGD) or optimizer")
    if lmbda and regularizer is not None:
        raise ValueError("give lmbda or regularizer, not both")
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    monitor = _check_monitor(monitor)
    _check_callbacks(callbacks)
    # Names, classes and config dicts are accepted too (get_optimizer / get_regularizer).
    optimizer = get_optimizer(optimizer) if optimizer is not None else SGD(lr=eta)  # type: ignore[arg-type]
    if regularizer is not None:
        regularizer = get_regularizer(regularizer)
    elif lmbda:
        regularizer = L2(lmbda)
    if schedule is not None:
        if not isinstance(schedule, _Schedule):
            raise TypeError(
                f"schedule must be a Schedule (StepLR, ExponentialLR, ...), got {schedule!r}"
            )
        schedule.bind(optimizer)

    x = net.prepare_inputs(x, "x")
    y = net.prepare_targets(y, x.shape[0], "y")
    checked = [y]
    if evaluation_data is not None:
        x_eval, y_eval = _evaluation_pair(evaluation_data)
        x_eval = net.prepare_inputs(x_eval, "evaluation x")
        y_eval = net.prepare_targets(y_eval, x_eval.shape[0], "evaluation y")
        checked.append(y_eval)
    if net.ignore_index is None:  # ignored positions are all-zero rows, outside every domain
        for targets in checked:  # the cost's target domain, before the first epoch
            net.cost.check_targets(_rows(targets))
    params = net.parameter_arrays()
    check_parameters_finite(params, [name for name, _ in net.named_parameters()])
    n_train = x.shape[0]
    rng = np.random.default_rng(seed)
    history = History()
    # A model that fuses its whole step itself (a GPT) trains through its own step, or the
    # readable one where it cannot fuse; every other model through per-layer fast steps.
    fuses_itself = _fuses_its_own_step(net, fast)
    per_layer = fast is not False and not hasattr(net, "fused_step_refusal")
    trainer = FusedTrainer(net, optimizer, regularizer, n_train) if per_layer else None
    net.train(True)

    # A model that fuses its own step: its loss_and_gradients is the fused step meanwhile.
    with _switched(net, "fast_training", True) if fuses_itself else nullcontext():
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = iterate_minibatches(n_train, batch_size, rng)
            with ProgressBar(len(batches), f"epoch {epoch}/{epochs}", enabled=progress) as bar:
                if trainer is not None:
                    last_cost = trainer.run_epoch(
                        x, y, batches, bar.update if progress else None, epoch
                    )
                else:
                    last_cost = _readable_epoch(
                        net, x, y, batches, optimizer, regularizer, epoch, bar
                    )
            # The one divergence check of every path (DivergenceError with the likely cause).
            check_training_state(
                params,
                last_cost,
                epoch=epoch,
                optimizer=optimizer,
                x=x,
                buffers=list(net.named_buffers()),  # looked up now: a layer may replace its arrays
            )
            history.epoch_seconds.append(time.perf_counter() - start)
            _monitor(net, history, "training", x, y, monitor, regularizer, n_train)
            if "cost" in monitor:
                check_training_state(
                    params,
                    history.training_cost[-1],
                    epoch=epoch,
                    optimizer=optimizer,
                    x=x,
                    where="training cost after the epoch",
                )
            if evaluation_data is not None:
                _monitor(net, history, "evaluation", x_eval, y_eval, monitor, regularizer, n_train)
            if log is not None:
                print(_epoch_line(epoch, epochs, history), file=log, flush=True)
            if schedule is not None:
                schedule.step()
            for callback in callbacks:
                callback(epoch, history)
    return history


@contextmanager
def _switched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """``obj.name = value`` inside the block, the previous value restored after it."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


def _fuses_its_own_step(net: Model, fast: bool | None) -> bool:
    """Whether ``net`` trains through its own fused step: a model with a
    ``fused_step_refusal`` (a GPT: its tied weight's two uses share one gradient slot,
    which per-layer fast steps cannot express) unless ``fast=False`` or it cannot fuse
    (then ``fast=True`` is refused in the model's one line; the default trains readably)."""
    refusal = getattr(net, "fused_step_refusal", None)
    if refusal is None or fast is False:
        return False
    reason = refusal()
    if reason is not None and fast:
        raise ValueError(reason)
    return reason is None


def _readable_epoch(
    net: Model,
    x: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    optimizer: Optimizer,
    regularizer: Regularizer | None,
    epoch: int,
    bar: ProgressBar,
) -> float:
    """One epoch of the readable path: the model's backprop, regulariser, optimizer step.

    Each mini-batch's cost is checked as soon as it is known (the shared check); returns
    the last one.
    """
    params = net.parameter_arrays()
    decayed = net.regularized_indices()
    cost = float("nan")
    for index in batches:
        # a diverging step overflows somewhere inside; the shared check below reports it
        # as one DivergenceError instead of a trail of NumPy RuntimeWarnings
        with np.errstate(over="ignore", invalid="ignore"):
            cost, grads = net.loss_and_gradients(x[index], y[index])
        check_training_state((), cost, epoch=epoch, optimizer=optimizer, x=x)
        if regularizer is not None:
            regularizer.add_gradient(
                [params[i] for i in decayed], [grads[i] for i in decayed], x.shape[0]
            )
        optimizer.step(params, grads)
        bar.update()
    return cost


def _monitor(
    net: Model,
    history: History,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    monitor: Sequence[str],
    regularizer: Regularizer | None,
    n_train: int,
) -> None:
    if not monitor:
        return
    if "cost" in monitor:  # evaluation mode, one pass for both metrics; the cost from zᴸ
        cost, a = net.cost_and_outputs(x, y)  # where that is stable
        if regularizer is not None:
            params = net.parameter_arrays()
            cost += regularizer.penalty([params[i] for i in net.regularized_indices()], n_train)
        getattr(history, f"{split}_cost").append(cost)
    else:
        a = net.infer(x)
    if "accuracy" in monitor:  # the model's rule (a Sequential skips ignored positions)
        getattr(history, f"{split}_accuracy").append(net.output_accuracy(a, y))


def _rows(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def nielsen_sgd(
    net: Model,
    training_data: tuple[np.ndarray, np.ndarray],
    epochs: int,
    mini_batch_size: int,
    eta: float,
    lmbda: float = 0.0,
    evaluation_data: tuple[np.ndarray, np.ndarray] | None = None,
    **kwargs: Any,
) -> History:
    """Nielsen's call ``net.SGD(training_data, epochs, mini_batch_size, eta, lmbda, eval)``.

    As a function (``nielsen_sgd(net, (x, y), 30, 10, 0.5, 5.0, (xv, yv))``): the model
    does not import its trainer, so the data path runs one way. ``training_data`` must be
    the pair ``(x, y)``; the arguments are checked as :func:`train`'s (``mini_batch_size``
    by its own name).
    """
    if not isinstance(training_data, (tuple, list)) or len(training_data) != 2:
        got = f"{len(training_data)} items" if isinstance(training_data, (tuple, list)) else (
            type(training_data).__name__
        )  # fmt: skip
        raise TypeError(f"training_data must be a pair (x, y), got {got}")
    _check_positive_int(mini_batch_size, "mini_batch_size")
    check_number(eta, "eta")  # by Nielsen's name (train's optimizer calls it lr)
    x, y = training_data
    return train(
        net,
        x,
        y,
        epochs=epochs,
        batch_size=mini_batch_size,
        eta=eta,
        lmbda=lmbda,
        evaluation_data=evaluation_data,
        **kwargs,
    )


def _epoch_line(epoch: int, epochs: int, history: History) -> str:
    parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}"]
    for split in ("training", "evaluation"):
        for metric, fmt in (("cost", "{:.4f}"), ("accuracy", "{:.2%}")):
            values = getattr(history, f"{split}_{metric}")
            if values:
                parts.append(f"{split} {metric} " + fmt.format(values[-1]))
    parts.append(f"{history.epoch_seconds[-1]:.2f}s")
    return "  ".join(parts)


def _check_monitor(monitor: Any) -> tuple[str, ...]:
    if isinstance(monitor, str):
        monitor = (monitor,)  # monitor="cost" means ("cost",), not the letters c, o, s, t
    try:
        monitor = tuple(monitor)
    except TypeError:
        raise TypeError(f"monitor must be a sequence of names, got {monitor!r}") from None
    unknown = [m for m in monitor if m not in MONITORS]
    if unknown:
        raise ValueError(f"unknown monitor(s) {unknown}; valid: {list(MONITORS)}")
    return monitor


def _check_callbacks(callbacks: Any) -> None:
    """Fail before the first epoch, not after it, on a callback that cannot be called."""
    if callable(callbacks):
        raise TypeError("callbacks must be a sequence of callables; wrap one in a list")
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callback {callback!r} is not callable")


def _evaluation_pair(evaluation_data: Any) -> tuple[Any, Any]:
    if not isinstance(evaluation_data, (tuple, list)) or len(evaluation_data) != 2:
        raise TypeError(
            "evaluation_data must be a pair (x, y), got "
            f"{type(evaluation_data).__name__}"
            + (f" of length {len(evaluation_data)}" if hasattr(evaluation_data, "__len__") else "")
        )
    return evaluation_data[0], evaluation_data[1]


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r:.60}".replace("\n", " "))
