"""Trained weights and real data for the coverage benchmark's models, from scikit-learn's digits (nothing downloaded).

On random weights a classifier's logits sit close together, so int8 moves the argmax on many samples however good the
quantization is: a random-weight Hugging Face MobileNetV2 keeps 73 % top-1 agreement with int8 weights alone and 48 %
with int8 activations alone (PT2E's reference int8 simulation, 64 N(0,1) samples). A parity figure then says more about
the random init than about the exporter. So each model is first trained briefly on digits, fed in the form its inputs
take, and built with digits as calibration and eval data: its logits have a trained model's margins, the parity floor
judges something real, and report.json carries the int8 accuracy on held-out digits next to the fp32 one.

How a digit becomes each model's input (the example input's shape and dtype decide):
- an image (N, C, H, W): the 8x8 digit resized bilinearly to H x W and repeated over the C channels;
- a sequence of features (N, C, L): C views of the 64 pixels (row-major, column-major, and both reversed);
- token ids (N, L) with L <= 32: each pair of neighbouring pixels (values 0..16) is one token, a * 17 + b (< 289),
  with an attention mask of ones when the model takes one;
- raw audio (N, L) as floats: a tone whose loudness follows the 64 pixels, row-major, each held for L / 64 samples;
- a segmentation model (its output has the input's H x W): per-pixel labels, ink (above the image's mean) or not.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_SECONDS = 40.0  # per model at most; the small ones converge in a few seconds
EPOCHS = 30
EVAL_SAMPLES = 256  # held-out digits in the eval .npz (parity draws its samples from these)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train pixels, train labels, held-out pixels, held-out labels); pixels (N, 8, 8) in 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(data.images, data.target, test_size=0.25, random_state=0,
                                                        stratify=data.target)
    return x_train, y_train, x_test[:EVAL_SAMPLES], y_test[:EVAL_SAMPLES]


def load_model_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The model file's build(): (module, example inputs by forward parameter name)."""
    import inspect

    spec = importlib.util.spec_from_file_location(f"coverage_{path.stem.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    namespace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(namespace)
    module, example = namespace.build()
    if not isinstance(example, dict):
        first = next(iter(inspect.signature(module.forward).parameters))
        example = {first: example}
    return module, example


def model_inputs(pixels: np.ndarray, example: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each of the model's inputs for these digits, shaped and typed like the example inputs."""
    import torch

    x = pixels.astype(np.float32) / 16.0  # 0..1
    out: dict[str, np.ndarray] = {}
    for name, value in example.items():
        shape, dtype = tuple(value.shape[1:]), value.dtype
        if name == "attention_mask":
            out[name] = np.ones((len(x), *shape), dtype=np.int64)
        elif not dtype.is_floating_point:  # token ids
            tokens = pixels.reshape(len(x), 32, 2).astype(np.int64)
            out[name] = (tokens[:, :, 0] * 17 + tokens[:, :, 1])[:, :shape[0]]
        elif len(shape) == 3:  # an image
            images = torch.nn.functional.interpolate(torch.from_numpy(x[:, None]), size=shape[1:], mode="bilinear",
                                                     align_corners=False)
            out[name] = ((images.repeat(1, shape[0], 1, 1).numpy() - 0.5) / 0.5).astype(np.float32)
        elif len(shape) == 2:  # channels x steps
            flat = x.reshape(len(x), 64)
            views = [flat, x.transpose(0, 2, 1).reshape(len(x), 64)]
            views += [v[:, ::-1] for v in views]
            stacked = np.stack([views[i % len(views)] for i in range(shape[0])], axis=1)
            out[name] = ((_stretch(stacked, shape[1]) - 0.5) / 0.5).astype(np.float32)
        else:  # raw audio: each pixel's value is the loudness of a stretch of a tone
            envelope = np.repeat(x.reshape(len(x), 64), -(-shape[0] // 64), axis=1)[:, :shape[0]]
            tone = np.sin(2 * np.pi * 0.05 * np.arange(shape[0]))
            out[name] = (envelope * tone).astype(np.float32)
    return out


def _stretch(values: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of the last axis to `length` points."""
    if values.shape[-1] == length:
        return values.copy()
    src = np.linspace(0.0, 1.0, values.shape[-1])
    dst = np.linspace(0.0, 1.0, length)
    flat = values.reshape(-1, values.shape[-1])
    return np.stack([np.interp(dst, src, row) for row in flat]).reshape(*values.shape[:-1], length)


def _logits(module: Any, batch: dict[str, Any]) -> Any:
    out = module(**batch)
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def segmentation_labels(inputs: dict[str, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Ink or not per pixel of the (resized) image: the image's own mean splits them."""
    image = next(iter(inputs.values()))[:, 0]
    assert image.shape[1:] == size
    return (image > image.mean(axis=(1, 2), keepdims=True)).astype(np.int64)


def train_and_save(model_file: Path, workdir: Path) -> tuple[Path, Path, str]:
    """Train the model file's model on digits, save its weights beside the file (build() loads them), and write the
    calibration and eval .npz files. Returns (calibration path, eval path, a note: epochs, seconds, accuracy)."""
    import torch

    torch.manual_seed(0)
    module, example = load_model_file(model_file)
    x_train, y_train, x_test, y_test = digits()
    train_in, test_in = model_inputs(x_train, example), model_inputs(x_test, example)
    module.train()
    with torch.no_grad():
        probe = _logits(module, {k: torch.from_numpy(v[:2]) for k, v in train_in.items()})
    segmentation = probe.dim() == 4
    if segmentation:
        size = tuple(probe.shape[2:])
        train_y, test_y = segmentation_labels(train_in, size), segmentation_labels(test_in, size)
    else:
        train_y, test_y = y_train.astype(np.int64), y_test.astype(np.int64)
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    start, epochs = time.perf_counter(), 0
    while epochs < EPOCHS and time.perf_counter() - start < TRAIN_SECONDS:
        order = rng.permutation(len(train_y))
        for i in range(0, len(order) - 31, 32):
            pick = order[i:i + 32]
            batch = {k: torch.from_numpy(v[pick]) for k, v in train_in.items()}
            optimizer.zero_grad()
            loss = loss_fn(_logits(module, batch), torch.from_numpy(train_y[pick]))
            loss.backward()
            optimizer.step()
        epochs += 1
    seconds = time.perf_counter() - start
    module.eval()
    with torch.no_grad():
        predicted = torch.cat([_logits(module, {k: torch.from_numpy(v[i:i + 64]) for k, v in test_in.items()})
                               for i in range(0, len(test_y), 64)]).argmax(1).numpy()
    accuracy = float((predicted == test_y).mean())
    torch.save(module.state_dict(), model_file.with_suffix(".pt"))
    calibration, evaluation = workdir / f"{model_file.stem}-calib.npz", workdir / f"{model_file.stem}-eval.npz"
    np.savez(calibration, **train_in, y=train_y)
    np.savez(evaluation, **test_in, y=test_y)
    what = "pixel accuracy" if segmentation else "accuracy"
    return calibration, evaluation, f"{epochs} epoch(s) in {seconds:.0f} s, held-out {what} {accuracy:.3f}"


# Appended to a model file in digits mode: build() returns the architecture with the trained weights.
LOAD_TRAINED = '''

_untrained_build = build


def build():
    from pathlib import Path

    model, example = _untrained_build()
    model.load_state_dict(torch.load(Path(__file__).with_suffix(".pt"), weights_only=True))
    return model.eval(), example
'''
