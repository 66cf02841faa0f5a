"""The PyTorch oracle for manual_bp.

For every manual_bp component this package builds the same forward from
torch's own functions (``torch.sigmoid``, ``F.mse_loss``, ``F.cross_entropy``,
``torch.optim.*``) in float64, with identical parameters, and lets autograd
supply the gradients. Where torch's convention differs from ours (MSE 'mean'
divides by every element and has no ½, BCELoss clamps its logs at −100), the
oracle maps torch's reduction onto our definition exactly; see
``docs/conventions.md``. torch is imported only here and in ``tests/``.
"""

from reference.network import TorchRun, torch_per_sample_gradients, torch_run

__all__ = ["TorchRun", "torch_per_sample_gradients", "torch_run"]
