"""Per-layer INT8 sensitivity and mixed-precision rescue, on a digits CNN with one layer made fragile on purpose.

The fragile layer (`features.2`) gets one extra input channel that is always zero (the previous convolution's extra
channel has a bias so negative that ReLU zeroes it), and a weight on that channel FACTOR times larger than any other
weight of the same output channel. In float the channel multiplies zero, so the model computes what it did before;
with int8 per-channel weights the outlier sets each channel's scale, and every other weight of the layer rounds to a
few levels. Keeping that one layer in float restores the model; keeping any other layer in float does not.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pytest

from edgepack.records import LayerSensitivity, Report, Rescue, RescueAttempt

if TYPE_CHECKING:
    from edgepack.rescue import Judged
from tests.cli_build import build, write_models

FRAGILE = "features.2"
FACTOR = 100.0

MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, dead=0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16 + dead, 3, padding=1), nn.ReLU(), nn.Conv2d(16 + dead, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def fragile():
    return Net(dead=1), torch.zeros(1, 1, 8, 8)
'''


def _fragile_state(factor: float) -> dict:
    """A digits CNN trained here, rebuilt with the dead channel and the outlier weight on it."""
    import torch
    from torch import nn

    from edgepack.data.digits import load_split
    from edgepack.training import train_classifier

    class Net(nn.Module):
        def __init__(self, dead: int = 0) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16 + dead, 3, padding=1), nn.ReLU(), nn.Conv2d(16 + dead, 32, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.classifier = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, _ = load_split()
        torch.manual_seed(0)
        trained = train_classifier(Net(), train, 15, lr=3e-3).state_dict()
    finally:
        torch.set_num_threads(threads)
    state = Net(dead=1).state_dict()
    for key, value in trained.items():
        if key == "features.0.weight":  # the extra channel: any weights, a bias that keeps it below zero
            state[key][:16], state[key][16] = value, value[0]
        elif key == "features.0.bias":
            state[key][:16] = value
            state[key][16] = -float(trained["features.0.weight"][0].abs().sum()) - 1.0  # inputs lie in [-1, 1]
        elif key == "features.2.weight":
            state[key][:, :16] = value
            state[key][:, 16] = 0.0
            state[key][:, 16, 1, 1] = factor * value.abs().amax(dim=(1, 2, 3))
        else:
            state[key] = value
    return state


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The --model/--factory arguments of the fragile digits CNN."""
    import torch

    directory = tmp_path_factory.mktemp("fragile")
    factory = write_models(directory, "fragile_models", MODELS)
    weights = directory / "fragile.pt"
    torch.save(_fragile_state(FACTOR), weights)
    return ["--model", str(weights), "--factory", f"{factory}:fragile"]


def _digits_eval(tmp_path: Path) -> str:
    from edgepack.data.digits import load_split

    _, test = load_split()
    path = tmp_path / "eval.npz"
    np.savez(path, x=test.inputs, y=test.labels)
    return str(path)


def _calibration(tmp_path: Path) -> str:
    from edgepack.data.digits import load_split

    train, _ = load_split()
    path = tmp_path / "calibration.npz"
    np.savez(path, x=train.inputs[:256], y=train.labels[:256])
    return str(path)


def _args(fragile: list[str], tmp_path: Path, *extra: str) -> list[str]:
    return [*fragile, "--target", "x86-cpu", "--runtime", "onnxruntime", "--precision", "int8",
            "--eval", _digits_eval(tmp_path), "--calibration", _calibration(tmp_path), *extra]


def _accuracy(report: dict, artifact: str) -> float:
    return next(a for a in report["accuracy"] if a["artifact"] == artifact)["top1"]


@pytest.mark.slow
def test_plain_int8_misses_the_budget_without_a_rescue(fragile: list[str], tmp_path: Path) -> None:
    code, output, report = build(_args(fragile, tmp_path, "--max-accuracy-drop", "1pp", "--parity-floor", "off",
                                       "--no-rescue"), tmp_path / "out")
    assert code == 3, output
    assert report["shipping"] == ["onnxruntime-int8"] and report["rescues"] == []
    assert _accuracy(report, "eager") - _accuracy(report, "onnxruntime-int8") > 0.05


@pytest.mark.slow
def test_the_rescue_keeps_the_fragile_layer_in_float_and_meets_the_budget(fragile: list[str],
                                                                          tmp_path: Path) -> None:
    code, output, report = build(_args(fragile, tmp_path, "--max-accuracy-drop", "1pp"), tmp_path / "out")
    assert code == 0, output
    (rescue,) = report["rescues"]
    assert rescue["layers"][0]["layer"] == FRAGILE  # ranked first
    assert rescue["layers"][0]["effect"] > 0.05 > max(abs(layer["effect"]) for layer in rescue["layers"][1:])
    assert rescue["float_layers"] == [FRAGILE] and rescue["rescued"] == "onnxruntime-int8-mixed"
    assert report["shipping"] == ["onnxruntime-int8-mixed"]
    eager, plain, mixed = (_accuracy(report, a) for a in ("eager", "onnxruntime-int8", "onnxruntime-int8-mixed"))
    assert eager - plain > 0.05 and eager - mixed <= 0.01
    mixed_artifact = next(a for a in report["artifacts"] if a["name"] == "onnxruntime-int8-mixed")
    assert mixed_artifact["session_options"] == {"disabled_optimizers": "WeightBiasQuantization"}
    assert {m["artifact"] for m in report["measurements"]} >= {"onnxruntime-int8", "onnxruntime-int8-mixed"}
    assert (tmp_path / "out" / Path(mixed_artifact["path"]).name).is_file()
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Int8 sensitivity and rescue: onnxruntime" in markdown and f"`{FRAGILE}`" in markdown
    assert "Cost against plain int8: size" in markdown
    assert f"onnxruntime rescue: 1 layer(s) kept in float meet the budget: {FRAGILE}" in output
    loaded = Report.from_json((tmp_path / "out" / "report.json").read_text())
    assert loaded.rescues[0].float_layers == (FRAGILE,)


@pytest.mark.slow
def test_sensitivity_alone_reports_without_changing_the_artifact(fragile: list[str], tmp_path: Path) -> None:
    code, output, report = build(_args(fragile, tmp_path, "--sensitivity", "--no-rescue", "--parity-floor", "off"),
                                 tmp_path / "out")
    assert code == 0, output
    (rescue,) = report["rescues"]
    assert rescue["reason"] == "--sensitivity" and rescue["layers"][0]["layer"] == FRAGILE
    assert rescue["rescued"] is None and rescue["attempts"] == []
    assert report["shipping"] == ["onnxruntime-int8"]
    assert [a["name"] for a in report["artifacts"]] == ["onnxruntime-fp32", "onnxruntime-int8"]
    assert "ranking only (--sensitivity), artifact unchanged" in output


def test_the_rescue_record_round_trips_through_json() -> None:
    record = Rescue(runtime="onnxruntime", artifact="onnxruntime-int8", metric="top-1 on 360 samples of digits",
                    plain_score=0.7, percent=True, reason="over budget",
                    layers=(LayerSensitivity("features.2", "Conv2d", 0.95, 0.25),),
                    attempts=(RescueAttempt(("features.2",), 0.95, accuracy_drop=0.0, holds=True),),
                    max_float_layers=2, rescued="onnxruntime-int8-mixed", float_layers=("features.2",),
                    outcome="ok", seconds=1.5)
    assert Rescue.from_dict(record.to_dict()) == record


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="executorch not installed")
def test_executorch_rescues_by_leaving_the_layer_out_of_the_quantizer(fragile: list[str], tmp_path: Path) -> None:
    args = [arg if arg != "onnxruntime" else "executorch" for arg in _args(fragile, tmp_path)]
    code, output, report = build([*args, "--max-accuracy-drop", "1pp"], tmp_path / "out")
    assert code == 0, output
    (rescue,) = report["rescues"]
    assert rescue["layers"][0]["layer"] == FRAGILE and rescue["float_layers"] == [FRAGILE]
    # ranked in the int8 simulation, so the one program lowered is the one that ships
    assert rescue["simulated"] is True and [a["simulated"] for a in rescue["attempts"]] == [False]
    assert "measured in executorch's int8 simulation" in (tmp_path / "out" / "report.md").read_text()
    assert report["shipping"] == ["executorch-int8-mixed"]
    assert _accuracy(report, "eager") - _accuracy(report, "executorch-int8-mixed") <= 0.01


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="litert not installed")
def test_litert_rescues_through_ai_edge_quantizer(fragile: list[str], tmp_path: Path) -> None:
    args = [arg if arg != "onnxruntime" else "litert" for arg in _args(fragile, tmp_path)]
    code, output, report = build([*args, "--target", "android-arm64", "--max-accuracy-drop", "1pp"],
                                 tmp_path / "out")
    assert code == 0, output
    (rescue,) = report["rescues"]
    # every layer scored on the int8 file itself, made in memory: the fragile one alone recovers the model
    assert rescue["simulated"] is True and "made in memory" in rescue["simulation"]
    assert rescue["layers"][0]["layer"] == FRAGILE
    assert rescue["layers"][0]["effect"] > 0.05 > max(abs(layer["effect"]) for layer in rescue["layers"][1:])
    assert rescue["float_layers"] == [FRAGILE] and [a["simulated"] for a in rescue["attempts"]] == [False]
    assert report["shipping"] == ["litert-int8-mixed"]
    eager, plain, mixed = (_accuracy(report, a) for a in ("eager", "litert-int8", "litert-int8-mixed"))
    assert eager - plain > 0.05 and eager - mixed <= 0.01
    artifact = next(a for a in report["artifacts"] if a["name"] == "litert-int8-mixed")
    assert artifact["export_path"].startswith("ai-edge-quantizer") and f"({FRAGILE})" in artifact["scheme"]
    # the kept layer's weights stay float in the file, every other layer's are int8
    kept, total = 32 * 17 * 9, 17 * 9 + 32 * 17 * 9 + 32 * 32 * 9 + 32 * 10
    assert artifact["int8_weight_share"] == pytest.approx(1 - kept / total, abs=1e-3)
    assert "made in memory" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_a_runtime_that_cannot_keep_layers_float_says_so(fragile: list[str], tmp_path: Path) -> None:
    args = [arg if arg != "onnxruntime" else "openvino" for arg in _args(fragile, tmp_path)]
    code, output, report = build([*args, "--sensitivity", "--parity-floor", "off"], tmp_path / "out")
    assert code == 0, output
    assert "openvino cannot keep layers in float in an int8 export" in output
    (rescue,) = report["rescues"]
    assert rescue["layers"] == [] and rescue["rescued"] is None


@pytest.mark.parametrize("extra, message", [
    (["--precision", "fp32"], "--sensitivity ranks layers by what int8 costs them; drop --precision fp32"),
    (["--qat", "1"], "--sensitivity ranks the layers of the post-training int8 artifact, which --qat replaces"),
])
def test_sensitivity_needs_post_training_int8(tmp_path: Path, extra: list[str], message: str) -> None:
    from click.testing import CliRunner

    from edgepack.cli import cli

    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", *extra, "--sensitivity",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _fake_judged(name: str, score: float, holds: bool) -> "Judged":
    from edgepack.records import Artifact, Parity
    from edgepack.rescue import Judged

    artifact = Artifact(name=name, path=f"{name}.onnx", format="onnx", runtime="onnxruntime", precision="int8",
                        size_bytes=1, sha256="0" * 64, inputs=(), outputs=())
    parity = Parity(name, 8, 0.0, 0.0, 1.0, "data")
    return Judged(artifact=artifact, score=score, parity=parity, accuracy_drop=(0.9 - score) * 100, holds=holds)


def test_the_greedy_loop_stops_at_the_bound_and_says_what_the_best_attempt_reached() -> None:
    """Four layers (bound 2): each recovers a little, none enough, one cannot be built; nothing ships."""
    from torch import nn

    from edgepack.errors import ToolError
    from edgepack.rescue import Metric, run

    module = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    gains = {"0": 0.02, "1": 0.05, "2": 0.0}
    built: list[tuple[str, ...]] = []

    def build(keep: tuple[str, ...]) -> object:
        built.append(keep)
        if keep == ("3",):
            raise ToolError("no node carries the weights of 3")
        return keep

    def judge(keep: object) -> "Judged":
        assert isinstance(keep, tuple)
        return _fake_judged("m-int8-mixed", 0.5 + sum(gains[k] for k in keep), holds=False)

    plain = _fake_judged("m-int8", 0.5, holds=False)
    record, won = run("onnxruntime", plain, module, Metric("top-1 on 8 samples of data", True), "over budget",
                      build, judge, lambda _: None, rescue=True)  # type: ignore[arg-type]
    assert won is None and record.rescued is None and record.max_float_layers == 2
    assert [layer.layer for layer in record.layers] == ["1", "0", "2", "3"]
    assert record.layers[-1].effect is None and "no node carries" in record.layers[-1].error
    assert [a.float_layers for a in record.attempts] == [("1",), ("1", "0")]
    assert built[-1] == ("1", "0")  # the single-layer attempt was reused, not rebuilt
    assert record.outcome == ("no rescue with at most 2 of 4 layers in float meets the budget; the best kept 1, 0 in "
                              "float and reached top-1 57.00%, accuracy drop 33.00 pp")
    assert Rescue.from_dict(record.to_dict()) == record


def test_no_build_starts_after_the_time_limit_and_the_outcome_says_so() -> None:
    """Each build takes 0.2 s against a 0.3 s limit: two layers are measured, the other two are left unmeasured, and
    the greedy loop reuses what was measured but builds nothing new."""
    import time

    from torch import nn

    from edgepack.rescue import Metric, run, short_outcome

    module = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    built: list[tuple[str, ...]] = []

    def build(keep: tuple[str, ...]) -> object:
        built.append(keep)
        time.sleep(0.2)
        return keep

    def judge(keep: object) -> "Judged":
        assert isinstance(keep, tuple)
        return _fake_judged("m-int8-mixed", 0.5 + 0.01 * len(keep), holds=False)

    plain = _fake_judged("m-int8", 0.5, holds=False)
    record, won = run("executorch", plain, module, Metric("top-1 on 8 samples of data", True), "below the floor",
                      build, judge, lambda _: None, rescue=True, time_limit_s=0.3)  # type: ignore[arg-type]
    assert won is None and built == [("0",), ("1",)]
    assert [layer.effect is not None for layer in record.layers] == [True, True, False, False]
    assert [a.float_layers for a in record.attempts] == [("0",)]  # reused; ("0", "1") would need a new build
    assert "(the search was stopped by the 0.3 s time limit, --rescue-time-limit, after" in record.outcome
    assert record.stopped_at_s == 0.3 and Rescue.from_dict(record.to_dict()) == record
    assert short_outcome(record) == ("no rescue with up to 2 of 4 layers in float holds within the 0.3 s "
                                     "--rescue-time-limit (1 attempt(s)) (best 51.0% with 0)")


def _rescue_with_simulation(simulate: Callable[[tuple[str, ...]], "Judged"], built_score: Callable[[tuple], float],
                            built_holds: bool, say: Callable[[str], None] = lambda _: None,
                            ) -> tuple[Rescue, Optional["Judged"], list[tuple[str, ...]]]:
    """A rescue of four Linear layers (bound 2) below the floor at 0.5, with `simulate` as the simulation and every
    built artifact scoring `built_score(layers)`; returns (record, what holds, every set built)."""
    from torch import nn

    from edgepack.rescue import Metric, run

    built: list[tuple[str, ...]] = []

    def build(keep: tuple[str, ...]) -> object:
        built.append(keep)
        return keep

    def judge(keep: object) -> "Judged":
        assert isinstance(keep, tuple)
        return _fake_judged("m-int8-mixed", built_score(keep), holds=built_holds)

    module = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    record, won = run("executorch", _fake_judged("m-int8", 0.5, holds=False), module,
                      Metric("top-1 on 8 samples of data", True), "below the floor", build, judge, say, rescue=True,
                      simulate=simulate)  # type: ignore[arg-type]
    return record, won, built


def test_a_simulated_ranking_builds_only_the_set_the_simulation_says_holds() -> None:
    """Layers are ranked in the simulation (nothing built), the greedy steps the simulation rejects are recorded but
    not built, and the first set it accepts is built and judged for real and ships."""
    gains = {"0": 0.05, "1": 0.3, "2": 0.0, "3": 0.01}
    simulated: list[tuple[str, ...]] = []

    def simulate(keep: tuple[str, ...]) -> "Judged":
        simulated.append(keep)
        score = 0.4 + sum(gains[k] for k in keep)  # the simulation reads lower than the runtime: its own baseline
        return _fake_judged("m-int8", score, holds=score >= 0.75)

    record, won, built = _rescue_with_simulation(simulate, lambda keep: 0.5 + sum(gains[k] for k in keep), True)
    # ranked alone, then each step tries every remaining layer with those kept (4 candidates here, under the 8)
    assert simulated[:5] == [(), ("0",), ("1",), ("2",), ("3",)]
    assert simulated[5:] == [("1",), ("0",), ("3",), ("2",), ("1", "0"), ("1", "3"), ("1", "2")]
    assert [layer.layer for layer in record.layers] == ["1", "0", "3", "2"]
    assert record.layers[0].effect == pytest.approx(0.3)  # against the simulation's plain int8 (0.4), not 0.5
    assert record.simulated and built == [("1", "0")]
    assert [(a.float_layers, a.simulated) for a in record.attempts] == [(("1",), True), (("1", "0"), False)]
    assert won is not None and record.rescued == "m-int8-mixed" and record.float_layers == ("1", "0")
    assert Rescue.from_dict(record.to_dict()) == record


def test_each_simulated_step_keeps_the_layer_that_adds_most_to_those_kept() -> None:
    """Layer 1 ranks above layer 2 alone, but repairs what layer 0 already repairs: in ranking order the rescue would
    keep (0, 1) and miss; the greedy step in the simulation keeps (0, 2), which holds, and only that set is built."""
    def score(keep: tuple[str, ...]) -> float:
        return 0.4 + 0.2 * ("0" in keep) + 0.15 * ("1" in keep and "0" not in keep) + 0.14 * ("2" in keep)

    def simulate(keep: tuple[str, ...]) -> "Judged":
        return _fake_judged("m-int8", score(keep), holds=score(keep) >= 0.7)

    record, won, built = _rescue_with_simulation(simulate, score, True)
    assert [layer.layer for layer in record.layers] == ["0", "1", "2", "3"]
    assert built == [("0", "2")] and won is not None and record.float_layers == ("0", "2")
    assert [(a.float_layers, a.simulated) for a in record.attempts] == [(("0",), True), (("0", "2"), False)]


def test_when_the_simulation_never_holds_its_best_set_is_built_once() -> None:
    from edgepack.rescue import short_outcome

    def simulate(keep: tuple[str, ...]) -> "Judged":
        return _fake_judged("m-int8", 0.4 + (0.2 if "2" in keep else 0.0) - 0.01 * len(keep), holds=False)

    record, won, built = _rescue_with_simulation(simulate, lambda keep: 0.6, False)
    assert won is None and built == [("2",)]  # the best simulated set, (2,) at 0.59, against (2, 0) at 0.58
    assert [a.simulated for a in record.attempts] == [True, True, False]
    assert short_outcome(record).endswith("(best 60.0% with 2)")  # a built attempt's figure, not a simulated one


def test_a_simulation_that_fails_falls_back_to_building_each_layer() -> None:
    from edgepack.errors import ToolError

    def simulate(keep: tuple[str, ...]) -> "Judged":
        raise ToolError("the quantizer rejected the model")

    said: list[str] = []
    record, won, built = _rescue_with_simulation(simulate, lambda keep: 0.9, True, said.append)
    assert not record.simulated and built == [("0",), ("1",), ("2",), ("3",)] and won is not None
    assert any("the int8 simulation failed (ToolError: the quantizer rejected the model)" in line for line in said)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="executorch not installed")
def test_the_executorch_simulation_tracks_the_program_and_keeping_the_fragile_layer_float_restores_it() -> None:
    """The simulation of the fragile CNN's plain int8 program agrees with the lowered program on most samples, and
    with the fragile layer bypassed it tracks eager PyTorch closely; the graph is left as it was."""
    import torch

    from edgepack.data.dataset import ArrayDataset
    from edgepack.data.digits import load_split
    from edgepack.models.bundle import ModelBundle
    from edgepack.records import Provenance
    from edgepack.runtimes import get_runtime

    namespace: dict = {}
    exec(MODELS, namespace)
    module, example = namespace["fragile"]()
    module.load_state_dict(_fragile_state(FACTOR))
    provenance = Provenance(source="test", kind="python", model_name="fragile", output_taken="tensor", params=0,
                            macs=0, input_shapes=(tuple(example.shape),))
    bundle = ModelBundle(module.eval(), (example,), ("input",), provenance)
    train, test = load_split()
    calibration = ArrayDataset("calibration", (train.inputs[:128],))
    simulation = get_runtime("executorch").int8_simulation(bundle, calibration)
    assert simulation is not None and FRAGILE in simulation.layer_nodes
    x = test.inputs[:64]
    with torch.no_grad():
        eager = module(torch.from_numpy(x)).numpy()
    with simulation.keeping(()) as session:
        plain = session([x])[0]
    with simulation.keeping((FRAGILE,)) as session:
        rescued = session([x])[0]
    with simulation.keeping(()) as session:
        again = session([x])[0]
    assert np.array_equal(plain, again)  # the bypass was undone
    assert (plain.argmax(1) == eager.argmax(1)).mean() < 0.7  # the outlier weight wrecks plain int8
    assert (rescued.argmax(1) == eager.argmax(1)).mean() > 0.9


@pytest.mark.slow
def test_large_models_are_pre_ranked_by_output_sqnr_on_the_runtime(fragile: list[str], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With fewer metric-pass slots than layers, ONNX Runtime's SQNR of each layer's output picks the layers built
    and judged; the fragile one is among them, ranked first, and the rescue still holds."""
    import edgepack.rescue

    monkeypatch.setattr(edgepack.rescue, "METRIC_LAYERS", 2)
    code, output, report = build(_args(fragile, tmp_path, "--max-accuracy-drop", "1pp"), tmp_path / "out")
    assert code == 0, output
    (rescue,) = report["rescues"]
    layers = rescue["layers"]
    assert all(layer["sqnr_db"] is not None for layer in layers)
    assert layers[0]["layer"] == FRAGILE and rescue["float_layers"] == [FRAGILE]
    measured = [layer for layer in layers if layer["effect"] is not None]
    assert len(measured) == 2
    skipped = [layer for layer in layers if layer["effect"] is None]
    assert min(layer["sqnr_db"] for layer in measured) < min(layer["sqnr_db"] for layer in skipped)
    assert "not measured: left out by the SQNR pre-rank" in (tmp_path / "out" / "report.md").read_text()


CRUSHED = '''
import torch
from torch import nn


class Crushed(nn.Module):
    """Ten class scores 0.01 apart beside a constant -50: per-tensor int8 on the output crushes the scores, whatever
    layer is kept in float."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        scores = self.fc2(torch.relu(self.fc1(x.flatten(1)))) * 0.01
        return torch.cat([scores, torch.full_like(scores[:, :1], -50.0)], 1)


def crushed():
    torch.manual_seed(0)
    return Crushed(), torch.randn(1, 1, 8, 8)
'''


@pytest.mark.slow
def test_no_rescue_within_the_bound_fails_as_before_and_says_what_the_best_reached(tmp_path: Path) -> None:
    models = write_models(tmp_path, "crushed_models", CRUSHED)
    code, output, report = build(["--model", f"{models}:crushed", "--target", "x86-cpu", "--runtime", "onnxruntime"],
                                 tmp_path / "out")
    assert code == 3, output
    assert report["shipping"] == [] and [f["stage"] for f in report["failures"]] == ["parity"]
    assert "below the parity floor 90%" in output
    assert "no rescue with up to 1 of 2 layers in float holds (best " in output
    (rescue,) = report["rescues"]
    assert rescue["rescued"] is None and len(rescue["attempts"]) == 1 and rescue["max_float_layers"] == 1
    assert rescue["outcome"].startswith("no rescue with at most 1 of 2 layers in float meets the budget; the best "
                                        "kept")
    assert "onnxruntime-int8-mixed" not in {a["name"] for a in report["artifacts"]}
    assert not list((tmp_path / "out").glob("*mixed*"))


@pytest.mark.slow
def test_auto_meets_an_accuracy_budget_plain_int8_misses_and_a_second_run_is_cached(fragile: list[str],
                                                                                     tmp_path: Path) -> None:
    """The issue's end-to-end case: digits, an accuracy budget plain int8 misses; --auto finds what meets every
    budget (here the plain build, rescued), says why, and a second identical run comes from the cache."""
    import json

    args = _args(fragile, tmp_path, "--max-accuracy-drop", "1pp", "--budget", "1MB", "--auto", "--cache-dir",
                 str(tmp_path / "cache"))
    code, output, report = build(args, tmp_path / "first")
    assert code == 0, output
    assert report["shipping"] == ["onnxruntime-int8-mixed"]
    assert [r["float_layers"] for r in report["rescues"]] == [[FRAGILE]]
    first = json.loads((tmp_path / "first" / "search.json").read_text())
    assert first["met"] and first["steps"] == ["the plain build meets every budget: nothing to compress"]
    assert "candidate 0 (no compression)" in output and "meets every budget" in output
    code, output, report = build(args, tmp_path / "second")
    assert code == 0, output
    second = json.loads((tmp_path / "second" / "search.json").read_text())
    assert all(c["cached"] for c in second["evaluated"]) and "served from the cache" in output
    assert second["seconds"] < first["seconds"] / 3, (second["seconds"], first["seconds"])
    assert report["shipping"] == ["onnxruntime-int8-mixed"]


def test_runtimes_without_layer_outputs_pre_rank_by_weight_sqnr_and_it_finds_the_outlier() -> None:
    """ExecuTorch cannot show a layer's output, so large models are pre-ranked by each weight's own int8 round-trip
    SQNR: the outlier weight of the fragile layer crushes its channels, the other layers' weights survive."""
    from edgepack.rescue import quantizable_layers, weight_sqnr

    namespace: dict = {}
    exec(MODELS, namespace)  # the fragile model's class, as the factory file defines it
    module = namespace["Net"](dead=1)
    module.load_state_dict(_fragile_state(FACTOR))
    layers = [name for name, _ in quantizable_layers(module)]
    sqnr = weight_sqnr(module, layers)
    assert min(sqnr, key=lambda name: sqnr[name]) == FRAGILE
    assert sqnr[FRAGILE] + 10 < min(v for name, v in sqnr.items() if name != FRAGILE), sqnr  # dB
