"""Tasks and the parity floor: the figure that says an artifact computes what eager PyTorch does depends on what the
output is, and an artifact below the floor fails the build (exit 3) with its figures instead of shipping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from tests.cli_build import build, write_models
from edgepack.errors import UsageError
from edgepack.evaluate import compare_outputs, mean_iou
from edgepack.tasks import ParityFloor, infer_task

MODELS = '''
import torch
from torch import nn


class Crushed(nn.Module):
    """Ten class scores 0.01 apart beside a constant -50: per-tensor int8 on the output spends its 256 steps on the
    -50, so the class scores all round to one value and int8 picks a class at random."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        scores = self.fc(x.flatten(1)) * 0.01
        return torch.cat([scores, torch.full_like(scores[:, :1], -50.0)], 1)


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.body(x)


class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 16)

    def forward(self, x):
        return nn.functional.normalize(self.fc(x.flatten(1)), dim=1)


def crushed():
    torch.manual_seed(0)
    return Crushed(), torch.randn(1, 1, 8, 8)


def segmenter():
    torch.manual_seed(0)
    return Segmenter(), torch.randn(1, 3, 16, 16)


def embedder():
    torch.manual_seed(0)
    return Embedder(), torch.randn(1, 1, 8, 8)


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


def regressor():
    torch.manual_seed(0)
    return Regressor(), torch.randn(1, 1, 8, 8)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("floor"), "floor_models", MODELS)


def _build(args: list[str], out: Path) -> tuple[int, str, dict]:
    return build([*args, "--target", "x86-cpu"], out)


@pytest.mark.parametrize("shape,task", [((8, 10), "classification"), ((8,), "regression"), ((8, 1), "regression"),
                                        ((8, 3, 16, 16), "segmentation"), ((8, 12, 32), "embedding"),
                                        ((8, 1, 16, 16), "embedding")])
def test_task_is_inferred_from_the_output_shape(shape: tuple[int, ...], task: str) -> None:
    assert infer_task(shape)[0] == task


def test_a_task_the_output_cannot_have_is_refused() -> None:
    assert infer_task((8, 16), "embedding") == ("embedding", "--task")
    with pytest.raises(UsageError, match="needs a \\(N, classes, ...\\) map; the output is 8x16"):
        infer_task((8, 16), "segmentation")
    with pytest.raises(UsageError, match="class scores per sample"):
        infer_task((8, 1), "classification")


def test_each_task_is_judged_by_its_own_figure() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((32, 3, 8, 8))
    flipped = ref.copy()
    flipped[:, [0, 1]] = flipped[:, [1, 0]]  # channels swapped: per-pixel classes change, values barely
    seg = compare_outputs("a", ref, flipped, "segmentation", "data")
    assert seg.top1_agreement is not None and seg.top1_agreement < 0.8
    assert "of pixels, below the parity floor 90%" in (ParityFloor().shortfall(seg) or "")
    embedding = compare_outputs("a", ref, ref * 3.0, "embedding", "data")  # same direction, other scale
    assert embedding.top1_agreement is None and embedding.cosine == pytest.approx(1.0)
    assert ParityFloor().shortfall(embedding) is None
    regression = compare_outputs("a", ref, ref * 1.5, "regression", "data")
    assert regression.relative_error == pytest.approx(0.5)
    assert "relative error 0.5" in (ParityFloor().shortfall(regression) or "")
    assert ParityFloor().with_value("off").shortfall(regression) is None
    assert ParityFloor().with_value("0.6").shortfall(regression) is None


def test_an_artifact_below_the_floor_fails_with_its_figures_and_does_not_ship(models: Path, tmp_path: Path) -> None:
    code, output, report = _build(["--model", f"{models}:crushed"], tmp_path / "out")
    assert code == 3, output
    assert "onnxruntime-int8 agrees with eager PyTorch on" in output and "below the parity floor 90%" in output
    assert report["shipping"] == []
    int8 = next(p for p in report["parity"] if p["artifact"] == "onnxruntime-int8")
    assert int8["top1_agreement"] < 0.9
    assert [(f["runtime"], f["stage"], f["artifact"]) for f in report["failures"]] == [
        ("onnxruntime", "parity", "onnxruntime-int8")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert not any(a["shipping"] for a in manifest["artifacts"])


def test_the_floor_can_be_lowered_or_turned_off(models: Path, tmp_path: Path) -> None:
    code, output, report = _build(["--model", f"{models}:crushed", "--parity-floor", "off"], tmp_path / "off")
    assert code == 0, output
    assert report["shipping"] == ["onnxruntime-int8"] and report["parity_floor"] == "off"
    target = tmp_path / "lenient.yaml"
    target.write_text("name: lenient\nruntimes: [onnxruntime]\nparity_floor:\n  min_agreement: 0.0\n")
    result = CliRunner().invoke(cli, ["build", "--model", f"{models}:crushed", "--target", str(target), "--runs", "3",
                                      "--out", str(tmp_path / "lenient"), "--quiet"])
    assert result.exit_code == 0, result.output


def test_segmentation_is_judged_per_pixel(models: Path, tmp_path: Path) -> None:
    code, output, report = _build(["--model", f"{models}:segmenter", "--precision", "fp32"], tmp_path / "out")
    assert code == 0, output
    assert report["model"]["task"] == "segmentation" and "per pixel" in report["model"]["task_how"]
    parity = report["parity"][0]
    assert parity["task"] == "segmentation" and parity["top1_agreement"] == 1.0 and parity["cosine"] > 0.9999
    assert "| onnxruntime-fp32 | segmentation |" in (tmp_path / "out" / "report.md").read_text()


def test_task_embedding_is_judged_by_cosine(models: Path, tmp_path: Path) -> None:
    code, output, report = _build(["--model", f"{models}:embedder", "--task", "embedding"], tmp_path / "out")
    assert code == 0, output
    assert report["model"]["task"] == "embedding" and report["model"]["task_how"] == "--task"
    int8 = next(p for p in report["parity"] if p["artifact"] == "onnxruntime-int8")
    assert int8["top1_agreement"] is None and 0.98 <= int8["cosine"] <= 1.0


@pytest.mark.parametrize("args,fragment", [
    (["--parity-floor", "1.5"], "--parity-floor '1.5': give a number from 0 to 1"),
    (["--parity-floor", "strict"], "--parity-floor 'strict'"),
    (["--task", "segmentation"], "--task segmentation needs a (N, classes, ...) map; the output is 1x11"),
])
def test_bad_floor_and_task_options(models: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(cli, ["build", "--model", f"{models}:crushed", *args, "--out", str(tmp_path / "o"),
                                      "--quiet"])
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_a_bad_parity_floor_in_a_target_file_names_the_key(models: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.yaml"
    target.write_text("name: t\nruntimes: [onnxruntime]\nparity_floor:\n  min_agreement: 1.5\n")
    result = CliRunner().invoke(cli, ["build", "--model", f"{models}:crushed", "--target", str(target), "--out",
                                      str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "parity_floor: min_agreement=1.5 is above the maximum 1.0" in result.stderr, result.stderr


def test_mean_iou_counts_classes_present_in_either_map_and_skips_ignored_pixels() -> None:
    labels = np.array([[[0, 0], [1, 255]]])
    predicted = np.array([[[0, 1], [1, 2]]])
    # class 0: 1/2, class 1: 1/2, class 2: predicted only on an ignored pixel -> absent
    assert mean_iou(predicted, labels, 3) == pytest.approx(0.5)


def test_each_task_has_its_accuracy_metric(models: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x8 = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    cases = {
        "segmenter": (rng.standard_normal((32, 3, 16, 16)).astype(np.float32), rng.integers(0, 3, (32, 16, 16)),
                      "mean IoU"),
        "embedder": (x8, rng.standard_normal((32, 16)).astype(np.float32), "cosine"),
        "regressor": (x8, rng.standard_normal(32).astype(np.float32), "mean abs error"),
    }
    for name, (x, y, metric) in cases.items():
        data = tmp_path / f"{name}.npz"
        np.savez(data, x=x, y=y)
        task = ["--task", "embedding"] if name == "embedder" else []
        code, output, report = _build(["--model", f"{models}:{name}", "--eval", str(data), "--precision", "fp32",
                                       *task], tmp_path / name)
        assert code == 0, output
        figures = {a["artifact"]: a for a in report["accuracy"]}
        assert figures["eager"]["metric"] == metric and figures["eager"]["top1"] is None
        assert figures["onnxruntime-fp32"]["value"] == pytest.approx(figures["eager"]["value"], abs=1e-4)


def test_regression_has_no_accuracy_drop_and_the_budget_says_so(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "r.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((16, 1, 8, 8)).astype(np.float32), y=rng.standard_normal(16))
    code, output, _ = _build(["--model", f"{models}:regressor", "--eval", str(data), "--precision", "fp32",
                              "--max-accuracy-drop", "1pp"], tmp_path / "out")
    assert code == 3, output
    assert "judged by mean abs error, which has none" in output


def test_segmentation_labels_must_be_a_class_per_pixel(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "s.npz"
    np.savez(data, x=np.zeros((4, 3, 16, 16), np.float32), y=np.zeros(4, np.int64))
    result = CliRunner().invoke(cli, ["build", "--model", f"{models}:segmenter", "--eval", str(data), "--out",
                                      str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "segmentation needs one class index per pixel, shape (N, 16, 16)" in result.stderr
