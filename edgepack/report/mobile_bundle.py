"""The mobile-ready bundle: `bundle/` (and `bundle.zip`) with the shipped artifacts, their manifest, labels and a
README showing how an Android app loads each one (each runtime writes its own snippet: `bundle_snippet`)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from edgepack.data.dataset import ArrayDataset
from edgepack.fileio import atomic_path, atomic_write_text
from edgepack.records import Artifact, Report
from edgepack.report.manifest import manifest
from edgepack.runtimes import get_runtime


def write_bundle(report: Report, out: Path, calibration: ArrayDataset | None, threads: int) -> Path:
    """Copy the shipped artifacts into out/bundle with manifest.json, labels.txt, README.md; zip it atomically."""
    bundle_dir = out / "bundle"
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    shipped = [a for a in report.artifacts if a.name in report.shipping]
    for artifact in shipped:
        for file in artifact.files():
            shutil.copy2(file, bundle_dir / file.name)
    data = manifest(report, calibration)
    data["artifacts"] = [a for a in data["artifacts"] if a["shipping"]]
    atomic_write_text(bundle_dir / "manifest.json", json.dumps(data, indent=2) + "\n")
    if report.model.labels:
        atomic_write_text(bundle_dir / "labels.txt", "\n".join(report.model.labels) + "\n")
    atomic_write_text(bundle_dir / "README.md", bundle_readme(report, shipped, threads))
    zip_path = out / "bundle.zip"
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(bundle_dir.iterdir()):
            archive.write(f, f"bundle/{f.name}")
    return zip_path


def bundle_readme(report: Report, shipped: list[Artifact], threads: int) -> str:
    model = report.model
    lines = [f"# {model.model_name} for {report.target}", "",
             f"Built by edgepack {report.edgepack_version} from `{model.source}` on {report.created}.",
             "Files, shapes, dtypes, quantization parameters, preprocessing and sha256 are in `manifest.json`; "
             "class names, one per line, in `labels.txt`." if model.labels else
             "Files, shapes, dtypes, quantization parameters, preprocessing and sha256 are in `manifest.json`.",
             "", "## Preprocessing", "", "```json", json.dumps(model.preprocessing, indent=2), "```", ""]
    for artifact in shipped:
        lines += [f"## {Path(artifact.path).name} ({artifact.runtime}, {artifact.precision})", "", artifact.scheme, ""]
        # each runtime writes its own snippet (the Android API it is loaded with); None: it has none
        snippet = get_runtime(artifact.runtime).bundle_snippet(artifact, threads, report.versions)
        if snippet:
            lines.append(snippet)
    return "\n".join(lines) + "\n"
