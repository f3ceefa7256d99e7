"""scikit-learn's digits (1,797 labelled 8x8 images, shipped inside scikit-learn): the built-in real dataset.

The split is fixed (stratified, seed 0, 20 % held out) so accuracy figures are comparable across runs and tools.
"""

from __future__ import annotations

import numpy as np

from edgepack.data.dataset import ArrayDataset

PIXEL_SCALE = 1.0 / 16.0
PREPROCESSING = {
    "layout": "NCHW",
    "input": "8x8 grayscale, pixel values 0..16 as in sklearn.datasets.load_digits",
    "scale": PIXEL_SCALE,
    "mean": [0.5],
    "std": [0.5],
    "formula": "x = (pixel / 16 - mean) / std",
}
LABELS = tuple(str(i) for i in range(10))
HELD_OUT_FRACTION = 0.2
SEED = 0


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """(N, 64) or (N, 8, 8) raw digits pixels -> (N, 1, 8, 8) float32 model inputs."""
    x = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8) * PIXEL_SCALE
    return (x - 0.5) / 0.5


def load_split() -> tuple[ArrayDataset, ArrayDataset]:
    """(train, held-out test) datasets, preprocessed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=HELD_OUT_FRACTION, random_state=SEED, stratify=digits.target
    )
    train = ArrayDataset("zoo:digits (train split)", preprocess(x_train), y_train.astype(np.int64), PREPROCESSING)
    test = ArrayDataset("zoo:digits (held-out split)", preprocess(x_test), y_test.astype(np.int64), PREPROCESSING)
    return train, test
