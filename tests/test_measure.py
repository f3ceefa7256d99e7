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
