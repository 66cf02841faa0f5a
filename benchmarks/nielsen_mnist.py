"""Reproduce Nielsen's MNIST results (ch. 1 and ch. 3) with manual_bp.

Usage::

    python benchmarks/nielsen_mnist.py [--mnist DIR] [--runs 3] [--quick] [--only NAME ...]
                                       [--json FILE]

Each experiment is run ``--runs`` times with seeds 1, 2, ... (the seed drives both
the initialiser and the shuffling) and the best run is reported, as the book did
("best of three"). After every epoch the accuracy on the validation split (the
last 10 000 training images) and on the test split (t10k) is recorded; the table
shows the peak and final accuracy on the split the book quotes, next to the
book's figure, and the mean training seconds per epoch (monitoring excluded).

What the book compares (read carefully):

* ch. 1 (``network.py``, ``SGD(training_data, 30, 10, 3.0, test_data=test_data)``):
  accuracy on ``test_data`` = the t10k test set, best epoch of the best of three runs;
  weights and biases drawn from N(0, 1) (our ``initializer="large"``).
* ch. 3, regularisation section (``network2.py``): ``net.large_weight_initializer()``
  is called before training, so these runs also use N(0, 1) weights. [784,30,10],
  η=0.5, λ=5.0, 30 epochs: 96.49 % on ``test_data`` (t10k); [784,100,10], η=0.1,
  λ=5.0, 60 epochs: 98.04 % on ``validation_data``.
* ``*-init`` variants: the same ch. 3 runs with the default initialiser
  W ~ N(0, 1/n_in) of ch. 3's weight-initialisation section, where the book only
  says both sizes "end up" at about 96 % and 98 %.

``--quick`` trains each experiment once on 10 000 images for 3 epochs, to check
the script runs (the accuracies are then not comparable with the book's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from manual_bp.training import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from manual_bp import Network  # noqa: E402
from manual_bp.data import default_mnist_dir, load_mnist  # noqa: E402


@dataclass(frozen=True)
class Experiment:
    name: str
    chapter: str
    sizes: tuple[int, ...]
    cost: str
    eta: float
    lmbda: float
    epochs: int
    initializer: str
    compare_split: str  # "test" or "validation": where the book's figure was measured
    book: float | None  # percent
    batch_size: int = 10


EXPERIMENTS = (
    Experiment("ch1-30", "1", (784, 30, 10), "quadratic", 3.0, 0.0, 30, "large", "test", 95.42),
    Experiment("ch1-100", "1", (784, 100, 10), "quadratic", 3.0, 0.0, 30, "large", "test", 96.59),
    Experiment("ch3-30", "3", (784, 30, 10), "cross-entropy", 0.5, 5.0, 30, "large", "test", 96.49),
    Experiment(
        "ch3-100", "3", (784, 100, 10), "cross-entropy", 0.1, 5.0, 60, "large", "validation", 98.04
    ),
    Experiment(
        "ch3-30-init",
        "3",
        (784, 30, 10),
        "cross-entropy",
        0.5,
        5.0,
        30,
        "default",
        "validation",
        None,
    ),
    Experiment(
        "ch3-100-init",
        "3",
        (784, 100, 10),
        "cross-entropy",
        0.1,
        5.0,
        60,
        "default",
        "validation",
        None,
    ),
)


@dataclass
class Run:
    seed: int
    validation: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def curve(self, split: str) -> list[float]:
        return self.validation if split == "validation" else self.test


def run_experiment(experiment: Experiment, data, seed: int, *, n_train: int, epochs: int) -> Run:
    """Train one network; accuracy on validation and test after every epoch."""
    net = Network(
        experiment.sizes,
        "sigmoid",
        experiment.cost,
        initializer=experiment.initializer,
        seed=seed,
    )
    run = Run(seed)

    def record(epoch, history):
        run.validation.append(100 * net.accuracy(data.x_val, data.y_val))
        run.test.append(100 * net.accuracy(data.x_test, data.y_test))
        run.epoch_seconds.append(history.epoch_seconds[-1])
        print(
            f"  {experiment.name} seed {seed} epoch {epoch:2d}/{epochs}: "
            f"validation {run.validation[-1]:.2f} %  test {run.test[-1]:.2f} %  "
            f"{history.epoch_seconds[-1]:.2f} s",
            flush=True,
        )

    train(
        net,
        data.x_train[:n_train],
        data.y_train[:n_train],
        epochs=epochs,
        batch_size=experiment.batch_size,
        eta=experiment.eta,
        lmbda=experiment.lmbda,
        monitor=(),
        seed=seed,
        callbacks=[record],
    )
    return run


def summarise(experiment: Experiment, runs: list[Run]) -> dict:
    split = experiment.compare_split
    best = max(runs, key=lambda r: max(r.curve(split)))
    peak = max(best.curve(split))
    return {
        "experiment": asdict(experiment),
        "runs": [asdict(r) for r in runs],
        "best_seed": best.seed,
        "peak": peak,
        "peak_epoch": best.curve(split).index(peak) + 1,
        "final": best.curve(split)[-1],
        "peak_per_seed": {r.seed: max(r.curve(split)) for r in runs},
        "seconds_per_epoch": float(np.mean([s for r in runs for s in r.epoch_seconds])),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| experiment | split | book % | ours: best peak % (epoch, seed) | final % | "
        "peaks per seed | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e = r["experiment"]
        book = "—" if e["book"] is None else f"{e['book']:.2f}"
        peaks = ", ".join(f"{v:.2f}" for v in r["peak_per_seed"].values())
        lines.append(
            f"| {e['name']} | {e['compare_split']} | {book} | {r['peak']:.2f} "
            f"({r['peak_epoch']}, {r['best_seed']}) | {r['final']:.2f} | {peaks} | "
            f"{r['seconds_per_epoch']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, default=default_mnist_dir(), metavar="DIR")
    parser.add_argument("--runs", type=int, default=3, help="seeds per experiment (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 run, 10 000 images, 3 epochs")
    parser.add_argument(
        "--only", nargs="+", choices=[e.name for e in EXPERIMENTS], help="experiments to run"
    )
    parser.add_argument("--json", type=Path, help="also write all curves to this JSON file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = load_mnist(args.mnist)
    print(f"loaded {data} from {args.mnist} in {time.perf_counter() - start:.1f} s", flush=True)
    runs = 1 if args.quick else args.runs
    n_train = 10_000 if args.quick else data.x_train.shape[0]
    results = []
    for experiment in EXPERIMENTS:
        if args.only and experiment.name not in args.only:
            continue
        epochs = 3 if args.quick else experiment.epochs
        runs_done = [
            run_experiment(experiment, data, seed, n_train=n_train, epochs=epochs)
            for seed in range(1, runs + 1)
        ]
        results.append(summarise(experiment, runs_done))
        print(table(results[-1:]), flush=True)
        if args.json:  # after every experiment, so a partial run leaves its figures
            args.json.write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
