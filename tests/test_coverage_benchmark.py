"""The coverage benchmark's fast subset, run as a user runs it: a model trained on digits by the script, then built
through the real CLI with digits as calibration and eval data, and the table row read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"


@pytest.mark.slow
def test_the_gru_trained_on_digits_ships_int8_for_x86_with_its_accuracy():
    pytest.importorskip("transformers")  # the script's other models need it; the dev extra installs it
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--models", "gru", "--targets", "x86-cpu"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "digits weights" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| gru |")]
    assert len(rows) == 1, result.stdout
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    model, weights, target, exit_code, _, runtime, outcome, parity = cells[:8]
    assert (model, target, exit_code, runtime) == ("gru", "x86-cpu", "0", "onnxruntime")
    assert "held-out accuracy" in weights and float(weights.rsplit(" ", 1)[1]) > 0.8  # it was trained, not random
    assert outcome.startswith("shipped onnxruntime-int8 (") and "onnxruntime.quantization" in outcome  # its path
    agreement, accuracy = parity.split("; accuracy ")
    assert float(agreement) >= 0.9  # the parity floor it shipped over
    int8, fp32 = (float(part.split()[0]) for part in accuracy.split(", "))
    assert int8 > 0.8 and abs(int8 - fp32) < 0.1  # accuracy on held-out digits, through ONNX Runtime
