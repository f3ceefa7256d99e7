"""What a model's output is (its task), and the parity floor an artifact's outputs must meet for that task.

The task decides which figure says an artifact computes what the eager model does: class agreement for
classification (per sample) and segmentation (per pixel), cosine similarity for embeddings, relative error for
regression. Top-1 agreement over a flattened segmentation map or an embedding means nothing, so it is not used there.
Torch-free: the planner reads the floors before any heavy import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from edgepack.errors import UsageError
from edgepack.records import Parity

TASKS = ("classification", "regression", "segmentation", "embedding")
AUTO = "auto"


def infer_task(output_shape: Sequence[int], requested: str = AUTO) -> tuple[str, str]:
    """(task, how it was decided) for a model whose output has `output_shape` (batch first)."""
    shape = "x".join(map(str, output_shape))
    if requested != AUTO:
        if requested not in TASKS:
            raise UsageError(f"--task {requested!r} is not one of {AUTO}, {', '.join(TASKS)}")
        if requested == "classification" and (len(output_shape) < 2 or math.prod(output_shape[1:]) < 2):
            raise UsageError(f"--task classification needs class scores per sample; the output is {shape}")
        if requested == "segmentation" and (len(output_shape) < 3 or output_shape[1] < 2):
            raise UsageError(f"--task segmentation needs a (N, classes, ...) map; the output is {shape}")
        return requested, "--task"
    if len(output_shape) <= 1 or (len(output_shape) == 2 and output_shape[1] == 1):
        return "regression", f"one value per sample (output {shape})"
    if len(output_shape) == 2:
        return "classification", f"a score per class (output {shape}); pass --task embedding or regression if not"
    if len(output_shape) == 4 and output_shape[1] > 1:
        return "segmentation", f"a map of {output_shape[1]} class scores per pixel (output {shape})"
    return "embedding", f"a feature tensor (output {shape}); judged by cosine similarity"


@dataclass(frozen=True)
class ParityFloor:
    """The least agreement with eager PyTorch an artifact may show and still ship (target file `parity_floor:`)."""

    min_agreement: float = field(default=0.90, metadata={
        "minimum": 0.0, "maximum": 1.0, "doc": "classification (per sample) and segmentation (per pixel): the least "
                                              "share of argmax agreement with eager PyTorch"})
    min_cosine: float = field(default=0.98, metadata={
        "minimum": 0.0, "maximum": 1.0, "doc": "embeddings: the least mean cosine similarity to eager PyTorch"})
    max_relative_error: float = field(default=0.10, metadata={
        "minimum": 0.0, "maximum": 1.0, "doc": "regression: the largest relative L2 error against eager PyTorch"})
    enabled: bool = field(default=True, metadata={"doc": "false: artifacts ship whatever their parity"})

    def with_value(self, text: str, option: str = "--parity-floor") -> "ParityFloor":
        """`--parity-floor VALUE` (every task's figure set to VALUE) or `off`."""
        if text.strip().lower() == "off":
            return ParityFloor(self.min_agreement, self.min_cosine, self.max_relative_error, enabled=False)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value <= 1:
            raise UsageError(f"{option} {text!r}: give a number from 0 to 1 (agreement or cosine at least it, "
                             f"relative error at most it) or off")
        return ParityFloor(value, value, value)

    def shortfall(self, parity: Parity) -> Optional[str]:
        """Why `parity` falls below the floor, with the figures; None when it meets it."""
        if not self.enabled:
            return None
        if parity.task in ("classification", "segmentation") and parity.top1_agreement is not None:
            unit = "pixels" if parity.task == "segmentation" else "samples"
            if parity.top1_agreement < self.min_agreement:
                return (f"agrees with eager PyTorch on {parity.top1_agreement:.1%} of {unit}, below the parity floor "
                        f"{self.min_agreement:.0%} (max abs diff {parity.max_abs_diff:.3g}, {parity.samples} "
                        f"samples of {parity.inputs_from})")
        elif parity.task == "embedding" and parity.cosine is not None:
            if parity.cosine < self.min_cosine:
                return (f"cosine similarity to eager PyTorch {parity.cosine:.4f}, below the parity floor "
                        f"{self.min_cosine} ({parity.samples} samples of {parity.inputs_from})")
        elif parity.relative_error > self.max_relative_error:
            return (f"relative error {parity.relative_error:.3g} against eager PyTorch, above the parity limit "
                    f"{self.max_relative_error} ({parity.samples} samples of {parity.inputs_from})")
        return None

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return (f"agreement >= {self.min_agreement:g} (classification, segmentation), cosine >= {self.min_cosine:g} "
                f"(embedding), relative error <= {self.max_relative_error:g} (regression)")
