"""Train a recipe's network through ``fastprop.train`` and print its validation curve and test accuracy.

``python benchmarks/recipe_run.py cnn-bn --epochs 12`` (or ``mlp``, with ``--norm``, ``--dropout``,
``--learning-rate``, ``--augment``): Fashion-MNIST split with seed 0, the network built with seed 0,
Adam with a cosine schedule over the run, batch 128, the Numba backend in float32. It varies what
``fastprop train --model`` fixes, for tuning a recipe.
"""

from __future__ import annotations

import argparse
import time

import fastprop
from fastprop.datasets import load_split_and_test
from fastprop.models import cnn_network, mlp_network
from fastprop.schedules import CosineLR

NETWORKS = {"cnn-bn": lambda a: cnn_network(rng=0, dropout=a.dropout, norm=True),
            "cnn": lambda a: cnn_network(rng=0, dropout=a.dropout, norm=a.norm),
            "mlp": lambda a: mlp_network(rng=0, dropout=a.dropout, norm=a.norm)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", choices=sorted(NETWORKS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--norm", action="store_true")
    parser.add_argument("--augment", type=int, default=0)
    parser.add_argument("--backend", default="numba")
    args = parser.parse_args()
    *data, test_images, test_labels = load_split_and_test("fashion-mnist", seed=0)
    start = time.perf_counter()
    with fastprop.use_backend(args.backend, "float32"):
        net = NETWORKS[args.network](args)
        history = fastprop.train(
            net, fastprop.SoftmaxCrossEntropy(), args.epochs, 128, args.learning_rate, data=data,
            shuffle=True, seed=0, quiet=True, verbose=False, optimizer=fastprop.Adam(args.learning_rate),
            schedule=CosineLR(args.epochs), augment=fastprop.Augment(args.augment) if args.augment else None)
        accuracy = fastprop.validate(net, test_images, test_labels, 10000)
    print("validation", [round(a, 4) for a in history.accuracy])
    print(f"test accuracy {accuracy:.4f} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
