"""Train the LeNet-5-style CNN of ``bench_cnn.py`` on MNIST with Adam; print test accuracy.

Usage: ``nice python benchmarks/lenet_mnist.py --epochs 6 --seed 0 [--dtype float32]``.
Data: ``--mnist`` or ``$MANUAL_BP_MNIST_DIR`` or ``../shared/data/mnist``. Training images: the
first 50 000 (Nielsen's split); accuracy on the 10 000 test images after every epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cnn import lenet  # noqa: E402

from manual_bp import Adam  # noqa: E402
from manual_bp.data import default_mnist_dir, load_mnist  # noqa: E402
from manual_bp.training import train  # noqa: E402


def accuracy(model, x: np.ndarray, y: np.ndarray, chunk: int = 500) -> float:
    """Fraction of correct argmax predictions, in chunks (im2col memory grows with the batch)."""
    correct = 0
    for start in range(0, len(x), chunk):
        out = model.infer(x[start : start + chunk])
        correct += int((out.argmax(axis=1) == y[start : start + chunk]).sum())
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", default=str(default_mnist_dir()))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    data = load_mnist(args.mnist, dtype=args.dtype)
    model = lenet(args.dtype)
    model.reset_parameters(args.seed)
    optimizer = Adam(lr=args.lr)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        train(model, data.x_train, data.y_train, epochs=1, batch_size=args.batch_size,
              optimizer=optimizer, monitor=(), seed=args.seed + epoch)  # fmt: skip
        seconds = time.perf_counter() - start
        test = accuracy(model, data.x_test, data.y_test)
        print(f"epoch {epoch + 1}: {seconds:.1f} s, test accuracy {100 * test:.2f} %", flush=True)


if __name__ == "__main__":
    main()
