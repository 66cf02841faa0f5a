"""Every curvature quantity the peers have, timed on an MLP, a small CNN and a small LSTM model.

manual_bp against torch's own backward, BackPACK 1.7, curvlinops 3.0, Opacus 1.6 and
``torch.func`` (issue 27, item 5). Every (model, library, quantity) triple runs in its OWN
fresh process (``--worker MODEL LIBRARY QUANTITY``), which builds the model, runs the
quantity once untimed, then ``--repeats`` timed times and prints its times as JSON (or
``{"unsupported": reason}`` when the peer does not cover the model: listed as "—", not an
error). The driver starts these processes interleaved — round ``r`` runs every triple once,
in an order rotated by ``r`` — so the load of other processes hits all alike, and reports
per triple the median over rounds of the per-process medians and, per (model, quantity),
manual_bp's time ÷ the fastest peer's, all from one run — by CPU time
(``time.process_time``, one thread: robust when other processes load the machine) and by
wall time. Nothing is asserted.

Models (random data, seeded; cross-entropy on logits, mean over the batch — and over the
positions for the LSTM's per-step targets):

====  =========================================================================================
mlp   784-256-256-10, tanh, batch 128
cnn   conv(3→16, k3, p1) relu maxpool2 conv(16→32, k3, p1) relu global-avg-pool flatten
      dense(32→10), 3×16×16, batch 64
lstm  Embedding(100, 32) → LSTM(32→64, batch_first) → Dense(64→100) per step, T 16, batch 32
====  =========================================================================================

Quantities and the peers that have them (a peer that fails on a model is listed "—"):

================  ===========================================================================
gradient          torch ``loss.backward()``
per-sample-grad   BackPACK ``BatchGrad``, Opacus ``GradSampleModule``, ``vmap(grad)``
grad-norms        BackPACK ``BatchL2Grad``
sum-grad-squared  BackPACK ``SumGradSquared``
grad-variance     BackPACK ``Variance``
diag-ggn          BackPACK ``DiagGGNExact``
diag-ggn-mc       BackPACK ``DiagGGNMC`` (one sample)
diag-hessian      BackPACK ``DiagHessian``
kflr              BackPACK ``KFLR``
kfac              BackPACK ``KFAC``, curvlinops ``KFACLinearOperator`` (type-2 MC, 1 sample)
hvp               curvlinops ``HessianLinearOperator @ v``, ``torch.func`` ``jvp(grad)``
ggnvp             curvlinops ``GGNLinearOperator @ v``, ``torch.func`` ``jvp`` + ``vjp``
efvp              curvlinops ``EFLinearOperator @ v``
hutchinson        curvlinops ``hutchinson_trace(GGNLinearOperator, 10)``
lanczos           scipy ``eigsh(k=1, ncv=20, maxiter=1 restart)`` on curvlinops'
                  ``HessianLinearOperator`` — 20 Lanczos steps, as ours (``n_iter=20``)
dp-sgd-step       Opacus ``DPOptimizer.step`` after the per-sample backward
================  ===========================================================================

Usage::

    python benchmarks/bench_curvature_models.py                       # float64, 5 × 5
    python benchmarks/bench_curvature_models.py --models cnn --quantities hvp,diag-ggn
    python benchmarks/bench_curvature_models.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's manual_bp
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared scaffold

from _curvature_bench import report, run_rounds

MODELS = ("mlp", "cnn", "lstm")
HUTCHINSON_DRAWS = 10
LANCZOS_STEPS = 20
BACKPACK_EXTENSIONS = {
    "per-sample-grad": "BatchGrad",
    "grad-norms": "BatchL2Grad",
    "sum-grad-squared": "SumGradSquared",
    "grad-variance": "Variance",
    "diag-ggn": "DiagGGNExact",
    "diag-ggn-mc": "DiagGGNMC",
    "diag-hessian": "DiagHessian",
    "kflr": "KFLR",
    "kfac": "KFAC",
}

#: quantity -> the libraries that have it ("manual_bp" first).
QUANTITIES = {
    "gradient": ("manual_bp", "torch"),
    "per-sample-grad": ("manual_bp", "backpack", "opacus", "torch.func"),
    "grad-norms": ("manual_bp", "backpack"),
    "sum-grad-squared": ("manual_bp", "backpack"),
    "grad-variance": ("manual_bp", "backpack"),
    "diag-ggn": ("manual_bp", "backpack"),
    "diag-ggn-mc": ("manual_bp", "backpack"),
    "diag-hessian": ("manual_bp", "backpack"),
    "kflr": ("manual_bp", "backpack"),
    "kfac": ("manual_bp", "backpack", "curvlinops"),
    "hvp": ("manual_bp", "curvlinops", "torch.func"),
    "ggnvp": ("manual_bp", "curvlinops", "torch.func"),
    "efvp": ("manual_bp", "curvlinops"),
    "hutchinson": ("manual_bp", "curvlinops"),
    "lanczos": ("manual_bp", "curvlinops"),
    "dp-sgd-step": ("manual_bp", "opacus"),
}

#: ``--quick``: one round of two repeats over these quantities.
QUICK = ("gradient", "per-sample-grad", "diag-ggn", "hvp", "kfac", "dp-sgd-step")


def _data(model: str, dtype: str):
    """``(x, y)`` of the model, seeded; ``x`` indices for the LSTM's embedding."""
    import numpy as np

    rng = np.random.default_rng(0)
    if model == "mlp":
        return rng.standard_normal((128, 784)).astype(dtype), rng.integers(0, 10, 128)
    if model == "cnn":
        return rng.standard_normal((64, 3, 16, 16)).astype(dtype), rng.integers(0, 10, 64)
    return rng.integers(0, 100, (32, 16)), rng.integers(0, 100, (32, 16))


def manual_model(model: str, dtype: str):
    """The model as a manual_bp ``Sequential`` (torch's initialisation, seed 0)."""
    from manual_bp import Sequential
    from manual_bp import layers as L

    if model == "mlp":
        stack = [L.Dense(784, 256), "tanh", L.Dense(256, 256), "tanh", L.Dense(256, 10)]
        shape = (784,)
    elif model == "cnn":
        stack = [
            L.Conv2d(3, 16, 3, padding=1),
            "relu",
            L.MaxPool2d(2),
            L.Conv2d(16, 32, 3, padding=1),
            "relu",
            L.AdaptiveAvgPool2d(1),
            L.Flatten(),
            L.Dense(32, 10),
        ]
        shape = (3, 16, 16)
    else:
        stack = [L.Embedding(100, 32), L.LSTM(32, 64, batch_first=True), L.Dense(64, 100)]
        shape = (16,)
    return Sequential(stack, "categorical-cross-entropy", input_shape=shape, seed=0, dtype=dtype)


def _manual(model: str, quantity: str, dtype: str):
    import numpy as np

    from manual_bp import curvature as cv

    net = manual_model(model, dtype)
    x, y = _data(model, dtype)
    v = np.random.default_rng(1).standard_normal(net.n_parameters).astype(dtype)
    calls = {
        "gradient": lambda: cv.gradient(net, x, y),
        "per-sample-grad": lambda: cv.per_sample_gradients(net, x, y),
        "grad-norms": lambda: cv.grad_norms(net, x, y),
        "sum-grad-squared": lambda: cv.sum_grad_squared(net, x, y),
        "grad-variance": lambda: cv.grad_variance(net, x, y),
        "diag-ggn": lambda: cv.diag_ggn(net, x, y),
        "diag-ggn-mc": lambda: cv.diag_ggn_mc(net, x, y, rng=0),
        "diag-hessian": lambda: cv.diag_hessian(net, x, y),
        "kflr": lambda: cv.kflr(net, x, y),
        "kfac": lambda: cv.kfac(net, x, y, rng=0),
        "hvp": lambda: cv.hvp(net, x, y, v),
        "ggnvp": lambda: cv.ggnvp(net, x, y, v),
        "efvp": lambda: cv.efvp(net, x, y, v),
        "hutchinson": lambda: cv.hutchinson_trace(
            net, x, y, matrix="ggn", n_samples=HUTCHINSON_DRAWS
        ),
        "lanczos": lambda: cv.lanczos_eigenvalues(net, x, y, 1, n_iter=LANCZOS_STEPS),
        "dp-sgd-step": lambda: cv.dp_sgd_step(
            net, x, y, lr=1e-9, max_grad_norm=1.0, noise_multiplier=1.0, rng=0
        ),
    }
    np.seterr(all="ignore")
    return calls[quantity]


def torch_model(model: str, tdtype, opacus: bool = False):
    """The model in torch (logits of shape (N, C) or (N, C, T) for the per-step targets);
    ``opacus``: the LSTM as Opacus's ``DPLSTM`` (its per-sample gradients need it)."""
    import torch
    from backpack.custom_module.permute import Permute
    from backpack.custom_module.reduce_tuple import ReduceTuple

    nn = torch.nn
    torch.manual_seed(0)
    if model == "mlp":
        net = nn.Sequential(
            nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)
        )
    elif model == "cnn":
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )
    else:
        if opacus:
            from opacus.layers import DPLSTM

            lstm = DPLSTM(32, 64, batch_first=True)
        else:
            lstm = nn.LSTM(32, 64, batch_first=True)
        net = nn.Sequential(
            nn.Embedding(100, 32), lstm, ReduceTuple(0), nn.Linear(64, 100), Permute(0, 2, 1)
        )
    return net.to(tdtype)


def _peer(model: str, library: str, quantity: str, dtype: str):
    import warnings

    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    # BackPACK's pooling derivatives build torch modules of the default dtype inside
    # (float32 on a float64 model fails): every peer gets the model's dtype as default
    torch.set_default_dtype(tdtype)
    x, y = _data(model, dtype)
    X, Y = torch.tensor(x), torch.tensor(y)
    net = torch_model(model, tdtype, opacus=library == "opacus")
    loss = torch.nn.CrossEntropyLoss()
    params = [p for p in net.parameters() if p.requires_grad]
    size = sum(p.numel() for p in params)
    V = torch.tensor(np.random.default_rng(1).standard_normal(size), dtype=tdtype)
    data = [(X, Y)]
    if library == "torch":

        def backward():
            net.zero_grad()
            loss(net(X), Y).backward()

        return backward
    if library == "backpack":
        import backpack.extensions as ext
        from backpack import backpack, extend

        net, loss = extend(net), extend(loss)
        extension = getattr(ext, BACKPACK_EXTENSIONS[quantity])()

        def call():
            net.zero_grad()
            with backpack(extension):
                loss(net(X), Y).backward()

        return call
    if library == "torch.func":
        from torch.func import functional_call, grad, jvp, vjp, vmap

        named = {k: p.detach() for k, p in net.named_parameters()}
        tangent, start = {}, 0
        for k, p in named.items():
            tangent[k] = V[start : start + p.numel()].view_as(p)
            start += p.numel()

        def cost(p):
            return loss(functional_call(net, p, (X,)), Y)

        if quantity == "per-sample-grad":

            def one(p, xi, yi):
                return loss(functional_call(net, p, (xi[None],)), yi[None])

            return lambda: vmap(grad(one), in_dims=(None, 0, 0))(named, X, Y)
        if quantity == "hvp":
            return lambda: jvp(grad(cost), (named,), (tangent,))[1]

        def ggnvp():
            f, jv = jvp(lambda p: functional_call(net, p, (X,)), (named,), (tangent,))
            _, hjv = jvp(grad(lambda out: loss(out, Y)), (f,), (jv,))
            _, pull = vjp(lambda p: functional_call(net, p, (X,)), named)
            return pull(hjv)[0]

        return ggnvp
    if library == "opacus":
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        gsm = GradSampleModule(net, loss_reduction="mean")
        if quantity == "per-sample-grad":

            def call():
                gsm.zero_grad()
                loss(gsm(X), Y).backward()

            return call
        optimizer = DPOptimizer(
            torch.optim.SGD(gsm.parameters(), lr=1e-9),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=X.shape[0],
        )

        def step():
            optimizer.zero_grad()
            loss(gsm(X), Y).backward()
            optimizer.step()

        return step
    import curvlinops

    quick = {"check_deterministic": False}
    if quantity == "kfac":
        per_example = 16 if model == "lstm" else None

        def factors():  # the factors are computed lazily: asked for explicitly
            op = curvlinops.KFACLinearOperator(
                net,
                loss,
                params,
                data,
                **quick,
                num_per_example_loss_terms=per_example,
                separate_weight_and_bias=False,
            )
            return op.compute_kronecker_factors()

        return factors
    operator = {
        "hvp": curvlinops.HessianLinearOperator,
        "lanczos": curvlinops.HessianLinearOperator,
        "ggnvp": curvlinops.GGNLinearOperator,
        "hutchinson": curvlinops.GGNLinearOperator,
        "efvp": curvlinops.EFLinearOperator,
    }[quantity]
    if quantity == "hutchinson":
        return lambda: curvlinops.hutchinson_trace(
            operator(net, loss, params, data, **quick), HUTCHINSON_DRAWS
        )
    if quantity == "lanczos":
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        def top():
            op = operator(net, loss, params, data, **quick).to_scipy()
            try:  # one Lanczos run of LANCZOS_STEPS steps, as ours; no restart
                return eigsh(op, k=1, ncv=LANCZOS_STEPS, maxiter=1, tol=0)
            except ArpackNoConvergence as e:
                return e.eigenvalues

        return top
    return lambda: operator(net, loss, params, data, **quick) @ V


def worker(model: str, library: str, quantity: str, dtype: str, repeats: int) -> None:
    """Time one (model, library, quantity) in this process (:func:`_curvature_bench.report`)."""
    if library == "manual_bp":
        report(lambda: _manual(model, quantity, dtype), repeats)
    else:
        report(lambda: _peer(model, library, quantity, dtype), repeats)


def _table(models, quantities, medians, dtype) -> list[dict]:
    """Print and return one row per (model, quantity): manual_bp's median wall and CPU
    time, the fastest peer's (by CPU time) and the ratios manual_bp ÷ that peer."""
    rows = []
    print(f"{dtype}, one thread, median ms per call (each in its own process); '—': not covered")
    print("ratio = manual_bp ÷ fastest peer, by CPU time (robust under load) and by wall time")
    head = f"{'model':<5} {'quantity':<17} {'ours cpu':>9} {'fastest peer':<22} {'its cpu':>9}"
    print(f"{head} {'ratio cpu':>9} {'ratio wall':>10}  not covered")
    for m in models:
        for q in quantities:
            times = {lib: medians.get((m, lib, q)) for lib in QUANTITIES[q]}
            ours = times.pop("manual_bp")
            peers = {lib: t for lib, t in times.items() if t is not None}
            missing = [lib for lib, t in times.items() if t is None]
            row = {"model": m, "quantity": q, "not_covered": missing}
            row["manual_bp_ms"] = None if ours is None else {k: 1e3 * t for k, t in ours.items()}
            row["peers_ms"] = {lib: {k: 1e3 * v for k, v in t.items()} for lib, t in peers.items()}
            rows.append(row)
            mine = "—" if ours is None else f"{1e3 * ours['cpu']:.1f}"
            if not peers:
                print(f"{m:<5} {q:<17} {mine:>9} {'—':<22} {'':>9} {'':>9} {'':>10}  {missing}")
                continue
            best = min(peers, key=lambda lib: peers[lib]["cpu"])
            row["fastest"] = best
            ratios = ("", "")
            if ours is not None:
                row["ratio_cpu"] = ours["cpu"] / peers[best]["cpu"]
                row["ratio_wall"] = ours["wall"] / min(t["wall"] for t in peers.values())
                ratios = (f"{row['ratio_cpu']:.2f}", f"{row['ratio_wall']:.2f}")
            its = f"{1e3 * peers[best]['cpu']:.1f}"
            print(f"{m:<5} {q:<17} {mine:>9} {best:<22} {its:>9} {ratios[0]:>9} {ratios[1]:>10}"
                  f"  {', '.join(missing)}")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "LIBRARY", "QUANTITY"))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--quantities", help="comma-separated (default: all)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the table's rows here")
    parser.add_argument("--quick", action="store_true", help="1 round × 2 repeats, 6 quantities")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.dtype, args.repeats)
        return
    if args.quick:
        args.rounds, args.repeats = 1, 2
    models = args.models.split(",")
    default = QUICK if args.quick else tuple(QUANTITIES)
    quantities = args.quantities.split(",") if args.quantities else list(default)
    for name, given, known in (
        ("--models", models, MODELS),
        ("--quantities", quantities, QUANTITIES),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"{name}: unknown {unknown}; known: {', '.join(known)}")
    triples = [(m, lib, q) for m in models for q in quantities for lib in QUANTITIES[q]]
    extra = ["--dtype", args.dtype, "--repeats", str(args.repeats)]
    found = run_rounds(__file__, triples, args.rounds, extra)
    medians = {t: run for t, run in found.items() if run is not None}
    rows = _table(models, quantities, medians, args.dtype)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
