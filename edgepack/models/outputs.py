"""Pick one tensor from whatever forward() returns (tuple, dict, a Hugging Face-style output with `logits`).

Exported artifacts return exactly that tensor; the report says which one was taken.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgepack.errors import UsageError


def describe_output(output: Any) -> str:
    """Return the selector for the tensor to keep: "tensor", "[i]", "['key']" or ".logits"."""
    if isinstance(output, torch.Tensor):
        return "tensor"
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return ".logits"
    if isinstance(output, dict):
        if isinstance(output.get("logits"), torch.Tensor):
            return "['logits']"
        for key, value in output.items():
            if isinstance(value, torch.Tensor):
                return f"[{key!r}]"
    if isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            if isinstance(value, torch.Tensor):
                return f"[{i}]"
    raise UsageError(f"the model's forward returned {type(output).__name__} with no tensor in it; "
                     f"return a tensor, a tuple/dict of tensors, or an object with a .logits tensor")


def select(output: Any, selector: str) -> torch.Tensor:
    if selector == "tensor":
        return output
    if selector == ".logits":
        return output.logits
    key = selector[1:-1]
    return output[int(key)] if key.isdigit() else output[key.strip("'\"")]


class OutputSelector(nn.Module):
    """Wraps a model so forward returns the one selected tensor (exporters then see a single output)."""

    def __init__(self, model: nn.Module, selector: str) -> None:
        super().__init__()
        self.model = model
        self.selector = selector

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return select(self.model(*args), self.selector)
