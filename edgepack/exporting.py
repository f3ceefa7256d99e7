"""Exporting one planned step through its runtime, and opening artifacts for inference, with the runtimes' native
chatter kept off the terminal (and kept as evidence when they fail)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from edgepack.quiet import captured
from edgepack.records import Artifact
from edgepack.runtimes.base import ExportRequest, QatRequest, Runtime, RuntimeOptions, Session

if TYPE_CHECKING:
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle
    from edgepack.plan import ExportStep


def export(runtime: Runtime, bundle: "ModelBundle", step: "ExportStep", out_dir: Path,
           calibration: "ArrayDataset", options: RuntimeOptions, parent: Optional[Artifact],
           qat: Optional[QatRequest], keep_float: tuple[str, ...] = ()) -> Artifact:
    """`keep_float`: module names whose layers stay in float in an int8 export (a mixed-precision rescue)."""
    # the exporters log registry chatter (e.g. absent torchvision ops) at warning level; it is not the user's concern
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    request = ExportRequest(precision=step.precision, out_dir=out_dir, calibration=calibration, options=options,
                            parent=parent, qat=qat if step.qat else None, keep_float=keep_float)
    with captured():
        return runtime.export(bundle, request)


def open_session(runtime: Runtime, artifact: Artifact, threads: int, device: str = "host") -> Session:
    """Load an artifact quietly, placed on the build's `device` (a GPU's provider and id, or the CPU for
    --device none); its session also runs quietly (runtimes log delegate creation and the like)."""
    settings = {**artifact.session_options, **runtime.session_placement(device)}
    with captured():
        session = runtime.load(Path(artifact.path), threads, settings)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with captured():
            return session(inputs)

    return run
