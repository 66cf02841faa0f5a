"""An LSTM on a synthetic sequence task, manual_bp (NumPy) against the same model in torch.

Embedding → (bi)LSTM → dense → softmax under the log-likelihood cost, Adam, identical
initial parameters and mini-batch order in both; gradient-norm clipping and optional
truncated BPTT. Prints accuracy and wall time of each. ``reverse`` needs the future of
the sequence, hence a bidirectional LSTM; ``copy`` works with a unidirectional one.

    python benchmarks/bench_sequence.py --task reverse --epochs 12
    python benchmarks/bench_sequence.py --kernels      # one LSTM layer: fast, readable, torch

``--kernels`` times forward + backward (BPTT with random upstream gradients on the output
sequence and the final states) of one LSTM layer in its two implementations and in
``torch.nn.LSTM`` (float64, 1 thread), in the same run, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import time

# One BLAS thread (set before NumPy loads its BLAS), as torch.set_num_threads(1) below: on a
# shared 2-core machine OpenBLAS's second thread made a (64, 64) × (64, 256) product 15×
# slower (measured 6.0 ms vs 0.36 ms per product at load 4.5).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from manual_bp.models.sequential import Sequential  # noqa: E402
from manual_bp.optimizers import Adam  # noqa: E402
from manual_bp.sequence_data import load_task  # noqa: E402
from manual_bp.sequence_training import train_sequences  # noqa: E402


def build(task: str, length: int, vocab: int, hidden: int, seed: int) -> Sequential:
    bidirectional = task == "reverse"
    return Sequential.from_spec(
        [
            ("embedding", (vocab, 16), {}),
            ("lstm", (hidden,), {"bidirectional": bidirectional}),
            "dense",
            "softmax",
        ],
        input_shape=(length,),
        n_outputs=vocab,
        cost="log-likelihood",
        seed=seed,
    )


class TorchModel(torch.nn.Module):
    def __init__(self, model: Sequential) -> None:
        super().__init__()
        emb, lstm, dense = model.layers[:3]
        self.emb = torch.nn.Embedding(emb.num_embeddings, emb.embedding_dim)
        self.lstm = torch.nn.LSTM(
            lstm.input_size, lstm.hidden_size, bidirectional=lstm.bidirectional, batch_first=True
        )
        self.dense = torch.nn.Linear(dense.in_features, dense.out_features)
        for module, layer in ((self.emb, emb), (self.lstm, lstm), (self.dense, dense)):
            module.load_state_dict({k: torch.tensor(v) for k, v in layer.params.items()})
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.lstm(self.emb(x))[0])


def train_torch(model: TorchModel, x, y, epochs, batch_size, lr, max_norm, seed) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)  # the same batch order as train_sequences
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for begin in range(0, len(x), batch_size):
            rows = torch.tensor(order[begin : begin + batch_size])
            logits = model(xt[rows])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), yt[rows].reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()


def time_lstm_kernels(
    batch: int, length: int, input_size: int, hidden: int, repeats: int, seed: int = 0
) -> dict[str, float]:
    """Median seconds of one forward + backward of an LSTM layer, per implementation."""
    from manual_bp.layers.recurrent import LSTM

    rng = np.random.default_rng(seed)
    fast = LSTM(input_size, hidden, batch_first=True, seed=seed)
    readable = LSTM(input_size, hidden, batch_first=True, implementation="readable")
    for name, array in fast.params.items():
        readable.params[name][...] = array
    x = rng.standard_normal((batch, length, input_size))
    d_out = rng.standard_normal((batch, length, hidden))
    d_h, d_c = rng.standard_normal((2, 1, batch, hidden))
    module = torch.nn.LSTM(input_size, hidden, batch_first=True, dtype=torch.float64)
    module.load_state_dict({k: torch.tensor(v) for k, v in fast.params.items()})
    xt = torch.tensor(x, requires_grad=True)
    upstream = [torch.tensor(a) for a in (d_out, d_h, d_c)]

    def ours(layer) -> None:
        _, _, cache = layer.forward_sequence(x)
        layer.backward_sequence(d_out, d_h, d_c, cache)

    def theirs() -> None:
        out, (h, c) = module(xt)
        torch.autograd.backward((out, h, c), upstream)

    timings = {}
    for name, run in (("fast", lambda: ours(fast)), ("readable", lambda: ours(readable)),
                      ("torch", theirs)):  # fmt: skip
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        timings[name] = float(np.median(samples))
    return timings


def kernel_row(args: argparse.Namespace) -> None:
    shape = (args.batch_size, args.kernel_length, args.kernel_input, args.hidden)
    t = time_lstm_kernels(*shape, repeats=args.repeats, seed=args.seed)
    print(f"LSTM layer forward+backward, N={shape[0]} T={shape[1]} I={shape[2]} H={shape[3]}, "
          f"float64, median of {args.repeats}")  # fmt: skip
    fast, readable, reference = (1e3 * t[k] for k in ("fast", "readable", "torch"))
    print(f"  fast      {fast:8.2f} ms")
    print(f"  readable  {readable:8.2f} ms   readable/fast {readable / fast:.2f}×")
    print(f"  torch     {reference:8.2f} ms   fast/torch {fast / reference:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reverse", choices=("copy", "reverse", "sum"))
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--max-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernels", action="store_true", help="time one LSTM layer only")
    parser.add_argument("--kernel-length", type=int, default=50)
    parser.add_argument("--kernel-input", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.kernels:
        kernel_row(args)
        return
    data = load_task(
        args.task, n_train=args.n_train, length=args.length, vocab=args.vocab, seed=args.seed
    )
    model = build(args.task, args.length, args.vocab, args.hidden, args.seed)
    reference = TorchModel(model)

    start = time.perf_counter()
    history = train_sequences(
        model, Adam(lr=args.lr), data.x_train, data.y_train, epochs=args.epochs,
        batch_size=args.batch_size, max_norm=args.max_norm, seed=args.seed,
    )  # fmt: skip
    ours_time = time.perf_counter() - start
    ours_acc = model.accuracy(data.x_test, data.y_test)

    start = time.perf_counter()
    train_torch(reference, data.x_train, data.y_train, args.epochs, args.batch_size, args.lr,
                args.max_norm, args.seed)  # fmt: skip
    torch_time = time.perf_counter() - start
    with torch.no_grad():
        predicted = reference(torch.tensor(data.x_test)).argmax(-1).numpy()
    torch_acc = float(np.mean(predicted == data.y_test))

    print(f"task {data.name}, {model.n_parameters} parameters, {args.epochs} epochs")
    print(f"cost per epoch (manual_bp): {' '.join(f'{c:.4f}' for c in history)}")
    print(f"manual_bp  test accuracy {ours_acc:.4f}  time {ours_time:.1f} s")
    print(f"torch CPU  test accuracy {torch_acc:.4f}  time {torch_time:.1f} s (1 thread)")


if __name__ == "__main__":
    main()
