"""What the peers have, timed: manual_bp against BackPACK, curvlinops, Opacus and torch.func.

MLP 784-256-256-10, tanh, cross-entropy, batch 128 (random data, seeded), one thread. Every
(library, quantity) pair runs in its OWN fresh process (``--worker LIB QUANTITY``), which
builds the model, runs the quantity once untimed, then ``--repeats`` timed times and prints
its times as JSON; the driver starts these processes interleaved — round ``r`` runs every
pair once, in an order rotated by ``r`` — so the load of other processes hits all alike, and
reports per pair the median over rounds of the per-process medians, and per quantity
manual_bp's time ÷ the fastest peer's, by CPU time (the scaffold is
``benchmarks/_curvature_bench.py``, shared with ``bench_curvature_models.py``). Nothing is
asserted.

Quantities and the peers that have them:

==================  =======================================================================
per-sample-grad     BackPACK ``BatchGrad``, Opacus ``GradSampleModule``, ``vmap(grad)``
sqrt-ggn            BackPACK ``SqrtGGNExact``
efvp                curvlinops ``EFLinearOperator @ v``
hutchinson-ggn      curvlinops ``hutchinson_trace(GGNLinearOperator, 10)``
kfac-inverse        curvlinops ``KFACInverseLinearOperator`` (type-2, exact damping) ``@ v``,
                    factors included
ekfac               curvlinops ``EKFACLinearOperator`` (type-2) ``@ v``, factors included
dp-sgd-step         Opacus ``DPOptimizer.step`` after the per-sample backward
==================  =======================================================================

Usage::

    python benchmarks/bench_curvature_peers.py                    # float64, 5 rounds × 5 repeats
    python benchmarks/bench_curvature_peers.py --dtype float32 --rounds 7
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's manual_bp
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared scaffold

from _curvature_bench import report, run_rounds

SIZES = (784, 256, 256, 10)
BATCH = 128
HUTCHINSON_DRAWS = 10

#: quantity -> the libraries that have it ("manual_bp" first).
QUANTITIES = {
    "per-sample-grad": ("manual_bp", "backpack", "opacus", "torch.func"),
    "sqrt-ggn": ("manual_bp", "backpack"),
    "efvp": ("manual_bp", "curvlinops"),
    "hutchinson-ggn": ("manual_bp", "curvlinops"),
    "kfac-inverse": ("manual_bp", "curvlinops"),
    "ekfac": ("manual_bp", "curvlinops"),
    "dp-sgd-step": ("manual_bp", "opacus"),
}


#: Left out unless named in ``--only``: the factor is (10, 128, 269 322) — 2.8 GB in float64.
LARGE = ("sqrt-ggn",)


def _data(dtype):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], BATCH)
    v = rng.standard_normal(sum(a * b + b for a, b in itertools.pairwise(SIZES))).astype(dtype)
    return x, y, v


def _manual(quantity: str, dtype):
    import numpy as np

    from manual_bp import Dense, Sequential
    from manual_bp.curvature.dp import dp_sgd_step
    from manual_bp.curvature.fisher import efvp
    from manual_bp.curvature.hutchinson import hutchinson_trace
    from manual_bp.curvature.kfac import kflr
    from manual_bp.curvature.kfac_inverse import ekfac, ekfac_product, kfac_inverse_product
    from manual_bp.curvature.per_sample import per_sample_gradients
    from manual_bp.curvature.sqrt_ggn import sqrt_ggn
    from manual_bp.layers.activation import ActivationLayer

    layers = []
    for a, b in itertools.pairwise(SIZES):
        layers += [Dense(a, b, dtype=dtype), ActivationLayer("tanh")]
    model = Sequential(layers[:-1], "categorical-cross-entropy", dtype=dtype)
    x, y, v = _data(dtype)
    calls = {
        "per-sample-grad": lambda: per_sample_gradients(model, x, y),
        "sqrt-ggn": lambda: sqrt_ggn(model, x, y),
        "efvp": lambda: efvp(model, x, y, v),
        "hutchinson-ggn": lambda: hutchinson_trace(
            model, x, y, matrix="ggn", n_samples=HUTCHINSON_DRAWS
        ),
        "kfac-inverse": lambda: kfac_inverse_product(
            model, kflr(model, x, y), v, 1e-3, mode="exact"
        ),
        "ekfac": lambda: ekfac_product(model, ekfac(model, x, y), v),
        "dp-sgd-step": lambda: dp_sgd_step(
            model, x, y, lr=1e-9, max_grad_norm=1.0, noise_multiplier=1.0, rng=0
        ),
    }
    np.seterr(all="ignore")
    return calls[quantity]


def _torch_model(dtype):
    import torch

    torch.manual_seed(0)
    layers = []
    for a, b in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).to(dtype)


def _peer(library: str, quantity: str, dtype):
    import warnings

    import torch

    warnings.simplefilter("ignore")
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    x, y, v = _data(dtype)
    X, Y, V = torch.tensor(x), torch.tensor(y), torch.tensor(v)
    net = _torch_model(tdtype)
    loss = torch.nn.CrossEntropyLoss()
    params = list(net.parameters())
    data = [(X, Y)]
    if library == "backpack":
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad, SqrtGGNExact

        net, loss = extend(net), extend(loss)
        extension = {"per-sample-grad": BatchGrad, "sqrt-ggn": SqrtGGNExact}[quantity]()

        def call():
            net.zero_grad()
            with backpack(extension):
                loss(net(X), Y).backward()

        return call
    if library == "torch.func":
        from torch.func import functional_call, grad, vmap

        named = {k: p.detach() for k, p in net.named_parameters()}

        def one(p, xi, yi):
            return loss(functional_call(net, p, (xi[None],)), yi[None])

        return lambda: vmap(grad(one), in_dims=(None, 0, 0))(named, X, Y)
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
            expected_batch_size=BATCH,
        )

        def step():
            optimizer.zero_grad()
            loss(gsm(X), Y).backward()
            optimizer.step()

        return step
    import curvlinops

    quick = {"check_deterministic": False}
    if quantity == "efvp":
        return lambda: curvlinops.EFLinearOperator(net, loss, params, data, **quick) @ V
    if quantity == "hutchinson-ggn":
        return lambda: curvlinops.hutchinson_trace(
            curvlinops.GGNLinearOperator(net, loss, params, data, **quick), HUTCHINSON_DRAWS
        )
    options = {"fisher_type": "type-2", "separate_weight_and_bias": False, **quick}
    if quantity == "kfac-inverse":
        return lambda: (
            curvlinops.KFACInverseLinearOperator(
                curvlinops.KFACLinearOperator(net, loss, params, data, **options),
                damping=1e-3,
                use_exact_damping=True,
            )
            @ V
        )
    return lambda: curvlinops.EKFACLinearOperator(net, loss, params, data, **options) @ V


def worker(library: str, quantity: str, dtype: str, repeats: int) -> None:
    """Time one (library, quantity) in this process (:func:`_curvature_bench.report`)."""
    if library == "manual_bp":
        report(lambda: _manual(quantity, dtype), repeats)
    else:
        report(lambda: _peer(library, quantity, dtype), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "QUANTITY"))
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="comma-separated quantities")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.dtype, args.repeats)
        return
    quantities = args.only.split(",") if args.only else [q for q in QUANTITIES if q not in LARGE]
    pairs = [(lib, q) for q in quantities for lib in QUANTITIES[q]]
    extra = ["--dtype", args.dtype, "--repeats", str(args.repeats)]
    medians = run_rounds(__file__, pairs, args.rounds, extra)
    missing = [pair for pair, run in medians.items() if run is None]
    if missing:
        raise SystemExit(f"not covered: {missing}")
    print(f"{args.dtype}, MLP {'-'.join(map(str, SIZES))} tanh, batch {BATCH}, one thread")
    print("median ms per call by CPU time (robust under load), wall time beside it")
    head = f"{'quantity':<16} {'library':<11} {'cpu ms':>8} {'wall ms':>8}"
    print(f"{head}  ratio manual_bp / fastest (cpu)")
    for q in quantities:
        times = {lib: medians[(lib, q)] for lib in QUANTITIES[q]}
        fastest = min(t["cpu"] for lib, t in times.items() if lib != "manual_bp")
        for lib, t in times.items():
            ratio = f"{times['manual_bp']['cpu'] / fastest:.2f}" if lib == "manual_bp" else ""
            print(f"{q:<16} {lib:<11} {1e3 * t['cpu']:>8.2f} {1e3 * t['wall']:>8.2f}  {ratio}")


if __name__ == "__main__":
    main()
