"""Milliseconds per training step of ONE layer (forward + backward with ∂C/∂x) for the
layers issue 25 gave fast forms: manual_bp's fast step, its readable form (GenericStep:
the layer's own forward/backward) and torch CPU autograd.

Each measurement runs in its own child process (``PYTHONPATH`` = this tree, the thread
count in ``OMP/OPENBLAS/MKL_NUM_THREADS`` and ``torch.set_num_threads``); the three
implementations are interleaved within every repetition (background load hits all alike)
and the table shows medians over repetitions of each worker's median step.

Usage::

    python benchmarks/bench_layer_steps.py --repeats 5 --threads 1
    python benchmarks/bench_layer_steps.py --rows conv-transpose2d,rmsnorm --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fast", "readable", "torch")

#: row -> (manual_bp layer expression, torch module expression, input shape); float32
ROWS = {
    "conv-transpose2d": ("L.ConvTranspose2d(64, 32, 4, stride=2, padding=1, seed=0, dtype=DT)",
                         "nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)", (32, 64, 8, 8)),
    "conv-transpose1d": ("L.ConvTranspose1d(64, 32, 4, stride=2, padding=1, seed=0, dtype=DT)",
                         "nn.ConvTranspose1d(64, 32, 4, stride=2, padding=1)", (32, 64, 64)),
    "conv-transpose3d": ("L.ConvTranspose3d(32, 16, 4, stride=2, padding=1, seed=0, dtype=DT)",
                         "nn.ConvTranspose3d(32, 16, 4, stride=2, padding=1)", (8, 32, 8, 8, 8)),
    "instancenorm2d": ("L.InstanceNorm2d(32, affine=True, dtype=DT)",
                       "nn.InstanceNorm2d(32, affine=True)", (32, 32, 16, 16)),
    "rmsnorm": ("L.RMSNorm(256, dtype=DT)", "nn.RMSNorm(256)", (64, 32, 256)),
    "prelu": ("L.PReLU(32, dtype=DT)", "nn.PReLU(32)", (32, 32, 16, 16)),
    "glu": ("L.GLU(1)", "nn.GLU(1)", (32, 64, 16, 16)),
    "adaptive-avgpool2d": ("L.AdaptiveAvgPool2d(4)", "nn.AdaptiveAvgPool2d(4)", (32, 32, 16, 16)),
    "adaptive-maxpool2d": ("L.AdaptiveMaxPool2d(4)", "nn.AdaptiveMaxPool2d(4)", (32, 32, 16, 16)),
    "fractional-maxpool2d": ("L.FractionalMaxPool2d(3, output_ratio=0.5, seed=0)",
                             "nn.FractionalMaxPool2d(3, output_ratio=0.5)", (16, 16, 32, 32)),
    "fractional-maxpool3d": ("L.FractionalMaxPool3d(2, output_ratio=0.5, seed=0)",
                             "nn.FractionalMaxPool3d(2, output_ratio=0.5)", (4, 8, 16, 16, 16)),
    "localresponsenorm": ("L.LocalResponseNorm(5)", "nn.LocalResponseNorm(5)", (32, 32, 16, 16)),
    "rrelu": ("L.RReLU(seed=0)", "nn.RReLU()", (32, 32, 16, 16)),
    "bilinear": ("L.Bilinear(32, 32, 32, seed=0, dtype=DT)", "Quadratic(32, 32, 32)", (256, 32)),
}  # fmt: skip


def worker(row: str, mode: str, steps: int, threads: int) -> float:
    """The median milliseconds of one step (after warm-up) in this process."""
    layer_expr, torch_expr, shape = ROWS[row]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if mode == "torch":
        import torch
        from torch import nn

        torch.set_num_threads(threads)

        class Quadratic(nn.Bilinear):  # a stack's bilinear layer: x₂ = x₁
            def forward(self, x):
                return super().forward(x, x)

        module = eval(torch_expr, {"nn": nn, "Quadratic": Quadratic})  # the table above
        xt = torch.tensor(x, requires_grad=True)
        dout = torch.randn(module(xt).shape, generator=torch.Generator().manual_seed(1))

        def step() -> None:
            module.zero_grad(set_to_none=True)
            xt.grad = None
            module(xt).backward(dout)
    else:
        import manual_bp.layers as L
        from manual_bp.layers.steps import GenericStep

        layer = eval(layer_expr, {"L": L, "DT": np.float32})  # the table above
        runner = layer.fast_step() if mode == "fast" else GenericStep(layer)
        out = runner.forward(x)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        grads = {k: np.empty_like(v) for k, v in layer.params.items()}

        def step() -> None:
            runner.forward(x)
            runner.backward(dout.copy(), grads, True)

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(row: str, mode: str, steps: int, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    code = [sys.executable, __file__, "--worker", row, mode, str(steps), str(threads)]
    done = subprocess.run(code, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 5 steps")
    parser.add_argument("--json", help="write the medians here")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        row, mode, steps, threads = args.worker
        print(worker(row, mode, int(steps), int(threads)))
        return
    repeats, steps = (1, 5) if args.quick else (args.repeats, args.steps)
    results = {}
    print(f"{'layer':20s} {'fast ms':>9s} {'readable':>9s} {'torch':>9s} {'read/fast':>9s} "
          f"{'fast/torch':>10s}")  # fmt: skip
    for row in args.rows.split(","):
        runs: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(repeats):
            for mode in MODES:  # interleaved: load hits every mode alike
                runs[mode].append(measure(row, mode, steps, args.threads))
        med = {m: statistics.median(v) for m, v in runs.items()}
        results[row] = med
        print(f"{row:20s} {med['fast']:9.3f} {med['readable']:9.3f} {med['torch']:9.3f} "
              f"{med['readable'] / med['fast']:9.2f} {med['fast'] / med['torch']:10.2f}",
              flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
