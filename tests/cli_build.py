"""Running `edgepack build` from a test the way a user would, and reading back what it wrote."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from edgepack.cli import cli


def build(args: list[str], out: Path, runs: int = 3) -> tuple[int, str, dict]:
    """(exit code, everything printed, report.json or {} when none was written) of one quiet build into `out`."""
    result = CliRunner().invoke(cli, ["build", *args, "--runs", str(runs), "--out", str(out), "--quiet"])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return result.exit_code, result.output, report


def write_models(directory: Path, name: str, source: str) -> Path:
    """A user's model file holding `source`, for --model FILE:callable."""
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path
