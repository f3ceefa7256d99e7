"""LiteRT runtime: real litert-torch conversions (fp32 and PT2E static int8), run with ai-edge-litert's Interpreter."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgepack.errors import MissingDependency, ToolError, UsageError
from edgepack.fileio import sha256_file
from edgepack.records import Artifact
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")),
    reason="litert extra not installed",
)


@pytest.fixture(scope="module")
def runtime():
    return get_runtime("litert")


@pytest.fixture(scope="module")
def digits_artifacts(runtime, digits_bundle, calibration, tmp_path_factory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("litert-digits")
    fp32 = runtime.export(digits_bundle, ExportRequest("fp32", out))
    int8 = runtime.export(digits_bundle, ExportRequest("int8", out, calibration=calibration))
    return {"fp32": fp32, "int8": int8}


@pytest.mark.slow
def test_fp32_matches_eager_on_held_out_digits(runtime, digits_artifacts, digits_bundle, digits_split, eager):
    test = digits_split[1]
    out = runtime.load(Path(digits_artifacts["fp32"].path), threads=1)([test.inputs])[0]
    ref = eager(digits_bundle, test.inputs)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-3


@pytest.mark.slow
def test_int8_takes_int8_io_but_callers_compare_floats(runtime, digits_artifacts, digits_bundle, digits_split,
                                                      eager):
    artifact = digits_artifacts["int8"]
    (spec,) = artifact.inputs
    assert spec.dtype == "int8" and spec.scale and spec.scale > 0 and spec.zero_point is not None
    assert artifact.outputs[0].dtype == "int8" and artifact.outputs[0].scale
    test = digits_split[1]
    int8 = runtime.load(Path(artifact.path), 1)([test.inputs])[0]
    fp32 = runtime.load(Path(digits_artifacts["fp32"].path), 1)([test.inputs])[0]
    ref = eager(digits_bundle, test.inputs)
    assert int8.dtype == np.float32
    assert (int8.argmax(1) == ref.argmax(1)).mean() >= 0.95
    acc_fp32 = (fp32.argmax(1) == test.labels).mean()
    acc_int8 = (int8.argmax(1) == test.labels).mean()
    assert acc_fp32 > 0.95 and acc_int8 >= acc_fp32 - 0.02


@pytest.mark.slow
def test_artifact_record_and_op_details(digits_artifacts, digits_bundle):
    for precision, artifact in digits_artifacts.items():
        path = Path(artifact.path)
        assert path.name == f"{digits_bundle.name}-{precision}.tflite" and artifact.format == "tflite"
        assert artifact.size_bytes == path.stat().st_size and artifact.sha256 == sha256_file(path)
        assert artifact.inputs[0].name == "input" and artifact.inputs[0].shape == (1, 1, 8, 8)
        ops = {o.op: o.count for o in artifact.ops}
        assert ops["CONV_2D"] >= 2 and "FULLY_CONNECTED" in ops and "DELEGATE" not in ops
        assert artifact.dynamic_batch is False and artifact.delegation is None
        assert not list(path.parent.glob("*.partial"))
        assert Artifact.from_dict(artifact.to_dict()) == artifact
    int8 = digits_artifacts["int8"]
    assert int8.float_ops == () and [s.dtype for s in int8.inputs + int8.outputs] == ["int8", "int8"]
    assert digits_artifacts["fp32"].float_ops == ()  # every op of an fp32 model is float: no census
    # both are converted from the PyTorch model: int8 is quantized with PT2E, not derived from the fp32 file
    assert int8.parent == digits_artifacts["fp32"].parent == "eager"
    assert "per-channel" in int8.scheme and int8.calibration is not None and int8.calibration.samples == 128


@pytest.mark.slow
def test_int8_file_is_under_a_third_of_fp32(runtime, wide_bundle, calibration, tmp_path):
    fp32 = runtime.export(wide_bundle, ExportRequest("fp32", tmp_path))
    int8 = runtime.export(wide_bundle, ExportRequest("int8", tmp_path, calibration=calibration))
    assert int8.size_bytes < fp32.size_bytes / 3


@pytest.mark.slow
def test_transformer_int8_reports_ops_left_on_float_kernels(runtime, transformer_bundle, token_data, tmp_path,
                                                           eager):
    calib, evaluation = token_data
    artifact = runtime.export(transformer_bundle, ExportRequest("int8", tmp_path, calibration=calib))
    assert artifact.float_ops, "layer norm and softmax stay in float in a static int8 transformer"
    assert {o.op: o.count for o in artifact.ops}.get("QUANTIZE", 0) >= 1
    assert any("float kernels" in note for note in artifact.notes)
    out = runtime.load(Path(artifact.path), 1)([evaluation.inputs])[0]
    ref = eager(transformer_bundle, evaluation.inputs)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9  # random weights: logits are close together


def test_model_the_converter_rejects_is_a_usage_error_and_leaves_no_file(runtime, custom_op_bundle, tmp_path):
    with pytest.raises(UsageError) as info:
        runtime.export(custom_op_bundle, ExportRequest("fp32", tmp_path))
    message = str(info.value)
    assert "operator edgepack_test.clamp_unit.default" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_int8_without_calibration_data_is_refused(runtime, digits_bundle, tmp_path):
    with pytest.raises(UsageError, match="calibration"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_load_errors(runtime, tmp_path):
    with pytest.raises(UsageError, match="no .tflite file"):
        runtime.load(tmp_path / "absent.tflite", 1)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ToolError, match="could not load junk.tflite"):
        runtime.load(junk, 1)


def test_never_imports_tensorflow():
    """Conversion and the interpreter both come without TensorFlow; checked in a fresh interpreter."""
    code = ("import sys, litert_torch, ai_edge_litert.interpreter, edgepack.runtimes.litert; "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def test_missing_names_the_extra(runtime, monkeypatch):
    assert runtime.missing() == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert all("edgepack[litert]" in r for r in runtime.missing())
    with pytest.raises(MissingDependency):
        runtime.export(object(), ExportRequest("fp32", Path(".")))


# A Hugging Face MobileNetV2 whose batch-norm statistics are what training leaves (the running mean and variance of
# its own activations; fresh ones, mean 0 and variance 1, do not normalise anything). Its PT2E int8 conversion fails
# in litert-torch 0.10 ("Attempting to convert non-NHWC compatible node to NHWC: dequantize_per_tensor_...").
HF_MOBILENETV2 = '''
import torch
from transformers import MobileNetV2Config, MobileNetV2ForImageClassification


def build():
    torch.manual_seed(0)
    model = MobileNetV2ForImageClassification(MobileNetV2Config(depth_multiplier=0.5, image_size=32, num_labels=10))
    with torch.no_grad():
        model.train()(torch.randn(64, 3, 32, 32))
    return model.eval(), torch.randn(1, 3, 32, 32)
'''


@pytest.mark.slow
def test_when_pt2e_int8_fails_the_fp32_file_is_quantized_after_conversion(runtime, tmp_path):
    pytest.importorskip("transformers")
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.loader import ModelRequest, load_model
    from edgepack.runtimes.litert import AEQ_PATH

    (tmp_path / "hf_mobilenetv2.py").write_text(HF_MOBILENETV2)
    bundle, _ = load_model(ModelRequest(f"{tmp_path / 'hf_mobilenetv2.py'}:build"))
    x = np.random.default_rng(0).standard_normal((96, 3, 32, 32)).astype(np.float32)
    int8_calibration = ArrayDataset("random", x[:64])
    int8 = runtime.export(bundle, ExportRequest("int8", tmp_path, calibration=int8_calibration))
    assert int8.export_path == AEQ_PATH
    assert "non-NHWC compatible node" in int8.notes[0] and "ai-edge-quantizer" in int8.notes[0]
    assert "64 calibration samples" in int8.scheme and int8.calibration is not None
    assert int8.int8_weight_share is not None and int8.int8_weight_share > 0.99
    assert int8.inputs[0].dtype == "int8"  # fully static, as the PT2E path's files are
    got = runtime.load(Path(int8.path), 1)([x[64:]])[0]
    with torch.no_grad():
        reference = bundle.module(torch.from_numpy(x[64:])).numpy()
    assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.9
    # keeping layers in float goes through the same quantizer, from the same conversion and calibration: the stem's
    # convolution (its BatchNorm folded in) and the classifier keep float weights, every other layer's are int8
    from edgepack.rescue import quantizable_layers, weighted_layers_under
    from edgepack.runtimes.litert import AEQ_MIXED_PATH

    calibrated = runtime._calibrated
    keep = ("model.mobilenet_v2.conv_stem.first_conv", "model.classifier")
    mixed = runtime.export(bundle, ExportRequest("int8", tmp_path / "mixed", calibration=int8_calibration,
                                                 keep_float=keep))
    assert runtime._calibrated is calibrated  # not converted nor calibrated again
    assert mixed.export_path == AEQ_MIXED_PATH and mixed.name == "litert-int8-mixed"
    assert "2 layer(s) kept in float (model.mobilenet_v2.conv_stem.first_conv, model.classifier)" in mixed.scheme
    modules = dict(bundle.module.named_modules())
    total = sum(modules[name].weight.numel() for name, _ in quantizable_layers(bundle.module))
    kept = sum(w.size for name in keep for _, w in weighted_layers_under(bundle.module, name))
    assert mixed.int8_weight_share == pytest.approx(1 - kept / total, abs=2e-3)
    assert mixed.float_ops and {op.op for op in mixed.float_ops} <= {"CONV_2D", "FULLY_CONNECTED"}
    mixed_out = runtime.load(Path(mixed.path), 1)([x[64:]])[0]
    assert np.mean(mixed_out.argmax(1) == reference.argmax(1)) >= 0.9
    with pytest.raises(UsageError, match="no weighted op of the converted .tflite comes from module "
                                         "'model.mobilenet_v2.conv_stem.first_conv.normalization'"):
        runtime.export(bundle, ExportRequest("int8", tmp_path / "bad", calibration=int8_calibration,
                                             keep_float=("model.mobilenet_v2.conv_stem.first_conv.normalization",)))


class _LinearStack(torch.nn.Module):
    """Three Linear layers in a ModuleList, which torch.export's module stack (and so the converted file's tensor
    names) skips: `layers.1` shows up as `Linear_1` right under the root."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(32, 32) for _ in range(3)])
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


@pytest.mark.slow
def test_a_layer_in_a_module_list_is_kept_in_float(runtime, tmp_path, monkeypatch):
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle
    from edgepack.records import Provenance
    from edgepack.runtimes._aeq import ModulePlaces

    torch.manual_seed(0)
    module = _LinearStack().eval()
    provenance = Provenance(source="tests:stack", kind="python", model_name="stack", output_taken="tensor",
                            params=0, macs=0, input_shapes=((1, 32),))
    bundle = ModelBundle(module, (torch.randn(1, 32),), ("input",), provenance)
    x = np.random.default_rng(0).standard_normal((96, 32)).astype(np.float32)
    runtime.export(bundle, ExportRequest("fp32", tmp_path))

    def converted_again(_bundle):
        raise AssertionError("the fp32 file this runtime exported for the module is quantized, not a new conversion")

    monkeypatch.setattr(runtime, "_convert_fp32", converted_again)
    mixed = runtime.export(bundle, ExportRequest("int8", tmp_path, calibration=ArrayDataset("random", x[:64]),
                                                 keep_float=("layers.1",)))
    assert mixed.int8_weight_share == pytest.approx(1 - 32 * 32 / (3 * 32 * 32 + 32 * 10))
    assert {op.op: op.count for op in mixed.float_ops} == {"FULLY_CONNECTED": 1}
    with torch.no_grad():
        reference = module(torch.from_numpy(x[64:])).numpy()
    got = runtime.load(Path(mixed.path), 1)([x[64:]])[0]
    assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.9
    places = ModulePlaces(module)
    root = f"{__name__}._LinearStack"
    assert places.module_of(f"{root}/torch.nn.modules.linear.Linear_1") == "layers.1"
    assert places.module_of(f"{root}/torch.nn.modules.linear.Linear_head") == "head"
    assert places.module_of(f"{root}/torch.nn.modules.linear.Linear_7") is None
    assert places.module_of("other.Model/torch.nn.modules.linear.Linear_1") is None


HF_BERT = '''
import torch
from transformers import BertConfig, BertForSequenceClassification


def build():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=10)
    ids = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 16, dtype=torch.long)
    return BertForSequenceClassification(config).eval(), {"input_ids": ids, "attention_mask": mask}
'''


@pytest.mark.slow
def test_bert_query_key_and_value_are_told_apart_and_kept_in_float_one_by_one(runtime, tmp_path):
    """Constant folding merges the places of BERT's query, key and value projections into each other's weight
    names: each op is then matched to its layer by its weights' values."""
    pytest.importorskip("transformers")
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.loader import ModelRequest, load_model

    (tmp_path / "hf_bert.py").write_text(HF_BERT)
    bundle, _ = load_model(ModelRequest(f"{tmp_path / 'hf_bert.py'}:build"))
    rng = np.random.default_rng(0)
    ids, mask = rng.integers(0, 64, (48, 16)), np.ones((48, 16), dtype=np.int64)
    calibration = ArrayDataset("random tokens", (ids[:32], mask[:32]))
    runtime.export(bundle, ExportRequest("fp32", tmp_path))
    attention = next(name for name, _ in bundle.module.named_modules() if name.endswith("attention.self"))
    calibrated = runtime._calibrated_model(bundle, calibration)
    scopes = {part: calibrated.float_scopes(bundle.module, (f"{attention}.{part}",))
              for part in ("query", "key", "value")}
    assert all(len(found) == 1 for found in scopes.values()) and len({s[0] for s in scopes.values()}) == 3
    mixed = runtime.export(bundle, ExportRequest("int8", tmp_path / "mixed", calibration=calibration,
                                                 keep_float=(f"{attention}.key",)))
    assert {op.op: op.count for op in mixed.float_ops}.get("FULLY_CONNECTED") == 1
    with torch.no_grad():
        reference = bundle.module(torch.from_numpy(ids[32:]), torch.from_numpy(mask[32:])).numpy()
    got = runtime.load(Path(mixed.path), 1)([ids[32:], mask[32:]])[0]
    assert np.isfinite(got).all() and np.mean(got.argmax(1) == reference.argmax(1)) >= 0.8
