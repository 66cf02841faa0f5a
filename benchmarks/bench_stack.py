"""An MLP with batch norm and dropout: manual_bp's Sequential against the same model in torch.

Model (both libraries, torch's default initialisation, Adam lr 1e-3, mini-batch 64)::

    Dense(n_in, 256) → BatchNorm1d → ReLU → Dropout(0.2) → Dense(256, 128) → BatchNorm1d
    → ReLU → Dropout(0.2) → Dense(128, 10) → softmax, log-likelihood cost

Each library trains in its OWN child process (same thread variables, same data from
:func:`manual_bp.data.load_mnist` / :func:`load_digits`, same shuffling order); the parent
prints per-epoch seconds (median over epochs), test accuracy in evaluation mode and the
time ratio from one run. Nothing is asserted.

Usage::

    python benchmarks/bench_stack.py                          # digits and MNIST, 5 epochs
    python benchmarks/bench_stack.py --data digits --epochs 30 --threads 2
    python benchmarks/bench_stack.py --mnist DIR              # default $MANUAL_BP_MNIST_DIR or
                                                              # ../shared/data/mnist
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
HIDDEN = (256, 128)
DROPOUT = 0.2
BATCH = 64
LR = 1e-3


def _data(name: str, mnist: Path, dtype: str):
    from manual_bp.data import load_digits, load_mnist

    return load_mnist(mnist, dtype=dtype) if name == "mnist" else load_digits(dtype=dtype)


def _orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def run_manual_bp(args) -> dict:
    from manual_bp import Adam, Dense, Sequential
    from manual_bp.layers import BatchNorm1d, Dropout

    data = _data(args.data, args.mnist, args.dtype)
    n_in = data.x_train.shape[1]
    layers = [Dense(n_in, HIDDEN[0]), BatchNorm1d(HIDDEN[0]), "relu", Dropout(DROPOUT)]
    layers += [Dense(HIDDEN[0], HIDDEN[1]), BatchNorm1d(HIDDEN[1]), "relu", Dropout(DROPOUT)]
    layers += [Dense(HIDDEN[1], data.n_classes), "softmax"]
    model = Sequential(layers, "log-likelihood", seed=args.seed, dtype=args.dtype)
    optimizer = Adam(lr=LR)
    x = model.prepare_inputs(data.x_train)
    y = model.prepare_targets(data.y_train, x.shape[0])
    params = model.parameter_arrays()
    seconds = []
    for order in _orders(len(x), args.epochs, args.seed):
        start = time.perf_counter()
        model.train()
        for i in range(0, len(order) - BATCH + 1, BATCH):  # whole batches, as torch's drop_last
            index = order[i : i + BATCH]
            _, grads = model.loss_and_gradients(x[index], y[index])
            optimizer.step(params, grads)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "accuracy": model.accuracy(data.x_test, data.y_test)}


def run_torch(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    data = _data(args.data, args.mnist, args.dtype)
    n_in = data.x_train.shape[1]
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(n_in, HIDDEN[0]),
        nn.BatchNorm1d(HIDDEN[0]),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.BatchNorm1d(HIDDEN[1]),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(HIDDEN[1], data.n_classes),
    ).to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    x = torch.tensor(data.x_train, dtype=dtype)
    labels = np.asarray(data.y_train)
    y = torch.tensor(labels if labels.ndim == 1 else labels.argmax(1), dtype=torch.long)
    seconds = []
    for order in _orders(len(x), args.epochs, args.seed):
        start = time.perf_counter()
        model.train()
        order_t = torch.from_numpy(order)
        for i in range(0, len(order) - BATCH + 1, BATCH):
            index = order_t[i : i + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.tensor(data.x_test, dtype=dtype)).argmax(1).numpy()
    test = np.asarray(data.y_test)
    test = test if test.ndim == 1 else test.argmax(1)
    return {"seconds": seconds, "accuracy": float(np.mean(predicted == test))}


def _child(library: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(args.threads)
    command = [
        sys.executable,
        __file__,
        "--child",
        library,
        "--data",
        args.data,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--dtype",
        args.dtype,
        "--mnist",
        str(args.mnist),
        "--threads",
        str(args.threads),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{library} child failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    from manual_bp.data import default_mnist_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("digits", "mnist", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mnist", type=Path, default=default_mnist_dir(), metavar="DIR")
    parser.add_argument("--child", choices=("manual_bp", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch_threads = args.threads
        if args.child == "torch":
            import torch

            torch.set_num_threads(torch_threads)
        result = run_manual_bp(args) if args.child == "manual_bp" else run_torch(args)
        print(json.dumps(result))
        return 0
    datasets = ["digits", "mnist"] if args.data == "both" else [args.data]
    if "mnist" in datasets and not args.mnist.is_dir():
        print(f"MNIST directory {args.mnist} not found; running digits only", file=sys.stderr)
        datasets = [d for d in datasets if d != "mnist"]
    print(
        f"MLP {HIDDEN} + BatchNorm1d + Dropout({DROPOUT}), Adam lr {LR}, batch {BATCH}, "
        f"{args.dtype}, {args.threads} thread(s), {args.epochs} epochs, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"{'data':<8}{'library':<11}{'s/epoch':>9}{'test acc':>10}{'ratio':>8}")
    for name in datasets:
        args.data = name
        results = {library: _child(library, args) for library in ("manual_bp", "torch")}
        reference = statistics.median(results["torch"]["seconds"])
        for library, result in results.items():
            median = statistics.median(result["seconds"])
            print(
                f"{name:<8}{library:<11}{median:>9.3f}{result['accuracy']:>10.2%}"
                f"{median / reference:>7.2f}×"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
