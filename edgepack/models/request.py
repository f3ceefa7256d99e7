"""What the user asked to load (`--model` and its companions): a plain record, so planning needs no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ModelRequest:
    spec: str  # zoo:NAME, file.py:callable, package.module:callable, a .pt2, or a checkpoint .pt with a factory
    input_shape: Optional[tuple[int, ...]] = None
    factory: Optional[str] = None
    trust_checkpoint: bool = False
