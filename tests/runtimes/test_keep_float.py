"""Int8 exports with named layers kept in float (ExportRequest.keep_float), the mechanism of the mixed-precision
rescue: which runtimes can, how a module name reaches the runtime's graph, and what is refused."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgepack.errors import UsageError
from edgepack.records import Artifact
from edgepack.rescue import max_float_layers, quantizable_layers, weighted_layers_under
from edgepack.runtimes import get_runtime, runtime_class
from edgepack.runtimes.base import ExportRequest

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                       reason="onnx extra not installed")


def test_runtimes_declare_whether_they_keep_layers_float() -> None:
    assert runtime_class("onnxruntime").keeps_layers_float
    assert runtime_class("executorch").keeps_layers_float
    assert runtime_class("litert").keeps_layers_float
    assert not runtime_class("openvino").keeps_layers_float


def test_layers_are_named_as_in_the_model(digits_bundle) -> None:
    layers = quantizable_layers(digits_bundle.module)
    assert layers == [("features.0", "Conv2d"), ("features.3", "Conv2d"), ("features.7", "Conv2d"),
                      ("classifier", "Linear")]
    assert [name for name, _ in weighted_layers_under(digits_bundle.module, "features")] == [
        "features.0", "features.3", "features.7"]
    assert max_float_layers(len(layers)) == 2 and max_float_layers(1) == 0
    with pytest.raises(UsageError, match="no module named 'features.99'; its quantizable layers: features.0"):
        weighted_layers_under(digits_bundle.module, "features.99")
    with pytest.raises(UsageError, match="holds no Conv or Linear layer"):
        weighted_layers_under(digits_bundle.module, "features.1")


def test_only_post_training_int8_keeps_layers_float(digits_bundle, tmp_path) -> None:
    with pytest.raises(UsageError, match="post-training int8 choice; this export is fp32"):
        get_runtime("onnxruntime").check_request(ExportRequest("fp32", tmp_path, keep_float=("features.0",)))
    with pytest.raises(UsageError, match="openvino cannot keep layers in float"):
        runtime_class("openvino")().check_request(ExportRequest("int8", tmp_path, keep_float=("features.0",)))


@needs_onnxruntime
@pytest.mark.slow
def test_onnxruntime_finds_a_layer_whose_batchnorm_was_folded_into_it(digits_bundle, calibration, tmp_path) -> None:
    runtime = get_runtime("onnxruntime")
    fp32 = runtime.export(digits_bundle, ExportRequest("fp32", tmp_path / "fp32"))
    plain = runtime.export(digits_bundle, ExportRequest("int8", tmp_path / "int8", calibration, parent=fp32))
    mixed: Artifact = runtime.export(digits_bundle, ExportRequest("int8", tmp_path / "mixed", calibration, parent=fp32,
                                                                  keep_float=("features.3",)))
    assert mixed.name == "onnxruntime-int8-mixed" and mixed.path.endswith("-int8-mixed.onnx")
    assert "1 layer(s) kept in float (features.3)" in mixed.scheme
    assert any(n.startswith("kept in float: features.3 (1 node(s): ") for n in mixed.notes)
    assert mixed.session_options["disabled_optimizers"].split(",")[0] == "WeightBiasQuantization"
    assert plain.int8_weight_share == pytest.approx(1.0)
    conv3 = digits_bundle.module.features[3].weight.numel()
    total = sum(m.weight.numel() for _, m in digits_bundle.module.named_modules()
                if type(m).__name__ in ("Conv2d", "Linear"))
    assert mixed.int8_weight_share == pytest.approx(1 - conv3 / total)
    session = runtime.load(tmp_path / "mixed" / mixed.path.rsplit("/", 1)[-1], 1, mixed.session_options)
    assert np.isfinite(session([calibration.inputs[:8]])[0]).all()
    with pytest.raises(UsageError, match="no module named 'head'"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path / "bad", calibration, parent=fp32,
                                                    keep_float=("head",)))
