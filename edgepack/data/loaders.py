"""Load user data (`--calibration`, `--eval`, `--train`): an .npz, an image-folder directory, or the zoo's data.

Everything is returned as an ArrayDataset already in the model's input layout, and checked against the model's
input shape here, so a wrong file fails with one line before any export starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import UsageError, one_line

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
            data = load_image_folder(path, input_shape, preprocessing or {}, option=option)
        elif path.suffix.lower() == ".npz":
            data = load_npz(path, option=option)
        else:
            raise UsageError(f"{option} {spec}: unsupported data file {path.suffix or '(no suffix)'}; use an .npz "
                             f"(x, y arrays), an image folder, or zoo")
    check_shape(data, input_shape, option)
    return data


def _zoo_data(zoo_dataset: Optional[str], split: str, option: str) -> ArrayDataset:
    if zoo_dataset != "digits":
        raise UsageError(f"{option} zoo: this model has no built-in dataset; only zoo models trained on digits "
                         f"(zoo:digits-cnn, zoo:digits-vit) do. Pass an .npz or an image folder instead")
    from edgepack.data import digits

    train, test = digits.load_split()
    return train if split == "train" else test


def load_npz(path: Path, option: str = "") -> ArrayDataset:
    """x (inputs, numeric) and optionally y (integer labels, one per input), read without unpickling anything."""
    where = f"{option} {path}".strip()
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt archive
        raise UsageError(f"{where}: not a readable .npz ({type(exc).__name__}: {one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # np.load also reads a bare .npy under any name
        raise UsageError(f"{where}: not an .npz archive; save it with np.savez(path, x=inputs, y=labels)")
    with archive:
        keys = list(archive.keys())
        if not keys:
            raise UsageError(f"{where}: the archive holds no arrays; save one named x (inputs) and optionally "
                             f"y (labels): np.savez(path, x=inputs, y=labels)")
        x_key = next((k for k in NPZ_INPUT_KEYS if k in keys), None)
        if x_key is None:
            raise UsageError(f"{where}: no input array; name it one of {', '.join(NPZ_INPUT_KEYS)} "
                             f"(found: {', '.join(keys)})")
        y_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
        x = _read_array(archive, x_key, where)
        y = _read_array(archive, y_key, where) if y_key is not None else None
    if x.ndim == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UsageError(f"{where}: array {x_key!r} has dtype {x.dtype} and shape {x.shape}; it must be an integer "
                         f"or float array with one row per sample")
    inputs = x.astype(np.float32)
    bad = int(inputs.size - np.count_nonzero(np.isfinite(inputs)))
    if bad:  # NaN or values beyond float32 would poison calibration ranges and every comparison
        raise UsageError(f"{where}: array {x_key!r} holds {bad:,} NaN or infinite value(s) (as float32); "
                         f"inputs must be finite")
    labels = None
    if y is not None:
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{where}: labels {y_key!r} must be {len(x)} integers (shape ({len(x)},)), "
                             f"got shape {y.shape} dtype {y.dtype}")
        labels = y.astype(np.int64)
    return ArrayDataset(str(path), inputs, labels, {"source": "npz, used as stored"})


def _read_array(archive: Any, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UsageError(f"{where}: array {key!r} holds Python objects (dtype object), which edgepack does not "
                             f"unpickle; save numeric arrays, e.g. np.savez(path, x=x.astype(np.float32), "
                             f"y=y.astype(np.int64))") from None
        raise UsageError(f"{where}: array {key!r} is unreadable ({one_line(exc)})") from None
    except Exception as exc:  # a damaged member: zlib, zipfile and EOF errors
        raise UsageError(f"{where}: array {key!r} is unreadable ({type(exc).__name__}: {one_line(exc)})") from None


def load_image_folder(root: Path, input_shape: Sequence[int], preprocessing: dict[str, Any],
                      option: str = "") -> ArrayDataset:
    """ImageFolder layout: root/<class>/<image>; classes are sorted directory names -> label indices."""
    from PIL import Image

    where = f"{option} {root}".strip()
    if len(input_shape) != 4:
        raise UsageError(f"{where}: an image folder needs a 4-D model input (N, C, H, W); the model takes "
                         f"{tuple(input_shape)}")
    _, channels, height, width = input_shape
    if channels not in (1, 3):
        raise UsageError(f"{where}: image folders need 1 or 3 input channels; the model takes {channels}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        found = f"{loose} image(s) lie directly in it" if loose else "it has no subdirectories"
        raise UsageError(f"{where}: no class directories ({found}); an image folder holds one directory per class: "
                         f"{root}/<class>/<image>.png")
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not files:
        raise UsageError(f"{where}: no images found in its {len(classes)} class directories; expected "
                         f"{root}/<class>/<image>.png with one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    mean = np.asarray(preprocessing.get("mean", [0.0] * channels), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocessing.get("std", [1.0] * channels), dtype=np.float32).reshape(-1, 1, 1)
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as img:
                pixels = img.convert("L" if channels == 1 else "RGB").resize((width, height),
                                                                             Image.Resampling.BILINEAR)
                arr = np.asarray(pixels, dtype=np.float32) / 255.0
        except Exception as exc:  # PIL raises several types for a file that is not an image it can decode
            raise UsageError(f"{option} {f}: not a readable image ({type(exc).__name__}: {one_line(exc)}); "
                             f"remove it or replace it with a real image".strip()) from None
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
    try:
        x = rng.standard_normal((n, *input_shape[1:])).astype(np.float32)
    except MemoryError:
        shape = "x".join(str(d) for d in input_shape)
        raise UsageError(f"{n} synthetic calibration inputs of shape {shape} do not fit in memory; pass "
                         f"--calibration DATA with real inputs, or a smaller --input-shape") from None
    return ArrayDataset("synthetic N(0,1) inputs", x, None, {}, synthetic=True)
