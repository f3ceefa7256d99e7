"""manifest.json: what an app needs to load the artifacts (files, shapes, dtypes, quantization, preprocessing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from edgepack.data.dataset import ArrayDataset
from edgepack.fileio import atomic_write_text
from edgepack.records import Report


def manifest(report: Report, calibration: Optional[ArrayDataset] = None) -> dict[str, Any]:
    model = report.model
    return {
        "model": model.model_name,
        "source": model.source,
        "target": report.target,
        "output_taken": model.output_taken,
        "preprocessing": model.preprocessing,
        "labels": list(model.labels),
        "calibration": None if calibration is None else {"source": calibration.name, "samples": len(calibration),
                                                         "synthetic": calibration.synthetic},
        "artifacts": [
            {
                "file": Path(a.path).name,
                "format": a.format,
                "runtime": a.runtime,
                "precision": a.precision,
                "scheme": a.scheme,
                "size_bytes": a.size_bytes,
                "sha256": a.sha256,
                # files the app must place beside "file" (an OpenVINO IR's weights); size_bytes includes them
                "companions": [{"file": c.name, "size_bytes": c.size_bytes, "sha256": c.sha256}
                               for c in a.companions],
                "inputs": [i.to_dict() for i in a.inputs],
                "outputs": [o.to_dict() for o in a.outputs],
                "session_options": dict(a.session_options),
                "shipping": a.name in report.shipping,
            }
            for a in report.artifacts
        ],
        "versions": report.versions,
        "edgepack_version": report.edgepack_version,
        "created": report.created,
    }


def write_manifest(report: Report, path: Path, calibration: Optional[ArrayDataset] = None) -> None:
    atomic_write_text(path, json.dumps(manifest(report, calibration), indent=2) + "\n")
