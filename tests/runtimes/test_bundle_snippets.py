"""The Kotlin each runtime writes into the mobile bundle's README (`bundle_snippet`), on records alone: no export."""

from __future__ import annotations

from edgepack.records import Artifact, Provenance, Report, TensorSpec
from edgepack.report.mobile_bundle import bundle_readme
from edgepack.runtimes import get_runtime


def artifact(runtime: str, fmt: str, quantized_io: bool = False) -> Artifact:
    """An int8 artifact record; with quantized I/O its tensors are int8 with a scale and zero point."""
    dtype = "int8" if quantized_io else "float32"
    in_q = {"scale": 0.5, "zero_point": 7} if quantized_io else {}
    out_q = {"scale": 0.25, "zero_point": -3} if quantized_io else {}
    return Artifact(name=f"{runtime}-int8", path=f"/out/digits-cnn-int8.{fmt}", format=fmt, runtime=runtime,
                    precision="int8", size_bytes=1, sha256="0" * 64,
                    inputs=(TensorSpec("input", (1, 1, 8, 8), dtype, **in_q),),
                    outputs=(TensorSpec("output", (1, 10), dtype, **out_q),), scheme="some scheme")


def test_executorch_loads_the_program_with_its_input_shape():
    snippet = get_runtime("executorch").bundle_snippet(artifact("executorch", "pte"), 4, {"executorch": "1.5.1"})
    assert snippet is not None
    assert 'Module.load(context.filesDir.resolve("digits-cnn-int8.pte").absolutePath)' in snippet
    assert "longArrayOf(1L, 1L, 8L, 8L)" in snippet and "version matching 1.5.1" in snippet


def test_litert_float_io_feeds_floats():
    snippet = get_runtime("litert").bundle_snippet(artifact("litert", "tflite"), 2, {})
    assert snippet is not None
    assert "Interpreter.Options().setNumThreads(2)" in snippet and "allocateDirect(4 * 64)" in snippet
    assert "FloatArray(10)" in snippet and "putFloat" in snippet


def test_litert_int8_io_quantizes_with_the_recorded_scale_and_zero_point():
    snippet = get_runtime("litert").bundle_snippet(artifact("litert", "tflite", quantized_io=True), 4, {})
    assert snippet is not None
    assert "Math.round(x / 0.5f) + 7" in snippet and "(q - -3) * 0.25f" in snippet and "ByteArray(10)" in snippet


def test_onnxruntime_has_no_android_snippet():
    assert get_runtime("onnxruntime").bundle_snippet(artifact("onnxruntime", "onnx"), 1, {}) is None


def test_bundle_readme_asks_each_runtime_for_its_snippet():
    shipped = [artifact("executorch", "pte"), artifact("litert", "tflite", quantized_io=True),
               artifact("onnxruntime", "onnx")]
    model = Provenance(source="zoo:digits-cnn", kind="zoo", model_name="digits-cnn", output_taken="tensor", params=1,
                       macs=1, input_shapes=((1, 1, 8, 8),), labels=tuple("0123456789"))
    report = Report(edgepack_version="0", created="now", target="android-arm64", out_dir="/out", model=model,
                    shipping=tuple(a.name for a in shipped), artifacts=tuple(shipped),
                    versions={"executorch": "1.5.1"})
    readme = bundle_readme(report, shipped, threads=4)
    assert readme.count("```kotlin") == 2  # onnxruntime writes none
    assert "## digits-cnn-int8.onnx (onnxruntime, int8)" in readme
    assert "Module.load" in readme and "Math.round(x / 0.5f) + 7" in readme
