"""report.json files written by earlier edgepack versions stay readable: `edgepack check` re-judges them."""

from __future__ import annotations

import json
from pathlib import Path

from edgepack.cli import cli
from edgepack.records import Report

# Written by the first release (x86-cpu, all three runtimes, --prune 0.5 --finetune 1 --robustness --eval zoo), when
# runtime facts lived in an untyped `details` dict and pass rows were dicts; machine paths replaced.
FIRST_WAVE = Path(__file__).parent / "fixtures" / "report_first_wave.json"


def test_an_old_report_reads_into_the_typed_records():
    report = Report.from_json(FIRST_WAVE.read_text())
    pte = report.artifact("executorch-int8")
    assert pte.delegation is not None and pte.delegation.total_nodes > 0
    assert pte.delegation.fallback_nodes == 0 and pte.delegation.fallback_ops == ()
    onnx_int8 = report.artifact("onnxruntime-int8")
    assert onnx_int8.calibration is not None and onnx_int8.calibration.samples > 0
    assert onnx_int8.dynamic_batch is True and {o.op for o in onnx_int8.ops} >= {"QuantizeLinear"}
    assert report.artifact("onnxruntime-fp32").simplification is not None
    prune, finetune = report.model.passes
    assert prune.changes[0].layer == "features.0" and prune.changes[0].out_features == (16, 8)
    assert [e.epoch for e in finetune.training] == [1] and finetune.changes == ()
    assert report.robustness[0].rows[0].corruption == "clean"
    # and it writes back out in today's shape, which reads back the same
    assert Report.from_json(report.to_json()) == report


def test_check_rejudges_an_old_report(runner, tmp_path):
    saved = json.loads(FIRST_WAVE.read_text())
    ok = runner.invoke(cli, ["check", str(FIRST_WAVE), "--budget", "1MB"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("pass  size") == len(saved["shipping"])
    strict = runner.invoke(cli, ["check", str(FIRST_WAVE), "--max-accuracy-drop", "0pp", "--json"])
    verdicts = json.loads(strict.stdout)
    # judged against the original (before the build's passes), which the old report recorded
    original = next(a["top1"] for a in saved["accuracy"] if a["artifact"] == "original")
    for v in verdicts:
        shipped = next(a["top1"] for a in saved["accuracy"] if a["artifact"] == v["artifact"])
        assert abs(v["observed"] - (original - shipped) * 100) < 1e-9
    assert strict.exit_code == (3 if any(not v["passed"] for v in verdicts) else 0)
