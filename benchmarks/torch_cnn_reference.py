"""PyTorch's time to accuracy on ``cnn_network()``'s architecture: the reference for the README's CNN row.

The network of :func:`fastprop.models.cnn_network` written in ``torch.nn``, trained the usual
PyTorch way: Adam at 1e-3 (constant), batch 128, mean cross-entropy, a new shuffle every epoch,
2 threads, on the same seeded 50,000-row split ``fastprop train`` uses; after each epoch the
official test accuracy and the seconds since start (imports and data loading included)::

    python benchmarks/torch_cnn_reference.py --epochs 12

Needs PyTorch (not a fastprop dependency) and the Fashion-MNIST files (``apt-get install
dataset-fashion-mnist``). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from torch import nn

    from fastprop.datasets import load_split_and_test

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images, labels, _, _, test_images, test_labels = load_split_and_test("fashion-mnist", download=False)
    images, test_images = (torch.from_numpy(x.reshape(-1, 1, 28, 28)) for x in (images, test_images))
    labels, test_labels = (torch.from_numpy(y.argmax(1)) for y in (labels, test_labels))
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    optimizer, loss = torch.optim.Adam(net.parameters(), 1e-3), nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(images), generator=shuffle)
        for start in range(0, len(images), 128):
            rows = order[start:start + 128]
            optimizer.zero_grad()
            loss(net(images[rows]), labels[rows]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            right = sum(int((net(test_images[i:i + 1000]).argmax(1) == test_labels[i:i + 1000]).sum())
                        for i in range(0, len(test_images), 1000))
        print(f"epoch {epoch}: test accuracy {right / len(test_images):.4f}, "
              f"{time.perf_counter() - started:.1f} s since start", flush=True)


if __name__ == "__main__":
    main()
