"""`edgepack plan`: the decisions a CNN, a transformer and an RNN get, each with its reason, from a measured plain
build; and the recipe it writes runs unchanged in `edgepack build --recipe`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgepack.cli import cli
from edgepack.compress import DropLayersConfig, FinetuneConfig, LowRankConfig, PruneConfig, parse_recipe

from tests.cli_build import GRU_CLASSIFIER, build, write_models



def plan(args: list[str]) -> tuple[int, str, dict]:
    result = CliRunner().invoke(cli, ["plan", *args, "--runs", "5", "--json"])
    return result.exit_code, result.output, json.loads(result.stdout) if result.exit_code == 0 else {}


def decisions(data: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in data["decisions"]:
        out.setdefault(d["topic"], []).append(d)
    return out


@pytest.mark.slow
def test_a_cnn_over_its_size_budget_gets_channel_pruning_and_the_recipe_builds(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    code, output, data = plan(["--model", "zoo:digits-cnn", "--budget", "20KB", "--out", str(recipe)])
    assert code == 0, output
    made = decisions(data)
    assert data["family"] == "CNN"
    assert made["baseline"][0]["choice"] == "compress" and "size 32" in made["baseline"][0]["reason"]
    assert made["precision"][0]["choice"] == "static INT8"
    assert made["compression"][0]["choice"].startswith("channel pruning, ratio ")
    assert made["sparsity"][0]["choice"] == "not used"
    passes = parse_recipe(recipe)  # the file on disk, as build --recipe reads it
    assert [type(p) for p in passes] == [PruneConfig, FinetuneConfig]
    assert 0.1 <= passes[0].ratio <= 0.75 and data["recipe"][0] == {"prune": {"ratio": passes[0].ratio}}
    assert recipe.read_text().startswith("# edgepack plan for zoo:digits-cnn on x86-cpu (CNN)\n# baseline: compress")
    # the proposal, built unchanged with the same budget, meets it (the size is measured, not estimated)
    code, output, report = build(["--model", "zoo:digits-cnn", "--budget", "20KB", "--recipe", str(recipe)],
                                 tmp_path / "out")
    assert code == 0, output
    assert [p["name"] for p in report["model"]["passes"]] == ["prune", "finetune"]


def test_a_model_within_its_budgets_gets_no_compression(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    code, output, data = plan(["--model", "zoo:digits-cnn", "--budget", "1MB", "--out", str(recipe)])
    assert code == 0, output
    (baseline,) = decisions(data)["baseline"]
    assert baseline["choice"] == "no compression" and "already meets every budget: size" in baseline["reason"]
    assert data["recipe"] == [] and yaml.safe_load(recipe.read_text()) == [] and parse_recipe(recipe) == []


def test_the_cuda_target_is_planned_without_a_gpu_from_a_build_that_measures_nothing():
    code, output, data = plan(["--model", "zoo:digits-cnn", "--target", "cuda", "--device", "none", "--budget",
                               "20KB"])
    assert code == 0, output
    assert "prune" in data["recipe"][0]
    code, output, _ = plan(["--model", "zoo:digits-cnn", "--target", "cuda", "--device", "none", "--max-latency",
                            "5ms"])
    assert code == 2 and "--device none measures nothing, so the latency (p90) budget cannot be judged" in output


@pytest.mark.slow
def test_a_transformer_gets_block_dropping_and_int8_that_spares_attention():
    code, output, data = plan(["--model", "zoo:digits-vit", "--budget", "40KB"])
    assert code == 0, output
    made = decisions(data)
    assert data["family"] == "transformer"
    assert "MatMul/Gemm" in made["precision"][0]["choice"] and "dynamic scheme" in made["precision"][0]["reason"]
    assert made["compression"][0]["choice"].startswith("drop ") and "of 3 blocks of blocks" in \
        made["compression"][0]["choice"]
    passes = parse_recipe(data["recipe"])
    assert isinstance(passes[0], DropLayersConfig) and passes[0].container == "blocks"
    assert any(isinstance(p, LowRankConfig) for p in passes) or "low-rank" not in output


def test_an_rnn_gets_quantization_only(tmp_path):
    models = write_models(tmp_path, "rnn_model", GRU_CLASSIFIER)
    code, output, data = plan(["--model", f"{models}:build", "--budget", "5KB"])
    assert code == 0, output
    made = decisions(data)
    assert data["family"] == "RNN" and data["recipe"] == []
    assert made["compression"][0]["choice"] == "none (quantization only)"
    assert "recurrence" in made["compression"][0]["reason"]
    assert "fine-tuning" not in made


def test_the_terminal_shows_each_decision_with_its_reason(tmp_path):
    result = CliRunner().invoke(cli, ["plan", "--model", "zoo:digits-cnn", "--budget", "1MB", "--runs", "5",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "zoo:digits-cnn on x86-cpu: CNN"
    assert any(line.startswith("baseline: no compression — the plain build (onnxruntime-int8) already meets")
               for line in lines)
    assert lines[-1] == "[]"  # no --out: the recipe is printed


@pytest.mark.parametrize("args,message", [
    ([], "plan needs a budget to plan for"),
    (["--budget", "1MB", "--runtime", "tensorrt"], "target x86-cpu cannot use runtime 'tensorrt'"),
    (["--budget", "lots"], "lots"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["plan", "--model", "zoo:digits-cnn", *args])
    assert result.exit_code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("edgepack: error:")]
    assert message in line and "Traceback" not in result.output
    assert not list(Path(tmp_path).iterdir())
