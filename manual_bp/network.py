"""Deprecated: ``manual_bp.network`` moved into :mod:`manual_bp.models` (one model).

Kept so that ``import manual_bp.network`` keeps working; it will be removed in a later
release. Import from :mod:`manual_bp.models` or the top level (``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.network import Gradients, Network

warnings.warn(
    "manual_bp.network is deprecated: import from manual_bp.models.network (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Gradients", "Network"]
