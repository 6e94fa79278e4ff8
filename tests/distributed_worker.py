"""Run by tests/test_distributed.py under ``mpiexec -n N python -m mpi4py``: trains and saves each
rank's parameters and history to ``<out>.<rank>.npz``."""

from __future__ import annotations

import argparse

import numpy

import fastprop
from fastprop import distributed
from tests.conftest import separable_problem


def build(model):
    fastprop.seed(5)
    if model == "seed":
        return fastprop.Network([fastprop.Linear(40, 10), fastprop.Sigmoid()]), fastprop.MeanSquareError()
    layers = [fastprop.Linear(40, 24, init="he"), fastprop.ReLU(), fastprop.Linear(24, 10, init="xavier")]
    return fastprop.Network(layers), fastprop.SoftmaxCrossEntropy()


def run(backend, model, epochs, out=None, checkpoint=None, fail_rank=None, optimizer=None, communicator=None,
        shard=False):
    x, t = separable_problem(700, seed=2)
    data = (x[:500], t[:500], x[500:], t[500:])
    if shard:  # each rank only its own part of the rows, as some launch scripts split data
        data = tuple(a[communicator.rank::communicator.size] for a in data)
    with fastprop.use_backend(backend, "float64"):
        net, cost = build(model)
        optimizer = fastprop.Adam(1e-2) if optimizer == "adam" else None

        def schedule(epoch):
            if fail_rank is not None and communicator.rank == fail_rank and epoch == 2:
                raise RuntimeError(f"rank {communicator.rank} fails on purpose")
            return 1.0

        history = fastprop.train(net, cost, epochs, 64, 0.05, data=data, shuffle=True, seed=3, quiet=True,
                                 verbose=False, optimizer=optimizer, schedule=schedule, checkpoint=checkpoint,
                                 communicator=communicator)
    arrays = {f"p{i}": parameter.value for i, parameter in enumerate(net.parameters())}
    if out is not None:
        numpy.savez(f"{out}.{communicator.rank}.npz", cost=history.cost, accuracy=history.accuracy, **arrays)
    return history, arrays


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--model", default="seed")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--optimizer", default=None)
    parser.add_argument("--shard", action="store_true")
    args = parser.parse_args()
    run(args.backend, args.model, args.epochs, args.out, args.checkpoint, args.fail_rank, args.optimizer,
        distributed.init("mpi"), args.shard)
