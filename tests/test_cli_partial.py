"""One runtime failing never loses the others' artifacts: it is recorded, and fails the build unless accepted."""

from __future__ import annotations

import json

import pytest

from edgepack.cli import cli
from edgepack.gates import judge
from edgepack.models.request import ModelRequest
from edgepack.plan import BuildRequest, plan
from edgepack.records import Report

# ExecuTorch exports a 7-D transpose but its runtime cannot load the program (error 0x1); LiteRT converts and runs it.
HIGH_RANK_MODEL = '''
import torch
from torch import nn


class HighRank(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        h = self.inp(x.flatten(1)).reshape(-1, 2, 2, 2, 2, 2, 4).permute(0, 6, 5, 4, 3, 2, 1)
        return self.out(h.reshape(-1, 128))


def build():
    torch.manual_seed(0)
    return HighRank().eval(), torch.randn(1, 1, 8, 8)
'''


@pytest.mark.slow
def test_a_failing_runtime_is_recorded_and_the_other_ships(runner, tmp_path):
    model = tmp_path / "rank.py"
    model.write_text(HIGH_RANK_MODEL)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["build", "--model", f"{model}:build", "--target", "android-arm64", "--threads", "1",
                                 "--runs", "3", "--no-bundle", "--out", str(out), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "budget failed: executorch (failed at parity): executorch could not load rank-fp32.pte" \
        in " ".join(result.output.split())
    report = json.loads((out / "report.json").read_text())
    assert report["shipping"] == ["litert-int8"]
    (failure,) = report["failures"]
    assert (failure["runtime"], failure["stage"], failure["artifact"]) == ("executorch", "parity", "executorch-fp32")
    # the .pte that could not be loaded was never verified: it is not kept; LiteRT's files all are
    assert {a["name"] for a in report["artifacts"]} == {"litert-fp32", "litert-int8"}
    assert {m["artifact"] for m in report["measurements"]} == {"litert-fp32", "litert-int8"}
    assert (out / "rank-int8.tflite").is_file() and not (out / "rank-fp32.pte").exists()
    assert "## Runtime failures" in (out / "report.md").read_text()
    # re-judged later, the failure still fails; accepting partial results is a build-time decision
    assert result.exit_code == runner.invoke(cli, ["check", str(out / "report.json")]).exit_code
    saved = Report.from_json((out / "report.json").read_text())
    without_gate = [b for b in saved.budgets if b.metric != "runtimes"]
    assert all(v.passed for v in judge(saved, without_gate))


def test_allow_partial_drops_the_every_runtime_budget():
    request = BuildRequest(ModelRequest("zoo:digits-cnn"), target="android-arm64")
    assert [b.metric for b in plan(request).budgets] == ["runtimes"]
    assert plan(BuildRequest(ModelRequest("zoo:digits-cnn"), target="android-arm64", allow_partial=True)).budgets == ()
