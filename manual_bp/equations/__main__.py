"""``python -m manual_bp.equations``: print the equation registry as JSON."""

import json

from manual_bp.equations import EQUATIONS

print(json.dumps([e.to_dict() for e in EQUATIONS.values()], indent=2, ensure_ascii=False))
