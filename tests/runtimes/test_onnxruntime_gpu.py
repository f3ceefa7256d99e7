"""The cuda target's runtime (onnxruntime-gpu): what runs everywhere — the FP16 conversion, INT8 QDQ for TensorRT,
numerics on the CPU provider, the refusal of a session that fell back to the CPU, the two-packages conflict, the GPU
reading through nvidia-smi's CSV, `--device none` builds — and, only where an NVIDIA GPU and onnxruntime-gpu are
present, a build measured on the GPU."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgepack.device import nvidia
from edgepack.errors import UsageError
from edgepack.measure import MeasureSpec, measure_artifact
from edgepack.records import Measurement
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest
from edgepack.runtimes.onnxruntime_gpu import KEEP_FP32_OPS, OnnxRuntimeGpuOptions, gpu_providers_missing

from tests.cli_build import build

REPO = Path(__file__).resolve().parents[2]
NO_GPU = gpu_providers_missing() or nvidia.find_gpu(0)[1]


@pytest.fixture(scope="module")
def runtime():
    return get_runtime("onnxruntime-gpu")


@pytest.fixture(scope="module")
def wide_files(runtime, wide_bundle, calibration, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-wide")
    fp32 = runtime.export(wide_bundle, ExportRequest("fp32", out))
    fp16 = runtime.export(wide_bundle, ExportRequest("fp16", out, parent=fp32))
    int8 = runtime.export(wide_bundle, ExportRequest("int8", out, calibration=calibration, parent=fp32))
    return fp32, fp16, int8


def on_cpu(runtime, artifact, inputs):
    settings = {**artifact.session_options, **runtime.session_placement("none")}
    return runtime.load(Path(artifact.path), 1, settings)([inputs])[0]


def test_fp16_is_float16_inside_float32_at_the_edges_and_agrees_on_the_cpu(runtime, wide_files, wide_bundle, eager,
                                                                           digits_split):
    fp32, fp16, _ = wide_files
    model = onnx.load(fp16.path)
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) >= 2]
    assert weights and all(w.dtype == np.float16 for w in weights)
    assert [t.dtype for t in fp16.inputs + fp16.outputs] == ["float32", "float32"]  # the app feeds the same arrays
    assert fp16.parent == fp32.name and fp16.precision == "fp16"
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    assert fp16.session_options == {"providers": "tensorrt,cuda,cpu", "trt_fp16_enable": "1"}
    x = digits_split[1].arrays[0][:64]
    reference = eager(wide_bundle, x)
    got = on_cpu(runtime, fp16, x)
    assert np.array_equal(got.argmax(1), reference.argmax(1))
    scale = np.abs(reference).max()
    assert 0 < np.abs(got - reference).max() < 1e-2 * scale  # fp16 rounding, nothing worse


def test_fp16_keeps_the_numerically_sensitive_ops_in_fp32(runtime, transformer_bundle, token_data, eager,
                                                          tmp_path):
    fp32 = runtime.export(transformer_bundle, ExportRequest("fp32", tmp_path))
    fp16 = runtime.export(transformer_bundle, ExportRequest("fp16", tmp_path, parent=fp32))
    graph = onnx.load(fp16.path).graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    assert softmax, "the attention block exports a Softmax"
    produced_by_cast = {o: n for n in graph.node if n.op_type == "Cast" for o in n.output}
    # a node kept in fp32 is fed by a Cast to float (1) from the fp16 graph around it
    for node in softmax:
        cast = produced_by_cast[node.input[0]]
        assert next(a.i for a in cast.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    assert "Softmax" in fp16.scheme and "kept in fp32" in fp16.scheme
    x = token_data[1].arrays[0][:32]
    reference = eager(transformer_bundle, x)
    assert np.abs(on_cpu(runtime, fp16, x) - reference).max() < 2e-2 * np.abs(reference).max()


class LargeInside(torch.nn.Module):
    """Scales its hidden values far beyond fp16's largest value (65504), then back: fine in fp32, infinite in fp16."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc(x)) * 40000.0
        return self.head(hidden * 4.0 / 160000.0)


def test_nodes_whose_outputs_leave_fp16s_range_stay_in_fp32(runtime, make_bundle, eager, tmp_path):
    from edgepack.data.dataset import ArrayDataset
    from edgepack.runtimes.onnxruntime_gpu import convert_to_fp16

    bundle = make_bundle(LargeInside().eval(), (1, 8), "large-inside")
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    fp32 = runtime.export(bundle, ExportRequest("fp32", tmp_path))
    fp16 = runtime.export(bundle, ExportRequest("fp16", tmp_path, calibration=ArrayDataset("random", x),
                                                parent=fp32))
    assert any("make or read values beyond fp16's range (65504)" in note for note in fp16.notes), fp16.notes
    assert "node(s) handling values beyond fp16's range kept in fp32" in fp16.scheme
    reference = eager(bundle, x)
    got = on_cpu(runtime, fp16, x)
    assert np.isfinite(got).all() and np.abs(got - reference).max() < 1e-2 * np.abs(reference).max()
    # the same conversion without those nodes kept in fp32: the hidden values overflow and the output is lost
    naive = tmp_path / "naive-fp16.onnx"
    convert_to_fp16(Path(fp32.path), naive, KEEP_FP32_OPS)
    lost = runtime.load(naive, 1, {"providers": "cpu"})([x])[0]
    assert not np.isfinite(lost).all() or np.abs(lost - reference).max() > 0.1 * np.abs(reference).max()


def test_int8_is_symmetric_qdq_on_weighted_ops_for_tensorrt(runtime, wide_files, wide_bundle, eager, digits_split):
    _, _, int8 = wide_files
    graph = onnx.load(int8.path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for node in quantize:  # symmetric: TensorRT's explicit quantization takes zero points of 0 only
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    weights = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits for o in n.output}
    consumers = {n.op_type for n in graph.node if any(i in weights for i in n.input)}
    assert consumers and consumers <= {"Conv", "ConvTranspose", "MatMul", "Gemm"}, consumers
    assert int8.session_options["trt_int8_enable"] == "1" and "TensorRT" in int8.scheme
    assert int8.int8_weight_share is not None and int8.int8_weight_share > 0.9
    x = digits_split[1].arrays[0][:64]
    agreement = np.mean(on_cpu(runtime, int8, x).argmax(1) == eager(wide_bundle, x).argmax(1))
    assert agreement >= 0.9


@pytest.mark.skipif(not NO_GPU, reason="a GPU provider is available here: the CPU-fallback refusal cannot be seen")
def test_a_session_that_fell_back_to_the_cpu_is_refused(runtime, wide_files):
    fp32 = wide_files[0]
    with pytest.raises(UsageError) as info:
        runtime.load(Path(fp32.path), 1, {**fp32.session_options, "device_id": "0"})
    message = str(info.value)
    assert "asked for TensorrtExecutionProvider, CUDAExecutionProvider, but the session runs on " \
           "CPUExecutionProvider only" in message
    assert "refusing to measure the CPU and call it the GPU" in message and "\n" not in message


def test_the_timed_session_binds_inputs_and_outputs(runtime, wide_files, digits_split):
    """The I/O-binding loop the GPU is timed with, run on the CPU provider: a real child process, real samples."""
    _, fp16, _ = wide_files
    x = digits_split[1].arrays[0][:1]
    m = measure_artifact(fp16.name, Path(fp16.path), [x], MeasureSpec("onnxruntime-gpu", 1, 20, 2),
                         {**fp16.session_options, "providers": "cpu"})
    assert m.runs == 20 and m.p50_ms > 0 and m.accelerator == "" and m.device_memory_bytes is None
    session = runtime.timed_session(Path(fp16.path), 1, {"providers": "cpu"}, [x])
    session.run()
    assert session.facts() == {}


def test_options_refuse_a_target_that_would_run_on_the_cpu_alone():
    with pytest.raises(ValueError, match="providers must name tensorrt or cuda"):
        OnnxRuntimeGpuOptions(providers=["cpu"])
    with pytest.raises(ValueError, match="'rocm' is not one of: tensorrt, cuda, cpu"):
        OnnxRuntimeGpuOptions(providers=["rocm", "cpu"])
    assert OnnxRuntimeGpuOptions(providers=["cuda"]).providers == ("cuda",)
    assert "Softmax" in KEEP_FP32_OPS


def fake_dist(directory: Path, name: str, version: str) -> Path:
    info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return directory


def test_both_onnxruntime_packages_installed_is_explained_and_exits_2(tmp_path):
    """A second distribution claiming the onnxruntime module (as `pip install onnxruntime-gpu` beside onnxruntime
    leaves it): every ONNX Runtime build stops before any work, and `edgepack targets` says why."""
    site = fake_dist(tmp_path / "site", "onnxruntime-gpu", "1.31.1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    cmd = [sys.executable, "-c", "from edgepack.cli import main; main()"]
    built = subprocess.run(cmd + ["build", "--model", "zoo:digits-cnn", "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert built.returncode == 2, built.stderr
    assert "onnxruntime-gpu 1.31.1 are both installed" in built.stderr
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in built.stderr
    assert not (tmp_path / "out").exists()
    targets = subprocess.run(cmd + ["targets"], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in targets.stdout.splitlines() if "- onnxruntime" in line]
    assert lines and all("are both installed" in line for line in lines), targets.stdout


def fake_smi(directory: Path, gpus: str, apps: str) -> Path:
    """An `nvidia-smi` that prints what the real one prints for these queries (CSV, no header)."""
    directory.mkdir()
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\ncase \"$*\" in\n"
                      f"  *--query-gpu=index,name,driver_version*) printf '{gpus}' ;;\n"
                      "  *--query-gpu=memory.used*) printf '1234\\n' ;;\n"
                      f"  *--query-compute-apps*) printf '{apps}' ;;\n"
                      "  *) exit 9 ;;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return directory


@pytest.mark.skipif(nvidia._nvml() is not None, reason="NVML answers here, so nvidia-smi is not the one read")
def test_the_gpu_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    bin_dir = fake_smi(tmp_path / "bin", "0, NVIDIA H100 80GB HBM3, 570.86.15\\n1, NVIDIA L4, 570.86.15\\n",
                       f"{os.getpid()}, 812\\n99999, 5\\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert nvidia.find_gpu(1) == (nvidia.Gpu(1, "NVIDIA L4", "570.86.15"), "")
    gpu, why = nvidia.find_gpu(2)
    assert gpu is None and why == "nvidia-smi lists 2 GPU(s); there is no GPU 2"
    assert nvidia.process_memory(0, os.getpid()) == 812 * 2**20
    assert nvidia.process_memory(0, 4242) is None
    assert nvidia.device_memory_used(0) == 1234 * 2**20
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert nvidia.find_gpu(0) == (None, "no NVIDIA driver found (neither NVML nor nvidia-smi answers)")


def test_the_memory_budget_judges_gpu_memory_when_there_is_some():
    from edgepack.gates import observe
    from edgepack.records import Artifact, Budget

    artifact = Artifact(name="a", path="a.onnx", format="onnx", runtime="onnxruntime-gpu", precision="int8",
                        size_bytes=1, sha256="0" * 64, inputs=(), outputs=())
    base = dict(artifact="a", runtime="onnxruntime-gpu", where="GPU 0", cpu="c", threads=1, warmup=1, runs=1,
                p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, mean_ms=1.0, std_ms=0.0, min_ms=1.0, max_ms=1.0, init_ms=None,
                first_run_ms=None, peak_rss_bytes=900, baseline_rss_bytes=100, peak_over_baseline_bytes=800)
    budget = Budget(name="memory", metric="memory", limit=1.0, unit="bytes", text="1B")
    on_cpu_only = Measurement(**base)
    on_gpu = Measurement(**base, accelerator="NVIDIA L4, driver 570, CUDAExecutionProvider",
                         device_memory_bytes=5000)
    assert observe(budget, artifact, [on_cpu_only], [])[0] == 800
    assert observe(budget, artifact, [on_gpu], [])[0] == 5000


@pytest.mark.slow
def test_without_a_gpu_cuda_builds_with_device_none_and_measures_nothing(tmp_path):
    out = tmp_path / "none"
    code, output, report = build(["--model", "zoo:digits-cnn", "--target", "cuda", "--device", "none", "--eval",
                                  "zoo"], out)
    assert code == 0, output
    names = [a["name"] for a in report["artifacts"]]
    assert names == ["onnxruntime-gpu-fp32", "onnxruntime-gpu-fp16", "onnxruntime-gpu-int8"]
    assert report["shipping"] == ["onnxruntime-gpu-int8"] and report["measurements"] == []
    assert any("not measured on a GPU" in w for w in report["warnings"])
    assert {p["artifact"]: p["top1_agreement"] for p in report["parity"]}["onnxruntime-gpu-fp16"] == 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    shipped = manifest["artifacts"][0]
    assert shipped["session_options"]["providers"] == "tensorrt,cuda,cpu"
    code, output, _ = build(["--model", "zoo:digits-cnn", "--target", "cuda", "--device", "none", "--max-latency",
                             "5ms"], tmp_path / "timed")
    assert code == 2 and "--device none measures nothing, so the latency (p90) budget cannot be judged" in output


@pytest.mark.skipif(not NO_GPU, reason="an NVIDIA GPU is usable here")
def test_without_a_gpu_the_cuda_target_says_why_and_exits_2(tmp_path):
    code, output, report = build(["--model", "zoo:digits-cnn", "--target", "cuda"], tmp_path / "out")
    assert code == 2 and report == {}
    assert f"cannot measure on gpu:0: {NO_GPU}" in output and "--device none builds the artifacts" in output
    code, output, _ = build(["--model", "zoo:digits-cnn", "--precision", "fp16"], tmp_path / "cpu")
    assert code == 2 and "runtime onnxruntime builds fp32, int8 (fp16 is the cuda target's" in output


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_GPU), reason=f"no usable NVIDIA GPU here: {NO_GPU}")
def test_on_a_gpu_resnet18_builds_fp16_and_int8_measured_on_the_gpu(tmp_path):
    code, output, report = build(["--model", "zoo:resnet18-cifar", "--target", "cuda", "--runs", "50"],
                                 tmp_path / "gpu")
    assert code == 0, output
    measured = {m["artifact"]: m for m in report["measurements"]}
    assert set(measured) >= {"onnxruntime-gpu-fp16", "onnxruntime-gpu-int8"}
    for m in measured.values():
        assert "ExecutionProvider" in m["accelerator"] and m["where"].startswith("GPU 0")
        assert "CPUExecutionProvider" not in m["accelerator"]
        assert m["device_memory_bytes"] is None or m["device_memory_bytes"] > 0
