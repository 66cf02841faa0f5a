"""Evaluation of a :class:`~manual_bp.models.sequential.Sequential`: outputs in evaluation mode
(in chunks of rows), predictions, the mean cost and accuracy. Split from
:mod:`manual_bp.models.sequential` (construction, forward and backward).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._validation import check_layer_array, check_nonempty
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.containers import stack_forward
from manual_bp.models.container import ContainerIdioms
from manual_bp.models.targets import masked_accuracy, output_seed

__all__ = ["INFERENCE_CHUNK", "Evaluation"]

#: Rows per chunk when evaluating a large data set in evaluation mode.
INFERENCE_CHUNK = 1024


class Evaluation(ContainerIdioms):
    """Mixin of :class:`~manual_bp.models.sequential.Sequential`: evaluation-mode passes."""

    def check_batch_array(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` as the stack's entries take it (issue 24's one check, with the model named):
        a NumPy array of the model's dtype — integers too when the first layer takes indices —
        with the model's per-sample shape; an empty batch passes (an empty output, as torch).
        """
        first = next(iter(self._leaves()), None)
        indices = bool(getattr(first, "index_input", False))
        owner = type(self).__name__
        check_layer_array(x, owner, name, self.dtype, indices=indices)
        shape = getattr(self, "input_shape", None)
        if x.ndim < 1 or (shape is not None and x.shape[1:] != tuple(shape)):
            want = ", ".join(map(str, shape or ("…",)))
            raise ValueError(f"{owner}: {name} has shape {x.shape}; expected (batch, {want})")
        return x

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Outputs in evaluation mode (dropout off, running statistics), in chunks of rows."""
        return self._infer(self.check_batch_array(x))[0]

    def _infer(self, x: np.ndarray, logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``(outputs, zᴷ)`` in evaluation mode; ``zᴷ`` (the last activation layer's input)
        only with ``logits=True`` and a model ending in an activation, else None."""
        keep_z = logits and isinstance(self.layers[-1], ActivationLayer)
        modes = [leaf.training for leaf in self._leaves()]
        self.eval()
        outs, zs = [], []
        try:
            for i in range(0, max(1, x.shape[0]), INFERENCE_CHUNK):  # an empty batch: once
                out, caches = stack_forward(self.layers, x[i : i + INFERENCE_CHUNK])
                outs.append(out)
                if keep_z:
                    zs.append(caches[-1].input)
        finally:
            for leaf, mode in zip(self._leaves(), modes, strict=True):
                leaf.training = mode
        out = np.concatenate(outs) if len(outs) > 1 else outs[0]
        if not keep_z:
            return out, None
        return out, np.concatenate(zs) if len(zs) > 1 else zs[0]

    def predict(self, x: Any) -> np.ndarray:
        """Predicted classes ``argmax`` over the last axis, in evaluation mode."""
        return np.argmax(self.infer(self.prepare_inputs(x)), axis=-1)

    def total_cost(self, x: Any, y: Any) -> float:
        """Mean cost in evaluation mode (no regulariser term; :func:`train` adds it)."""
        return self.cost_and_outputs(x, y)[0]

    def cost_and_outputs(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        """``(C, aᴷ)`` in evaluation mode from one pass, over the counted positions.

        The cost is evaluated from ``zᴷ`` where the output activation has a stable logit
        form (:meth:`Cost.value_from_logits`), so a saturated output at a finite logit gives
        a finite cost, as ``Network.cost_and_outputs`` does.
        """
        x = self.prepare_inputs(x)
        targets = self.prepare_targets(y, x.shape[0])
        out, z = self._infer(x, logits=True)
        last = self.layers[-1]
        logits = {"z": z, "activation": last.activation} if z is not None else {}
        return output_seed(self.cost, out, targets, self.ignore_index, **logits).cost, out

    def accuracy(self, x: Any, y: Any) -> float:
        """Fraction of samples (or counted positions) whose argmax equals the label."""
        x = self.prepare_inputs(x)
        return self.output_accuracy(self.infer(x), self.prepare_targets(y, x.shape[0]))

    def output_cost(self, out: np.ndarray, targets: np.ndarray) -> float:
        """Mean cost of outputs against prepared targets, over the counted positions."""
        out, targets = self._outputs_and_targets(out, targets)
        return output_seed(self.cost, out, targets, self.ignore_index).cost

    def output_accuracy(self, out: np.ndarray, targets: np.ndarray) -> float:
        """Accuracy of outputs against prepared targets, over the counted positions."""
        out, targets = self._outputs_and_targets(out, targets)
        return masked_accuracy(out, targets, self.ignore_index)

    def _outputs_and_targets(self, out: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """Outputs and prepared targets (:meth:`prepare_targets`): float arrays of one shape,
        not empty (a mean over no samples is undefined)."""
        owner = type(self).__name__
        for name, array in (("out", out), ("targets", targets)):
            check_layer_array(array, owner, name)
            check_nonempty(array, f"{owner}: {name}")
        if out.shape != targets.shape:
            raise ValueError(
                f"{owner}: targets have shape {targets.shape}, out has shape {out.shape}; "
                "prepared targets have the output's shape (prepare_targets)"
            )
        return out, targets
