"""`edgepack compress`: load a model, run compression passes, save a .pt2 and the pass records beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from edgepack.errors import ToolError, one_line
from edgepack.fileio import atomic_path, atomic_write_text
from edgepack.quiet import captured
from edgepack.records import Provenance


def compress_model(model_request: Any, passes: Sequence[Any], train_spec: Optional[str], eval_spec: Optional[str],
                   out: Path, progress: Any) -> Provenance:
    from edgepack import stages
    from edgepack.compress import apply_passes
    from edgepack.pipeline import check_writable

    check_writable(out.parent)
    with progress.stage("loading model"):
        bundle, zoo_entry = stages.load(model_request)
    with progress.stage("loading data"):
        train, evaluation = stages.load_training_data(stages.DataResolver(bundle, zoo_entry), train_spec, eval_spec,
                                                      needs_training=True)
    with progress.stage(f"compressing ({len(passes)} pass(es))"), captured():
        compressed = apply_passes(bundle, list(passes), train=train, eval=evaluation)
    save_pt2(compressed, out, progress)
    return compressed.provenance


def save_pt2(bundle: Any, out: Path, progress: Any) -> None:
    """The model as a torch.export program, and its provenance (with every pass record) beside it as .json."""
    import torch

    with progress.stage(f"saving {out.name}"), captured():
        try:
            program = torch.export.export(bundle.module, bundle.example_inputs)
        except Exception as exc:
            raise ToolError(f"torch.export could not capture the model: {one_line(exc)}") from None
        with atomic_path(out) as tmp:
            torch.export.save(program, str(tmp))
        atomic_write_text(out.with_suffix(".json"), json.dumps(bundle.provenance.to_dict(), indent=2) + "\n")
