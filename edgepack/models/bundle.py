"""ModelBundle: the nn.Module plus everything the later stages need to export and check it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepack.records import Provenance

if TYPE_CHECKING:  # torch is imported only where a model is loaded
    import torch


@dataclass(frozen=True)
class ModelBundle:
    module: "torch.nn.Module"  # in eval mode; returns one tensor (see models.outputs)
    example_inputs: tuple["torch.Tensor", ...]
    input_names: tuple[str, ...]
    provenance: Provenance
    load_warnings: tuple[str, ...] = ()  # what loading went on without (e.g. an unreadable .pt2 sidecar): report them

    @property
    def name(self) -> str:
        return self.provenance.model_name

    def replace(self, **changes: Any) -> "ModelBundle":
        return dataclasses.replace(self, **changes)

    def own_names(self) -> "list[tuple[str, torch.nn.Module]]":
        """(name, module) of the user's model as the user names them ("features.3"), without the prefix of the
        wrappers edgepack put around it to take one output tensor or to call forward by keyword."""
        from edgepack.models.inputs import KeywordForward
        from edgepack.models.outputs import OutputSelector

        inner, prefix = self.module, ""
        while isinstance(inner, (KeywordForward, OutputSelector)):
            inner, prefix = inner.model, prefix + "model."
        return [(name[len(prefix):], m) for name, m in self.module.named_modules()
                if name.startswith(prefix) or not prefix]
