"""Models with integer token inputs and several inputs, end to end through the CLI: example inputs as a dict keyed by
forward's parameters or declared with --input-shape, synthetic data within each input's valid range, .npz data with
one array per input, and every runtime fed the dtypes the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from tests.cli_build import build, write_models

VOCAB, SEQ, CLASSES = 50, 12, 4

TEXT_MODELS = f'''
import torch
from torch import nn


class TextClassifier(nn.Module):
    """Masked mean of token embeddings, then a linear head: the shape of a small on-device intent classifier."""

    def __init__(self, vocab={VOCAB}, dim=16, classes={CLASSES}):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.fc(pooled)


def build():
    torch.manual_seed(0)
    # written out of forward's order on purpose: inputs are bound by name
    return TextClassifier(), {{"attention_mask": torch.ones(1, {SEQ}, dtype=torch.long),
                              "input_ids": torch.randint(0, {VOCAB}, (1, {SEQ}))}}


def build_bare():
    torch.manual_seed(0)
    return TextClassifier()


def build_wrong_key():
    return TextClassifier(), {{"ids": torch.zeros(1, {SEQ}, dtype=torch.long)}}


def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    return model, {{"input_ids": torch.randint(0, 100, (1, 16)),
                   "attention_mask": torch.ones(1, 16, dtype=torch.long)}}
'''


@pytest.fixture(scope="module")
def text_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("text"), "text_models", TEXT_MODELS)


def _labelled_npz(path: Path, n: int = 64, seed: int = 3, vocab: int = VOCAB) -> Path:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n, SEQ)).astype(np.int64)
    mask = np.ones((n, SEQ), np.int64)
    mask[:, SEQ // 2:] = rng.integers(0, 2, (n, SEQ - SEQ // 2))  # padded tails of different lengths
    np.savez(path, input_ids=ids, attention_mask=mask, y=rng.integers(0, CLASSES, n))
    return path


@pytest.fixture(scope="module")
def x86_text_build(text_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("x86-text")
    data = _labelled_npz(tmp / "eval.npz")
    code, output, report = build(["--model", f"{text_models}:build", "--target", "x86-cpu", "--eval", str(data)],
                                  tmp / "out")
    assert code == 0, output
    return report


def test_token_model_builds_for_x86_with_integer_inputs(x86_text_build: dict) -> None:
    report = x86_text_build
    ids, mask = report["model"]["inputs"]
    assert (ids["name"], ids["dtype"], ids["kind"], ids["low"], ids["high"]) == ("input_ids", "int64", "index", 0,
                                                                                  VOCAB)
    assert "embed" in ids["how"]  # the range came from the embedding that reads the ids
    assert (mask["name"], mask["kind"]) == ("attention_mask", "mask")
    for artifact in report["artifacts"]:
        assert [(i["name"], i["dtype"]) for i in artifact["inputs"]] == [("input_ids", "int64"),
                                                                          ("attention_mask", "int64")]
    fp32 = next(p for p in report["parity"] if p["artifact"] == "onnxruntime-fp32")
    assert fp32["max_abs_diff"] < 1e-5 and fp32["top1_agreement"] == 1.0
    # accuracy on the .npz's labels, for the eager model and through each artifact, on the same 64 samples
    assert {a["artifact"] for a in report["accuracy"]} == {"eager", "onnxruntime-fp32", "onnxruntime-int8"}
    assert all(a["samples"] == 64 for a in report["accuracy"])
    eager = next(a["top1"] for a in report["accuracy"] if a["artifact"] == "eager")
    assert next(a["top1"] for a in report["accuracy"] if a["artifact"] == "onnxruntime-fp32") == eager
    assert len(report["measurements"]) == 2


def test_synthetic_calibration_stays_within_the_vocabulary_and_says_how(x86_text_build: dict) -> None:
    warning = next(w for w in x86_text_build["warnings"] if "calibrated on synthetic inputs" in w)
    assert f"input_ids: uniform int64 in [0, {VOCAB})" in warning and "attention_mask: all ones" in warning


def test_input_shape_declares_named_integer_inputs(text_models: Path, tmp_path: Path) -> None:
    code, output, report = build(["--model", f"{text_models}:build_bare", "--target", "x86-cpu",
                                   "--precision", "fp32", "--input-shape",
                                   f"input_ids=2x{SEQ}:int64,attention_mask=2x{SEQ}:int64"], tmp_path / "out")
    assert code == 0, output
    assert report["model"]["input_shapes"] == [[2, SEQ], [2, SEQ]]
    assert report["model"]["inputs"][0]["high"] == VOCAB  # found from the embedding, not from placeholder zeros
    assert report["parity"][0]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_token_model_ships_on_both_android_runtimes(text_models: Path, tmp_path: Path) -> None:
    code, output, report = build(["--model", f"{text_models}:build", "--target", "android-arm64",
                                   "--calibration", str(_labelled_npz(tmp_path / "cal.npz"))], tmp_path / "out")
    assert code == 0, output
    assert {a["name"] for a in report["artifacts"]} == {"executorch-fp32", "executorch-int8", "litert-fp32",
                                                        "litert-int8"}
    assert report["failures"] == []
    assert all(p["top1_agreement"] >= 0.9 for p in report["parity"]), report["parity"]
    # the embedding table stays float in both runtimes' int8 files: most of the weights are not 8-bit, and it says so
    for name in ("executorch-int8", "litert-int8"):
        artifact = next(a for a in report["artifacts"] if a["name"] == name)
        assert artifact["int8_weight_share"] < 0.5
        assert any("of the weights are stored in 8 bits" in n for n in artifact["notes"]), artifact["notes"]


@pytest.mark.slow
def test_hugging_face_bert_builds_for_x86(text_models: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    code, output, report = build(["--model", f"{text_models}:bert", "--target", "x86-cpu"], tmp_path / "out")
    assert code == 0, output
    assert [d["name"] for d in report["model"]["inputs"]] == ["input_ids", "attention_mask"]
    assert report["model"]["inputs"][0]["how"] == "ids of the embedding bert.embeddings.word_embeddings"
    assert next(p for p in report["parity"] if p["artifact"] == "onnxruntime-fp32")["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("args,files,fragment", [
    (["--model", "{models}:build_wrong_key"], {}, "names 'ids', which is not a parameter of the model's forward"),
    (["--model", "{models}:build_bare", "--input-shape", "tokens=1x8:int64"], {},
     "names 'tokens', which is not a parameter"),
    (["--model", "{models}:build_bare", "--input-shape", "input_ids=1x8,attention_mask=1x8"], {},
     "the model rejected input shape input_ids=1x8, attention_mask=1x8"),
    (["--model", "{models}:build", "--eval", "{tmp}/missing.npz"], {"missing.npz": "mask-only"},
     "no array named 'input_ids'"),
    (["--model", "{models}:build", "--eval", "{tmp}/big.npz"], {"big.npz": "ids-too-big"},
     f"input 'input_ids' hold ids 0..{VOCAB + 9}, beyond what the model takes: 0..{VOCAB - 1}"),
    (["--model", "{models}:build", "--calibration", "{tmp}/frac.npz"], {"frac.npz": "fractional"},
     "input 'input_ids' hold fractional values"),
    (["--model", "{models}:build", "--eval", "{tmp}/eval.npz", "--robustness"], {"eval.npz": "good"},
     "--robustness corrupts one real-valued input"),
])
def test_bad_token_inputs_are_one_line_exit_2(text_models: Path, tmp_path: Path, args: list[str],
                                                files: dict[str, str], fragment: str) -> None:
    rng = np.random.default_rng(0)
    for name, kind in files.items():
        ids = rng.integers(0, VOCAB, (8, SEQ))
        if kind == "ids-too-big":
            ids[0, :] = np.arange(SEQ) + VOCAB - 2  # up to VOCAB + 9
            ids[1, 0] = 0
        arrays = {"input_ids": ids.astype(np.float32) + 0.5 if kind == "fractional" else ids,
                  "attention_mask": np.ones((8, SEQ), np.int64), "y": rng.integers(0, CLASSES, 8)}
        if kind == "mask-only":
            del arrays["input_ids"]
        np.savez(tmp_path / name, **arrays)
    args = [a.format(models=text_models, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["build", *args, "--target", "x86-cpu", "--out", str(tmp_path / "out"),
                                      "--quiet"])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
