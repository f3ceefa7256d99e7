from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgepack.errors import UsageError
from edgepack.runtimes.qat import QATConfig, compare_ptq_qat, qat_xnnpack
from edgepack.training import topk_accuracy


@pytest.mark.slow
def test_qat_xnnpack_program_lowers_to_a_pte_that_executorch_runs(digits_split, teacher, tmp_path):
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    train, test = digits_split
    program = qat_xnnpack(teacher, (torch.from_numpy(test.inputs[:1]),), train, epochs=1, lr=1e-4, seed=0)
    path = tmp_path / "qat.pte"
    with open(path, "wb") as fh:
        to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().write_to_file(fh)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    logits = np.concatenate([method.execute([torch.from_numpy(test.inputs[i:i + 1])])[0].numpy()
                             for i in range(len(test))])
    top1 = topk_accuracy(logits, test.labels, 1)
    assert top1 >= 0.97, top1  # FP32 is 0.994; INT8 after one QAT epoch stays within ~2 points


@pytest.mark.slow
def test_ptq_and_qat_onnx_artifacts_run_on_onnxruntime_as_int8(digits_split, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from edgepack.models.loader import ModelRequest, load_model

    train, test = digits_split
    bundle, _ = load_model(ModelRequest("zoo:digits-cnn"))
    rows = compare_ptq_qat(bundle, train, test, tmp_path, runtimes=("onnxruntime",), epochs=1, lr=1e-4)
    assert [(r["runtime"], r["method"]) for r in rows] == [
        ("eager", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "ptq"), ("onnxruntime", "qat")]
    for r in rows:
        assert r["top1"] >= 0.97, r  # FP32 is 0.994 on the 360 held-out digits
    qat = rows[-1]["path"]
    assert "X86InductorQuantizer" in rows[-1]["scheme"]
    ops = [n.op_type for n in onnx.load(qat).graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4, ops
    # ONNX Runtime fuses the QDQ pattern into integer convolutions: the QAT model really runs in INT8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(qat, options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused.count("QLinearConv") == 3, fused


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(lr=0.0), dict(lr=float("inf")), dict(batch_size=0),
                                    dict(seed=1.5)])
def test_bad_qat_settings_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        QATConfig(**kwargs)


def test_qat_needs_labels_within_the_classes(digits_split, teacher):
    train, test = digits_split
    example = (torch.from_numpy(test.inputs[:1]),)
    with pytest.raises(UsageError, match="no labels"):
        qat_xnnpack(teacher, example, dataclasses.replace(train, labels=None))
    with pytest.raises(UsageError, match="outside the model's 10 classes"):
        qat_xnnpack(teacher, example, dataclasses.replace(train, labels=train.labels + 5))
