"""An LSTM on a synthetic sequence task, manual_bp (NumPy) against the same model in torch.

Embedding → (bi)LSTM → dense → softmax under the log-likelihood cost, Adam, identical
initial parameters and mini-batch order in both; gradient-norm clipping and optional
truncated BPTT. Prints accuracy and wall time of each. ``reverse`` needs the future of
the sequence, hence a bidirectional LSTM; ``copy`` works with a unidirectional one.

    python benchmarks/bench_sequence.py --task reverse --epochs 12
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from manual_bp.optimizers import Adam
from manual_bp.sequence_data import load_task
from manual_bp.sequence_training import train_sequences
from manual_bp.sequential import Sequential


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
    args = parser.parse_args()
    torch.set_num_threads(1)
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
