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


# A user's recurrent classifier: an 8x8 image read as 8 steps of 8 features, by a GRU called without an initial state
# (as most user code calls it), then a Linear head. `build()` returns it with its example input.
GRU_CLASSIFIER = """
import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 8, 8))
        return self.head(out[:, -1])


def build():
    torch.manual_seed(0)
    return Recurrent().eval(), torch.randn(1, 1, 8, 8)
"""
