"""ExecuTorch runtime: real exports through XNNPACK (fp32 and PT2E int8), run with the ExecuTorch Python runtime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import MissingDependency, ToolError, UsageError
from edgepack.fileio import sha256_file
from edgepack.records import Artifact
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="executorch not installed")


@pytest.fixture(scope="module")
def runtime():
    return get_runtime("executorch")


@pytest.fixture(scope="module")
def digits_artifacts(runtime, digits_bundle, calibration, tmp_path_factory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("executorch-digits")
    fp32 = runtime.export(digits_bundle, ExportRequest("fp32", out))
    int8 = runtime.export(digits_bundle, ExportRequest("int8", out, calibration=calibration))
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def unusual_artifacts(runtime, unusual_ops_bundle, calibration, tmp_path_factory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("executorch-unusual")
    return {p: runtime.export(unusual_ops_bundle, ExportRequest(p, out, calibration=calibration))
            for p in ("fp32", "int8")}


@pytest.mark.slow
def test_fp32_matches_eager_on_held_out_digits(runtime, digits_artifacts, digits_bundle, digits_split, eager):
    test = digits_split[1]
    session = runtime.load(Path(digits_artifacts["fp32"].path), threads=1)
    out = session([test.inputs])[0]  # 360 samples through a batch-1 program: run in chunks
    ref = eager(digits_bundle, test.inputs)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-3
    assert (out.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
def test_int8_agrees_with_eager_and_keeps_accuracy(runtime, digits_artifacts, digits_bundle, digits_split, eager):
    test = digits_split[1]
    fp32 = runtime.load(Path(digits_artifacts["fp32"].path), 1)([test.inputs])[0]
    int8 = runtime.load(Path(digits_artifacts["int8"].path), 1)([test.inputs])[0]
    ref = eager(digits_bundle, test.inputs)
    assert (int8.argmax(1) == ref.argmax(1)).mean() >= 0.95
    acc_fp32 = (fp32.argmax(1) == test.labels).mean()
    acc_int8 = (int8.argmax(1) == test.labels).mean()
    assert acc_fp32 > 0.95
    assert acc_int8 >= acc_fp32 - 0.02


@pytest.mark.slow
def test_artifact_record_describes_the_file(digits_artifacts, digits_bundle):
    for precision, artifact in digits_artifacts.items():
        path = Path(artifact.path)
        assert path.name == f"{digits_bundle.name}-{precision}.pte"
        assert artifact.name == f"executorch-{precision}" and artifact.format == "pte"
        assert artifact.size_bytes == path.stat().st_size and artifact.sha256 == sha256_file(path)
        assert [(s.name, s.shape, s.dtype) for s in artifact.inputs] == [("input", (1, 1, 8, 8), "float32")]
        assert [(s.shape, s.dtype) for s in artifact.outputs] == [((1, 10), "float32")]
        assert not list(path.parent.glob("*.partial"))
        assert Artifact.from_dict(artifact.to_dict()) == artifact
    # both are exported from the PyTorch model: int8 is quantized with PT2E, not derived from the fp32 file
    assert digits_artifacts["fp32"].parent == digits_artifacts["int8"].parent == "eager"
    int8 = digits_artifacts["int8"]
    assert "per-channel" in int8.scheme and "128 calibration samples" in int8.scheme
    assert int8.calibration is not None and int8.calibration.samples == 128
    assert digits_artifacts["fp32"].calibration is None
    assert all(a.dynamic_batch is False for a in digits_artifacts.values())


@pytest.mark.slow
def test_digits_cnn_is_fully_delegated(digits_artifacts):
    for artifact in digits_artifacts.values():
        delegation = artifact.delegation
        assert delegation is not None and delegation.backend == "XnnpackBackend"
        assert delegation.fallback_ops == () and delegation.fallback_nodes == 0
        assert delegation.delegated_nodes == delegation.total_nodes > 0
        assert {o.op: o.count for o in delegation.delegated_ops}["aten.convolution.default"] == 3
        assert delegation.kernels_missing_on_host == ()
    int8 = digits_artifacts["int8"].delegation
    assert int8 is not None
    assert "quantized_decomposed.quantize_per_tensor.default" in {o.op for o in int8.delegated_ops}


@pytest.mark.slow
def test_ops_xnnpack_refuses_are_reported_with_reasons(unusual_artifacts, runtime, unusual_ops_bundle, digits_split,
                                                      eager):
    for artifact in unusual_artifacts.values():
        delegation = artifact.delegation
        assert delegation is not None
        portable = {f.op: f for f in delegation.fallback_ops}
        assert portable["aten.cumsum.default"].count == 1
        assert "no partitioner config" in portable["aten.cumsum.default"].reason
        assert "ceil mode" in portable["aten.avg_pool2d.default"].reason  # XNNPACK's own WhyNoPartition text
        assert delegation.total_nodes > delegation.delegated_nodes > 0
        assert delegation.fallback_nodes == sum(f.count for f in delegation.fallback_ops)
        assert "aten::cumsum.out" in delegation.kernels
        assert any("aten.cumsum.default" in note for note in artifact.notes)
        assert Artifact.from_dict(artifact.to_dict()) == artifact
    # The portable kernels run on the host too, so the program is still correct.
    x = digits_split[1].inputs[:20]
    out = runtime.load(Path(unusual_artifacts["fp32"].path), 1)([x])[0]
    assert np.abs(out - eager(unusual_ops_bundle, x)).max() < 1e-3


@pytest.mark.slow
def test_int8_file_is_under_a_third_of_fp32(unusual_artifacts):
    assert unusual_artifacts["int8"].size_bytes < unusual_artifacts["fp32"].size_bytes / 3


def test_model_the_exporter_rejects_is_a_usage_error_and_leaves_no_file(runtime, custom_op_bundle, tmp_path):
    with pytest.raises(UsageError) as info:
        runtime.export(custom_op_bundle, ExportRequest("fp32", tmp_path))
    message = str(info.value)
    assert "edgepack_test::clamp_unit" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_data_dependent_control_flow_names_the_line(runtime, make_bundle, tmp_path):
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(UsageError, match="torch.export rejected the model") as info:
        runtime.export(make_bundle(Branchy(), (1, 4), "branchy"), ExportRequest("fp32", tmp_path))
    assert "if x.sum() > 0" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_int8_without_calibration_data_is_refused(runtime, digits_bundle, tmp_path):
    with pytest.raises(UsageError, match="calibration"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path))


def test_calibration_of_the_wrong_shape_is_refused(runtime, digits_bundle, token_data, tmp_path):
    with pytest.raises(UsageError, match=r"shape \(1, 16, 32\)"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path, calibration=token_data[0]))


def test_unknown_precision_lists_the_choices(runtime, digits_bundle, tmp_path):
    with pytest.raises(UsageError, match="fp32, int8"):
        runtime.export(digits_bundle, ExportRequest("fp16", tmp_path))


def test_unknown_partitioner_lists_the_known_ones():
    from edgepack.runtimes.executorch import ExecuTorchOptions

    with pytest.raises(ValueError, match="partitioner='vulkan' is not one of: xnnpack"):
        ExecuTorchOptions(partitioner="vulkan")


def test_int8_is_not_derived_from_a_parent_file(runtime, digits_bundle, calibration, tmp_path):
    """A parent for an artifact exported from the eager model would be a false lineage in the report."""
    fp32 = Artifact(name="executorch-fp32", path=str(tmp_path / "m.pte"), format="pte", runtime="executorch",
                    precision="fp32", size_bytes=1, sha256="0" * 64, inputs=(), outputs=())
    with pytest.raises(ToolError, match="exported from the eager model"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path, calibration=calibration, parent=fp32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_load_sizes_the_threadpool(runtime, digits_artifacts):
    from executorch.extension.pybindings import portable_lib

    for threads in (2, 1):
        runtime.load(Path(digits_artifacts["fp32"].path), threads)
        assert portable_lib._threadpool_get_thread_count() == threads


def test_load_errors(runtime, tmp_path):
    with pytest.raises(UsageError, match="no ExecuTorch program"):
        runtime.load(tmp_path / "absent.pte", 1)
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"not a program" * 10)
    with pytest.raises(ToolError, match="could not load junk.pte"):
        runtime.load(junk, 1)
    with pytest.raises(UsageError, match="threads"):
        runtime.load(junk, 0)


@pytest.mark.slow
def test_session_checks_input_shapes(runtime, digits_artifacts):
    session = runtime.load(Path(digits_artifacts["fp32"].path), 1)
    with pytest.raises(UsageError, match=r"expected \(N, 1, 8, 8\)"):
        session([np.zeros((2, 1, 4, 4), np.float32)])


def test_missing_names_the_extra(runtime, monkeypatch):
    assert runtime.missing() == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    reasons = runtime.missing()
    assert reasons and all("edgepack[executorch]" in r for r in reasons)
    with pytest.raises(MissingDependency):
        runtime.export(object(), ExportRequest("fp32", Path(".")))


def test_versions_name_the_libraries(runtime):
    versions = runtime.versions()
    assert versions["executorch"] != "not installed" and "torchao" in versions


@pytest.mark.slow
def test_attention_matmuls_leave_no_expand_outside_the_delegate(runtime, transformer_bundle, token_data, eager,
                                                                tmp_path):
    """torch.matmul on 4-D q/k/v decomposes into expand + view + bmm; the expands are no-ops XNNPACK refuses, so
    they are dropped before partitioning instead of each cutting the graph."""
    artifact = runtime.export(transformer_bundle, ExportRequest("fp32", tmp_path))
    delegation = artifact.delegation
    assert delegation is not None
    outside = {f.op for f in delegation.fallback_ops}
    assert "aten.expand_copy.default" not in outside and "aten.bmm.default" not in outside
    assert {o.op: o.count for o in delegation.delegated_ops}["aten.bmm.default"] == 2
    x = token_data[1].arrays[0][:16]
    assert np.abs(runtime.load(Path(artifact.path), 1)([x])[0] - eager(transformer_bundle, x)).max() < 1e-4
