"""android-arm64 runtimes on the host: ExecuTorch INT8 (XNNPACK) and LiteRT INT8 against eager torch FP32.

No phone is needed: both mobile runtimes also run on x86, so this compares them here, in this run, on this machine,
1 thread, batch 1, with one in-process timing loop for all three (warm-up, then N timed calls, median). Host numbers
say how the runtimes and their INT8 schemes compare; they are not phone latencies (use `--device adb` for those).

    python benchmarks/android_host.py [--runs 100] [--models digits-cnn,resnet18-cifar,mobilenetv2-cifar,vit-tiny]

INT8 is calibrated on the digits train split for digits-cnn and on 64 N(0,1) inputs for the random-init models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgepack.data.dataset import ArrayDataset
from edgepack.models.loader import ModelRequest, load_model
from edgepack.records import Artifact
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest

from _timing import time_p50  # benchmarks/ is on sys.path when a script runs

DEFAULT_MODELS = "digits-cnn,resnet18-cifar,mobilenetv2-cifar,vit-tiny"
RUNTIMES = ("executorch", "litert")


def calibration_for(name: str, shape: tuple[int, ...]) -> ArrayDataset:
    if name.startswith("digits"):
        from edgepack.data import digits

        return digits.load_split()[0].take(128)
    x = np.random.default_rng(0).standard_normal((64, *shape[1:])).astype(np.float32)
    return ArrayDataset("64 N(0,1) samples", x, synthetic=True)


def bench_model(name: str, runs: int, workdir: Path) -> dict:
    bundle, _ = load_model(ModelRequest(f"zoo:{name}"))
    x = bundle.example_inputs[0]
    xn = x.numpy()
    calibration = calibration_for(name, tuple(x.shape))
    row: dict = {"model": name}
    torch.set_num_threads(1)
    with torch.inference_mode():
        row["eager_ms"] = time_p50(lambda: bundle.module(x), runs)
    for runtime_name in RUNTIMES:
        runtime = get_runtime(runtime_name)
        t0 = time.perf_counter()
        artifact = runtime.export(bundle, ExportRequest("int8", workdir / name, calibration=calibration))
        export_s = time.perf_counter() - t0
        session = runtime.load(Path(artifact.path), threads=1)
        row[runtime_name] = {
            "ms": time_p50(lambda s=session: s([xn]), runs),
            "bytes": artifact.size_bytes,
            "export_s": export_s,
            "off_fast_path": _off_fast_path(artifact),
        }
    return row


def _off_fast_path(artifact: Artifact) -> str:
    """What did not get the fast kernels: ExecuTorch ops left on portable kernels, LiteRT ops left in float."""
    if artifact.delegation is not None:
        d = artifact.delegation
        return f"{d.fallback_nodes}/{d.total_nodes} nodes portable"
    return f"{sum(o.count for o in artifact.float_ops)} float ops"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench_model(name, args.runs, Path(tmp)))

    print(f"android-arm64 runtimes on this host, batch 1, 1 thread, median of {args.runs} runs (ms); "
          "speed-up = eager / runtime (higher is better)")
    header = ("model", "eager fp32", "ET int8", "ET speed-up", "ET size", "ET off XNNPACK",
              "LiteRT int8", "LiteRT speed-up", "LiteRT size", "LiteRT float ops", "ET/LiteRT")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        et, lt = r["executorch"], r["litert"]
        print(f"| {r['model']} | {r['eager_ms']:.3f} | {et['ms']:.3f} | {r['eager_ms'] / et['ms']:.2f}x | "
              f"{et['bytes'] / 1024:.0f} KiB | {et['off_fast_path']} | {lt['ms']:.3f} | "
              f"{r['eager_ms'] / lt['ms']:.2f}x | {lt['bytes'] / 1024:.0f} KiB | {lt['off_fast_path']} | "
              f"{et['ms'] / lt['ms']:.2f} |")
    exports = ", ".join(f"{r['model']} {r['executorch']['export_s']:.0f}+{r['litert']['export_s']:.0f}" for r in rows)
    print(f"export seconds (ExecuTorch+LiteRT INT8): {exports}")


if __name__ == "__main__":
    main()
