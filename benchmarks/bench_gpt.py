"""Seconds per GPT training step (issue 28): manual_bp's fused step against torch eager.

One training step = forward, backward, global-norm clipping (1.0), AdamW (nanoGPT's two
groups: decay 0.1 on the 2-D weights; lr 6e-4, betas (0.9, 0.95)) on ONE fixed mini-batch
of random token indices, drawn identically in both libraries (``default_rng(0)``); each
library initialises its own random weights (GPT-2's initialisation); float32. Configs::

    124m    GPT-2 124M: vocabulary 50 257 padded to 50 304, context 1 024, 12 layers,
            12 heads, width 768, tied head; B = 4, T = 64 (one step ≈ 191 GFLOP)
    small   vocabulary 512, context 256, 4 layers, 4 heads, width 128, tied; B = 16, T = 64

manual_bp steps through ``GPT.loss_and_gradients`` with ``fast_training`` on (the fused
step, :mod:`manual_bp.models.gpt_fast`) and ``NanoGPTStep`` (flat clipping + AdamW);
torch through nanoGPT's model (``F.scaled_dot_product_attention(is_causal=True)``,
``F.cross_entropy``), ``zero_grad(set_to_none=True)``, ``backward``, ``clip_grad_norm_``,
``AdamW(foreach=True)`` (its fastest CPU form: the anchor); ``--compile`` adds
``torch.compile(model)`` (reported as failed where inductor does not run).

Method (as ``bench_families.py``, whose helpers it uses): every measurement in its OWN child
process with ``OMP/OPENBLAS/MKL_NUM_THREADS`` set to the thread count; a worker warms up,
times ``--steps`` steps and reports their median and its peak resident memory
(``ru_maxrss``); the libraries and a GEMM worker (NumPy ``(256×768)·(768×3072)`` float32,
the MLP's product shape) are interleaved within each repetition, the table shows medians
over repetitions, ratios per repetition. GEMM %: the step's GEMM FLOPs (every product's
forward, weight gradient and input gradient; ``QKᵀ`` and ``PV`` in full) / its time / the
measured GEMM rate. The machine may be shared: wall times are noisy, ratios from one run.

Usage::

    python benchmarks/bench_gpt.py --threads 1,2 --repeats 3
    python benchmarks/bench_gpt.py --configs small --threads 1 --json out.json
    python benchmarks/bench_gpt.py --quick                 # small + 124m, 1 repeat, 1 thread
    python benchmarks/bench_gpt.py --profile               # cProfile shares of one 124m step
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_families import THREAD_VARS, load, median_step_seconds, peak_mb

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "124m": dict(
        vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, batch=4, T=64
    ),
    "small": dict(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=128, batch=16, T=64),
}
HYPER = dict(lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0)


def model_config(name: str) -> dict:
    return {k: v for k, v in CONFIGS[name].items() if k not in ("batch", "T")}


def step_flops(name: str) -> int:
    """GEMM FLOPs of one training step: 3 × the forward's (weight and input gradients)."""
    c = CONFIGS[name]
    n, E, B, T = c["batch"] * c["T"], c["n_embd"], c["batch"], c["T"]
    forward = c["n_layer"] * (24 * n * E * E + 4 * B * T * T * E) + 2 * n * E * c["vocab_size"]
    return 3 * forward


def make_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    c = CONFIGS[name]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, min(c["vocab_size"], 50257), (c["batch"], c["T"] + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


# ---------------------------------------------------------------------- the two steps
def manual_bp_step(name: str):
    from manual_bp.models.gpt import GPT, GPTConfig
    from manual_bp.training.gpt_train import NanoGPTStep, configure_optimizers

    model = GPT(GPTConfig(**model_config(name)), seed=0, dtype=np.float32)
    model.fast_training = True
    opt = NanoGPTStep(configure_optimizers(model, HYPER["weight_decay"], HYPER["lr"],
                                           HYPER["betas"]), HYPER["grad_clip"])  # fmt: skip
    params = model.parameter_arrays()
    x, y = make_data(name)

    def step() -> None:
        _, grads = model.loss_and_gradients(x, y)
        opt.step(params, grads)

    return step


def torch_model(name: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    c = model_config(name)
    E, H = c["n_embd"], c["n_head"]

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(E), nn.LayerNorm(E)
            self.c_attn, self.attn_proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
            self.c_fc, self.mlp_proj = nn.Linear(E, 4 * E), nn.Linear(4 * E, E)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(E, dim=2)
            q, k, v = (a.view(B, T, H, E // H).transpose(1, 2) for a in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(a.transpose(1, 2).contiguous().view(B, T, E))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(c["vocab_size"], E)
            self.wpe = nn.Embedding(c["block_size"], E)
            self.h = nn.ModuleList(Block() for _ in range(c["n_layer"]))
            self.ln_f = nn.LayerNorm(E)
            self.lm_head = nn.Linear(E, c["vocab_size"], bias=False)
            self.lm_head.weight = self.wte.weight  # tied
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return GPT()


def torch_step(name: str, threads: int, compile_: bool):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(name)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": HYPER["weight_decay"]},
         {"params": rest, "weight_decay": 0.0}],
        lr=HYPER["lr"], betas=HYPER["betas"], foreach=True,
    )  # fmt: skip
    forward = torch.compile(model) if compile_ else model
    x, y = (torch.from_numpy(a) for a in make_data(name))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), HYPER["grad_clip"])
        opt.step()

    return step


# ---------------------------------------------------------------------- workers
def worker(args) -> None:
    if args.worker == "gemm":
        rng = np.random.default_rng(0)
        a = rng.random((256, 768), dtype=np.float32)
        b = rng.random((768, 3072), dtype=np.float32)
        c = np.empty((256, 3072), np.float32)
        seconds = median_step_seconds(lambda: np.matmul(a, b, out=c), 5, 50)
        print(json.dumps({"gflops": 2 * 256 * 768 * 3072 / seconds / 1e9}))
        return
    if args.worker == "manual_bp":
        step = manual_bp_step(args.config)
    else:
        step = torch_step(args.config, args.threads, args.worker == "torch.compile")
    with np.errstate(over="ignore", under="ignore"):
        seconds = median_step_seconds(step, args.warmup, args.steps)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb()}))


def measure(kind: str, config: str, threads: int, args) -> dict:
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env.pop("MANUAL_BP_NUM_THREADS", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--config", config,
           "--threads", str(threads), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        if kind == "torch.compile":  # inductor may not run on this CPU: report, go on
            return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
        raise RuntimeError(f"{kind} worker on {config} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(config: str, top: int = 25) -> None:
    """cProfile of one steady manual_bp step (shares of its time: robust under load)."""
    import cProfile
    import pstats

    step = manual_bp_step(config)
    for _ in range(2):
        step()
    pr = cProfile.Profile()
    pr.enable()
    step()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def summarise(config: str, threads: int, runs: dict) -> dict:
    def med(kind: str, key: str = "seconds") -> float | None:
        ok = [r[key] for r in runs.get(kind, []) if key in r]
        return statistics.median(ok) if ok else None

    gemm = med("gemm", "gflops") * 1e9
    flops = step_flops(config)
    pairs = zip(runs["manual_bp"], runs["torch"], strict=True)
    per_repeat = [m["seconds"] / t["seconds"] for m, t in pairs]
    row = {
        "config": config, "threads": threads, "manual_s": med("manual_bp"),
        "torch_s": med("torch"), "ratio": med("manual_bp") / med("torch"),
        "ratio_range": [min(per_repeat), max(per_repeat)],
        "manual_peak_mb": med("manual_bp", "peak_mb"), "torch_peak_mb": med("torch", "peak_mb"),
        "gemm_gflops": gemm / 1e9, "step_gflop": flops / 1e9,
        "manual_gemm_fraction": flops / med("manual_bp") / gemm,
        "torch_gemm_fraction": flops / med("torch") / gemm, "runs": runs,
    }  # fmt: skip
    if "torch.compile" in runs:
        row["compile_s"] = med("torch.compile")
        errors = [r["error"] for r in runs["torch.compile"] if "error" in r]
        row["compile_error"] = errors[0] if errors else None
    return row


def print_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'config':<7}{'thr':>4}{'manual s':>10}{'torch s':>9}{'ratio':>7}{'range':>12}"
              f"{'peak MB m/t':>13}{'GEMM GF/s':>10}{'GFLOP':>7}{'GEMM % m/t':>12}")  # fmt: skip
    peaks = f"{row['manual_peak_mb']:.0f}/{row['torch_peak_mb']:.0f}"
    spread = "{:.2f}–{:.2f}".format(*row["ratio_range"])
    fractions = f"{100 * row['manual_gemm_fraction']:.0f}/{100 * row['torch_gemm_fraction']:.0f}"
    extra = ""
    if "compile_s" in row:
        extra = (f"   torch.compile {row['compile_s']:.3f} s" if row["compile_s"] is not None
                 else f"   torch.compile failed: {row['compile_error']}")  # fmt: skip
    print(f"{row['config']:<7}{row['threads']:>4}{row['manual_s']:>10.3f}{row['torch_s']:>9.3f}"
          f"{row['ratio']:>7.2f}{spread:>12}{peaks:>13}{row['gemm_gflops']:>10.1f}"
          f"{row['step_gflop']:>7.1f}{fractions:>12}{extra}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="small,124m")
    parser.add_argument("--threads", default="1", help="comma-separated, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (try)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 3 steps, 1 thread")
    parser.add_argument("--profile", action="store_true", help="cProfile one 124m step")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return
    if args.profile:
        profile("124m")
        return
    if args.quick:
        args.repeats, args.steps, args.warmup, args.threads = 1, 3, 1, "1"
    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    print(f"median seconds per GPT training step over {args.repeats} repetitions (each the "
          f"median of {args.steps} steps after {args.warmup} warm-up); each library in its own "
          f"process; cpus: {os.cpu_count()}; {time.strftime('%Y-%m-%d %H:%M %Z')}")  # fmt: skip
    results = []
    kinds = ("manual_bp", "torch", "gemm", *(("torch.compile",) if args.compile else ()))
    for threads in (int(t) for t in args.threads.split(",")):
        for name in names:
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.repeats):
                for kind in kinds:  # interleaved: background load hits every library alike
                    runs[kind].append(measure(kind, name, threads, args))
            row = summarise(name, threads, runs)
            row["load"] = os.getloadavg()[0]
            results.append(row)
            print_row(row, header=len(results) == 1)
            if args.json:
                Path(args.json).write_text(json.dumps({"args": vars(args), "rows": results}))
    print(
        f"({load()}; range: manual/torch per repetition; GEMM %: the step's GEMM FLOPs / "
        "its time / the (256×768)·(768×3072) float32 GEMM rate measured in the same run)"
    )


if __name__ == "__main__":
    main()
