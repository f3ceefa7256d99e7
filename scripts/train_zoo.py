"""Reproduce the trained zoo weights shipped in edgepack/models/weights from scikit-learn digits.

    python scripts/train_zoo.py            # writes digits_cnn.pt and digits_vit.pt, prints held-out accuracy
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from edgepack.data import digits
from edgepack.models import zoo
from edgepack.training import evaluate, train_classifier

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "edgepack" / "models" / "weights"
RECIPES = {"digits-cnn": dict(epochs=30, lr=3e-3), "digits-vit": dict(epochs=60, lr=2e-3)}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    train, test = digits.load_split()
    for name in names or list(RECIPES):
        entry = zoo.entry(name)
        torch.manual_seed(0)
        model = entry.build()
        train_classifier(model, train, seed=0, **RECIPES[name])
        acc = evaluate(model, test)
        torch.save(model.state_dict(), WEIGHTS_DIR / entry.weights)
        print(f"{name}: held-out top-1 {acc * 100:.2f}% on {len(test)} digits, "
              f"{sum(p.numel() for p in model.parameters())} params -> {entry.weights}")


if __name__ == "__main__":
    main(sys.argv[1:])
