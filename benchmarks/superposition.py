"""Training time of chapter 3's sweeps, and what training instances together buys.

    python benchmarks/superposition.py [--steps N] [--threads T]

Prints, per configuration of the notebook, milliseconds per training step (wall clock, and
the process's CPU time, which is close to what a quiet machine takes when the machine is
busy) and the time the notebook's number of steps takes; then the 5 -> 2 sweep trained one
model at a time, for comparison.
"""

import argparse
import time

import torch

from solutions.superposition import (AbsoluteValueModel, NeuronModel, ToyModel, generate_signed_sparse_features,
                                     train_toy_models)


def per_step(model, steps, batch_size, **training):
    """(wall, cpu) seconds per training step of ``model`` on a sparse sweep."""
    p = torch.logspace(0, -2, model.n_instances)[:, None]
    wall, cpu = time.perf_counter(), time.process_time()
    train_toy_models(model, p, steps=steps, batch_size=batch_size, lr=1e-2, progress=False, **training)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def signed(n_instances, n_features):
    return lambda batch_size, generator: generate_signed_sparse_features(batch_size, n_instances, n_features, 0.1,
                                                                         generator)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_step(ToyModel(5, 2, 1), 5, 64)  # warm-up: the first optimiser step imports torch._dynamo
    configurations = [  # (name, model, batch size, the notebook's steps, extra training arguments)
        ("5 -> 2, 8 sparsities x 3 seeds", ToyModel(5, 2, 24), 512, 3_000, {}),
        ("20 -> 5, ReLU", ToyModel(20, 5, 10), 256, 3_000, {}),
        ("2 -> 1, 8x8 phase diagram", ToyModel(2, 1, 64), 256, 2_000, {}),
        ("neurons 10 -> 5, 5 sparsities x 3", NeuronModel(10, 5, 15), 256, 3_000, {}),
        ("|x|, 20 features, 10 neurons, x4", AbsoluteValueModel(20, 10, 4), 512, 3_000,
         {"sampler": signed(4, 20), "target": torch.abs}),
    ]
    print(f"{args.threads} thread(s), {args.steps} steps per measurement")
    print(f"{'configuration':36s} {'ms/step':>8s} {'cpu ms':>7s} {'notebook run':>13s}")
    for name, model, batch_size, steps, training in configurations:
        wall, cpu = per_step(model, args.steps, batch_size, **training)
        print(f"{name:36s} {1e3 * wall:8.2f} {1e3 * cpu:7.2f} {steps * wall:11.1f} s")
    wall, cpu = per_step(ToyModel(5, 2, 1), args.steps, 512)
    print(f"{'5 -> 2, the 24 models one at a time':36s} {24e3 * wall:8.2f} {24e3 * cpu:7.2f} {72_000 * wall:11.1f} s")


if __name__ == "__main__":
    main()
