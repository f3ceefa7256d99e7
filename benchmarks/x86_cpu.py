"""x86-cpu benchmark: which runtime should ship on this CPU, measured side by side in one interleaved run.

For each model, `edgepack build --target x86-cpu --runtime auto` runs first (in a subprocess, as a user runs it): it
builds every installed runtime, measures each in its own child process and ships one. Then, in this one process, with
the same thread count, these are timed interleaved (each round calls every candidate `--calls` times in turn, so a
slow spell of the machine hits them all alike), batch 1:

- eager PyTorch FP32;
- ONNX Runtime FP32 (edgepack's export);
- a hand-tuned ONNX Runtime INT8, made here with onnxruntime.quantization directly (pre-processing, static QDQ,
  per-channel int8 weights, uint8 activations: the best settings we know for VNNI CPUs);
- edgepack's ONNX Runtime INT8 and OpenVINO INT8, as the build wrote them;
- the artifact `--runtime auto` shipped.

Peak memory is each artifact's own measuring child (peak RSS over a baseline child with the same imports), run here.

    python benchmarks/x86_cpu.py [--threads 1,2] [--models resnet18-cifar,vit-tiny,hf-resnet] [--rounds 30]

Targets (issue 12): auto's pick p50 <= 0.95 x the hand-tuned ORT INT8 p50 on the ResNet-18; auto's pick never slower
than edgepack's ORT INT8 by more than noise (the wider p50-to-p90 spread of the two) on any model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from coverage import MODELS, PRELUDE, edgepack_command  # benchmarks/ is on sys.path when a script runs

# zoo models, and third-party architectures from Hugging Face configs (random weights, no download)
THIRD_PARTY = {"hf-resnet": "resnet", "hf-convnext": "convnext", "hf-vit": "vit"}
DEFAULT_MODELS = "resnet18-cifar,mobilenetv2-cifar,vit-tiny,hf-resnet,hf-convnext"


def hand_tuned_int8(fp32: Path, out: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


def model_spec(name: str, workdir: Path) -> str:
    if name not in THIRD_PARTY:
        return f"zoo:{name}"
    path = workdir / f"{name.replace('-', '_')}.py"
    path.write_text(PRELUDE + MODELS[THIRD_PARTY[name]])
    return f"{path}:build"


def build(spec: str, out: Path, threads: int) -> dict[str, Any]:
    cmd = [*edgepack_command(), "build", "--model", spec, "--target", "x86-cpu", "--runtime", "auto", "--threads",
           str(threads), "--runs", "50", "--out", str(out), "--quiet", "--no-bundle"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgepack build failed for {spec} (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def load_model(spec: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    from edgepack.loading import load_bundle
    from edgepack.models.request import ModelRequest

    bundle = load_bundle(ModelRequest(spec)).bundle
    return bundle.module, tuple(bundle.example_inputs)


def interleaved_p50(fns: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up
        for _ in range(10):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                samples[key].append((time.perf_counter() - t0) * 1e3)
    return samples


def bench(name: str, threads: int, rounds: int, calls: int, workdir: Path) -> dict[str, Any]:
    from edgepack.measure import MeasureSpec, measure_artifact
    from edgepack.runtimes import get_runtime

    spec = model_spec(name, workdir)
    out = workdir / f"{name}-t{threads}"
    started = time.perf_counter()
    report = build(spec, out, threads)
    build_s = time.perf_counter() - started
    artifacts = {a["name"]: a for a in report["artifacts"]}
    shipped = report["shipping"][0]
    model, example = load_model(spec)
    feeds = [x.numpy() for x in example]
    input_names = [i["name"] for i in artifacts["onnxruntime-fp32"]["inputs"]]
    rng = np.random.default_rng(0)
    calibration = [{n: rng.standard_normal(x.shape).astype(np.float32) if x.dtype == np.float32 else x
                    for n, x in zip(input_names, feeds)} for _ in range(64)]
    hand = hand_tuned_int8(Path(artifacts["onnxruntime-fp32"]["path"]), workdir / f"{name}-hand-int8.onnx",
                           calibration)
    files = {"ort_fp32": (artifacts["onnxruntime-fp32"], None), "hand_int8": (artifacts["onnxruntime-fp32"], hand),
             "ort_int8": (artifacts["onnxruntime-int8"], None), "ov_int8": (artifacts["openvino-int8"], None),
             "auto": (artifacts[shipped], None)}
    sessions: dict[str, Callable[[], object]] = {}
    for key, (artifact, path) in files.items():
        settings = {} if path else artifact.get("session_options") or {}
        run = get_runtime(artifact["runtime"]).load(path or Path(artifact["path"]), threads, settings)
        sessions[key] = lambda run=run: run(feeds)
    torch.set_num_threads(threads)

    def eager() -> object:
        with torch.inference_mode():
            return model(*example)

    samples = interleaved_p50({"eager_fp32": eager, **sessions}, rounds, calls)
    memory = {}
    for key, (artifact, path) in files.items():
        spec = MeasureSpec(artifact["runtime"], threads, 20, 5)
        m = measure_artifact(key, path or Path(artifact["path"]), feeds, spec,
                             {} if path else artifact.get("session_options"))
        memory[key] = m.peak_over_baseline_bytes
    return {"model": name, "threads": threads, "shipped": shipped, "build_s": build_s, "samples": samples,
            "memory": memory}


def p(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10, help="calls per candidate per round")
    parser.add_argument("--json", help="write every sample here (rewritten after each model)")
    args = parser.parse_args()
    print(f"x86-cpu, batch 1, p50 of {args.rounds} interleaved rounds x {args.calls} calls (ms); peak memory over "
          f"baseline from each artifact's measuring child (MB)")
    header = ("model", "threads", "eager fp32", "ORT fp32", "hand ORT INT8", "edgepack ORT INT8", "OpenVINO INT8",
              "auto's pick", "pick / hand", "pick / ORT INT8", "memory MB: ORT INT8 / OV INT8 / pick")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            for name in args.models.split(","):
                row = bench(name, threads, args.rounds, args.calls, Path(tmp))
                rows.append(row)
                print(row_line(row), flush=True)  # each row as soon as it is measured
                if args.json:
                    Path(args.json).write_text(json.dumps(rows))


def row_line(row: dict[str, Any]) -> str:
    keys = ("eager_fp32", "ort_fp32", "hand_int8", "ort_int8", "ov_int8", "auto")
    s, mem = row["samples"], row["memory"]
    p50 = {k: statistics.median(s[k]) for k in keys}
    noise = max(p(s["auto"], 90) - p50["auto"], p(s["ort_int8"], 90) - p50["ort_int8"])
    slower = p50["auto"] - p50["ort_int8"] > noise
    return (f"| {row['model']} | {row['threads']} | " + " | ".join(f"{p50[k]:.3f}" for k in keys[:-1])
            + f" | {p50['auto']:.3f} ({row['shipped']}) | {p50['auto'] / p50['hand_int8']:.2f} | "
            f"{p50['auto'] / p50['ort_int8']:.2f}{' (slower beyond noise)' if slower else ''} | "
            + " / ".join(f"{(mem[k] or 0) / 1e6:.1f}" for k in ("ort_int8", "ov_int8", "auto")) + " |")


if __name__ == "__main__":
    main()
