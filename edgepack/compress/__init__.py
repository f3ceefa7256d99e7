"""Compression passes: structured pruning, unstructured sparsity, low-rank SVD, NdLinear, layer dropping, fine-tuning.

A pass is a frozen config (`configs.py`) plus one function in its own module, dispatched on the config's type by
`apply_passes`. Importing this package does not import torch: configs and parsing are stdlib only, and a pass module
is imported when a pass of its kind runs.
"""

from edgepack.compress.configs import (PASS_KINDS, DistillPassConfig, DropLayersConfig, FinetuneConfig, LowRankConfig, NdLinearConfig,
                                       PassConfig, PruneConfig, SparseConfig)
from edgepack.compress.parse import known_kinds, options_help, parse_pass, parse_recipe
from edgepack.compress.apply import Progress, apply_passes

__all__ = [
    "PASS_KINDS", "PassConfig", "PruneConfig", "SparseConfig", "LowRankConfig", "NdLinearConfig", "DropLayersConfig",
    "FinetuneConfig", "DistillPassConfig", "parse_pass", "parse_recipe", "options_help", "known_kinds", "apply_passes", "Progress",
]
