"""Milliseconds per training step of every layer family (issue 22): manual_bp against torch CPU.

Workloads (the table of issue 22; float32 unless the row says float64, ``--dtype`` switches
every row)::

    mlp-small    MLP [784, 30, 10] sigmoid, quadratic cost, batch 10, float64
    mlp-large    MLP [784, 512, 512, 10] relu, softmax + log-likelihood, batch 128
    lenet        LeNet-5 (conv 6@5×5 p2, relu, maxpool 2, conv 16@5×5, relu, maxpool 2,
                 dense 120, relu, dense 84, relu, dense 10, softmax + log-likelihood), batch 64
    cnn-bn       conv(3→32, k3, p1) BN2d relu conv(32→64, k3, s2) relu global-avg-pool
                 flatten dense(64→10) softmax + log-likelihood on 3×32×32, batch 64
    lstm         Embedding(1000, 64) → LSTM(64→128) → dense(128→1000) softmax +
                 log-likelihood at every position (next-token model), length 35, batch 32
    transformer  x + causal MHA(128, 4 heads)(x), LayerNorm, x + dense(512→128)(GELU(
                 dense(128→512)(x))), LayerNorm; quadratic cost against random targets of
                 the output's shape; length 64, batch 16

The last column is the NumPy memory manual_bp allocates within one steady step (its peak,
by ``tracemalloc``): the fast forms preallocate, so what remains are the temporaries.

One training step = forward, backward, plain-SGD update on ONE fixed mini-batch of random
data, drawn identically (``numpy.random.default_rng(0)``) in both libraries, same
architecture; each library initialises its own parameters. manual_bp steps through
``FusedTrainer.step`` (every layer's fast form), torch through ``zero_grad``, ``backward``,
``SGD.step``.

Method: every measurement runs in its OWN child process whose ``PYTHONPATH`` and working
directory are the repository root holding this script (so the worker imports this tree's
manual_bp), with ``OMP/OPENBLAS/MKL_NUM_THREADS`` (and ``torch.set_num_threads``) set to the
thread count. A worker warms up, times ``--steps`` steps one by one and reports their median
and its ``ru_maxrss``. Within each repetition the libraries (and a 512³ GEMM worker of the
same dtype and thread count) are interleaved, so background load hits all alike; the table
shows the median over repetitions.

GEMM fraction: the GEMM FLOPs a step needs (``2·m·k·n`` per product; for every product of
the model its forward, its weight gradient and — where a gradient must flow below it — its
input gradient; the bottom layer's input gradient is not needed and not counted; im2col
convolutions count as their GEMM ``(N·H_out·W_out) × (C_in·k²) × C_out``; the attention
products ``QKᵀ`` and ``PV`` count in full, the causal mask notwithstanding; elementwise work,
reductions and the embedding gather count nothing) divided by the step's time, as a fraction
of the 512³ GEMM rate measured by NumPy in the same run (same dtype, same threads).

Usage::

    python benchmarks/bench_families.py --threads 1 --repeats 3
    python benchmarks/bench_families.py --threads 1,2 --workloads lenet,lstm --json out.json
    python benchmarks/bench_families.py --threads 1,2 --dtype float32,float64  # every row in both
    python benchmarks/bench_families.py --threads 1,2 --before ../base  # + a git worktree
    python benchmarks/bench_families.py --quick            # 1 repeat, few steps, 1 thread
    python benchmarks/bench_families.py --openblas-coretype auto  # OpenBLAS picks its kernels

The header names the OpenBLAS kernel family NumPy runs (``threadpoolctl``'s "architecture"):
``OPENBLAS_CORETYPE`` in the environment pins it (workers inherit it; ``--openblas-coretype``
overrides it for every worker, ``auto`` removes it so OpenBLAS detects the CPU). It bounds
every GEMM-heavy row: on an AVX-512 machine pinned to ``Haswell`` (AVX2) kernels, NumPy's
512³ float32 GEMM runs at about half the rate of OpenBLAS's own choice (``SkylakeX``), while
torch's MKL/oneDNN detect AVX-512 whatever the variable says.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LIBRARIES = ("manual_bp", "torch")

WORKLOADS = {
    "mlp-small": dict(label="MLP [784,30,10] sigmoid, quadratic, batch 10", dtype="float64",
                      batch=10, lr=3.0),
    "mlp-large": dict(label="MLP [784,512,512,10] relu, softmax+LL, batch 128",
                      dtype="float32", batch=128, lr=0.1),
    "lenet": dict(label="LeNet-5, batch 64", dtype="float32", batch=64, lr=0.05),
    "cnn-bn": dict(label="conv BN2d relu conv(s2) relu GAP dense, 3×32×32, batch 64",
                   dtype="float32", batch=64, lr=0.05),
    "lstm": dict(label="Embedding(1000,64) → LSTM(64→128) → dense, T 35, batch 32",
                 dtype="float32", batch=32, lr=0.1),
    "transformer": dict(label="Transformer block (causal MHA 128/4, LN, GELU FFN 512), "
                              "T 64, batch 16", dtype="float32", batch=16, lr=0.01),
}  # fmt: skip
VOCAB, SEQ_LEN, EMBED, HIDDEN = 1000, 35, 64, 128
T_LEN, E, HEADS, FFN = 64, 128, 4, 512


# ---------------------------------------------------------------------- GEMM FLOPs
def _gemm(m: int, k: int, n: int, passes: int = 3) -> int:
    """``passes`` products of ``(m × k)·(k × n)``: forward, weight gradient, input gradient."""
    return passes * 2 * m * k * n


def gemm_flops(name: str, batch: int) -> int:
    """The GEMM FLOPs one training step needs (see the module docstring for the rule)."""
    if name in ("mlp-small", "mlp-large"):
        sizes = [784, 30, 10] if name == "mlp-small" else [784, 512, 512, 10]
        pairs = enumerate(itertools.pairwise(sizes))
        return sum(_gemm(batch, a, b, 2 if i == 0 else 3) for i, (a, b) in pairs)
    if name == "lenet":
        convs = _gemm(batch * 28 * 28, 1 * 25, 6, 2) + _gemm(batch * 10 * 10, 6 * 25, 16)
        return convs + _gemm(batch, 400, 120) + _gemm(batch, 120, 84) + _gemm(batch, 84, 10)
    if name == "cnn-bn":
        return (_gemm(batch * 32 * 32, 3 * 9, 32, 2) + _gemm(batch * 15 * 15, 32 * 9, 64)
                + _gemm(batch, 64, 10))  # fmt: skip
    if name == "lstm":
        rows = batch * SEQ_LEN  # the embedding below needs the LSTM's input gradient
        return (_gemm(rows, EMBED, 4 * HIDDEN) + _gemm(rows, HIDDEN, 4 * HIDDEN)
                + _gemm(rows, HIDDEN, VOCAB))  # fmt: skip
    if name == "transformer":
        rows = batch * T_LEN
        return (_gemm(rows, E, 3 * E, 2)  # q/k/v projection of the data: no input gradient
                + 2 * _gemm(batch * T_LEN, E, T_LEN)  # QKᵀ and PV over all heads
                + _gemm(rows, E, E) + _gemm(rows, E, FFN) + _gemm(rows, FFN, E))  # fmt: skip
    raise ValueError(name)


# ---------------------------------------------------------------------- data
def make_data(name: str, batch: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """One mini-batch of random data, identical in both workers."""
    rng = np.random.default_rng(0)
    if name.startswith("mlp"):
        return rng.random((batch, 784)).astype(dtype), rng.integers(0, 10, batch)
    if name == "lenet":
        return rng.random((batch, 784)).astype(dtype), rng.integers(0, 10, batch)
    if name == "cnn-bn":
        return rng.standard_normal((batch, 3, 32, 32)).astype(dtype), rng.integers(0, 10, batch)
    if name == "lstm":
        tokens = rng.integers(0, VOCAB, (batch, SEQ_LEN + 1))
        return tokens[:, :-1], tokens[:, 1:]  # next-token targets
    x = rng.standard_normal((batch, T_LEN, E)).astype(dtype)
    return x, rng.standard_normal((batch, T_LEN, E)).astype(dtype)


# ---------------------------------------------------------------------- manual_bp worker
def manual_bp_model(name: str, dtype: str):
    from manual_bp.models.sequential import Sequential

    ll = dict(cost="log-likelihood", seed=0, dtype=dtype)
    if name == "mlp-small":
        spec = [("dense", (30,), {}), "sigmoid", ("dense", (10,), {}), "sigmoid"]
        return Sequential.from_spec(spec, (784,), 10, cost="quadratic", seed=0, dtype=dtype)
    if name == "mlp-large":
        spec = [("dense", (512,), {}), "relu", ("dense", (512,), {}), "relu", "dense", "softmax"]
        return Sequential.from_spec(spec, (784,), 10, **ll)
    if name == "lenet":
        spec = [("reshape", ((1, 28, 28),), {}), ("conv2d", (6, 5), {"padding": 2}), "relu",
                ("maxpool2d", (2,), {}), ("conv2d", (16, 5), {}), "relu",
                ("maxpool2d", (2,), {}), "flatten", ("dense", (120,), {}), "relu",
                ("dense", (84,), {}), "relu", "dense", "softmax"]  # fmt: skip
        return Sequential.from_spec(spec, (784,), 10, **ll)
    if name == "cnn-bn":
        spec = [("conv2d", (32, 3), {"padding": 1}), "batchnorm2d", "relu",
                ("conv2d", (64, 3), {"stride": 2}), "relu", "global-avgpool2d", "flatten",
                "dense", "softmax"]  # fmt: skip
        return Sequential.from_spec(spec, (3, 32, 32), 10, **ll)
    if name == "lstm":
        spec = [("embedding", (VOCAB, EMBED), {}), ("lstm", (HIDDEN,), {}), "dense", "softmax"]
        return Sequential.from_spec(spec, (SEQ_LEN,), VOCAB, **ll)
    spec = [("residual", ([("multihead_attention", (HEADS,), {"causal": True})],), {}),
            "layernorm",
            ("residual", ([("dense", (FFN,), {}), "gelu", "dense"],), {}),
            "layernorm"]  # fmt: skip
    return Sequential.from_spec(spec, (T_LEN, E), E, cost="quadratic", seed=0, dtype=dtype)


def manual_bp_step(name: str, dtype: str, lr: float, x, y):
    from manual_bp.optimizers import SGD
    from manual_bp.training.fused import FusedTrainer

    model = manual_bp_model(name, dtype)
    x = model.prepare_inputs(x)
    y = model.prepare_targets(y, x.shape[0])
    trainer = FusedTrainer(model, SGD(lr=lr))
    return lambda: trainer.step(x, y)


# ---------------------------------------------------------------------- torch worker
def torch_step(name: str, dtype: str, lr: float, x, y, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn, F = torch.nn, torch.nn.functional
    if name == "mlp-small":
        model = nn.Sequential(nn.Linear(784, 30), nn.Sigmoid(), nn.Linear(30, 10), nn.Sigmoid())
    elif name == "mlp-large":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))  # fmt: skip
    elif name == "lenet":
        model = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip
    elif name == "cnn-bn":
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 10),
        )  # fmt: skip
    elif name == "lstm":
        model = _TorchLSTM(nn)
    else:
        model = _torch_transformer(nn)
    model = model.to(getattr(torch, dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if name == "lstm":
        xt, yt = xt.long(), torch.from_numpy(y).long().reshape(-1)
    elif name == "transformer":
        yt = torch.from_numpy(y)
    else:
        yt = torch.from_numpy(y).long()
    onehot = F.one_hot(yt, 10).to(xt.dtype) if name == "mlp-small" else None

    def loss_fn(out):
        if name == "mlp-small":  # Nielsen's: mean over samples of ½‖a − y‖²
            return 0.5 * ((out - onehot) ** 2).sum(dim=1).mean()
        if name == "transformer":  # the same per position: ½‖a − y‖² averaged over N·T
            return 0.5 * ((out - yt) ** 2).sum(dim=-1).mean()
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), yt)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(xt)).backward()
        optimizer.step()

    return step


class _TorchLSTM:
    """Built lazily (torch is imported only inside the torch worker)."""

    def __new__(cls, nn):
        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(VOCAB, EMBED)
                self.lstm = nn.LSTM(EMBED, HIDDEN, batch_first=True)
                self.dense = nn.Linear(HIDDEN, VOCAB)

            def forward(self, x):
                return self.dense(self.lstm(self.emb(x))[0])

        return Model()


def _torch_transformer(nn):
    import torch

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(E, HEADS, batch_first=True)
            self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)
            self.ffn = nn.Sequential(nn.Linear(E, FFN), nn.GELU(), nn.Linear(FFN, E))
            mask = torch.triu(torch.ones(T_LEN, T_LEN, dtype=torch.bool), 1)
            self.register_buffer("mask", mask)

        def forward(self, x):
            x = self.norm1(x + self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0])
            return self.norm2(x + self.ffn(x))

    return Block()


# ---------------------------------------------------------------------- workers
def median_step_seconds(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mb() -> float:
    """``ru_maxrss`` of this worker: its peak resident memory over its whole life."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def step_allocations(step) -> float:
    """MB of NumPy arrays allocated and alive at the peak of one steady step (``tracemalloc``
    sees NumPy's data buffers; preallocated buffers of earlier steps are not counted). Not
    measured for torch, whose allocator ``tracemalloc`` does not see."""
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def blas_core() -> str:
    """The OpenBLAS kernel family NumPy's BLAS runs (``threadpoolctl``), else the pin."""
    try:
        from threadpoolctl import threadpool_info

        found = [i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"]
        if found and found[0]:
            return str(found[0])
    except ImportError:
        pass
    return os.environ.get("OPENBLAS_CORETYPE", "unknown")


def worker(args) -> None:
    if args.worker == "gemm":
        rng = np.random.default_rng(0)
        a, b = (rng.random((512, 512)).astype(args.dtype) for _ in range(2))
        c = np.empty_like(a)
        seconds = median_step_seconds(lambda: np.matmul(a, b, out=c), 5, 30)
        gflops = 2 * 512**3 / seconds / 1e9
        print(json.dumps({"gflops": gflops, "peak_mb": peak_mb(), "blas_core": blas_core()}))
        return
    w = WORKLOADS[args.workload]
    x, y = make_data(args.workload, w["batch"], args.dtype)
    if args.worker == "manual_bp":
        step = manual_bp_step(args.workload, args.dtype, w["lr"], x, y)
    else:
        step = torch_step(args.workload, args.dtype, w["lr"], x, y, args.threads)
    with np.errstate(over="ignore", under="ignore"):
        seconds = median_step_seconds(step, args.warmup, args.steps)
        allocated = step_allocations(step) if args.worker == "manual_bp" else None
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "alloc_mb": allocated}))


# ---------------------------------------------------------------------- parent
def measure(kind: str, workload: str, dtype: str, threads: int, args) -> dict:
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    tree = str(ROOT)
    if kind == "before":  # this script's manual_bp worker, importing the other tree
        kind, tree = "manual_bp", str(Path(args.before).resolve())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (tree, os.environ.get("PYTHONPATH"))))
    if args.openblas_coretype == "auto":
        env.pop("OPENBLAS_CORETYPE", None)
    elif args.openblas_coretype:
        env["OPENBLAS_CORETYPE"] = args.openblas_coretype
    env.pop("MANUAL_BP_NUM_THREADS", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
           "--workload", workload, "--worker-dtype", dtype, "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind} worker on {workload} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--threads", default="1", help="comma-separated, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dtype", help="comma-separated float32/float64: every row in each "
                        "(default: each row's own)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 repeat, 5 steps, 1 thread")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--before", help="another source tree (e.g. a git worktree of an "
                        "earlier commit): its manual_bp is timed too, interleaved")  # fmt: skip
    parser.add_argument("--openblas-coretype", help="OPENBLAS_CORETYPE for every worker (e.g. "
                        "Haswell, SkylakeX; auto: unset, OpenBLAS detects the CPU); default: "
                        "inherited")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--worker-dtype", dest="worker_dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads, args.dtype = int(args.threads), args.worker_dtype
        worker(args)
        return
    if args.quick:
        args.repeats, args.steps, args.warmup, args.threads = 1, 5, 2, "1"
    names = args.workloads.split(",")
    dtypes = args.dtype.split(",") if args.dtype else [None]
    for dtype in dtypes:
        if dtype not in (None, "float32", "float64"):
            parser.error(f"--dtype: {dtype!r} is not float32 or float64")
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    print(f"median ms per training step over {args.repeats} repetitions (each the median of "
          f"{args.steps} steps after {args.warmup} warm-up steps); each library in its own "
          f"process; cpus: {os.cpu_count()}; {time.strftime('%Y-%m-%d %H:%M %Z')}")  # fmt: skip
    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        for name, chosen in itertools.product(names, dtypes):
            dtype = chosen or WORKLOADS[name]["dtype"]
            kinds = (*LIBRARIES, "gemm", *(("before",) if args.before else ()))
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.repeats):
                for kind in runs:  # interleaved: background load hits every library alike
                    runs[kind].append(measure(kind, name, dtype, threads, args))
            row = summarise(name, dtype, threads, runs)
            if not results:
                pin = args.openblas_coretype or f"{os.environ.get('OPENBLAS_CORETYPE')} (inherited)"
                print(f"OpenBLAS kernels: {row['blas_core']}; OPENBLAS_CORETYPE: {pin}")
            row["load"] = os.getloadavg()[0]
            results.append(row)
            print_row(row, header=len(results) == 1)
            if args.json:  # after every row: a run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps({"args": vars(args), "rows": results}))
    print(
        f"({load()}; range: manual/torch per repetition; "
        "GEMM %: the step's GEMM FLOPs / its time / the 512³ GEMM rate; alloc MB: NumPy "
        "memory manual_bp allocates within one steady step, at its peak)"
    )


def summarise(name: str, dtype: str, threads: int, runs: dict) -> dict:
    med = {k: statistics.median(r["seconds" if k != "gemm" else "gflops"] for r in rs)
           for k, rs in runs.items()}  # fmt: skip
    flops = gemm_flops(name, WORKLOADS[name]["batch"])
    pairs = zip(runs["manual_bp"], runs["torch"], strict=True)
    per_repeat = [m["seconds"] / t["seconds"] for m, t in pairs]
    gemm = med["gemm"] * 1e9
    return {
        "workload": name, "label": WORKLOADS[name]["label"], "dtype": dtype,
        "threads": threads, "manual_ms": med["manual_bp"] * 1e3, "torch_ms": med["torch"] * 1e3,
        "ratio": med["manual_bp"] / med["torch"],
        "ratio_range": [min(per_repeat), max(per_repeat)],
        "manual_peak_mb": statistics.median(r["peak_mb"] for r in runs["manual_bp"]),
        "torch_peak_mb": statistics.median(r["peak_mb"] for r in runs["torch"]),
        "manual_alloc_mb": statistics.median(r["alloc_mb"] for r in runs["manual_bp"]),
        "gemm_gflops": med["gemm"], "step_gemm_mflop": flops / 1e6,
        "manual_gemm_fraction": flops / med["manual_bp"] / gemm,
        "torch_gemm_fraction": flops / med["torch"] / gemm, "runs": runs,
        "before_ms": med["before"] * 1e3 if "before" in med else None,
        "blas_core": runs["gemm"][0].get("blas_core"),
    }  # fmt: skip


def print_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'workload':<12}{'dtype':>8}{'thr':>4}{'manual ms':>11}{'torch ms':>10}"
              f"{'ratio':>7}{'range':>11}{'peak MB m/t':>14}{'GEMM GF/s':>10}{'MFLOP':>8}"
              f"{'GEMM % m/t':>13}{'alloc MB':>9}")  # fmt: skip
    peaks = f"{row['manual_peak_mb']:.0f}/{row['torch_peak_mb']:.0f}"
    spread = "{:.2f}–{:.2f}".format(*row["ratio_range"])
    fractions = f"{100 * row['manual_gemm_fraction']:.1f}/{100 * row['torch_gemm_fraction']:.1f}"
    print(f"{row['workload']:<12}{row['dtype']:>8}{row['threads']:>4}{row['manual_ms']:>11.3f}"
          f"{row['torch_ms']:>10.3f}{row['ratio']:>7.2f}{spread:>11}{peaks:>14}{row['gemm_gflops']:>10.1f}"
          f"{row['step_gemm_mflop']:>8.1f}{fractions:>13}{row['manual_alloc_mb']:>9.2f}"
          + ("" if row["before_ms"] is None else
             f"   before {row['before_ms']:.3f} ms ({row['manual_ms'] / row['before_ms']:.2f}×)"),
          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
