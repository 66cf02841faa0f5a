"""torch's own module tests as an oracle: every configuration torch tests of a module this
library has, built generically and compared (issue 23).

torch keeps its module test configurations in two places:

* ``torch.testing._internal.common_modules.module_db`` — one ``ModuleInfo`` per module class
  whose ``module_inputs_func`` yields ``ModuleInput``s (constructor arguments, forward
  arguments, a description), in training mode and, where the modes differ, in eval mode;
* ``torch.testing._internal.common_nn`` — ``module_tests`` and ``get_new_module_tests()``,
  dicts with ``module_name``, ``constructor_args`` and an ``input_size``/``input_fn``.

:func:`configurations` turns both into :class:`Configuration` records (float64), and
:func:`run` plays one the way a torch user would: the library's class **looked up by torch's
class name** (a layer, or an activation wrapped in an ``ActivationLayer``) and constructed
from torch's exact arguments; torch's parameters and buffers copied in by their state-dict
names; the same forward arguments; one random upstream gradient on the (first) output; the
output, the input gradient and every parameter gradient compared. Losses are played by the
criterion walk of :mod:`reference.torch_losses` (issue 26), hooked in here.

Outcomes: ``agree``; ``disagree`` (a value or a parameter name differs); ``refused`` (the
library raised ``ValueError``/``TypeError``/``NotImplementedError`` from its own code: a
clear refusal); ``crash`` (any other exception, or one raised inside NumPy); ``excluded``
(listed in :data:`EXCLUDED` with its reason, not played); ``absent`` (no class of torch's
name: not counted).

:func:`summary` gives the counts the verification report cites (``manual_bp verify`` runs
the walk through :func:`walk_summary`).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import manual_bp.activations as activations
import manual_bp.layers as layers
import manual_bp.losses as losses
from manual_bp.layers import ActivationLayer

__all__ = [
    "EXCLUDED",
    "Configuration",
    "Outcome",
    "configurations",
    "manual_class",
    "run",
    "summary",
    "walk_summary",
]

#: Relative agreement required in float64 (the measured worst agreement is ~1e-14).
TOLERANCE = 1e-10

#: The only reasons a configuration may be left unplayed: what has no meaning for a NumPy
#: CPU library (issue 23, item 1).
EXCLUSION_REASONS = ("device", "sparse", "quantised")

#: Configurations not played, by key, with ``(reason, explanation)``; ``reason`` is one of
#: :data:`EXCLUSION_REASONS`. Empty today: torch's tests of the modules the library has
#: pass no device other than the CPU, no sparse gradients and no quantised module.
EXCLUDED: dict[str, tuple[str, str]] = {}


@dataclass
class Configuration:
    """One torch test configuration of one module class."""

    key: str
    torch_name: str
    args: tuple
    kwargs: dict
    inputs: tuple
    input_kwargs: dict
    training: bool
    constructor: Any = None  # common_nn's own constructor, when not ``nn.<torch_name>``


@dataclass
class Outcome:
    status: str  # agree | disagree | refused | crash | absent
    detail: str = ""
    error: float = 0.0
    compared: list[str] = field(default_factory=list)


def _is_loss(name: str) -> bool:
    return name.endswith("Loss") or name.endswith("Criterion")


def manual_class(torch_name: str) -> type | None:
    """The library's class of torch's name (a layer, an activation or a loss), or None."""
    for namespace in (layers, activations, losses):
        found = getattr(namespace, torch_name, None)
        if isinstance(found, type):
            return found
    return None


def _module_db_configurations() -> Iterator[Configuration]:
    from torch.testing._internal.common_modules import module_db

    for info in module_db:
        name = info.module_cls.__name__
        if _is_loss(name):
            continue
        modes = (True, False) if info.train_and_eval_differ else (True,)
        for training in modes:
            torch.manual_seed(0)
            found = info.module_inputs_func(
                info, device="cpu", dtype=torch.float64, requires_grad=True, training=training
            )
            for i, case in enumerate(found):
                mode = "train" if training else "eval"
                yield Configuration(
                    key=f"module_db/{name}/{mode}/{i}" + (f"/{case.desc}" if case.desc else ""),
                    torch_name=name,
                    args=tuple(case.constructor_input.args),
                    kwargs=dict(case.constructor_input.kwargs),
                    inputs=tuple(case.forward_input.args),
                    input_kwargs=dict(case.forward_input.kwargs),
                    training=training,
                )


def _common_nn_configurations() -> Iterator[Configuration]:
    from torch.testing._internal import common_nn

    tests = list(common_nn.module_tests) + list(common_nn.get_new_module_tests())
    for spec in tests:
        name = spec.get("module_name")
        if name is None or _is_loss(name):
            continue
        torch.manual_seed(0)
        if "input_fn" in spec:
            x = spec["input_fn"]()
        elif "input_size" in spec:
            x = torch.randn(spec["input_size"], dtype=torch.float64)
        else:
            continue
        parts = x if isinstance(x, tuple) else (x,)  # common_nn spreads a tuple: module(*x)
        parts = tuple(
            p.to(torch.float64).detach().requires_grad_(True)
            if isinstance(p, torch.Tensor) and p.is_floating_point() else p
            for p in parts
        )  # fmt: skip
        desc = spec.get("desc")
        for training in (True, False) if spec.get("check_eval") else (True,):
            mode = "train" if training else "eval"
            yield Configuration(
                key=f"common_nn/{name}/{mode}" + (f"/{desc}" if desc else ""),
                torch_name=name,
                args=tuple(spec.get("constructor_args", ())),
                kwargs={},
                inputs=parts,
                input_kwargs={},
                training=training,
                constructor=spec.get("constructor"),
            )


def configurations() -> list[Configuration]:
    """Every module configuration of ``module_db`` and ``common_nn``, losses included."""
    from reference import torch_losses

    return [*_module_db_configurations(), *_common_nn_configurations(),
            *torch_losses.configurations()]  # fmt: skip


# ---------------------------------------------------------------------- one configuration
def _numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, tuple):
        return tuple(_numpy(v) for v in value)
    if isinstance(value, list):
        return [_numpy(v) for v in value]
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    return value


def _first(output: Any) -> Any:
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def _ours(error: BaseException) -> bool:
    """Whether ``error`` was raised by a ``raise`` statement of the library (not by NumPy,
    even when a NumPy method called from the library's line raised it)."""
    if isinstance(error, TypeError) and "argument" in str(error):
        return True  # Python's own binding of a signature: an unknown keyword, too many args
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    return "/manual_bp/" in last.filename.replace("\\", "/") and "raise" in (last.line or "")


def _failure(error: BaseException) -> Outcome:
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    clear = isinstance(error, (ValueError, TypeError, NotImplementedError)) and _ours(error)
    return Outcome("refused" if clear else "crash", message)


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    kind = np.result_type(np.asarray(ours), np.asarray(theirs), np.float64)  # complex stays
    ours, theirs = np.asarray(ours, dtype=kind), np.asarray(theirs, dtype=kind)
    if ours.shape != theirs.shape:
        return float("inf")
    if ours.size == 0:
        return 0.0
    both_nan = np.isnan(ours) & np.isnan(theirs)
    diff = np.where(both_nan, 0.0, np.abs(ours - theirs))
    return float(np.max(diff) / max(1.0, float(np.max(np.abs(np.nan_to_num(theirs))))))


def _build_torch(config: Configuration) -> torch.nn.Module:
    torch.manual_seed(0)
    if config.constructor is not None:
        module = config.constructor(*config.args, **config.kwargs)
    else:
        module = getattr(torch.nn, config.torch_name)(*config.args, **config.kwargs)
    return module.to(torch.float64).train(config.training)


def _build_ours(cls: type, config: Configuration) -> Any:
    args, kwargs = _numpy(config.args), _numpy(config.kwargs)
    if issubclass(cls, layers.Layer):
        layer = cls(*args, **kwargs)
        if hasattr(layer, "manual_seed"):  # RReLU: torch's generator, seeded as torch's is
            layer.manual_seed(0)
        return layer
    return ActivationLayer(cls(*args, **kwargs))


def _copy_state(module: torch.nn.Module, layer: Any) -> str | None:
    """Copy torch's parameters and buffers into ``layer`` by name; a mismatch's description."""
    ours = dict(layer.named_parameters())
    theirs = dict(module.named_parameters())
    if set(ours) != set(theirs):
        return f"parameter names differ: ours {sorted(ours)}, torch {sorted(theirs)}"
    for name, tensor in theirs.items():
        if ours[name].shape != tuple(tensor.shape):
            return f"parameter {name}: shape {ours[name].shape}, torch {tuple(tensor.shape)}"
        ours[name][...] = tensor.detach().numpy()
    our_buffers = dict(layer.named_buffers())
    for name, tensor in module.named_buffers():
        if name in our_buffers and tensor.is_floating_point():
            our_buffers[name][...] = tensor.detach().numpy()
    return None


def run(config: Configuration) -> Outcome:
    """Play one configuration (see the module docstring)."""
    cls = manual_class(config.torch_name)
    if cls is None:
        return Outcome("absent")
    if config.key in EXCLUDED:
        reason, why = EXCLUDED[config.key]
        return Outcome("excluded", f"{reason}: {why}")
    if hasattr(config, "functional"):  # a loss configuration (reference.torch_losses)
        from reference import torch_losses

        return torch_losses.run(config, cls)
    module = _build_torch(config)
    try:
        layer = _build_ours(cls, config)
        layer.train(config.training)
        if any(torch.nn.parameter.is_lazy(p) for p in module.parameters()):
            # a lazy module materialises at its first input, torch's and ours alike
            with torch.no_grad():
                module(*config.inputs, **config.input_kwargs)
            layer.forward(*_numpy(config.inputs), **_numpy(config.input_kwargs))
    except Exception as error:
        return _failure(error)
    mismatch = _copy_state(module, layer)
    if mismatch is not None:
        return Outcome("disagree", mismatch)
    inputs = tuple(
        t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex())
        if isinstance(t, torch.Tensor)
        else t
        for t in config.inputs
    )  # fmt: skip
    torch_out = _first(module(*inputs, **config.input_kwargs))
    rng = np.random.default_rng(0)
    upstream = rng.standard_normal(tuple(torch_out.shape))
    if torch_out.is_complex():  # common_nn's complex padding input: a complex cotangent
        upstream = upstream + 1j * rng.standard_normal(upstream.shape)
    float_inputs = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    wrt = float_inputs + list(module.parameters())
    # (a configuration with no differentiable input and no parameter: output only)
    grads = torch.autograd.grad(
        torch_out, wrt, torch.from_numpy(upstream), allow_unused=True
    ) if wrt else ()  # fmt: skip
    try:
        out, cache = layer.forward(*_numpy(config.inputs), **_numpy(config.input_kwargs))
        dx, param_grads = layer.backward(upstream.copy(), cache)
    except Exception as error:
        return _failure(error)
    errors = {"output": _relative(_first(out), torch_out.detach().numpy())}
    if len(float_inputs) > 1 and isinstance(dx, tuple) and len(dx) == len(float_inputs):
        # Several float inputs (attention's query, key, value) and a ``dx`` tuple in torch's
        # argument order: every input's gradient is compared; otherwise the first only.
        for i, (mine, theirs) in enumerate(zip(dx, grads, strict=False)):
            reference = np.zeros_like(mine) if theirs is None else theirs.numpy()
            errors[f"input grad {i}"] = _relative(mine, reference)
    elif float_inputs and float_inputs[0] is inputs[0]:
        errors["input grad"] = _relative(_first(dx), grads[0].numpy())
    names = [name for name, _ in module.named_parameters()]
    for name, grad in zip(names, grads[len(float_inputs) :], strict=True):
        reference = np.zeros(0) if grad is None else grad.numpy()
        if grad is None:
            continue
        errors[f"∂{name}"] = _relative(param_grads.get(name, np.full_like(reference, np.nan)),
                                        reference)  # fmt: skip
    worst = max(errors, key=lambda k: errors[k])
    if not errors[worst] <= TOLERANCE:
        return Outcome("disagree", f"{worst}: relative error {errors[worst]:.2e}",
                       errors[worst], sorted(errors))  # fmt: skip
    return Outcome("agree", "", errors[worst], sorted(errors))


# ---------------------------------------------------------------------- the ledger
def outcomes(only: set[str] | None = None) -> dict[str, Outcome]:
    """Every configuration's outcome, by key (absent classes left out); ``only``: these
    torch class names."""
    found = {}
    for config in configurations():
        if only is not None and config.torch_name not in only:
            continue
        outcome = run(config)
        if outcome.status != "absent":
            found[config.key] = outcome
    return found


def ledger(found: dict[str, Outcome]) -> dict[str, dict[str, str]]:
    """The configurations that do not agree yet: ``{key: {"status", "detail"}}``."""
    return {
        key: {"status": o.status, "detail": o.detail}
        for key, o in sorted(found.items())
        if o.status not in ("agree", "excluded")
    }


def summary(found: dict[str, Outcome]) -> dict[str, Any]:
    """The counts the verification report cites: configurations run, per outcome, per class
    and source (``module_db``/``common_nn``), and the worst agreement."""
    import collections

    by_class: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for key, outcome in found.items():
        source, name = key.split("/")[:2]
        by_class[name][outcome.status] += 1
        by_source[source][outcome.status] += 1
    counts = collections.Counter(o.status for o in found.values())
    agreeing = [o.error for o in found.values() if o.status == "agree"]
    return {
        "configurations": len(found),
        "classes": len(by_class),
        **{s: counts.get(s, 0) for s in ("agree", "disagree", "refused", "crash", "excluded")},
        "worst_agreement": max(agreeing, default=0.0),
        "tolerance": TOLERANCE,
        "by_source": {k: dict(v) for k, v in sorted(by_source.items())},
        "by_class": {k: dict(v) for k, v in sorted(by_class.items())},
        "failures": {
            key: f"{o.status}: {o.detail}"
            for key, o in sorted(found.items())
            if o.status in ("disagree", "crash")
        },
    }


def module_db_coverage() -> dict[str, Any]:
    """How many of ``module_db``'s module classes the library has (by torch's name), and
    which it lacks: the coverage line of the verification report."""
    from torch.testing._internal.common_modules import module_db

    names = sorted({info.module_cls.__name__ for info in module_db})
    missing = [n for n in names if manual_class(n) is None]
    return {"module_db_classes": len(names), "module_db_have": len(names) - len(missing),
            "module_db_missing": missing}  # fmt: skip


def walk_summary() -> dict[str, Any]:
    """Play every configuration and summarise (torch's own warnings silenced: they concern
    torch's kernels, and the report's stderr carries progress only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {**summary(outcomes()), **module_db_coverage()}


def main() -> None:
    """``python -m reference.torch_modules [--ledger PATH] [--only Conv2d,LSTM]``: print the
    counts (and write the ledger of configurations that do not agree yet); with ``--only``,
    every non-agreeing configuration of those classes."""
    import argparse
    import collections
    import json
    import warnings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ledger", help="write the non-agreeing configurations here")
    parser.add_argument("--only", help="comma-separated torch class names")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    if only is not None and args.ledger:
        parser.error("--ledger needs every class: drop --only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = outcomes(only)
    counts = collections.Counter(o.status for o in found.values())
    worst = max((o.error for o in found.values() if o.status == "agree"), default=0.0)
    classes = {key.split("/")[1] for key in found}
    print(f"{len(found)} configurations of {len(classes)} module classes: {dict(counts)}; "
          f"worst agreement {worst:.1e}")  # fmt: skip
    if only is not None:
        for key, entry in ledger(found).items():
            print(f"{entry['status']:>8}  {key}: {entry['detail']}")
    if args.ledger:
        with open(args.ledger, "w", encoding="utf-8") as handle:
            json.dump(ledger(found), handle, indent=1, ensure_ascii=False)
            handle.write("\n")


if __name__ == "__main__":
    main()
