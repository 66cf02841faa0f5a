"""Cost of curvature products relative to one gradient, ours and torch's (``docs/curvature.md``).

Each library runs in its own process (``--library ours`` / ``--library torch``; the default
``both`` starts the two one after the other and prints one table), on the same model and
mini-batch. In a process every quantity is timed ``--repeats`` times after an untimed
warm-up, interleaved round-robin so load from other processes hits them alike (a quantity
whose warm-up takes over a second is timed ``--slow-repeats`` times on its own, after the
others); medians are reported with their ratio to that library's own gradient. Nothing is
asserted.

torch's way of getting each quantity (float64, ``torch.func``): the gradient by ``grad``,
``H v`` by ``jvp(grad)``, ``G v`` by ``jvp`` of the network then ``vjp`` of ``H_f (J v)``,
the diagonal GGN from per-sample Jacobians ``vmap(jacrev)`` and ``vmap(hessian)`` of the loss
in ``f`` (``Σ_x diag(Jₓᵀ H_f Jₓ)``), the diagonal Hessian as the diagonal of ``H eᵢ`` for every
``i`` (``vmap`` of ``jvp(grad)`` over basis vectors in chunks: torch has no diagonal-Hessian
primitive).

Usage::

    python benchmarks/bench_curvature.py                    # digits, [64, 64, 64, 10], batch 64
    python benchmarks/bench_curvature.py --batch 256 --repeats 21 --threads 1

Pearlmutter's R-operator costs one forward and one backward sweep, each about twice a plain
one (every line gains its R{·} twin), so ``H v`` should take a small constant multiple
(≈ 2–4) of a gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def setup(args):
    import numpy as np

    from manual_bp import Network
    from manual_bp.data import load_digits

    data = load_digits()
    sizes = [int(s) for s in args.sizes.split(",")]
    net = Network(sizes, "tanh", "log-likelihood", output_activation="softmax", seed=0)
    x, y = data.x_train[: args.batch], data.y_train[: args.batch]
    v = np.random.default_rng(0).standard_normal(net.n_parameters)
    return net, x, y, v


def our_jobs(args) -> dict:
    from manual_bp.curvature import ggnvp, gradient, hvp
    from manual_bp.curvature.diagonal import (
        diag_ggn,
        diag_ggn_mc,
        diag_ggn_readable,
        diag_hessian,
        diag_hessian_readable,
    )
    from manual_bp.curvature.kfac import kflr
    from manual_bp.curvature.stats import grad_norms, sum_grad_squared

    net, x, y, v = setup(args)
    return {
        "Network.backprop": lambda: net.backprop(x, y),
        "gradient": lambda: gradient(net, x, y),
        "H v": lambda: hvp(net, x, y, v),
        "G v": lambda: ggnvp(net, x, y, v),
        "diag GGN (factored)": lambda: diag_ggn(net, x, y),
        "diag GGN (readable)": lambda: diag_ggn_readable(net, x, y),
        "diag GGN (MC, 1)": lambda: diag_ggn_mc(net, x, y, rng=0),
        "diag Hessian (factored)": lambda: diag_hessian(net, x, y),
        "diag Hessian (readable)": lambda: diag_hessian_readable(net, x, y),
        "KFLR factors": lambda: kflr(net, x, y),
        "grad norms": lambda: grad_norms(net, x, y),
        "sum grad squared": lambda: sum_grad_squared(net, x, y),
    }


def torch_jobs(args) -> dict:
    import torch

    from reference.curvature_oracle import TorchModel

    torch.set_num_threads(args.threads)
    net, x, y, v = setup(args)
    tm = TorchModel(net, x, y)
    theta, vt = tm.theta, torch.tensor(v)
    grad = torch.func.grad(tm.loss)

    def hvp(u):
        return torch.func.jvp(grad, (theta,), (u,))[1]

    def ggnvp():
        f, jv = torch.func.jvp(lambda t: tm.output(t, tm.x), (theta,), (vt,))
        hf = torch.func.hessian(lambda g: tm.loss_of_output(g.reshape(f.shape), tm.y))
        u = (hf(f.reshape(-1)) @ jv.reshape(-1)).reshape(f.shape)
        _, pullback = torch.func.vjp(lambda t: tm.output(t, tm.x), theta)
        return pullback(u)[0]

    def diag_ggn():
        def out(t, xi):
            return tm.output(t, xi[None])[0]

        J = torch.func.vmap(torch.func.jacrev(out), in_dims=(None, 0))(theta, tm.x)  # (n, m, P)
        f = tm.output(theta, tm.x)

        def one(fi, yi):
            return tm.loss_of_output(fi[None], yi[None])

        Hf = torch.func.vmap(torch.func.hessian(one))(f, tm.y)  # (n, m, m)
        return torch.einsum("nip,nij,njp->p", J, Hf, J) / f.shape[0]

    def diag_hessian(chunk=512):
        P = theta.numel()
        out = torch.empty(P, dtype=theta.dtype)
        for start in range(0, P, chunk):
            idx = torch.arange(start, min(start + chunk, P))
            E = torch.zeros(len(idx), P, dtype=theta.dtype)
            E[torch.arange(len(idx)), idx] = 1.0
            out[idx] = torch.func.vmap(hvp)(E)[torch.arange(len(idx)), idx]
        return out

    return {
        "gradient": lambda: grad(theta),
        "H v": lambda: hvp(vt),
        "G v": ggnvp,
        "diag GGN (factored)": diag_ggn,
        "diag Hessian (factored)": diag_hessian,
    }


def measure(jobs: dict, args) -> dict:
    """Median seconds per job: one warm-up each, then the fast jobs interleaved for
    ``repeats`` rounds, then each slow one (warm-up over 1 s) ``slow_repeats`` times on its
    own (interleaved, torch's large ``vmap`` allocations slowed its next small calls ~20×)."""
    slow = set()
    for name, job in jobs.items():
        start = time.perf_counter()
        job()
        if time.perf_counter() - start > 1.0:
            slow.add(name)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    rounds = [[n for n in jobs if n not in slow]] * args.repeats
    rounds += [[n] for n in jobs if n in slow for _ in range(args.slow_repeats)]
    for r, names in enumerate(rounds):
        for name in names:
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
        print(f"[{args.library}] round {r + 1}/{len(rounds)}", file=sys.stderr, flush=True)
    return {name: statistics.median(t) for name, t in times.items()}


def run_child(library: str, args) -> dict:
    cmd = [sys.executable, __file__, "--library", library, "--json"]
    for key in ("sizes", "batch", "repeats", "slow_repeats", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,64,64,10")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--slow-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--library", choices=("ours", "torch", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.library != "both":
        med = measure(our_jobs(args) if args.library == "ours" else torch_jobs(args), args)
        if args.json:
            print(json.dumps(med))
            return
        results = {args.library: med}
    else:
        results = {lib: run_child(lib, args) for lib in ("ours", "torch")}
    net = setup(args)[0]
    print(
        f"sizes {args.sizes}, batch {args.batch}, {net.n_parameters} parameters, "
        f"threads {args.threads}, medians of {args.repeats} ({args.slow_repeats} if > 1 s)"
    )
    ours, theirs = results.get("ours", {}), results.get("torch", {})
    print(
        "| quantity | ours ms | ours × our gradient | torch ms | torch × torch gradient "
        "| torch / ours |"
    )
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys([*ours, *theirs]):
        cells = [name]
        for med in (ours, theirs):
            t = med.get(name)
            base = med.get("gradient")
            cells += ["–", "–"] if t is None else [f"{1e3 * t:.3f}", f"{t / base:.2f}"]
        if name in ours and name in theirs:
            cells.append(f"{theirs[name] / ours[name]:.2f}")
        else:
            cells.append("–")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
