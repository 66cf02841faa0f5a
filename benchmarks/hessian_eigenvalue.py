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

Usage::

    python benchmarks/hessian_eigenvalue.py --epochs 10
    python benchmarks/hessian_eigenvalue.py --mnist --epochs 5 --train-size 10000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from manual_bp import Network
from manual_bp.curvature import flatten, ggnvp, gradient
from manual_bp.curvature.eigen import top_eigenvalue
from manual_bp.data import default_mnist_dir, load_digits, load_mnist

ROOT = Path(__file__).resolve().parent.parent


def torch_power_iteration(net, x, y, v0, iterations):
    """The same power iteration with torch's H v (float64 autograd)."""
    import torch

    from reference.curvature_oracle import TorchModel

    tm = TorchModel(net, x, y)
    grad = torch.func.grad(tm.loss)
    v = torch.tensor(v0 / np.linalg.norm(v0))
    lam = 0.0
    for _ in range(iterations):
        w = torch.func.jvp(grad, (tm.theta,), (v,))[1]
        lam = float(v @ w)
        v = w / torch.linalg.norm(w)
    return lam


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
                for p, g in zip(
                    net.parameter_arrays(), [*grads.weights, *grads.biases], strict=True
                ):
                    p -= args.eta * g
        v0 = np.random.default_rng(epoch).standard_normal(net.n_parameters)
        ours, _ = top_eigenvalue(
            net, probe_x, probe_y, max_iter=args.iterations, tol=0.0, rng=epoch
        )
        theirs = torch_power_iteration(net, probe_x, probe_y, v0, args.iterations)
        row = {
            "epoch": epoch,
            "cost": net.total_cost(probe_x, probe_y),
            "accuracy": net.accuracy(data.x_val, data.y_val),
            "top_eigenvalue": ours,
            "torch_top_eigenvalue": theirs,
            "relative_difference": abs(ours - theirs) / abs(theirs),
        }
        rows.append(row)
        print(
            f"epoch {epoch:2d}  cost {row['cost']:.4f}  val acc {row['accuracy']:.3f}  "
            f"λ_max ours {ours:.6f}  torch {theirs:.6f}  rel diff {row['relative_difference']:.1e}"
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
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=1079)
    parser.add_argument("--probe", type=int, default=256)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    rows = eigenvalue_curve(args)
    step = newton_step()
    if args.out:
        args.out.write_text(json.dumps({"epochs": rows, "newton_step": step}, indent=1))
    if args.plot:
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
            return
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([r["epoch"] for r in rows], [r["top_eigenvalue"] for r in rows], "o-", label="ours")
        ax.plot(
            [r["epoch"] for r in rows],
            [r["torch_top_eigenvalue"] for r in rows],
            "x--",
            label="torch",
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("top Hessian eigenvalue")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
