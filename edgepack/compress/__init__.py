"""Compression passes: structured pruning, unstructured sparsity, low-rank SVD, NdLinear, layer dropping,
distillation and fine-tuning.

A pass is one module holding its frozen config class and the function registered for it (`@register(Config)`);
`registry.PASS_MODULES` lists them in the CLI's order and `apply_passes` dispatches on the config's type. Importing
this package does not import torch: configs, the registry and parsing are stdlib only, and each pass function
imports torch when it runs.
"""

from edgepack.compress.apply import apply_passes
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.compress.distill import DistillConfig, parse_student
from edgepack.compress.finetune import FinetuneConfig
from edgepack.compress.layerdrop import DropLayersConfig
from edgepack.compress.lowrank import LowRankConfig
from edgepack.compress.ndlinear import NdLinearConfig
from edgepack.compress.parse import (known_kinds, options_help, parse_options, parse_pass, parse_recipe,
                                     recipe_fields, recipe_steps, recipe_yaml)
from edgepack.compress.prune import PruneConfig
from edgepack.compress.registry import registered_passes
from edgepack.compress.sparse import SparseConfig

__all__ = [
    "DistillConfig", "DropLayersConfig", "FinetuneConfig", "LowRankConfig", "NdLinearConfig", "PassConfig",
    "PassContext", "PassResult", "PruneConfig", "SparseConfig", "apply_passes", "known_kinds", "options_help",
    "parse_options", "parse_pass", "parse_recipe", "parse_student", "recipe_fields", "recipe_steps", "recipe_yaml",
    "register", "registered_passes",
]
