"""Before/after one change, in one run: the same training workloads under two source trees.

Each workload of ``docs/performance.md``'s benchmarks (Nielsen's MLP, the 512-wide MLP,
LeNet-5, the batch-norm + dropout MLP, an embedding + LSTM sequence model) is one epoch of
``manual_bp.train`` on fixed random data. Every measurement runs in its own process with
``PYTHONPATH`` and the working directory set to one source tree (``--before``, e.g. a
``git worktree`` of the previous commit, or this checkout), one BLAS thread unless
``--threads`` says otherwise; repetitions alternate the two trees (before, after, after,
before, …) so that drifts of a shared machine hit both equally. Prints the median seconds per
epoch of each tree and the ratio after/before (< 1: faster).

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py --before /tmp/before --repeats 5
    python benchmarks/before_after.py --before /tmp/before --threads 2

Only the public API both releases share is used (``Network``, ``Sequential.from_spec``,
``train``), so the script runs unchanged against either tree.
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

#: name -> (model builder, samples, batch size, η, dtype, input shape, classes or seq length)
WORKLOADS = {
    "nielsen-784-30-10-sigmoid-b10-f64": dict(kind="network", sizes=[784, 30, 10],
        act="sigmoid", cost="quadratic", n=20_000, batch=10, eta=3.0, dtype="float64"),
    "nielsen-784-30-10-sigmoid-b100-f32": dict(kind="network", sizes=[784, 30, 10],
        act="sigmoid", cost="quadratic", n=20_000, batch=100, eta=3.0, dtype="float32"),
    "mlp-784-512-512-10-relu-b128-f32": dict(kind="spec", spec=["dense(512)", "relu",
        "dense(512)", "relu", "dense", "softmax"], shape=(784,), n=10_000, batch=128,
        eta=0.1, dtype="float32"),
    "lenet5-b64-f32": dict(kind="spec", spec=["reshape(1, 28, 28)", "conv2d(6, 5, padding=2)",
        "relu", "maxpool2d(2)", "conv2d(16, 5)", "relu", "maxpool2d(2)", "flatten",
        "dense(120)", "relu", "dense(84)", "relu", "dense", "softmax"], shape=(784,),
        n=2_000, batch=64, eta=0.05, dtype="float32"),
    "bn-dropout-mlp-b64-f32": dict(kind="spec", spec=["dense(256)", "batchnorm1d", "relu",
        "dropout(0.2)", "dense(128)", "batchnorm1d", "relu", "dropout(0.2)", "dense",
        "softmax"], shape=(784,), n=10_000, batch=64, eta=0.05, dtype="float32"),
    "embedding-lstm-b32-f64": dict(kind="spec", spec=["embedding(16, 16)", "lstm(32)",
        "dense", "softmax"], shape=(12,), n=2_000, batch=32, eta=0.05, dtype="float64",
        sequence=True),
}  # fmt: skip


def _model(w: dict):
    from manual_bp import Network
    from manual_bp.model_spec import parse_layers

    if w["kind"] == "network":
        return Network(w["sizes"], w["act"], w["cost"], seed=0, dtype=w["dtype"])
    try:
        from manual_bp.models import Sequential
    except ImportError:  # the release before manual_bp.models
        from manual_bp.sequential import Sequential
    n_out = 16 if w.get("sequence") else 10
    return Sequential.from_spec(
        parse_layers(", ".join(w["spec"])),
        w["shape"],
        n_out,
        cost="log-likelihood",
        seed=0,
        dtype=w["dtype"],
    )


def _data(w: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if w.get("sequence"):
        x = rng.integers(0, 16, (w["n"], *w["shape"]))
        return x, x[:, ::-1].copy()  # reverse the sequence: labels per position
    n_in = w["sizes"][0] if w["kind"] == "network" else w["shape"][0]
    return rng.random((w["n"], n_in)).astype(w["dtype"]), rng.integers(0, 10, w["n"])


def worker(name: str) -> float:
    """Seconds of one training epoch of workload ``name`` (after a warm-up epoch)."""
    from manual_bp import train

    w = WORKLOADS[name]
    model, (x, y) = _model(w), _data(w)
    kwargs = dict(batch_size=w["batch"], eta=w["eta"], monitor=(), seed=0)
    train(model, x[: 4 * w["batch"]], y[: 4 * w["batch"]], epochs=1, **kwargs)
    start = time.perf_counter()
    train(model, x, y, epochs=1, **kwargs)
    return time.perf_counter() - start


def run(tree: Path, name: str, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), **{v: str(threads) for v in THREAD_VARS})
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", name],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="source tree of the previous release")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree (default: here)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker))
        return 0
    if args.before is None or not (args.before / "manual_bp").is_dir():
        parser.error("--before must be a source tree holding manual_bp/")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    times: dict[str, dict[str, list[float]]] = {}
    names = args.workloads.split(",")
    for name in names:
        times[name] = {"before": [], "after": []}
        for r in range(args.repeats):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for label in order:
                times[name][label].append(run(trees[label], name, args.threads))
            print(f"  {name}: repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"threads={args.threads}, repeats={args.repeats}, medians of one epoch")
    print(f"{'workload':<40}{'before s':>10}{'after s':>10}{'after/before':>14}")
    for name in names:
        before = statistics.median(times[name]["before"])
        after = statistics.median(times[name]["after"])
        print(f"{name:<40}{before:>10.3f}{after:>10.3f}{after / before:>14.3f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "times": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
