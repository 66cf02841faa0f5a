"""Seconds per training epoch: manual_bp (fast and readable), torch, scikit-learn, Nielsen's loop.

Every measurement runs in its OWN child process (on few cores OpenBLAS's and
torch's OpenMP thread pools starve each other inside one process), with the
same thread variables for every library; the parent interleaves libraries
within each repeat (so load from other processes hits them alike) and prints
medians, ratios and each child's peak memory. Nothing here is asserted.

Work per measurement: one epoch over the 50 000 MNIST training images
(``$MANUAL_BP_MNIST_DIR`` or ``../shared/data/mnist``, via :func:`manual_bp.data.load_mnist`,
or synthetic data of MNIST shape with ``--synthetic``), after a short untimed warm-up.

Scenarios (``docs/performance.md``)::

    small    [784, 30, 10] sigmoid, quadratic cost, mini-batch 10, float64, η = 3
    small32  [784, 30, 10] sigmoid, quadratic cost, mini-batch 100, float32, η = 3
    large    [784, 512, 512, 10] ReLU, softmax cross-entropy from logits,
             mini-batch 128, float32, η = 0.1

Usage::

    python benchmarks/bench_training.py                      # everything, 3 repeats
    python benchmarks/bench_training.py --scenarios small --repeats 5 --threads 1
    python benchmarks/bench_training.py --quick              # 5 000 samples, 1 repeat

Memory: ``peak MB`` is ``ru_maxrss`` of the child (whole life: interpreter,
library, data); ``train MB`` is the training's own footprint: the peak RSS from
building the model to the end of the timed epoch (``VmHWM`` after resetting it
with ``/proc/self/clear_refs``) minus the RSS just before the model was built
(data loaded, library imported).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from manual_bp.data import default_mnist_dir
from manual_bp.training import train

ROOT = Path(__file__).resolve().parents[1]
MNIST = default_mnist_dir()

SCENARIOS = {
    "small": dict(sizes=[784, 30, 10], act="sigmoid", loss="quadratic", batch=10,
                  dtype="float64", eta=3.0),
    "small32": dict(sizes=[784, 30, 10], act="sigmoid", loss="quadratic", batch=100,
                    dtype="float32", eta=3.0),
    "large": dict(sizes=[784, 512, 512, 10], act="relu", loss="softmax-ce", batch=128,
                  dtype="float32", eta=0.1),
}  # fmt: skip
LIBRARIES = ("manual_bp-fast", "manual_bp-readable", "torch", "sklearn", "nielsen-loop")
#: Nielsen's per-sample loop only where it finishes in seconds.
LOOP_SCENARIOS = ("small", "small32")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------- data
def load_data(n: int, dtype: str, synthetic: bool) -> tuple[np.ndarray, np.ndarray]:
    if synthetic or not MNIST.exists():
        rng = np.random.default_rng(0)
        return rng.random((n, 784)).astype(dtype), rng.integers(0, 10, n)
    sys.path.insert(0, str(ROOT))
    from manual_bp.data import load_mnist

    data = load_mnist(MNIST, dtype=dtype)
    return data.x_train[:n], data.y_train[:n]


def max_rss_mb() -> float:
    """``ru_maxrss``: the child's peak resident memory over its whole life (data included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mark() -> float:
    """Reset the peak-RSS counter (Linux ``clear_refs`` 5) and return the current RSS.

    The training's own footprint is then ``VmHWM`` after training minus this
    value: loading and converting MNIST has a larger transient peak than training
    a small network, which would otherwise hide it in ``ru_maxrss``.
    """
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


# ---------------------------------------------------------------------- workers
def run_manual_bp(s, x, y, fast: bool) -> tuple[float, float]:
    sys.path.insert(0, str(ROOT))
    from manual_bp import Network

    rss = mark()
    if s["loss"] == "quadratic":
        net = Network(s["sizes"], s["act"], "quadratic", seed=0, dtype=s["dtype"])
    else:
        net = Network(s["sizes"], s["act"], "categorical-cross-entropy",
                      output_activation="identity", seed=0, dtype=s["dtype"])  # fmt: skip
    kwargs = dict(batch_size=s["batch"], eta=s["eta"], monitor=(), fast=fast)
    warm = net.copy()
    train(warm, x[:1000], y[:1000], epochs=1, **kwargs)
    seconds = train(net, x, y, epochs=1, seed=0, **kwargs).epoch_seconds[0]
    return seconds, rss


def run_torch(s, x, y, threads: int) -> tuple[float, float]:
    import torch

    torch.set_num_threads(threads)
    rss = mark()
    torch.manual_seed(0)
    dtype = getattr(torch, s["dtype"])
    layers = []
    for n_in, n_out in zip(s["sizes"][:-1], s["sizes"][1:], strict=True):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
        layers.append(torch.nn.Sigmoid() if s["act"] == "sigmoid" else torch.nn.ReLU())
    if s["loss"] != "quadratic":
        layers.pop()  # logits
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=s["eta"])
    xt = torch.from_numpy(x)
    labels = torch.from_numpy(y.astype(np.int64))
    onehot = torch.nn.functional.one_hot(labels, 10).to(dtype)

    def loss_fn(out, idx):
        if s["loss"] == "quadratic":  # Nielsen: mean over samples of ½‖a − y‖²
            return 0.5 * ((out - onehot[idx]) ** 2).sum(dim=1).mean()
        return torch.nn.functional.cross_entropy(out, labels[idx])

    def epoch(n: int) -> None:
        order = torch.randperm(n)
        for i in range(0, n, s["batch"]):
            idx = order[i : i + s["batch"]]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), idx).backward()
            optimizer.step()

    epoch(1000)
    start = time.perf_counter()
    epoch(x.shape[0])
    return time.perf_counter() - start, rss


def run_sklearn(s, x, y) -> tuple[float, float]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    warnings.simplefilter("ignore", ConvergenceWarning)
    rss = mark()

    def model():  # sklearn's output is always softmax/log-loss; hidden layers as ours
        return MLPClassifier(
            hidden_layer_sizes=tuple(s["sizes"][1:-1]),
            activation="logistic" if s["act"] == "sigmoid" else "relu",
            solver="sgd", batch_size=s["batch"], learning_rate_init=s["eta"] / 10,
            momentum=0.0, nesterovs_momentum=False, alpha=0.0, max_iter=1,
            shuffle=True, random_state=0, tol=0.0,
        )  # fmt: skip

    model().fit(x[:1000], y[:1000])
    start = time.perf_counter()
    model().fit(x, y)
    return time.perf_counter() - start, rss


def run_nielsen_loop(s, x, y) -> tuple[float, float]:
    """Nielsen's network.py ``update_mini_batch``: one backprop per sample, column vectors."""
    rss = mark()
    rng = np.random.default_rng(0)
    dtype = s["dtype"]
    sizes = s["sizes"]
    weights = [(rng.standard_normal((m, n)) / np.sqrt(n)).astype(dtype)
               for n, m in itertools.pairwise(sizes)]  # fmt: skip
    biases = [rng.standard_normal((m, 1)).astype(dtype) for m in sizes[1:]]
    targets = np.eye(10, dtype=dtype)[y][:, :, None]
    xs = x[:, :, None]

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    def backprop(xi, yi):
        activation, activations, zs = xi, [xi], []
        for b, w in zip(biases, weights, strict=True):
            z = w @ activation + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - yi) * activations[-1] * (1 - activations[-1])
        nabla_b, nabla_w = [None] * len(biases), [None] * len(weights)
        nabla_b[-1], nabla_w[-1] = delta, delta @ activations[-2].T
        for l in range(2, len(sizes)):
            a = activations[-l]
            delta = (weights[-l + 1].T @ delta) * a * (1 - a)
            nabla_b[-l], nabla_w[-l] = delta, delta @ activations[-l - 1].T
        return nabla_b, nabla_w

    def epoch(n: int) -> None:
        order = rng.permutation(n)
        for i in range(0, n, s["batch"]):
            batch = order[i : i + s["batch"]]
            nb = [np.zeros_like(b) for b in biases]
            nw = [np.zeros_like(w) for w in weights]
            for j in batch:
                db, dw = backprop(xs[j], targets[j])
                nb = [u + v for u, v in zip(nb, db, strict=True)]
                nw = [u + v for u, v in zip(nw, dw, strict=True)]
            scale = s["eta"] / len(batch)
            for k in range(len(weights)):
                weights[k] -= scale * nw[k]
                biases[k] -= scale * nb[k]

    with np.errstate(over="ignore"):
        epoch(1000)
        start = time.perf_counter()
        epoch(x.shape[0])
    return time.perf_counter() - start, rss


def worker(args) -> None:
    s = SCENARIOS[args.worker_scenario]
    x, y = load_data(args.samples, s["dtype"], args.synthetic)
    lib = args.worker
    if lib.startswith("manual_bp"):
        seconds, rss = run_manual_bp(s, x, y, fast=lib.endswith("fast"))
    elif lib == "torch":
        seconds, rss = run_torch(s, x, y, args.threads)
    elif lib == "sklearn":
        seconds, rss = run_sklearn(s, x, y)
    else:
        seconds, rss = run_nielsen_loop(s, x, y)
    print(json.dumps({"seconds": seconds, "peak_mb": max_rss_mb(),
                      "train_mb": _status_mb("VmHWM") - rss}))  # fmt: skip


# ---------------------------------------------------------------------- parent
def measure(lib: str, scenario: str, args) -> dict:
    env = dict(os.environ, **{v: str(args.threads) for v in THREAD_VARS})
    cmd = [sys.executable, __file__, "--worker", lib, "--worker-scenario", scenario,
           "--samples", str(args.samples), "--threads", str(args.threads)]  # fmt: skip
    if args.synthetic:
        cmd.append("--synthetic")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--quick", action="store_true", help="5 000 samples, 1 repeat")
    parser.add_argument("--json", help="also write all measurements here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.samples, args.repeats = 5_000, 1
    libs = args.libraries.split(",")
    print(f"{args.samples} samples/epoch, {args.repeats} repeats, "
          + ", ".join(f"{v}={args.threads}" for v in THREAD_VARS)
          + f", torch.set_num_threads({args.threads}); cpus: {os.cpu_count()}")  # fmt: skip
    results: dict = {}
    for scenario in args.scenarios.split(","):
        todo = [lib for lib in libs if lib != "nielsen-loop" or scenario in LOOP_SCENARIOS]
        runs: dict[str, list[dict]] = {lib: [] for lib in todo}
        for _ in range(args.repeats):
            for lib in todo:  # interleaved: background load hits every library alike
                runs[lib].append(measure(lib, scenario, args))
        results[scenario] = runs
        report(scenario, runs, args.samples)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(scenario: str, runs: dict, samples: int) -> None:
    scale = 50_000 / samples
    print(f"\n## {scenario}: {SCENARIOS[scenario]}")
    print(f"{'library':<20}{'s/epoch':>9}{'min':>8}{'max':>8}{'fast ×':>9}"
          f"{'peak MB':>9}{'train MB':>9}")  # fmt: skip
    medians = {lib: statistics.median(r["seconds"] for r in rs) * scale for lib, rs in runs.items()}
    ours = medians.get("manual_bp-fast")
    for lib, rs in runs.items():
        times = [r["seconds"] * scale for r in rs]
        ratio = f"{medians[lib] / ours:8.2f}×" if ours else "      -"
        peak = statistics.median(r["peak_mb"] for r in rs)
        train = statistics.median(r["train_mb"] for r in rs)
        print(f"{lib:<20}{medians[lib]:9.3f}{min(times):8.3f}{max(times):8.3f}{ratio:>9}"
              f"{peak:9.0f}{train:9.1f}")  # fmt: skip
    print("(s/epoch scaled to 50 000 samples; 'fast ×': how many times slower than manual_bp-fast)")


if __name__ == "__main__":
    main()
