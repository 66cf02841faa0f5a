"""torch's own loss test configurations as an oracle: the criterion walk (issue 26).

Three sources, all played the way a torch user would, on the library's class **of torch's
name** in :mod:`manual_bp.losses`, built from torch's exact arguments:

* ``module_db`` — the ``ModuleInfo`` of each loss module (``module_inputs_torch_nn_MSELoss``
  …): constructor arguments and forward arguments ``(input, target, …)``;
* ``common_nn.criterion_tests`` — a constructor (torch builds the module; its constructor
  arguments are read back from the module's attributes by the names of its signature:
  ``reduction``, ``beta``, the ``weight`` buffer …) with ``input_size``/``input_fn`` and
  ``target_size``/``target_fn``;
* the loss entries of ``common_nn.get_new_module_tests()`` — a functional wrapped as a
  module (``F.mse_loss(i, t, reduction='none')`` with ``t`` captured): the module is run
  once under a ``TorchFunctionMode`` that records the loss functional's call, whose keyword
  arguments (those differing from the functional's defaults, legacy ``reduce=False``
  included) become the constructor's; the oracle is that recorded call itself.

Each configuration compares the value and the gradient with respect to **every float
argument torch differentiates** (the input, and the target wherever torch's autograd gives
one), under one random ``grad_output`` of the value's shape; a loss with parameters
(``LinearCrossEntropyLoss``) gets torch's parameters copied in by state-dict name, and
every parameter gradient is compared too (``Loss.backward_with_params``). Outcomes as for modules
(:mod:`reference.torch_modules`): agree, disagree, refused, crash, absent.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from reference.torch_modules import (
    TOLERANCE,
    Configuration,
    Outcome,
    _failure,
    _numpy,
    _relative,
)

__all__ = ["FUNCTIONALS", "LossConfiguration", "configurations", "is_loss", "run"]

#: torch's loss functionals and the module class of each.
FUNCTIONALS: dict[Any, str] = {
    F.binary_cross_entropy: "BCELoss",
    F.binary_cross_entropy_with_logits: "BCEWithLogitsLoss",
    F.cosine_embedding_loss: "CosineEmbeddingLoss",
    F.cross_entropy: "CrossEntropyLoss",
    F.ctc_loss: "CTCLoss",
    F.gaussian_nll_loss: "GaussianNLLLoss",
    F.hinge_embedding_loss: "HingeEmbeddingLoss",
    F.huber_loss: "HuberLoss",
    F.kl_div: "KLDivLoss",
    F.l1_loss: "L1Loss",
    F.margin_ranking_loss: "MarginRankingLoss",
    F.mse_loss: "MSELoss",
    F.multi_margin_loss: "MultiMarginLoss",
    F.multilabel_margin_loss: "MultiLabelMarginLoss",
    F.multilabel_soft_margin_loss: "MultiLabelSoftMarginLoss",
    F.nll_loss: "NLLLoss",
    F.poisson_nll_loss: "PoissonNLLLoss",
    F.smooth_l1_loss: "SmoothL1Loss",
    F.soft_margin_loss: "SoftMarginLoss",
    F.triplet_margin_loss: "TripletMarginLoss",
    F.triplet_margin_with_distance_loss: "TripletMarginWithDistanceLoss",
}


def is_loss(name: str) -> bool:
    """Whether torch's class ``name`` is a loss (criterion) module."""
    return name.endswith("Loss") or name.endswith("Criterion")


@dataclass
class LossConfiguration(Configuration):
    """One torch test configuration of one loss class: ``kwargs`` are the library
    constructor's, ``inputs`` the forward arguments; ``functional`` (with ``call_kwargs``)
    is torch's recorded functional call when the configuration is one."""

    functional: Any = None
    call_kwargs: dict | None = None


def _float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.to(torch.float64) if value.is_floating_point() else value
    return value


# ---------------------------------------------------------------------- the three sources
def _module_db(only: set[str] | None = None) -> Iterator[LossConfiguration]:
    from torch.testing._internal.common_modules import module_db

    for info in module_db:
        name = info.module_cls.__name__
        if not is_loss(name) or (only is not None and name not in only):
            continue
        torch.manual_seed(0)
        found = info.module_inputs_func(
            info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
        )
        for i, case in enumerate(found):
            yield LossConfiguration(
                key=f"module_db/{name}/train/{i}" + (f"/{case.desc}" if case.desc else ""),
                torch_name=name,
                args=tuple(case.constructor_input.args),
                kwargs=dict(case.constructor_input.kwargs),
                inputs=tuple(_float64(a) for a in case.forward_input.args),
                input_kwargs=dict(case.forward_input.kwargs),
                training=True,
            )


def _differs(value: Any, default: Any) -> bool:
    """Whether an argument is given (a tensor always is; ``reduce=False`` is, ``None`` not)."""
    return isinstance(value, torch.Tensor) or (value is not default and value != default)


def _constructor_kwargs(module: torch.nn.Module) -> dict[str, Any]:
    """A built torch loss module's constructor arguments, read back from its attributes
    (those differing from the defaults; the legacy ``size_average``/``reduce`` are folded
    into ``reduction`` by torch's constructor)."""
    kwargs = {}
    for name, parameter in inspect.signature(type(module).__init__).parameters.items():
        if name in ("self", "size_average", "reduce") or not hasattr(module, name):
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = getattr(module, name)
        if _differs(value, parameter.default):
            kwargs[name] = _float64(value)
    return kwargs


def _sample(spec: dict, prefix: str) -> Any:
    if f"{prefix}_fn" in spec:
        return spec[f"{prefix}_fn"]()
    if f"{prefix}_size" in spec:
        return torch.randn(spec[f"{prefix}_size"], dtype=torch.float64)
    return spec.get(prefix)


def _criterion_tests() -> Iterator[LossConfiguration]:
    from torch.testing._internal import common_nn

    for spec in common_nn.criterion_tests:
        full = spec.get("fullname") or spec.get("module_name", "")
        torch.manual_seed(0)
        module = spec["constructor"](*spec.get("constructor_args", ()))
        name = type(module).__name__
        if not is_loss(name):
            continue
        x, t = _sample(spec, "input"), _sample(spec, "target")
        if x is None or t is None:
            continue
        extra = tuple(spec.get("extra_args", ()))
        yield LossConfiguration(
            key=f"common_nn/{name}/train/{full}",
            torch_name=name,
            args=(),
            kwargs=_constructor_kwargs(module),
            # common_nn spreads a tuple input: module(*x, target)
            inputs=tuple(_float64(a) for a in (*(x if isinstance(x, tuple) else (x,)), t, *extra)),
            input_kwargs={},
            training=True,
            constructor=lambda module=module: module,
        )


class _Recorder(TorchFunctionMode):
    """Records the outermost loss functional called while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FUNCTIONALS:
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _functional_tests() -> Iterator[LossConfiguration]:
    from torch.testing._internal import common_nn

    for spec in common_nn.get_new_module_tests():
        full = spec.get("fullname", "")
        if "module_name" in spec or "loss" not in full.split("_")[0].lower():
            continue
        torch.manual_seed(0)
        x = _sample(spec, "input")
        if x is None:
            continue
        recorder = _Recorder()
        with recorder:
            spec["constructor"]()(*(x if isinstance(x, tuple) else (x,)))
        if not recorder.calls:
            continue
        func, args, kwargs = recorder.calls[0]
        bound = inspect.signature(func).bind(*args, **kwargs)
        names = list(bound.signature.parameters)
        values = dict(bound.arguments)
        inputs = tuple(_float64(values.pop(n)) for n in names[:2])
        ours = {}
        for key, value in values.items():
            if _differs(value, bound.signature.parameters[key].default):
                ours[key] = _float64(value)
        yield LossConfiguration(
            key=f"common_nn/{FUNCTIONALS[func]}/train/{full}",
            torch_name=FUNCTIONALS[func],
            args=(),
            kwargs=ours,
            inputs=inputs,
            input_kwargs={},
            training=True,
            functional=func,
            call_kwargs={k: _float64(v) for k, v in values.items()},
        )


def configurations(only: set[str] | None = None) -> list[LossConfiguration]:
    """Every loss configuration of ``module_db`` and ``common_nn`` (float64); ``only``:
    these torch class names (``module_db``'s inputs of the others are not even built)."""
    found = [*_module_db(only), *_criterion_tests(), *_functional_tests()]
    return [c for c in found if only is None or c.torch_name in only]


# ---------------------------------------------------------------------- one configuration
def _leaves(inputs: tuple) -> tuple[tuple, list[int]]:
    """Fresh leaf copies; every float tensor requires grad. The indices of those torch can
    differentiate are found by :func:`_torch_side`."""
    fresh = tuple(
        t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex())
        if isinstance(t, torch.Tensor) else t
        for t in inputs
    )  # fmt: skip
    wrt = [i for i, t in enumerate(fresh) if isinstance(t, torch.Tensor) and t.requires_grad]
    return fresh, wrt


def _torch_side(config: LossConfiguration, upstream_seed: int = 0):
    """torch's value, the random ``grad_output`` and the gradient of each float argument
    torch differentiates (``None`` for the others)."""
    inputs, wrt = _leaves(config.inputs)
    module = None
    if config.functional is None:  # built once: a loss with parameters keeps its draw
        torch.manual_seed(0)
        module = config.constructor() if config.constructor else getattr(
            torch.nn, config.torch_name)(*config.args, **config.kwargs)  # fmt: skip

    def call(args: tuple) -> torch.Tensor:
        if module is None:
            return config.functional(*args, **config.call_kwargs)
        return module(*args, **config.input_kwargs)

    # the value from detached arguments: torch refuses a target that requires a gradient
    # where it has none (soft_margin_loss); each argument's gradient is taken below
    value = call(tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in inputs))
    rng = np.random.default_rng(0)
    upstream = rng.standard_normal(tuple(value.shape))
    grads: list[Any] = [None] * len(inputs)
    for i in wrt:  # one argument at a time: a target torch cannot differentiate is skipped
        try:
            fresh, _ = _leaves(config.inputs)
            fresh = tuple(
                t.detach() if j != i and isinstance(t, torch.Tensor) else t
                for j, t in enumerate(fresh)
            )  # fmt: skip
            (grad,) = torch.autograd.grad(call(fresh), fresh[i],
                                          torch.from_numpy(upstream.copy()))  # fmt: skip
        except RuntimeError:
            continue  # torch gives no gradient for this argument
        grads[i] = grad
    params = dict(module.named_parameters()) if module is not None else {}
    param_grads = {}
    if params:  # LinearCrossEntropyLoss's linear.weight (and linear.bias)
        detached = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in inputs)
        found = torch.autograd.grad(call(detached), list(params.values()),
                                    torch.from_numpy(upstream.copy()))  # fmt: skip
        param_grads = dict(zip(params, found, strict=True))
    return value.detach(), upstream, grads, params, param_grads


def _our_kwargs(config: LossConfiguration) -> dict[str, Any]:
    return {k: _numpy(v) for k, v in config.kwargs.items()}


def _copy_parameters(params: dict[str, torch.Tensor], loss: Any) -> str | None:
    """torch's parameters into ``loss`` by state-dict name; a mismatch's description."""
    ours = dict(loss.named_parameters())
    if set(ours) != set(params):
        return f"parameter names differ: ours {sorted(ours)}, torch {sorted(params)}"
    for name, tensor in params.items():
        if ours[name].shape != tuple(tensor.shape):
            return f"parameter {name}: shape {ours[name].shape}, torch {tuple(tensor.shape)}"
        ours[name][...] = tensor.detach().numpy()
    return None


def run(config: LossConfiguration, cls: type) -> Outcome:
    """Play one loss configuration against the library's class ``cls``."""
    value, upstream, grads, params, param_grads = _torch_side(config)
    try:
        loss = cls(*_numpy(config.args), **_our_kwargs(config))
        mismatch = _copy_parameters(params, loss)
        if mismatch is not None:
            return Outcome("disagree", mismatch)
        ours, cache = loss.forward(*_numpy(config.inputs), **_numpy(config.input_kwargs))
        our_grads, our_param_grads = loss.backward_with_params(upstream.copy(), cache)
    except Exception as error:
        return _failure(error)
    errors = {"output": _relative(ours, value.numpy())}
    for name, grad in param_grads.items():
        mine = our_param_grads.get(name)
        errors[f"∂{name}"] = float("inf") if mine is None else _relative(mine, grad.numpy())
    names = getattr(cls, "arguments", ("input", "target"))
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        name = names[i] if i < len(names) else f"argument {i}"
        mine = our_grads[i] if i < len(our_grads) else None
        if mine is None:
            errors[f"∂{name}"] = float("inf")
            continue
        errors[f"∂{name}"] = _relative(mine, grad.numpy())
    worst = max(errors, key=lambda k: errors[k])
    if not errors[worst] <= TOLERANCE:
        return Outcome("disagree", f"{worst}: relative error {errors[worst]:.2e}",
                       errors[worst], sorted(errors))  # fmt: skip
    return Outcome("agree", "", errors[worst], sorted(errors))
