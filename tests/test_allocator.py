"""``import manual_bp`` keeps freed memory for reuse on glibc (``manual_bp/_allocator.py``,
``docs/performance.md``, "Freed memory kept"): arrays of a few MiB allocated and freed in a
loop fault their pages in once, not on every pass; ``MANUAL_BP_MALLOC=default`` and glibc's own
variables leave glibc's defaults alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: 50 passes of two 4.8 MB arrays after a warm-up; prints the minor page faults they took
LOOP = """
import resource, numpy as np, manual_bp
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
warm = [np.ones(600_000) for _ in range(3)]; del warm
before = faults()
for _ in range(50):
    x = np.ones(600_000); y = x * 2.0; del x, y
print(faults() - before)
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only"
)


def _faults(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MANUAL_BP_"))}
    result = subprocess.run(
        [sys.executable, "-c", LOOP],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip())


def test_freed_arrays_are_reused_not_faulted_in_again():
    """Default glibc faults ~1 200 pages a pass (two fresh 4.8 MB mmaps); kept memory: none
    after the first (measured 1 against 64 478 over the 50 passes)."""
    default, kept = _faults(MANUAL_BP_MALLOC="default"), _faults()
    assert default > 20_000, default  # the loop does fault without the tuning
    assert kept < default / 20, (kept, default)


def test_the_users_own_glibc_settings_stand():
    """A user's ``MALLOC_TRIM_THRESHOLD_`` (here glibc's default, 128 KiB) is not overridden."""
    assert _faults(MALLOC_TRIM_THRESHOLD_="131072") > 20_000
