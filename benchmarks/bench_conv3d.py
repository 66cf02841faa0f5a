"""Milliseconds per training step of a small 3-D CNN: manual_bp against torch CPU (issue 25).

Workload (float32 unless ``--dtype``)::

    conv3d   conv3d(1→8, k3, p1) relu conv3d(8→16, k3, s2, p1) relu flatten
             dense(16·8·8·8 → 10) softmax + log-likelihood, on 1×16×16×16 volumes, batch 8

One training step = forward, backward, plain-SGD update on ONE fixed mini-batch of random
data drawn identically (``numpy.random.default_rng(0)``) in both libraries; each library
initialises its own parameters. manual_bp steps through ``FusedTrainer.step`` (Conv3d trains
through ``convolution_fast.ConvStep``, the N-d fast form of Conv1d/2d/3d: preallocated
im2col panels, the strided layer's ∂C/∂x by the stride-phase col2im), torch through
``zero_grad``, ``backward``, ``SGD.step``.

Method (as ``bench_families.py``): every measurement runs in its OWN child process (this
tree's manual_bp on ``PYTHONPATH``; ``OMP/OPENBLAS/MKL_NUM_THREADS`` and
``torch.set_num_threads`` set to the thread count). A worker warms up, times ``--steps``
steps one by one and reports their median. The two libraries are interleaved within each
repetition, so background load hits both alike; the table shows the median over
repetitions and the ratio manual_bp / torch of those medians, all from one run.

Usage::

    python benchmarks/bench_conv3d.py --threads 1,2 --repeats 3
    python benchmarks/bench_conv3d.py --quick
    python benchmarks/bench_conv3d.py --threads 1,2 --before ../base   # + an older tree
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

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BATCH, SIZE, CLASSES, LR = 8, 16, 10, 0.01


def make_data(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, SIZE, SIZE, SIZE)).astype(dtype)
    return x, rng.integers(0, CLASSES, size=BATCH)


def manual_bp_step(dtype: str, x: np.ndarray, y: np.ndarray):
    from manual_bp.models.sequential import Sequential
    from manual_bp.optimizers import SGD
    from manual_bp.training.fused import FusedTrainer

    spec = [("conv3d", (8, 3), {"padding": 1}), "relu",
            ("conv3d", (16, 3), {"stride": 2, "padding": 1}), "relu", "flatten",
            "dense", "softmax"]  # fmt: skip
    model = Sequential.from_spec(
        spec, (1, SIZE, SIZE, SIZE), CLASSES, cost="log-likelihood", seed=0, dtype=dtype
    )
    x = model.prepare_inputs(x)
    y = model.prepare_targets(y, x.shape[0])
    trainer = FusedTrainer(model, SGD(lr=LR))
    return lambda: trainer.step(x, y)


def torch_step(dtype: str, x: np.ndarray, y: np.ndarray, threads: int):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    half = SIZE // 2
    model = nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * half**3, CLASSES),
    ).to(getattr(torch, dtype))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        optimizer.step()

    return step


def median_step_seconds(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args) -> None:
    x, y = make_data(args.worker_dtype)
    if args.worker == "manual_bp":
        step = manual_bp_step(args.worker_dtype, x, y)
    else:
        step = torch_step(args.worker_dtype, x, y, int(args.threads))
    with np.errstate(over="ignore", under="ignore"):
        seconds = median_step_seconds(step, args.warmup, args.steps)
    print(json.dumps({"seconds": seconds}))


def measure(kind: str, dtype: str, threads: int, args) -> float:
    """One worker's median step; ``kind`` ``"before"`` is manual_bp from ``--before``'s tree."""
    root = Path(args.before).resolve() if kind == "before" else ROOT
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    env.pop("MANUAL_BP_NUM_THREADS", None)
    worker_kind = "manual_bp" if kind == "before" else kind
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker_kind,
           "--worker-dtype", dtype, "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=str(root), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--dtype", default="float32", help="comma-separated dtypes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 5 steps, 1 thread")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--before", help="a tree (e.g. a git worktree) timed too, interleaved")
    parser.add_argument("--worker", choices=("manual_bp", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.repeats, args.steps, args.warmup, args.threads = 1, 5, 1, "1"
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"{'workload':10} {'dtype':8} {'threads':>7} {'manual_bp ms':>13} {'before ms':>10} "
          f"{'torch ms':>9} {'ratio':>6}")  # fmt: skip
    rows = []
    for dtype in args.dtype.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            kinds = ("manual_bp", "before", "torch") if args.before else ("manual_bp", "torch")
            runs: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.repeats):  # interleaved: background load hits all alike
                for kind in runs:
                    runs[kind].append(measure(kind, dtype, threads, args))
            ms = {kind: statistics.median(times) * 1e3 for kind, times in runs.items()}
            ours, theirs, before = ms["manual_bp"], ms["torch"], ms.get("before")
            row = {"workload": "conv3d", "dtype": dtype, "threads": threads,
                   "manual_bp_ms": ours, "before_ms": before, "torch_ms": theirs,
                   "ratio": ours / theirs}  # fmt: skip
            rows.append(row)
            shown = "-" if before is None else f"{before:.2f}"
            print(f"{'conv3d':10} {dtype:8} {threads:>7} {ours:>13.2f} {shown:>10} "
                  f"{theirs:>9.2f} {ours / theirs:>6.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
