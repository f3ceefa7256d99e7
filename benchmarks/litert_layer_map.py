"""Can LiteRT keep each layer of a real architecture in float? A check of the mixed-precision path on the coverage
benchmark's architectures (Hugging Face configs and plain PyTorch models, random weights, nothing downloaded).

A LiteRT `-int8-mixed` file is made by ai-edge-quantizer from the converted fp32 .tflite, told which ops to leave
float; the ops are found from the PyTorch module names through the places litert-torch writes into tensor names, and
by weight values where those names are ambiguous (edgepack/runtimes/_aeq.py). For each architecture this script
exports the fp32 file, then for every Conv/Linear layer asks which ops keeping it in float leaves float, and prints a
Markdown row: the layers, how many map to no op or to more than one, how many ops are claimed by more than one layer,
how many one-layer matches disagree with the layer's weights (up to a factor per output channel: a BatchNorm folded
into a layer's input side also disagrees), and whether a mixed file with the first three layers in float was written,
loaded and ran. A rescue can only keep in float what maps here.

    python benchmarks/litert_layer_map.py                    # every architecture (about 3 minutes on 2 cores)
    python benchmarks/litert_layer_map.py --models bert,swin
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import coverage  # benchmarks/ is on sys.path when a script runs


def check(name: str, workdir: Path) -> str:
    import numpy as np

    from edgepack.data.dataset import ArrayDataset, feed_array
    from edgepack.models.loader import ModelRequest, load_model
    from edgepack.rescue import quantizable_layers
    from edgepack.runtimes import get_runtime
    from edgepack.runtimes._aeq import _same_channels, op_owners, weighted_ops
    from edgepack.runtimes.base import ExportRequest

    start = time.perf_counter()
    coverage.write_model(name, workdir, "random")
    bundle, _ = load_model(ModelRequest(f"{workdir / name}.py:build"))
    runtime = get_runtime("litert")
    runtime.export(bundle, ExportRequest("fp32", workdir / name))
    rng = np.random.default_rng(0)
    arrays = tuple(rng.standard_normal((16, *x.shape[1:])).astype(np.float32) if x.dtype.is_floating_point
                   else np.repeat(x.numpy(), 16, axis=0) for x in bundle.example_inputs)
    calibration = ArrayDataset("random", arrays)
    calibrated = runtime._calibrated_model(bundle, calibration)  # what a rescue starts from
    layers = [layer for layer, _ in quantizable_layers(bundle.module)]
    claimed: collections.Counter[str] = collections.Counter()
    unmapped = several = 0
    for layer in layers:
        try:
            scopes = calibrated.float_scopes(bundle.module, (layer,))
        except Exception:  # noqa: BLE001 - a layer that maps to no op is what this script counts
            unmapped += 1
            continue
        several += len(scopes) > 1
        claimed.update(scopes)
    ops = weighted_ops(calibrated.fp32)
    modules = dict(bundle.module.named_modules())
    disagree = sum(1 for op, (_, owners) in zip(ops, op_owners(ops, bundle.module))
                   if len(owners) == 1 and hasattr(modules.get(owners[0]), "weight") and op.weight is not None
                   and not _same_channels(op.weight, op.out_axis, modules[owners[0]]))
    keep = tuple(layers[:3])
    mixed = runtime.export(bundle, ExportRequest("int8", workdir / name / "mixed", calibration=calibration,
                                                 keep_float=keep))
    out = runtime.load(Path(mixed.path), 1)([feed_array(a[:4]) for a in arrays])
    ran = "yes" if all(np.isfinite(o).all() for o in out) else "non-finite output"
    float_ops = ", ".join(f"{op.op} x{op.count}" for op in mixed.float_ops)
    return (f"| {name} | {len(layers)} | {unmapped} | {several} | {sum(1 for n in claimed.values() if n > 1)} | "
            f"{disagree} | {ran} ({float_ops}) | {time.perf_counter() - start:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(coverage.MODELS),
                        help=f"comma-separated, from: {', '.join(coverage.MODELS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in coverage.MODELS]
    if unknown:
        sys.exit(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(coverage.MODELS)}")
    print("| model | Conv/Linear layers | no op | several ops | ops claimed twice | weights disagree | "
          "mixed file with 3 layers in float runs (its float ops) | time |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="edgepack-litert-map-") as tmp:
        for name in names:
            try:
                print(check(name, Path(tmp)), flush=True)
            except Exception as exc:  # noqa: BLE001 - one architecture failing is a row, not the end of the table
                print(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:200]} | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
