"""A two-layer Transformer-encoder epoch: manual_bp (NumPy, fused steps) against torch CPU.

``TransformerEncoder(TransformerEncoderLayer(E, heads, F, dropout=0), 2) → Linear`` on
random sequences ``(N, T, E)`` with a quadratic cost, plain SGD, identical mini-batch
size; each library runs in its own process (one BLAS/torch thread), the repetitions are
interleaved (manual, torch, manual, torch, …) so load drifts hit both alike, and the table
gives each one's median epoch time and their ratio, from one run.

    python benchmarks/bench_transformer.py --reps 5
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's manual_bp

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _data(args):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.t, args.e)).astype(args.dtype)
    y = rng.standard_normal((args.n, args.t, args.e)).astype(args.dtype)
    return x, y


def worker_manual(args) -> float:
    from manual_bp.models.sequential import Sequential
    from manual_bp.training import train

    layer = (
        "transformer_encoder_layer",
        (args.heads,),
        {"dim_feedforward": args.f, "dropout": 0.0},
    )
    spec = [("transformer_encoder", (layer, 2), {}), ("dense", (args.e,), {})]
    model = Sequential.from_spec(spec, input_shape=(args.t, args.e), n_outputs=args.e,
                                 cost="quadratic", seed=0, dtype=args.dtype)  # fmt: skip
    x, y = _data(args)
    kwargs = dict(epochs=1, batch_size=args.batch, eta=0.01, monitor=(), seed=0, fast=True)
    train(model, x[: args.batch * 2], y[: args.batch * 2], **kwargs)  # warm-up: buffers
    start = time.perf_counter()
    train(model, x, y, **kwargs)
    return time.perf_counter() - start


def worker_torch(args) -> float:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    layer = torch.nn.TransformerEncoderLayer(args.e, args.heads, args.f, 0.0, batch_first=True)
    model = torch.nn.Sequential(
        torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
        torch.nn.Linear(args.e, args.e),
    ).to(dtype)
    x, y = (torch.from_numpy(a) for a in _data(args))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def epoch(n: int) -> None:
        order = torch.randperm(n)
        for i in range(0, n, args.batch):
            index = order[i : i + args.batch]
            opt.zero_grad()
            loss = 0.5 * ((model(x[index]) - y[index]) ** 2).sum(dim=(1, 2)).mean()
            loss.backward()
            opt.step()

    epoch(args.batch * 2)
    start = time.perf_counter()
    epoch(args.n)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--t", type=int, default=32)
    parser.add_argument("--e", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--f", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--worker", choices=["manual", "torch"])
    args = parser.parse_args()
    if args.worker:
        seconds = (worker_manual if args.worker == "manual" else worker_torch)(args)
        print(json.dumps({"seconds": seconds}))
        return
    times: dict[str, list[float]] = {"manual": [], "torch": []}
    forwarded = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("reps", "worker")]
    for _ in range(args.reps):
        for name in times:  # interleaved: each library in its own process
            command = [sys.executable, __file__, "--worker", name, *forwarded]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            times[name].append(json.loads(out.strip().splitlines()[-1])["seconds"])
    manual, torch_ = (statistics.median(times[k]) for k in ("manual", "torch"))
    print(f"Transformer encoder (2 layers, E {args.e}, {args.heads} heads, FF {args.f}), "
          f"T {args.t}, N {args.n}, batch {args.batch}, {args.dtype}, 1 thread, "
          f"{args.reps} interleaved repetitions")  # fmt: skip
    print("| library | median epoch (s) | all (s) |")
    print("| --- | --- | --- |")
    for name, median in (("manual_bp", manual), ("torch", torch_)):
        runs = ", ".join(f"{t:.3f}" for t in times["manual" if name == "manual_bp" else "torch"])
        print(f"| {name} | {median:.3f} | {runs} |")
    print(f"ratio manual_bp / torch: **{manual / torch_:.2f}**")


if __name__ == "__main__":
    main()
