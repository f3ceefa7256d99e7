"""`edgepack inspect`: the family with its evidence on architectures of several kinds (ours and Hugging Face's), the
per-layer table, and what real runtime exports say about a model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from edgepack.inspection import Inspection

from tests.cli_build import GRU_CLASSIFIER, write_models

MODELS = '''
import torch
from torch import nn


class Hybrid(nn.Module):
    """A MobileViT-like mix: a conv stem carrying most MACs, then one attention block."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        t, _ = self.attention(t, t, t, need_weights=False)
        return self.head(t.mean(1))


class Unusual(nn.Module):
    """cumsum has no XNNPACK kernel: ExecuTorch leaves it outside the delegate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return torch.cumsum(self.fc(self.conv(x).mean((2, 3))), 1)


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return model.eval(), torch.randn(1, 1, 8, 8)


def hybrid():
    torch.manual_seed(0)
    return Hybrid().eval(), torch.randn(1, 3, 16, 16)


def unusual():
    torch.manual_seed(0)
    return Unusual().eval(), torch.randn(1, 1, 8, 8)


def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(1))
    return BertForSequenceClassification(config).eval(), {"input_ids": ids, "attention_mask": torch.ones(1, 16,
                                                                                                       dtype=torch.long)}
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("inspect"), "inspect_models", MODELS)


@pytest.fixture(scope="module")
def gru(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("inspect-gru"), "gru_model", GRU_CLASSIFIER)


def inspect(args: list[str]) -> tuple[int, str, Inspection | None]:
    result = CliRunner().invoke(cli, ["inspect", *args, "--json"])
    data = Inspection.from_dict(json.loads(result.stdout)) if result.exit_code == 0 else None
    return result.exit_code, result.output, data


def test_digits_cnn_layers_shares_and_ranks():
    code, output, found = inspect(["--model", "zoo:digits-cnn"])
    assert code == 0, output
    assert found is not None and found.family == "CNN"
    assert found.evidence[0].startswith("convolutions carry 99% of the MACs")
    layers = {layer.name: layer for layer in found.layers}
    conv = layers["features.3"]
    # Conv2d(16, 32, 3): 16*32*9 weights + 32 biases; the matrix is 32 x 144, so its rank is at most 32
    assert (conv.kind, conv.params, conv.rank) == ("Conv2d", 16 * 32 * 9 + 32, 32)
    assert conv.rank_90 is not None and conv.rank_99 is not None and 1 <= conv.rank_90 <= conv.rank_99 <= 32
    assert layers["features.1"].rank is None  # BatchNorm: no weight matrix
    assert sum(layer.params for layer in found.layers) == found.params == 24_170
    assert abs(sum(layer.mac_share for layer in found.layers) - 1) < 1e-6
    assert found.runtimes == ()  # no --target: no export


@pytest.mark.parametrize("factory,family,evidence", [
    ("mlp", "MLP", "linear layers 100%"),
    ("hybrid", "transformer", "a hybrid of convolutions and attention"),
    ("bert", "transformer", "attention module(s): `bert.encoder.layer.0.attention`"),
])
def test_the_family_comes_with_its_evidence(models, factory, family, evidence):
    code, output, found = inspect(["--model", f"{models}:{factory}"])
    assert code == 0, output
    assert found is not None and found.family == family, found.evidence
    assert any(evidence in line for line in found.evidence), found.evidence


def test_a_recurrent_model_is_an_rnn(gru):
    code, output, found = inspect(["--model", f"{gru}:build"])
    assert code == 0, output
    assert found is not None and found.family == "RNN"
    assert found.evidence[0] == "1 recurrent module(s): `rnn`"


@pytest.mark.slow
def test_executorch_names_what_it_does_not_delegate_with_its_reason(models):
    code, output, found = inspect(["--model", f"{models}:unusual", "--target", "android-arm64", "--runtime",
                                   "executorch", "--quiet"])
    assert code == 0, output
    assert found is not None and found.target == "android-arm64" and found.calibration.startswith("synthetic")
    (executorch,) = found.runtimes
    assert executorch.status == "built" and executorch.delegation.startswith("XnnpackBackend")
    cumsum = [op for op in executorch.not_delegated if "cumsum" in op.op]
    assert cumsum and cumsum[0].reason, executorch.not_delegated


@pytest.mark.slow
def test_onnxruntime_and_openvino_name_the_layers_left_in_float(gru):
    code, output, found = inspect(["--model", f"{gru}:build", "--target", "x86-cpu", "--runtime",
                                   "onnxruntime,openvino", "--quiet"])
    assert code == 0, output
    assert found is not None
    ort = {f.runtime: f for f in found.runtimes}["onnxruntime"]
    # static QDQ quantizes the Gemm of the head; the GRU keeps its float weights
    assert ort.status == "built" and {o.op: o.count for o in ort.float_ops} == {"GRU": 1}
    assert ort.int8_weight_share is not None and ort.int8_weight_share < 0.5
    assert {f.runtime: f.status for f in found.runtimes} == {"onnxruntime": "built", "openvino": "built"}


def test_the_terminal_shows_the_family_the_table_and_each_runtime(models, monkeypatch):
    from edgepack.errors import UsageError
    from edgepack.runtimes.onnxruntime import OnnxRuntime

    def refuse(self, bundle, request):
        raise UsageError("the ONNX exporter rejected the model: operator aten.weird cannot be exported")

    monkeypatch.setattr(OnnxRuntime, "export", refuse)
    result = CliRunner().invoke(cli, ["inspect", "--model", "zoo:digits-cnn", "--target", "x86-cpu", "--runtime",
                                      "onnxruntime", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "zoo:digits-cnn: 24,170 parameters, 619,146 MACs" and lines[1] == "family: CNN"
    assert "features.3" in result.stdout and "rank (90 % / 99 % energy)" in result.stdout
    assert lines[-1] == ("onnxruntime: failed: the ONNX exporter rejected the model: operator aten.weird cannot be "
                         "exported")


@pytest.mark.parametrize("args,message", [
    (["--runtime", "onnxruntime"], "--runtime needs --target"),
    (["--target", "x86-cpu", "--runtime", "tensorrt"], "target x86-cpu cannot use runtime 'tensorrt'"),
    (["--target", "no-such-target"], "no-such-target"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(cli, ["inspect", "--model", "zoo:digits-cnn", *args])
    assert result.exit_code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("edgepack: error:")]
    assert message in line and "Traceback" not in result.output
