"""PTQ vs QAT INT8 accuracy per runtime on held-out digits (360 images), each artifact run on its own runtime.

    python benchmarks/ptq_vs_qat.py [--epochs 3] [--lr 1e-4]      # about 3 minutes on 2 cores

Models: the zoo's digits-cnn and digits-vit, and a quarter-width DigitsCNN trained here (fewer channels leave less
slack for rounding). Per runtime the artifacts are what `edgepack build` ships: FP32; INT8 by post-training
quantization (ONNX Runtime: quantize_static QDQ, u8 activations, per-channel s8 weights; ExecuTorch: PT2E with the
XNNPACK quantizer, 256 calibration images); INT8 by PT2E quantization-aware training (`--qat`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgepack.data import digits
from edgepack.models.architectures import DigitsCNN
from edgepack.models.bundle import ModelBundle
from edgepack.models.loader import ModelRequest, count_params_and_macs, load_model
from edgepack.records import Provenance
from edgepack.runtimes.qat import compare_ptq_qat
from edgepack.training import train_classifier

RUNTIMES = ("onnxruntime", "executorch")


def bundle_of(module: torch.nn.Module, name: str) -> ModelBundle:
    """A bundle for a model trained in this script (the zoo models come from the loader)."""
    example = (torch.zeros(1, 1, 8, 8),)
    params, macs = count_params_and_macs(module, example)
    provenance = Provenance(source=name, kind="python", model_name=name, output_taken="tensor", params=params,
                            macs=macs, input_shapes=((1, 1, 8, 8),), preprocessing=dict(digits.PREPROCESSING))
    return ModelBundle(module.eval(), example, ("input",), provenance)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="QAT epochs")
    parser.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train, test = digits.load_split()
    calibration = train.take(256)
    torch.manual_seed(0)
    narrow = train_classifier(DigitsCNN(width=0.25), train, 30, lr=1e-2, seed=0)
    bundles = [load_model(ModelRequest("zoo:digits-cnn"))[0], bundle_of(narrow, "digits-cnn-w0.25"),
               load_model(ModelRequest("zoo:digits-vit"))[0]]
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in bundles:
            started = time.perf_counter()
            rows = compare_ptq_qat(bundle, train, test, Path(tmp) / bundle.name, runtimes=RUNTIMES,
                                   epochs=args.epochs, lr=args.lr, calibration=calibration)
            by = {(r["runtime"], r["method"]): r["top1"] for r in rows}
            cells = [by["eager", "fp32"]] + [by[rt, m] for rt in RUNTIMES for m in ("fp32", "ptq", "qat")]
            table.append((bundle.name, bundle.provenance.params, cells, time.perf_counter() - started))
    print(f"\nHeld-out top-1 on {len(test)} digits; QAT {args.epochs} epoch(s) at lr {args.lr}; calibration "
          f"{len(calibration)} training images; artifacts run on their runtime on this host, 1 thread\n")
    print("| model | params | eager FP32 | ORT FP32 | ORT PTQ | ORT QAT | ExecuTorch FP32 | ExecuTorch PTQ "
          "| ExecuTorch QAT | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, params, cells, seconds in table:
        print(f"| {name} | {params:,} | " + " | ".join(f"{c * 100:.2f}" for c in cells) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
