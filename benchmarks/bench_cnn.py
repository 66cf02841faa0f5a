"""Seconds per epoch of a LeNet-5-style CNN on MNIST: manual_bp (fast, readable) vs torch CPU.

Model (both libraries)::

    reshape(1, 28, 28) → conv2d(6, 5, padding=2) → relu → maxpool2d(2) → conv2d(16, 5) → relu
    → maxpool2d(2) → flatten → dense(120) → relu → dense(84) → relu → dense(10) → softmax,
    log-likelihood cost, plain SGD (η = 0.05), mini-batch 64, one epoch of 50 000 images.

Every measurement runs in its own child process with ``OMP/OPENBLAS/MKL_NUM_THREADS``
(and ``torch.set_num_threads``) set to the thread count; libraries are interleaved within
each repeat and medians are reported with ratios to torch. The readable form (loops over
kernel offsets, ``implementation="readable"``) is timed on a subset of batches and
EXTRAPOLATED to the epoch (labelled so). Per-layer rows time one forward + backward of a
single conv layer (fast form) and print GFLOP/s (3 GEMM-equivalents: forward, ∂W, ∂x)
next to the machine's measured GEMM rate. The 1-minute load average is printed with every
table: the CPU may be shared.

Usage::

    python benchmarks/bench_cnn.py                       # float32+float64, 1 and 2 threads
    python benchmarks/bench_cnn.py --quick               # 5 000 images, 1 repeat, 1 thread
    python benchmarks/bench_cnn.py --mnist /path/to/mnist --dtypes float32 --threads 1
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
BATCH, ETA = 64, 0.05
SPEC = [
    ("reshape", ((1, 28, 28),), {}),
    ("conv2d", (6, 5), {"padding": 2}),
    "relu",
    ("maxpool2d", (2,), {}),
    ("conv2d", (16, 5), {}),
    "relu",
    ("maxpool2d", (2,), {}),
    "flatten",
    ("dense", (120,), {}),
    "relu",
    ("dense", (84,), {}),
    "relu",
    ("dense", (10,), {}),
    "softmax",
]
#: (batch, C_in, H, W, C_out, kernel, stride, padding) for the per-layer rows
GEOMETRIES = [
    (64, 1, 28, 28, 6, 5, 1, 2),
    (64, 6, 14, 14, 16, 5, 1, 0),
    (32, 32, 16, 16, 64, 3, 1, 1),
    (32, 64, 16, 16, 128, 3, 2, 1),
]


def load_data(mnist: str, n: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    sys.path.insert(0, str(ROOT))
    from manual_bp.data import load_mnist

    data = load_mnist(mnist, dtype=dtype)
    return data.x_train[:n], data.y_train[:n]


def lenet(dtype: str, implementation: str = "fast"):
    sys.path.insert(0, str(ROOT))
    from manual_bp.models.sequential import Sequential

    spec = []
    for item in SPEC:
        if isinstance(item, tuple) and item[0] in ("conv2d", "maxpool2d"):
            item = (item[0], item[1], {**item[2], "implementation": implementation})
        spec.append(item)
    return Sequential.from_spec(spec, (784,), 10, cost="log-likelihood", seed=0, dtype=dtype)


# ---------------------------------------------------------------------- workers
def run_manual_bp(x, y, dtype: str, implementation: str, batches: int | None) -> dict:
    from manual_bp.training import train

    model = lenet(dtype, implementation)
    train(model, x[: 4 * BATCH], y[: 4 * BATCH], epochs=1, batch_size=BATCH, eta=ETA, monitor=())
    n = x.shape[0] if batches is None else min(x.shape[0], batches * BATCH)
    history = train(model, x[:n], y[:n], epochs=1, batch_size=BATCH, eta=ETA, monitor=(), seed=0)
    seconds = history.epoch_seconds[0] * x.shape[0] / n  # extrapolated when n < epoch
    return {"seconds": seconds, "timed_samples": n}


def run_torch(x, y, dtype: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    nn = torch.nn
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    ).to(dt)
    optimizer = torch.optim.SGD(model.parameters(), lr=ETA)
    xt, labels = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def epoch(n: int) -> None:
        order = torch.randperm(n)
        for i in range(0, n, BATCH):
            idx = order[i : i + BATCH]
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xt[idx]), labels[idx]).backward()
            optimizer.step()

    epoch(4 * BATCH)
    start = time.perf_counter()
    epoch(x.shape[0])
    return {"seconds": time.perf_counter() - start, "timed_samples": x.shape[0]}


def run_layers(dtype: str) -> dict:
    """Per conv geometry: median forward+backward seconds, GFLOP/s; and the GEMM rate."""
    sys.path.insert(0, str(ROOT))
    from manual_bp.layers.convolution import Conv2d

    rng = np.random.default_rng(0)
    a, b = (rng.random((512, 512)).astype(dtype) for _ in range(2))
    gemm = _median_seconds(lambda: a @ b, 20)
    rows = {"gemm_gflops": 2 * 512**3 / gemm / 1e9}
    for geometry in GEOMETRIES:
        n, c, h, w, c_out, k, s, p = geometry
        layer = Conv2d(c, c_out, k, s, p, dtype=dtype, seed=0)
        x = rng.random((n, c, h, w)).astype(dtype)
        out, _ = layer.forward(x)
        dout = rng.standard_normal(out.shape).astype(dtype)

        def step(layer=layer, x=x, dout=dout) -> None:
            layer.backward(dout, layer.forward(x)[1])

        seconds = _median_seconds(step, 10)
        flops = 3 * 2 * out.size * c * k * k  # forward, ∂W and ∂x: one GEMM each
        rows[str(geometry)] = {"ms": seconds * 1e3, "gflops": flops / seconds / 1e9}
    return rows


def _median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args) -> None:
    if args.worker == "layers":
        result = run_layers(args.dtype)
    else:
        x, y = load_data(args.mnist, args.samples, args.dtype)
        if args.worker == "torch":
            result = run_torch(x, y, args.dtype, args.threads)
        else:
            impl = args.worker.split("-", 1)[1]
            batches = args.readable_batches if impl == "readable" else None
            result = run_manual_bp(x, y, args.dtype, impl, batches)
    print(json.dumps(result))


# ---------------------------------------------------------------------- parent
def measure(lib: str, dtype: str, threads: int, args) -> dict:
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    cmd = [sys.executable, __file__, "--worker", lib, "--dtype", dtype, "--threads",
           str(threads), "--samples", str(args.samples), "--mnist", str(args.mnist),
           "--readable-batches", str(args.readable_batches)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from manual_bp.data import default_mnist_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", default=str(default_mnist_dir()))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--readable-batches", type=int, default=20)
    parser.add_argument("--no-layers", action="store_true")
    parser.add_argument("--quick", action="store_true", help="5 000 images, 1 repeat, 1 thread")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return
    if args.quick:
        args.samples, args.repeats, args.threads = 5_000, 1, "1"
    libs = ("manual_bp-fast", "torch", "manual_bp-readable")
    print(f"LeNet-5 CNN, one epoch of {args.samples} MNIST images, batch {BATCH}, SGD η={ETA}; "
          f"{args.repeats} repeats (medians); cpus: {os.cpu_count()}")  # fmt: skip
    for threads in (int(t) for t in args.threads.split(",")):
        for dtype in args.dtypes.split(","):
            runs: dict[str, list[float]] = {lib: [] for lib in libs}
            for _ in range(args.repeats):
                for lib in libs:  # interleaved: background load hits every library alike
                    runs[lib].append(measure(lib, dtype, threads, args)["seconds"])
            torch_s = statistics.median(runs["torch"])
            print(f"\n{dtype}, {threads} thread(s) — {load()}")
            print(f"  {'library':52s} {'s/epoch':>9s} {'× torch':>8s}")
            for lib in libs:
                median = statistics.median(runs[lib])
                label = lib
                if lib.endswith("readable"):
                    label += f" (extrapolated from {args.readable_batches} batches)"
                print(f"  {label:52s} {median:9.2f} {median / torch_s:8.2f}")
    if not args.no_layers:
        for dtype in args.dtypes.split(","):
            rows = measure("layers", dtype, 1, args)
            print(f"\nConv2d forward+backward, {dtype}, 1 thread — {load()}")
            print(f"  machine GEMM (512³): {rows.pop('gemm_gflops'):.1f} GFLOP/s")
            print(f"  {'(N, C_in, H, W, C_out, k, s, p)':34s} {'ms':>8s} {'GFLOP/s':>8s}")
            for geometry, row in rows.items():
                print(f"  {geometry:34s} {row['ms']:8.2f} {row['gflops']:8.1f}")


if __name__ == "__main__":
    main()
