"""The built-in model zoo: names a user can pass as `--model zoo:NAME`."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Optional

from edgepack.errors import UsageError

WEIGHTS_PACKAGE = "edgepack.models.weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    input_shape: tuple[int, ...]  # batch included
    build: Callable[[], Any]  # returns an nn.Module (random init; weights loaded separately)
    weights: Optional[str] = None  # file in edgepack/models/weights, when trained by scripts/train_zoo.py
    dataset: Optional[str] = None  # the built-in dataset it was trained on ("digits")
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()


def _digits_cnn() -> Any:
    from edgepack.models.architectures import DigitsCNN

    return DigitsCNN()


def _digits_vit() -> Any:
    from edgepack.models.architectures import TinyViT

    return TinyViT(image_size=8, patch=2, in_channels=1, dim=48, depth=3, num_heads=4)


def _resnet18() -> Any:
    from edgepack.models.architectures import ResNetCifar

    return ResNetCifar((2, 2, 2, 2))


def _mobilenet() -> Any:
    from edgepack.models.architectures import MobileNetV2Small

    return MobileNetV2Small()


def _vit() -> Any:
    from edgepack.models.architectures import TinyViT

    return TinyViT()


def _entries() -> dict[str, ZooEntry]:
    from edgepack.data import digits

    entries = [
        ZooEntry("digits-cnn", "3-conv CNN trained on scikit-learn digits (the demo model)", (1, 1, 8, 8),
                 _digits_cnn, weights="digits_cnn.pt", dataset="digits", preprocessing=digits.PREPROCESSING,
                 labels=digits.LABELS),
        ZooEntry("digits-vit", "3-block ViT (patch 2, dim 48, 4 heads) trained on scikit-learn digits",
                 (1, 1, 8, 8), _digits_vit, weights="digits_vit.pt", dataset="digits",
                 preprocessing=digits.PREPROCESSING, labels=digits.LABELS),
        ZooEntry("resnet18-cifar", "ResNet-18 in CIFAR layout, 32x32x3, random init (reference architecture)",
                 (1, 3, 32, 32), _resnet18),
        ZooEntry("mobilenetv2-cifar", "MobileNetV2-style depthwise net, 32x32x3, random init", (1, 3, 32, 32),
                 _mobilenet),
        ZooEntry("vit-tiny", "ViT (patch 4, dim 64, 4 blocks, 4 heads), 32x32x3, random init", (1, 3, 32, 32), _vit),
    ]
    return {e.name: e for e in entries}


def names() -> list[str]:
    return list(_entries())


def entry(name: str) -> ZooEntry:
    entries = _entries()
    if name not in entries:
        raise UsageError(f"unknown zoo model {name!r}; the zoo has: {', '.join(entries)}")
    return entries[name]


def build(name: str) -> Any:
    """The zoo model in eval mode, with its trained weights when it has them (random init seeded otherwise)."""
    import torch

    e = entry(name)
    torch.manual_seed(0)
    model = e.build()
    if e.weights:
        ref = resources.files(WEIGHTS_PACKAGE) / e.weights
        with resources.as_file(ref) as path:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
