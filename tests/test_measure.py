"""The child-process harness on a real ONNX Runtime artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgepack.measure import MeasureSpec, measure_artifact
from edgepack.stats import percentile


def test_percentile_interpolates():
    samples = [1.0, 2.0, 3.0, 4.0]
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 0) == 1.0 and percentile(samples, 100) == 4.0
    assert percentile([5.0], 90) == 5.0


def test_memory_grows_with_model_size(tmp_path):
    """A 16 MB model must peak at least its weights above a tiny one (a session has ~10 MB fixed overhead)."""
    def export(features: int) -> Path:
        path = tmp_path / f"linear{features}.onnx"
        model = torch.nn.Linear(features, features).eval()
        torch.onnx.export(model, (torch.randn(1, features),), str(path), dynamo=True, external_data=False,
                          input_names=["input"])
        return path

    spec = MeasureSpec("onnxruntime", threads=1, runs=20, warmup=2)
    big = measure_artifact("big", export(2048), [np.zeros((1, 2048), np.float32)], spec)
    small = measure_artifact("small", export(16), [np.zeros((1, 16), np.float32)], spec)
    weights = 2048 * 2048 * 4
    assert big.peak_over_baseline_bytes - small.peak_over_baseline_bytes >= 0.9 * weights, (big, small)
    assert 0 < small.peak_over_baseline_bytes < weights, small
    assert big.runs == 20 and big.p50_ms > small.p50_ms
    assert big.where.startswith("host ") and big.threads == 1


def test_one_baseline_child_per_runtime_and_build(tmp_path, monkeypatch):
    """The baseline child (same imports and inputs, no model) is the same for every artifact of a runtime in one
    build: the Measurer runs it once and subtracts the same figure from each artifact's peak."""
    import edgepack.measure as measure
    from edgepack.plan import MeasurePlan
    from edgepack.records import Artifact

    paths = []
    for features in (16, 32):
        path = tmp_path / f"linear{features}.onnx"
        torch.onnx.export(torch.nn.Linear(16, features).eval(), (torch.randn(1, 16),), str(path), dynamo=True,
                          external_data=False, input_names=["input"])
        paths.append(path)
    children: list[list[str]] = []
    real_child = measure._run_child
    monkeypatch.setattr(measure, "_run_child", lambda cmd, *a: children.append(cmd) or real_child(cmd, *a))
    measurer = measure.Measurer(MeasurePlan("host", 1, 5, 1, "p90"), "x86_64")
    results = [measurer.measure(Artifact(name=p.stem, path=str(p), format="onnx", runtime="onnxruntime",
                                         precision="fp32", size_bytes=1, sha256="", inputs=(), outputs=()),
                                [np.zeros((1, 16), np.float32)])
               for p in paths]
    assert sum("--baseline" in cmd for cmd in children) == 1 and len(children) == 3
    assert results[0].baseline_rss_bytes == results[1].baseline_rss_bytes > 0
