"""OpenVINO: the IR pair on disk, what a broken pair or an absent device plugin says, integer inputs, the transformer
model type, and the pair travelling through a real build (publish, manifest, a rebuild that drops it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from edgepack.errors import UsageError
from edgepack.fileio import sha256_file
from edgepack.records import Artifact
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest
from edgepack.runtimes.openvino import OpenVinoOptions, _pair_in_place

from tests.cli_build import build

pytestmark = pytest.mark.skipif(bool(get_runtime("openvino").missing()), reason="openvino extra not installed")


@pytest.fixture(scope="module")
def runtime():
    return get_runtime("openvino")


@pytest.fixture(scope="module")
def digits_pair(runtime, digits_bundle, calibration, tmp_path_factory) -> tuple[Artifact, Artifact]:
    out = tmp_path_factory.mktemp("openvino-digits")
    fp32 = runtime.export(digits_bundle, ExportRequest("fp32", out))
    int8 = runtime.export(digits_bundle, ExportRequest("int8", out, calibration=calibration.take(64), parent=fp32))
    return fp32, int8


def copy_artifact(artifact: Artifact, directory: Path) -> Path:
    directory.mkdir()
    for file in artifact.files():
        shutil.copy2(file, directory / file.name)
    return directory / Path(artifact.path).name


@pytest.mark.slow
def test_the_ir_is_a_pair_written_together_and_described_together(digits_pair):
    fp32, int8 = digits_pair
    for artifact in (fp32, int8):
        xml = Path(artifact.path)
        (weights,) = artifact.companions
        assert xml.suffix == ".xml" and weights.name == xml.with_suffix(".bin").name
        assert artifact.size_bytes == xml.stat().st_size + weights.size_bytes
        assert weights.sha256 == sha256_file(xml.with_suffix(".bin"))
        assert artifact.session_options == {"device": "CPU", "inference_precision_hint": "f32"}
        assert any("OpenVINO's CPU plugin" in note for note in artifact.notes)
        assert artifact.dynamic_batch is True and artifact.inputs[0].shape[0] == "?"
    assert int8.parent == fp32.name and int8.calibration is not None and int8.calibration.samples == 64
    assert "NNCF post-training INT8" in int8.scheme and int8.export_path.startswith("NNCF")
    assert {o.op for o in int8.ops} >= {"FakeQuantize", "Convolution"}
    assert "FakeQuantize" not in {o.op for o in fp32.ops}


@pytest.mark.slow
def test_a_missing_or_foreign_weights_file_is_one_line(runtime, digits_pair, tmp_path):
    fp32, int8 = digits_pair
    xml = copy_artifact(int8, tmp_path / "missing")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(UsageError, match=r"needs its weights file digits-cnn-int8\.bin beside it, and it is missing"):
        runtime.load(xml, 1)
    # the fp32 weights under the int8 name: the sizes no longer match what the graph reads
    xml = copy_artifact(int8, tmp_path / "foreign")
    shutil.copy2(Path(fp32.path).with_suffix(".bin"), xml.with_suffix(".bin"))
    xml.with_suffix(".bin").write_bytes(xml.with_suffix(".bin").read_bytes()[:1000])
    with pytest.raises(UsageError, match=r"could not read IR digits-cnn-int8\.xml with weights digits-cnn-int8\.bin"):
        runtime.load(xml, 1)


@pytest.mark.slow
def test_a_device_plugin_that_is_not_here_is_named_with_the_ones_that_are(runtime, digits_pair):
    with pytest.raises(UsageError, match=r"OpenVINO device 'NPU' is not available here; available: CPU"):
        runtime.load(Path(digits_pair[1].path), 1, {"device": "NPU"})


@pytest.mark.slow
def test_int8_agrees_with_eager_and_threads_are_honoured(runtime, digits_pair, digits_bundle, digits_split, eager):
    _, int8 = digits_pair
    x = digits_split[1].inputs[:128]
    ref = eager(digits_bundle, x)
    for threads in (1, 2):
        out = runtime.load(Path(int8.path), threads, int8.session_options)([x])[0]
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


class TokenClassifier(nn.Module):
    """Token ids and a mask in, class scores out: integer inputs must stay integers through the IR."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        x, _ = self.attn(x, x, x, need_weights=False)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * mask).sum(1) / mask.sum(1))


@pytest.mark.slow
def test_token_inputs_stay_integers_and_attention_gets_the_transformer_type(runtime, tmp_path):
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle
    from edgepack.records import Provenance

    torch.manual_seed(0)
    module = TokenClassifier().eval()
    ids = torch.randint(0, 100, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    provenance = Provenance(source="tests:tokens", kind="python", model_name="tokens", output_taken="tensor",
                            params=0, macs=0, input_shapes=((1, 12), (1, 12)))
    bundle = ModelBundle(module, (ids, mask), ("input_ids", "attention_mask"), provenance)
    rng = np.random.default_rng(0)
    calibration = ArrayDataset("synthetic", (rng.integers(0, 100, (32, 12)), np.ones((32, 12), np.int64)), None)
    fp32 = runtime.export(bundle, ExportRequest("fp32", tmp_path))
    int8 = runtime.export(bundle, ExportRequest("int8", tmp_path, calibration=calibration, parent=fp32))
    assert [(i.name, i.dtype) for i in fp32.inputs] == [("input_ids", "int64"), ("attention_mask", "int64")]
    assert "transformer model type" in int8.scheme and any("transformer-like graph" in n for n in int8.notes)
    feeds = [rng.integers(0, 100, (16, 12)), np.ones((16, 12), np.int64)]
    with torch.no_grad():
        ref = module(*(torch.from_numpy(f) for f in feeds)).numpy()
    out = runtime.load(Path(fp32.path), 1)(feeds)[0]
    assert np.abs(out - ref).max() < 1e-4
    q = runtime.load(Path(int8.path), 1)(feeds)[0]
    cosine = (q * ref).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() > 0.9, cosine


def test_a_failed_export_leaves_neither_half_of_the_pair(tmp_path):
    final = tmp_path / "m-int8.xml"
    with pytest.raises(RuntimeError, match="quantizer died"):
        with _pair_in_place(final) as tmp_xml:
            tmp_xml.write_text("<net/>")
            tmp_xml.with_suffix(".bin").write_bytes(b"\0" * 8)
            raise RuntimeError("quantizer died")
    assert list(tmp_path.iterdir()) == []


def test_options_refuse_an_unknown_device_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"device='TPU' is not one of: CPU, GPU, NPU"):
        OpenVinoOptions(device="TPU")


@pytest.mark.slow
def test_build_publishes_the_pair_and_a_rebuild_without_it_removes_both(tmp_path):
    out = tmp_path / "out"
    code, output, report = build(["--model", "zoo:digits-cnn", "--runtime", "openvino", "--eval", "zoo",
                                  "--max-accuracy-drop", "1pp", "--no-bundle"], out)
    assert code == 0, output
    models = sorted(p.name for p in out.iterdir() if p.name.startswith("digits-cnn"))
    assert models == ["digits-cnn-fp32.bin", "digits-cnn-fp32.xml", "digits-cnn-int8.bin", "digits-cnn-int8.xml"]
    manifest = json.loads((out / "manifest.json").read_text())
    shipped = next(a for a in manifest["artifacts"] if a["shipping"])
    assert shipped["file"] == "digits-cnn-int8.xml" and shipped["session_options"]["device"] == "CPU"
    assert shipped["companions"] == [{"file": "digits-cnn-int8.bin",
                                      "size_bytes": (out / "digits-cnn-int8.bin").stat().st_size,
                                      "sha256": sha256_file(out / "digits-cnn-int8.bin")}]
    accuracy = {a["artifact"]: a for a in report["accuracy"]}
    assert accuracy["openvino-int8"]["top1"] >= 0.95
    assert "needs `digits-cnn-int8.bin` beside it" in (out / "report.md").read_text()
    # the same directory rebuilt for ONNX Runtime: no IR file is left that the new report does not describe
    code, output, _ = build(["--model", "zoo:digits-cnn", "--runtime", "onnxruntime", "--no-bundle"], out)
    assert code == 0, output
    assert not [p.name for p in out.iterdir() if p.suffix in (".xml", ".bin")]


@pytest.mark.slow
def test_a_target_whose_device_is_absent_fails_in_one_line(tmp_path):
    target = yaml.safe_load((Path(__file__).resolve().parents[2] / "targets" / "x86-cpu.yaml").read_text())
    target["name"] = "x86-npu"
    target["runtimes"]["openvino"]["device"] = "NPU"
    path = tmp_path / "x86-npu.yaml"
    path.write_text(yaml.safe_dump(target))
    code, output, _ = build(["--model", "zoo:digits-cnn", "--target", str(path), "--runtime", "openvino",
                             "--precision", "fp32", "--no-bundle"], tmp_path / "out")
    assert code == 2, output
    assert "OpenVINO device 'NPU' is not available here; available: CPU" in output
    assert "Traceback" not in output
