"""Training time of chapter 3's toy-model sweeps, and what training instances together buys.

    python benchmarks/superposition.py [--steps N] [--threads T]

Prints, per configuration, milliseconds per training step and the time a 5,000-step run
takes; then the same 8 instances trained one model at a time, for comparison.
"""

import argparse
import time

import torch

from solutions.superposition import ToyModel, train_toy_models


def seconds(n_features, d_hidden, n_instances, steps, batch_size=1024, relu=True):
    model = ToyModel(n_features, d_hidden, n_instances, relu=relu, generator=torch.Generator().manual_seed(0))
    p = torch.logspace(0, -2, n_instances)[:, None]
    start = time.perf_counter()
    train_toy_models(model, p, 0.9 ** torch.arange(float(n_features)), steps=steps, batch_size=batch_size,
                     lr=1e-2, progress=False)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seconds(5, 2, 1, 5)  # warm-up: the first optimiser step imports torch._dynamo
    configurations = [  # (name, n_features, d_hidden, n_instances, batch_size)
        ("5 -> 2, the sparsity sweep", 5, 2, 8, 1024),
        ("20 -> 5, ReLU vs linear (each)", 20, 5, 10, 512),
        ("2 -> 1, 8x8 phase diagram", 2, 1, 64, 512),
    ]
    print(f"{args.threads} thread(s), {args.steps} steps per measurement")
    print(f"{'configuration':34s} {'ms/step':>8s} {'5k steps':>9s}")
    for name, n_features, d_hidden, n_instances, batch_size in configurations:
        per_step = seconds(n_features, d_hidden, n_instances, args.steps, batch_size) / args.steps
        print(f"{name:34s} {1e3 * per_step:8.2f} {5_000 * per_step:8.1f}s")
    one_at_a_time = sum(seconds(5, 2, 1, args.steps) for _ in range(8)) / args.steps
    print(f"{'5 -> 2, 8 models one at a time':34s} {1e3 * one_at_a_time:8.2f} {5_000 * one_at_a_time:8.1f}s")


if __name__ == "__main__":
    main()
