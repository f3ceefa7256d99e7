"""x86-cpu benchmark: eager torch FP32, ONNX Runtime FP32, a hand-tuned ONNX Runtime INT8, and edgepack's INT8.

Everything is measured in this one run, on this machine, 1 thread, batch 1, with one timing loop for all four
(warm-up, then N timed calls, median). The hand-tuned INT8 is made here directly with onnxruntime.quantization
(pre-processing, static QDQ, per-channel int8 weights, uint8 activations), the best settings we know for VNNI CPUs.

    python benchmarks/x86_cpu.py [--runs 200] [--models resnet18-cifar,mobilenetv2-cifar]

Targets (issue #2): edgepack INT8 p50 <= 1.05 x hand-tuned p50; >= 5x faster than eager for the ResNet-18.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgepack.cli import cli
from edgepack.runtimes.onnxruntime import OnnxRuntime

from _timing import time_p50  # benchmarks/ is on sys.path when a script runs


def hand_tuned_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


def bench_model(name: str, runs: int, workdir: Path) -> dict[str, float]:
    from click.testing import CliRunner

    out = workdir / name
    result = CliRunner().invoke(cli, ["build", "--model", f"zoo:{name}", "--runs", "20", "--out", str(out), "--quiet"])
    if result.exit_code != 0:
        raise SystemExit(f"edgepack build failed for {name}: {result.output}")
    from edgepack.models import zoo

    entry = zoo.entry(name)
    model = zoo.build(name)
    x = torch.randn(*entry.input_shape)
    xn = x.numpy()
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, *entry.input_shape[1:])).astype(np.float32)
    fp32 = out / f"{name}-fp32.onnx"
    tuned = hand_tuned_int8(fp32, workdir / f"{name}-hand-int8.onnx", calibration)
    rt = OnnxRuntime()
    sessions = {
        "ort_fp32": rt.load(fp32, 1),
        "hand_int8": rt.load(tuned, 1),
        "edgepack_int8": rt.load(out / f"{name}-int8.onnx", 1),
    }
    torch.set_num_threads(1)
    with torch.inference_mode():
        p50 = {"eager_fp32": time_p50(lambda: model(x), runs)}
    for key, session in sessions.items():
        p50[key] = time_p50(lambda s=session: s([xn]), runs)
    return p50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--models", default="resnet18-cifar,mobilenetv2-cifar")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            p50 = bench_model(name, args.runs, Path(tmp))
            rows.append((name, p50))
    print(f"x86-cpu, batch 1, 1 thread, median of {args.runs} runs (ms); ratios: lower is better for the first")
    header = ("model", "eager fp32", "ORT fp32", "hand INT8", "edgepack INT8", "edgepack/hand", "eager/edgepack")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, p in rows:
        print(f"| {name} | {p['eager_fp32']:.3f} | {p['ort_fp32']:.3f} | {p['hand_int8']:.3f} | "
              f"{p['edgepack_int8']:.3f} | {p['edgepack_int8'] / p['hand_int8']:.3f} | "
              f"{p['eager_fp32'] / p['edgepack_int8']:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
