"""Load user data (`--calibration`, `--eval`, `--train`): an .npz, an image-folder directory, or the zoo's data.

Everything is returned as an ArrayDataset in the model's input layout, one array per model input in that input's
dtype, and checked against what each input accepts (shape, dtype, token ids below the embedding's size) here, so a
wrong file fails with one line before any export starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import UsageError, one_line
from edgepack.records import ModelInput

NPZ_INPUT_KEYS = ("x", "inputs", "images", "data")
NPZ_LABEL_KEYS = ("y", "labels", "targets")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def float_input(shape: Sequence[int], name: str = "input") -> tuple[ModelInput, ...]:
    """The domain of a model with one real-valued input of `shape` (batch included)."""
    return (ModelInput(name, tuple(shape), "float32", "float"),)


def load_dataset(spec: str, inputs: Sequence[ModelInput], *, option: str, split: str = "test",
                 zoo_dataset: Optional[str] = None, preprocessing: Optional[dict[str, Any]] = None) -> ArrayDataset:
    """Resolve a data spec against the model's inputs; `option` names the CLI flag for errors."""
    if spec == "zoo":
        data = _zoo_data(zoo_dataset, split, option)
    else:
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"{option} {spec}: no such file or directory (use an .npz, an image folder, or 'zoo')")
        if path.is_dir():
            if len(inputs) != 1 or inputs[0].kind != "float":
                raise UsageError(f"{option} {spec}: an image folder feeds one image input; the model takes "
                                 f"{_describe_inputs(inputs)}: pass an .npz with one array per input")
            data = load_image_folder(path, inputs[0].shape, preprocessing or {}, option=option)
        elif path.suffix.lower() == ".npz":
            data = load_npz(path, option=option, inputs=inputs)
        else:
            raise UsageError(f"{option} {spec}: unsupported data file {path.suffix or '(no suffix)'}; use an .npz "
                             f"(x, y arrays), an image folder, or zoo")
    return conform(data, inputs, option)


def _describe_inputs(inputs: Sequence[ModelInput]) -> str:
    return ", ".join(f"{d.name} ({'x'.join(map(str, d.shape))} {d.dtype})" for d in inputs)


def _zoo_data(zoo_dataset: Optional[str], split: str, option: str) -> ArrayDataset:
    if zoo_dataset != "digits":
        raise UsageError(f"{option} zoo: this model has no built-in dataset; only zoo models trained on digits "
                         f"(zoo:digits-cnn, zoo:digits-vit) do. Pass an .npz or an image folder instead")
    from edgepack.data import digits

    train, test = digits.load_split()
    return train if split == "train" else test


def load_npz(path: Path, option: str = "", inputs: Sequence[ModelInput] = ()) -> ArrayDataset:
    """One array per model input and optionally labels, read without unpickling anything.

    A single-input model's array is named x (or inputs, images, data, or the input's own name), or is the archive's
    only array besides the labels; a model with
    several inputs needs one array named after each input (input_ids, attention_mask, ...). Labels: y.
    """
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
        input_keys = _input_keys(keys, inputs, where)
        y_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
        arrays = tuple(_read_array(archive, k, where) for k in input_keys)
        y = _read_array(archive, y_key, where) if y_key is not None else None
    for key, x in zip(input_keys, arrays):
        if x.ndim == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                               or x.dtype == np.bool_):
            raise UsageError(f"{where}: array {key!r} has dtype {x.dtype} and shape {x.shape}; it must be an "
                             f"integer, float or bool array with one row per sample")
    counts = {key: len(x) for key, x in zip(input_keys, arrays)}
    if len(set(counts.values())) != 1:
        raise UsageError(f"{where}: the input arrays hold different numbers of samples: "
                         f"{', '.join(f'{k} {n}' for k, n in counts.items())}")
    n = len(arrays[0])
    labels = None
    if y is not None:
        # checked against the model's task and output once it is known (check_labels)
        if y.ndim == 0 or len(y) != n or not (np.issubdtype(y.dtype, np.integer) or
                                              np.issubdtype(y.dtype, np.floating)):
            raise UsageError(f"{where}: labels {y_key!r} must hold one row per sample ({n}), as integers (classes) "
                             f"or floats (regression, embedding targets); got shape {y.shape} dtype {y.dtype}")
        labels = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
    return ArrayDataset(str(path), arrays, labels, {"source": "npz, used as stored"})


def _input_keys(keys: list[str], inputs: Sequence[ModelInput], where: str) -> list[str]:
    """The archive's array for each model input, in the model's order."""
    if len(inputs) > 1:
        missing = [d.name for d in inputs if d.name not in keys]
        if missing:
            raise UsageError(f"{where}: no array named {missing[0]!r}; a model with several inputs needs one array "
                             f"per input, named {', '.join(d.name for d in inputs)} (found: {', '.join(keys)})")
        return [d.name for d in inputs]
    names = (*NPZ_INPUT_KEYS, *(d.name for d in inputs))
    key = next((k for k in names if k in keys), None)
    unlabelled = [k for k in keys if k not in NPZ_LABEL_KEYS]
    if key is None and len(unlabelled) == 1:
        key = unlabelled[0]  # the only array besides the labels, whatever its name (e.g. forward's "tokens")
    if key is None:
        raise UsageError(f"{where}: no input array; name it one of {', '.join(dict.fromkeys(names))} "
                         f"(found: {', '.join(keys)})")
    return [key]


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


def conform(data: ArrayDataset, inputs: Sequence[ModelInput], option: str) -> ArrayDataset:
    """`data` with each array checked against its model input (shape, finite floats, ids within range, masks of
    0/1) and cast to that input's dtype."""
    if len(data) == 0:
        raise UsageError(f"{option} {data.name}: the dataset is empty")
    if len(data.arrays) != len(inputs):
        raise UsageError(f"{option} {data.name}: holds {len(data.arrays)} input array(s); the model takes "
                         f"{len(inputs)}: {_describe_inputs(inputs)}")
    arrays = tuple(_conform_one(x, d, f"{option} {data.name}", len(inputs) > 1) for x, d in zip(data.arrays, inputs))
    return ArrayDataset(data.name, arrays, data.labels, data.preprocessing, data.synthetic)


def _conform_one(x: np.ndarray, domain: ModelInput, where: str, named: bool) -> np.ndarray:
    what = f"input {domain.name!r}" if named else "samples"
    expected = tuple(domain.shape[1:])
    if tuple(x.shape[1:]) != expected:
        if named:
            raise UsageError(f"{where}: {what} have shape {tuple(x.shape[1:])}, the model takes {expected} per "
                             f"sample (input {tuple(domain.shape)})")
        raise UsageError(f"{where}: samples have shape {tuple(x.shape[1:])}, the model takes {expected} per sample "
                         f"(input {tuple(domain.shape)})")
    if domain.kind == "float":
        out = x.astype(np.float32)
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        if bad:  # NaN or values beyond float32 would poison calibration ranges and every comparison
            raise UsageError(f"{where}: {what} hold {bad:,} NaN or infinite value(s) (as float32); inputs must be "
                             f"finite")
        return out
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.equal(np.mod(x, 1), 0)):
        raise UsageError(f"{where}: {what} hold fractional values; the model takes {domain.dtype} "
                         f"({domain.describe()})")
    low, high = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if domain.kind == "mask" and (low < 0 or high > 1):
        raise UsageError(f"{where}: {what} span {low}..{high}; a mask holds 0 and 1")
    if domain.range_is_known and (low < domain.low or high >= domain.high):
        raise UsageError(f"{where}: {what} hold ids {low}..{high}, beyond what the model takes: {domain.low}.."
                         f"{domain.high - 1} ({domain.how})")
    return x.astype(domain.dtype)


def check_labels(data: ArrayDataset, task: str, output_shape: Sequence[int], option: str) -> None:
    """Labels that fit the task: a class per sample (classification), a class per pixel of the output's map
    (segmentation, 255 ignored), a value or vector per sample shaped like the output (regression, embedding)."""
    labels = data.labels
    if labels is None:
        raise UsageError(f"{option} {data.name}: has no labels; accuracy needs them (an 'y' array in the .npz)")
    where = f"{option} {data.name}"
    per_sample = tuple(output_shape[1:])
    integer = np.issubdtype(labels.dtype, np.integer)
    if task in ("classification", "segmentation"):
        expected = () if task == "classification" else per_sample[1:]
        if not integer or tuple(labels.shape[1:]) != expected:
            what = "one class index per sample" if task == "classification" else \
                f"one class index per pixel, shape (N, {', '.join(map(str, expected))})"
            raise UsageError(f"{where}: labels have shape {labels.shape[1:]} and dtype {labels.dtype}; {task} needs "
                             f"{what}")
        classes = int(output_shape[1]) if task == "segmentation" else int(np.prod(per_sample))
        valid = labels[labels != 255] if task == "segmentation" else labels
        low, high = (int(valid.min()), int(valid.max())) if valid.size else (0, 0)
        if low < 0 or high >= classes:
            raise UsageError(f"{where}: labels span {low}..{high} but the model has {classes} classes")
        return
    if int(np.prod(labels.shape[1:])) != int(np.prod(per_sample)):
        raise UsageError(f"{where}: labels have shape {labels.shape[1:]} per sample; the model's {task} output has "
                         f"{per_sample}, and each sample's target must have as many values")


def stratified_subset(data: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """A reproducible subset of n samples, balanced across labels when there are labels."""
    if n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    if data.labels is None or data.labels.ndim != 1 or not np.issubdtype(data.labels.dtype, np.integer):
        idx = np.sort(rng.choice(len(data), n, replace=False))  # no class per sample to balance
    else:
        classes = np.unique(data.labels)
        per_class = [rng.permutation(np.flatnonzero(data.labels == c)) for c in classes]
        # round-robin over classes so every class is represented before any repeats
        order = [p[i] for i in range(max(len(p) for p in per_class)) for p in per_class if i < len(p)]
        idx = np.sort(np.asarray(order[:n]))
    return data.select(idx, f"{data.name} ({n} stratified, seed {seed})")


def synthetic(inputs: Sequence[ModelInput], n: int, seed: int = 0) -> ArrayDataset:
    """Inputs drawn within what each model input accepts: N(0,1) features, ids uniform in their table's range, masks
    of ones. The fallback when no data is given (the report warns and says how they were made)."""
    rng = np.random.default_rng(seed)
    arrays = []
    try:
        for d in inputs:
            shape = (n, *d.shape[1:])
            if d.kind == "float":
                arrays.append(rng.standard_normal(shape).astype(np.float32))
            elif d.kind == "mask":
                arrays.append(np.ones(shape, dtype=d.dtype))
            else:
                arrays.append(rng.integers(d.low, max(d.high, d.low + 1), shape).astype(d.dtype))
    except MemoryError:
        shapes = ", ".join("x".join(str(v) for v in d.shape) for d in inputs)
        raise UsageError(f"{n} synthetic inputs of shape {shapes} do not fit in memory; pass --calibration DATA "
                         f"with real inputs, or a smaller --input-shape") from None
    if all(d.kind == "float" for d in inputs):
        name = "synthetic N(0,1) inputs"
    else:
        name = "synthetic inputs (" + "; ".join(d.describe() for d in inputs) + ")"
    return ArrayDataset(name, tuple(arrays), None, {}, synthetic=True)
