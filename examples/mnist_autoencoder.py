"""The classic MNIST autoencoder (784-512-256-128 and back, Adam, a few epochs), with
ssl_fast's fused MSE as the drop-in criterion: `criterion = ssl_fast.MSELoss()` where a
tutorial writes `nn.MSELoss()`.

    python examples/mnist_autoencoder.py --data DIR    # a folder of MNIST's IDX files (or Fashion-MNIST's)
    python examples/mnist_autoencoder.py               # the bundled 8x8 digits, widths 64-48-32-16

DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
t10k-labels-idx1-ubyte (gzipped or not); t10k is the test set. The digits have no published
split: a seeded 20% is held out. Images narrower than 512 pixels get proportional widths.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

import ssl_fast
from ssl_fast.data import load_image_split
from ssl_fast.models import Autoencoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a folder of MNIST IDX files (default: the bundled digits)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, help="stop after this many steps (default: all epochs)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    images, _, test_start = load_image_split(args.data or "digits")
    if test_start is None:
        order = torch.randperm(len(images))
        test_start = int(0.8 * len(images))
        images = images[order]
    train, test = images[:test_start], images[test_start:]
    d = images[0].numel()
    widths = (d, 512, 256, 128) if d >= 512 else (d, 3 * d // 4, d // 2, d // 4)

    model = Autoencoder(widths)  # Sigmoid output: pixels in [0, 1]
    criterion = ssl_fast.MSELoss()  # fused forward and backward; same constructor as nn.MSELoss
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(TensorDataset(train), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    shape = "-".join(map(str, widths))
    print(f"{len(train)} training and {len(test)} test images of {d} pixels; widths {shape}")

    step = 0
    for epoch in range(args.epochs):
        total, seen = 0.0, 0
        for (x,) in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), x)
            loss.backward()
            optimizer.step()
            total, seen, step = total + loss.item() * len(x), seen + len(x), step + 1
            if args.steps is not None and step >= args.steps:
                break
        print(f"epoch {epoch + 1}: training MSE {total / seen:.4f}")
        if args.steps is not None and step >= args.steps:
            break

    model.eval()
    with torch.no_grad():
        test_mse = criterion(model(test), test).item()
    mean_mse = criterion(train.mean(0).expand_as(test), test).item()
    print(f"test MSE {test_mse:.4f} after {step} steps (the mean training image: {mean_mse:.4f})")


if __name__ == "__main__":
    main()
