"""Cost of curvature products relative to one gradient (``docs/curvature.md``).

One process, one model, one mini-batch: every quantity is timed ``--repeats`` times after
an untimed warm-up, interleaved round-robin so load from other processes hits them alike,
and the medians are printed with their ratio to the gradient (the same chain sweep,
:func:`manual_bp.curvature.gradient`) and to ``Network.backprop``. Nothing is asserted.

Usage::

    python benchmarks/bench_curvature.py                    # digits, [64, 64, 64, 10], batch 64
    python benchmarks/bench_curvature.py --batch 256 --repeats 21 --threads 1

Pearlmutter's R-operator costs one forward and one backward sweep, each about twice a plain
one (every line gains its R{·} twin), so ``H v`` should take a small constant multiple
(≈ 2–4) of a gradient.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,64,64,10")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    from manual_bp import Network
    from manual_bp.curvature import ggnvp, gradient, hvp
    from manual_bp.curvature.diagonal import diag_ggn, diag_ggn_mc, diag_hessian
    from manual_bp.curvature.kfac import kflr
    from manual_bp.curvature.stats import grad_norms, sum_grad_squared
    from manual_bp.data import load_digits

    data = load_digits()
    sizes = [int(s) for s in args.sizes.split(",")]
    net = Network(sizes, "tanh", "log-likelihood", output_activation="softmax", seed=0)
    x, y = data.x_train[: args.batch], data.y_train[: args.batch]
    v = np.random.default_rng(0).standard_normal(net.n_parameters)
    jobs = {
        "Network.backprop": lambda: net.backprop(x, y),
        "gradient (chain)": lambda: gradient(net, x, y),
        "H v (R-operator)": lambda: hvp(net, x, y, v),
        "G v": lambda: ggnvp(net, x, y, v),
        "diag GGN (exact)": lambda: diag_ggn(net, x, y),
        "diag GGN (MC, 1)": lambda: diag_ggn_mc(net, x, y, rng=0),
        "KFLR factors": lambda: kflr(net, x, y),
        "grad norms": lambda: grad_norms(net, x, y),
        "sum grad squared": lambda: sum_grad_squared(net, x, y),
        "diag Hessian": lambda: diag_hessian(net, x, y),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():
        job()  # warm-up
    for _ in range(args.repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    base, backprop = med["gradient (chain)"], med["Network.backprop"]
    print(
        f"sizes {sizes}, batch {args.batch}, {net.n_parameters} parameters, threads {args.threads}"
    )
    print(f"{'quantity':<20} {'median ms':>10} {'× gradient':>11} {'× backprop':>11}")
    for name, t in med.items():
        print(f"{name:<20} {1e3 * t:>10.3f} {t / base:>11.2f} {t / backprop:>11.2f}")


if __name__ == "__main__":
    main()
