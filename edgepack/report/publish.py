"""Publishing a finished build: move the staged artifacts into the output directory, then write the manifest, the
mobile bundle and the reports (report.md, report.html, report.json). report.json is written last, so its presence
means the build completed."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from edgepack.data.dataset import ArrayDataset
from edgepack.records import Artifact, Report

WarnFn = Callable[[str], None]


def publish(report: Report, out: Path, calibration: Optional[ArrayDataset], threads: int, bundle: bool,
            warn: WarnFn) -> Report:
    from edgepack.report.manifest import write_manifest

    report = replace(report, artifacts=_move_artifacts(report, None, out, warn))
    write_manifest(report, out / "manifest.json", calibration)
    if bundle:
        from edgepack.report.mobile_bundle import write_bundle

        write_bundle(report, out, calibration, threads)
    _write_reports(report, out)
    return report


def _move_artifacts(report: Report, source: Optional[Path], out: Path, warn: WarnFn) -> tuple[Artifact, ...]:
    """Every artifact's files moved into `out` (from `source` when given, else from where the report says), the
    companions first and the main file last; what an earlier build there listed and this one does not is removed."""
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous_artifacts(out, {f.name for a in report.artifacts for f in a.files()}, warn)
    moved = []
    for artifact in report.artifacts:
        for file in artifact.files():
            os.replace(file if source is None else source / file.name, out / file.name)
        moved.append(replace(artifact, path=str(out / Path(artifact.path).name)))
    return tuple(moved)


def _write_reports(report: Report, out: Path) -> None:
    """report.md, report.html, then report.json: its presence means the build completed."""
    from edgepack.report import html, render

    render.write_markdown(report, out / "report.md")
    html.write_html(report, out / "report.html")
    render.write_json(report, out / "report.json")


def _remove_previous_artifacts(out: Path, keep: set[str], warn: WarnFn) -> None:
    """Delete artifacts an earlier build listed in out/manifest.json that this build does not produce again, so the
    directory never holds a file its report does not describe. Only files edgepack itself listed are touched."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return
    try:
        listed = [name for a in json.loads(manifest.read_text(encoding="utf-8"))["artifacts"]
                  for name in (a["file"], *(c["file"] for c in a.get("companions", ())))]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warn(f"{manifest} from an earlier build is unreadable ({type(exc).__name__}); artifacts it may list were "
             f"left in place")
        return
    for name in listed:
        if isinstance(name, str) and name not in keep and Path(name).name == name:
            (out / name).unlink(missing_ok=True)



def adopt_build(build_dir: Path, out: Path, warn: WarnFn) -> Report:
    """Move a finished build (written by `publish` into `build_dir`, e.g. one candidate of `build --auto`) into
    `out`, as if it had been built there: artifacts and their companions, manifest and bundle moved, the reports
    written again with the new paths, report.json last."""
    import shutil

    from edgepack.report.reading import read_report

    report = read_report(build_dir / "report.json")
    report = replace(report, artifacts=_move_artifacts(report, build_dir, out, warn), out_dir=str(out))
    for name in ("manifest.json", "bundle.zip", "bundle"):
        if (build_dir / name).exists():
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            os.replace(build_dir / name, out / name)
    _write_reports(report, out)
    return report
