"""Curvature in use: the top Hessian eigenvalue during training, and one Newton-CG step.

Part 1 (``CURV.top-eigenvalue``): a [n_in, 30, 10] tanh/softmax network trained by SGD on
the embedded digits (or MNIST with ``--mnist``, read from ``$MANUAL_BP_MNIST_DIR`` or
``../shared/data/mnist``); after every epoch, power iteration on ``H v`` (our R-operator) over
a fixed batch gives the eigenvalue of largest magnitude, compared with the same iteration on
torch's ``jvp(grad(C))`` from the same start vector. Printed per epoch, written as JSON with
``--out``, plotted with ``--plot FILE.png`` when matplotlib is installed.

Part 2: one damped Gauss-Newton step ``(G + λI) d = −∇C`` on a small problem, solved by
conjugate gradients on our ``G v`` products, compared with torch (the GGN ``Jᵀ H_f J`` from
``jacrev``, solved densely), and the cost before and after the step.

Each epoch also times one ``H v`` (ours, torch's ``jvp(grad)``) and one gradient on the
probe batch (medians of the power iteration's own steps), so the cost of ``H v`` relative to
a gradient is measured on the run that uses it.

Usage::

    python benchmarks/hessian_eigenvalue.py --epochs 10
    python benchmarks/hessian_eigenvalue.py --mnist --epochs 8 --train-size 20000 --probe 1000 \\
        --out eigen_mnist.json --plot docs/figures/hessian_eigenvalue_mnist.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# One BLAS thread (set before NumPy loads its BLAS): the machine is shared, and the timings
# of H v and of the gradient compare one sweep with another, not thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from manual_bp import Network  # noqa: E402
from manual_bp._argtypes import positive_float, positive_int  # noqa: E402
from manual_bp._files import check_output_file  # noqa: E402
from manual_bp.curvature import flatten, ggnvp, gradient  # noqa: E402
from manual_bp.curvature.eigen import top_eigenvalue  # noqa: E402
from manual_bp.data import default_mnist_dir, load_digits, load_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def torch_power_iteration(net, x, y, v0, iterations):
    """The same power iteration with torch's H v (float64 autograd)."""
    import torch

    from reference.curvature_oracle import TorchModel

    tm = TorchModel(net, x, y)
    grad = torch.func.grad(tm.loss)
    v = torch.tensor(v0 / np.linalg.norm(v0))
    lam, times = 0.0, []
    for _ in range(iterations):
        start = time.perf_counter()
        w = torch.func.jvp(grad, (tm.theta,), (v,))[1]
        times.append(time.perf_counter() - start)
        lam = float(v @ w)
        v = w / torch.linalg.norm(w)
    return lam, statistics.median(times)


def timed(job, repeats=15) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    job()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conjugate_gradients(apply, b, iterations=100, tol=1e-12):
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(iterations):
        Ap = apply(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        new = r @ r
        if np.sqrt(new) <= tol * np.linalg.norm(b):
            break
        p = r + (new / rr) * p
        rr = new
    return x


def eigenvalue_curve(args) -> list[dict]:
    data = load_mnist(default_mnist_dir()) if args.mnist else load_digits()
    x, y = data.x_train[: args.train_size], data.y_train[: args.train_size]
    probe_x, probe_y = x[: args.probe], y[: args.probe]
    net = Network(
        [x.shape[1], 30, 10], "tanh", "log-likelihood", output_activation="softmax", seed=0
    )
    rng = np.random.default_rng(0)
    rows = []
    for epoch in range(args.epochs + 1):
        if epoch:
            order = rng.permutation(len(x))
            for start in range(0, len(x), args.batch):
                idx = order[start : start + args.batch]
                grads = net.backprop(x[idx], y[idx])
                # parameter_arrays() is torch's state-dict order: W¹, b¹, W², b²
                steps = [g for pair in zip(grads.weights, grads.biases, strict=True) for g in pair]
                for p, g in zip(net.parameter_arrays(), steps, strict=True):
                    p -= args.eta * g
        v0 = np.random.default_rng(epoch).standard_normal(net.n_parameters)
        start = time.perf_counter()
        ours, _ = top_eigenvalue(
            net, probe_x, probe_y, max_iter=args.iterations, tol=0.0, rng=epoch
        )
        hv_time = (time.perf_counter() - start) / args.iterations
        theirs, torch_hv_time = torch_power_iteration(net, probe_x, probe_y, v0, args.iterations)
        grad_time = timed(lambda: gradient(net, probe_x, probe_y))
        row = {
            "epoch": epoch,
            "n_in": x.shape[1],
            "cost": net.total_cost(probe_x, probe_y),
            "accuracy": net.accuracy(data.x_val, data.y_val),
            "top_eigenvalue": ours,
            "torch_top_eigenvalue": theirs,
            "relative_difference": abs(ours - theirs) / abs(theirs),
            "hv_ms": 1e3 * hv_time,
            "torch_hv_ms": 1e3 * torch_hv_time,
            "gradient_ms": 1e3 * grad_time,
        }
        rows.append(row)
        print(
            f"epoch {epoch:2d}  cost {row['cost']:.4f}  val acc {row['accuracy']:.3f}  "
            f"λ_max ours {ours:.6f}  torch {theirs:.6f}  rel diff {row['relative_difference']:.1e}"
            f"  H v {row['hv_ms']:.2f} ms (torch {row['torch_hv_ms']:.2f}, gradient "
            f"{row['gradient_ms']:.2f})",
            flush=True,
        )
    return rows


def newton_step() -> dict:
    """One damped Gauss-Newton step on a small problem, ours (CG on G v) vs torch (dense)."""
    import torch

    from reference.curvature_oracle import TorchModel

    data = load_digits()
    x, y = data.x_train[:200], data.y_train[:200]
    net = Network([64, 8, 10], "tanh", "log-likelihood", output_activation="softmax", seed=1)
    damping = 1.0
    g = flatten(gradient(net, x, y))
    d = conjugate_gradients(lambda v: flatten(ggnvp(net, x, y, v)) + damping * v, -g, 500)
    tm = TorchModel(net, x, y)
    G = tm.ggn()
    g_t = tm.gradient()
    d_t = np.linalg.solve(G + damping * np.eye(len(g_t)), -g_t)
    before = net.total_cost(x, y)
    flat = np.concatenate([p.ravel() for p in net.parameter_arrays()])
    after = float(tm.loss(torch.tensor(flat + d)))
    result = {
        "damping": damping,
        "cost_before": before,
        "cost_after": after,
        "step_relative_difference": float(np.linalg.norm(d - d_t) / np.linalg.norm(d_t)),
    }
    print(
        f"damped Gauss-Newton step (λ = {damping}): cost {before:.5f} -> {after:.5f}; "
        f"‖d − d_torch‖/‖d_torch‖ = {result['step_relative_difference']:.1e}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", action="store_true")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--train-size", type=positive_int, default=1079)
    parser.add_argument("--probe", type=positive_int, default=256)
    parser.add_argument("--batch", type=positive_int, default=10)
    parser.add_argument("--eta", type=positive_float, default=0.1)
    parser.add_argument("--iterations", type=positive_int, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    # output paths before the long work (issue 24, item 4)
    try:
        if args.out is not None:
            check_output_file(args.out, "--out", (".json",))
        if args.plot is not None:
            check_output_file(args.plot, "--plot", (".png",))
    except ValueError as error:
        parser.error(str(error))
    import torch

    torch.set_num_threads(1)
    rows = eigenvalue_curve(args)
    step = newton_step()
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.out:
        payload = {"settings": settings, "epochs": rows, "newton_step": step}
        args.out.write_text(json.dumps(payload, indent=1))
    if args.plot:
        plot(rows, args)


def plot(rows: list[dict], args) -> None:
    """λ_max per epoch (ours and torch) beside the probe cost, as a small PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    epochs = [r["epoch"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(7.5, 2.8))
    ax.plot(epochs, [r["top_eigenvalue"] for r in rows], "o-", label="manual_bp (R-operator)")
    ax.plot(epochs, [r["torch_top_eigenvalue"] for r in rows], "x--", label="torch jvp(grad)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"top Hessian eigenvalue $\lambda_{\max}$")
    ax.legend(fontsize=8)
    bx.plot(epochs, [r["cost"] for r in rows], "s-", color="tab:gray", label="probe cost")
    bx.set_xlabel("epoch")
    bx.set_ylabel("cost (probe batch)")
    cx = bx.twinx()
    cx.plot(epochs, [r["accuracy"] for r in rows], "^-", color="tab:green")
    cx.set_ylabel("validation accuracy", color="tab:green")
    data = "MNIST" if args.mnist else "digits"
    fig.suptitle(
        f"{data}: [{rows[0]['n_in']}, 30, 10] tanh/softmax, SGD η = {args.eta}, batch "
        f"{args.batch}; λ_max by {args.iterations} power iterations on {args.probe} samples",
        fontsize=8,
    )
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=90)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
