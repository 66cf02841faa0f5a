"""Does NumPy's BLAS give the same bits with 1 and 2 threads? (``docs/performance.md``)

Multiplies the product shapes of the small models in ``tests/test_threads.py`` (forward,
weight-gradient and input-gradient orientations, a transposed operand too) in a child process
per thread count and counts the shapes whose results differ in any bit.

Usage::

    python benchmarks/blas_determinism.py
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

SHAPES = [(64 * 256, 27, 8), (8, 64 * 256, 27), (64 * 256, 8, 27), (27, 64 * 256, 8),
          (1024, 32, 96), (96, 1024, 32), (1024, 96, 32), (64, 16, 4096), (4096, 64, 16),
          (768, 32, 50), (50, 768, 32), (32, 50, 768), (16 * 64, 128, 384),
          (384, 1024, 128)]  # fmt: skip
DTYPES = ("float32", "float64")


def digests() -> list[str]:
    import numpy as np

    rng = np.random.default_rng(0)
    found = []
    for dtype in DTYPES:
        for m, k, n in SHAPES:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            for product in (a @ b, a @ np.ascontiguousarray(b.T).T):
                found.append(hashlib.sha256(product.tobytes()).hexdigest())
    return found


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        print(" ".join(digests()))
        return
    runs = {}
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, __file__, "--worker"], env=env, check=True,
                             capture_output=True, text=True)  # fmt: skip
        runs[threads] = out.stdout.split()
    per_dtype = 2 * len(SHAPES)
    for i, dtype in enumerate(DTYPES):
        pairs = zip(runs["1"][i * per_dtype : (i + 1) * per_dtype],
                    runs["2"][i * per_dtype : (i + 1) * per_dtype], strict=True)  # fmt: skip
        differ = sum(a != b for a, b in pairs)
        print(f"{dtype}: {differ} of {per_dtype} products differ between 1 and 2 BLAS threads")


if __name__ == "__main__":
    main()
