"""Load user data (`--calibration`, `--eval`, `--train`): an .npz, an image-folder directory, or the zoo's data.

Everything is returned as an ArrayDataset already in the model's input layout, and checked against the model's
input shape here, so a wrong file fails with one line before any export starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import UsageError

NPZ_INPUT_KEYS = ("x", "inputs", "images", "data")
NPZ_LABEL_KEYS = ("y", "labels", "targets")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_dataset(spec: str, input_shape: Sequence[int], *, option: str, split: str = "test",
                 zoo_dataset: Optional[str] = None, preprocessing: Optional[dict[str, Any]] = None) -> ArrayDataset:
    """Resolve a data spec. `input_shape` includes the batch dimension; `option` names the CLI flag for errors."""
    if spec == "zoo":
        data = _zoo_data(zoo_dataset, split, option)
    else:
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"{option} {spec}: no such file or directory (use an .npz, an image folder, or 'zoo')")
        if path.is_dir():
            data = load_image_folder(path, input_shape, preprocessing or {})
        elif path.suffix == ".npz":
            data = load_npz(path)
        else:
            raise UsageError(f"{option} {spec}: unsupported data file; use an .npz (x, y arrays) or an image folder")
    check_shape(data, input_shape, option)
    return data


def _zoo_data(zoo_dataset: Optional[str], split: str, option: str) -> ArrayDataset:
    if zoo_dataset != "digits":
        raise UsageError(f"{option} zoo: this model has no built-in dataset; only zoo models trained on digits "
                         f"(zoo:digits-cnn, zoo:digits-vit) do. Pass an .npz or an image folder instead")
    from edgepack.data import digits

    train, test = digits.load_split()
    return train if split == "train" else test


def load_npz(path: Path) -> ArrayDataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt archive
        raise UsageError(f"{path}: not a readable .npz ({exc})") from None
    keys = list(archive.keys())
    x_key = next((k for k in NPZ_INPUT_KEYS if k in keys), None)
    if x_key is None:
        raise UsageError(f"{path}: no input array; name it one of {', '.join(NPZ_INPUT_KEYS)} (found: {', '.join(keys)})")
    y_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
    x = np.asarray(archive[x_key])
    if not np.issubdtype(x.dtype, np.number):
        raise UsageError(f"{path}: array {x_key!r} has dtype {x.dtype}; it must be numeric")
    labels = None
    if y_key is not None:
        y = np.asarray(archive[y_key])
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{path}: labels {y_key!r} must be {len(x)} integers (shape ({len(x)},)), "
                             f"got shape {y.shape} dtype {y.dtype}")
        labels = y.astype(np.int64)
    return ArrayDataset(str(path), x.astype(np.float32), labels, {"source": "npz, used as stored"})


def load_image_folder(root: Path, input_shape: Sequence[int], preprocessing: dict[str, Any]) -> ArrayDataset:
    """ImageFolder layout: root/<class>/<image>; classes are sorted directory names -> label indices."""
    from PIL import Image

    if len(input_shape) != 4:
        raise UsageError(f"{root}: an image folder needs a 4-D model input (N, C, H, W); the model takes {tuple(input_shape)}")
    _, channels, height, width = input_shape
    if channels not in (1, 3):
        raise UsageError(f"{root}: image folders need 1 or 3 input channels; the model takes {channels}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UsageError(f"{root}: no images found; expected {root}/<class>/<image>.png (ImageFolder layout)")
    mean = np.asarray(preprocessing.get("mean", [0.0] * channels), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocessing.get("std", [1.0] * channels), dtype=np.float32).reshape(-1, 1, 1)
    images = []
    for f, _ in files:
        with Image.open(f) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        images.append((arr - mean) / std)
    recipe = {"layout": "NCHW", "resize": [height, width], "scale": 1 / 255, "mean": mean.ravel().tolist(),
              "std": std.ravel().tolist(), "classes": classes}
    labels = np.asarray([i for _, i in files], dtype=np.int64)
    return ArrayDataset(str(root), np.stack(images).astype(np.float32), labels, recipe)


def check_shape(data: ArrayDataset, input_shape: Sequence[int], option: str) -> None:
    expected = tuple(input_shape[1:])
    if len(data) == 0:
        raise UsageError(f"{option} {data.name}: the dataset is empty")
    if tuple(data.inputs.shape[1:]) != expected:
        raise UsageError(f"{option} {data.name}: samples have shape {tuple(data.inputs.shape[1:])}, "
                         f"the model takes {expected} per sample (input {tuple(input_shape)})")


def check_labels(data: ArrayDataset, num_classes: int, option: str) -> None:
    if data.labels is None:
        raise UsageError(f"{option} {data.name}: has no labels; accuracy needs them (an 'y' array in the .npz)")
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= num_classes:
        raise UsageError(f"{option} {data.name}: labels span {low}..{high} but the model has {num_classes} classes")


def stratified_subset(data: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """A reproducible subset of n samples, balanced across labels when there are labels."""
    if n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    if data.labels is None:
        idx = np.sort(rng.choice(len(data), n, replace=False))
    else:
        classes = np.unique(data.labels)
        per_class = [rng.permutation(np.flatnonzero(data.labels == c)) for c in classes]
        # round-robin over classes so every class is represented before any repeats
        order = [p[i] for i in range(max(len(p) for p in per_class)) for p in per_class if i < len(p)]
        idx = np.sort(np.asarray(order[:n]))
    labels = None if data.labels is None else data.labels[idx]
    return ArrayDataset(f"{data.name} ({n} stratified, seed {seed})", data.inputs[idx], labels,
                        data.preprocessing, data.synthetic)


def synthetic(input_shape: Sequence[int], n: int, seed: int = 0) -> ArrayDataset:
    """Standard-normal inputs: the fallback when no calibration data is given (the report warns)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *input_shape[1:])).astype(np.float32)
    return ArrayDataset("synthetic N(0,1) inputs", x, None, {}, synthetic=True)
