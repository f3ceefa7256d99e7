"""ArrayDataset: labelled (or unlabelled) model inputs, one numpy array per model input, already preprocessed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from edgepack.errors import UsageError


@dataclass(frozen=True, init=False)
class ArrayDataset:
    name: str  # where it came from, for the report: "zoo:digits (held-out)", "data.npz", ...
    arrays: tuple[np.ndarray, ...]  # one per model input, each (N, *that input's shape without batch), its own dtype
    labels: Optional[np.ndarray] = None  # int64, shape (N,)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False

    def __init__(self, name: str, arrays: Union[np.ndarray, tuple[np.ndarray, ...]],
                 labels: Optional[np.ndarray] = None, preprocessing: Optional[dict[str, Any]] = None,
                 synthetic: bool = False) -> None:
        # one array is a single-input model's data; a tuple holds one array per input
        arrays = tuple(arrays) if isinstance(arrays, tuple) else (arrays,)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "arrays", arrays)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "preprocessing", dict(preprocessing or {}))
        object.__setattr__(self, "synthetic", synthetic)
        counts = {len(a) for a in arrays}
        if not arrays or len(counts) != 1:
            raise ValueError(f"{name}: inputs must be one or more arrays with the same number of samples "
                             f"(got {sorted(counts)})")
        if labels is not None and len(labels) != len(self):
            raise ValueError(f"{name}: {len(self)} inputs but {len(labels)} labels")

    def __len__(self) -> int:
        return len(self.arrays[0])

    @property
    def inputs(self) -> np.ndarray:
        """The one input array of a single-input dataset (training, pruning saliency, corruptions use it)."""
        if len(self.arrays) != 1:
            raise UsageError(f"{self.name}: this step feeds one input array, but the model takes {len(self.arrays)} "
                             f"inputs; it is available for single-input models only")
        return self.arrays[0]

    def select(self, index: Union[slice, np.ndarray], name: Optional[str] = None) -> "ArrayDataset":
        """The samples at `index` (a slice or integer indices) of every input, with their labels."""
        return ArrayDataset(name or self.name, tuple(a[index] for a in self.arrays),
                            None if self.labels is None else self.labels[index], self.preprocessing, self.synthetic)

    def take(self, n: int) -> "ArrayDataset":
        return self.select(slice(0, n))


def feed_array(x: np.ndarray) -> np.ndarray:
    """An input array as runtimes take it: contiguous, floats as float32, integer and bool arrays in their own dtype
    (token ids and masks must not become floats)."""
    if x.dtype.kind in "biu":
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x, dtype=np.float32)
