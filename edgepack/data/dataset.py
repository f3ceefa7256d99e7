"""ArrayDataset: labelled (or unlabelled) model inputs held as one numpy array, already preprocessed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class ArrayDataset:
    name: str  # where it came from, for the report: "zoo:digits (held-out)", "data.npz", ...
    inputs: np.ndarray  # float32, shape (N, *model_input_shape_without_batch)
    labels: Optional[np.ndarray] = None  # int64, shape (N,)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.inputs):
            raise ValueError(f"{self.name}: {len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, n: int) -> "ArrayDataset":
        return ArrayDataset(self.name, self.inputs[:n], None if self.labels is None else self.labels[:n],
                            self.preprocessing, self.synthetic)
