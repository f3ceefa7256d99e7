"""The rescue stage of a build: at the shipping post-training int8 step, judge the artifact as the gates would
(parity floor, accuracy budgets), rank its layers by sensitivity when asked or when it misses, and keep the most
sensitive in float until it holds (rescue.py holds the ranking and the greedy loop; this module wires them to the
runtime, the exporter and the build's data). The pipeline calls `may_rescue` and `run_stage`."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence

from edgepack.errors import ParityBelowFloor, one_line
from edgepack.plan import BuildPlan
from edgepack.progress import Progress
from edgepack.records import Accuracy, Artifact, Parity, Rescue

if TYPE_CHECKING:
    from edgepack.loading import BuildData
    from edgepack.models.bundle import ModelBundle
    from edgepack.plan import ExportStep
    from edgepack.rescue import Judged, Metric
    from edgepack.runtimes.base import Runtime


class RuntimeResults(Protocol):
    """What one runtime has produced so far in the build (pipeline._RuntimeResults)."""

    artifacts: dict[str, Artifact]
    parity: list[Parity]
    accuracy: list[Accuracy]
    robustness: list[Any]
    rescues: list[Rescue]
    ships_instead: dict[str, str]


def may_rescue(step: "ExportStep", plan: BuildPlan) -> bool:
    """Whether this step's artifact gets a sensitivity ranking or a rescue: the post-training int8 one that ships."""
    return (step.precision == "int8" and not step.qat and step.ships
            and (plan.sensitivity or (plan.rescue and (plan.parity_floor.enabled
                                                       or any(b.metric == "accuracy_drop" for b in plan.budgets)))))


def run_stage(runtime: "Runtime", plan: BuildPlan, bundle: "ModelBundle", data: "BuildData", step: "ExportStep",
                 parent: Optional[Artifact], staging: Path, progress: Progress, results: "RuntimeResults",
                 reference: Sequence[Accuracy], shortfall: str) -> Optional[Artifact]:
    """Rank the int8 artifact's layers by sensitivity when asked (--sensitivity) or when it misses the parity floor
    or an accuracy budget; in the latter case keep the most sensitive in float until it holds. Returns the rescued
    artifact, verified, which ships instead of the plain one; None when there is none. Below the parity floor with
    no rescue, raises ParityBelowFloor as a plain int8 artifact would."""
    from edgepack import exporting, rescue
    from edgepack.quiet import captured

    plain_artifact = results.artifacts[step.artifact]
    judge = _judge(runtime, plan, bundle, data, reference)
    parity = next(p for p in reversed(results.parity) if p.artifact == plain_artifact.name)
    accuracy = next((a for a in reversed(results.accuracy) if a.artifact == plain_artifact.name), None)
    plain = judge(plain_artifact, parity, accuracy)
    why = _missed(plain)
    wanted = plan.rescue and bool(why)
    below_floor = ParityBelowFloor(f"{plain_artifact.name} {shortfall}; it does not ship (see --parity-floor)")
    if not runtime.keeps_layers_float:
        if plan.sensitivity or wanted:
            line = (f"{runtime.name} cannot keep layers in float in an int8 export: no sensitivity ranking or "
                    f"rescue for {plain_artifact.name}")
            progress.warn(line)
            metric = _metric(plain)
            results.rescues.append(Rescue(runtime=runtime.name, artifact=plain_artifact.name, metric=metric.text,
                                          plain_score=plain.score, percent=metric.percent,
                                          reason=why or "--sensitivity", outcome=line))
        if shortfall:
            raise below_floor
        return None
    if not plan.sensitivity and not wanted:
        if shortfall:
            raise below_floor
        return None
    scratch = Path(tempfile.mkdtemp(prefix=f".rescue-{runtime.name}-", dir=staging))
    attempts = iter(range(1, 1_000_000))

    def build(keep: tuple[str, ...]) -> Artifact:
        out = scratch / f"attempt-{next(attempts)}"
        out.mkdir()
        return exporting.export(runtime, bundle, step, out, data.calibration, _options(plan, runtime.name), parent,
                                None, keep_float=keep)

    def attempt(artifact: Artifact) -> "Judged":
        return judge(artifact, None, None)

    def pre_rank(layers: list[str]) -> Optional[dict[str, float]]:
        """Each layer's output SQNR in plain int8, where the runtime can show layer outputs (against its fp32
        artifact, the int8 one's parent); elsewhere each weight's own int8 round-trip SQNR, so a large model never
        has every layer exported again (an ExecuTorch export of a mid-size model takes the better part of a
        minute)."""
        sqnr = None
        if parent is not None and data.calibration is not None:
            with captured():
                sqnr = runtime.layer_sqnr(bundle, plain_artifact, parent, data.calibration.take(SQNR_SAMPLES), layers)
        if sqnr is None:
            progress.say(f"sensitivity: {runtime.name} cannot show layer outputs; pre-ranked by each weight's own "
                         f"int8 round-trip SQNR instead")
            sqnr = rescue.weight_sqnr(bundle.module, layers)
        return sqnr

    try:
        with progress.stage(f"{plain_artifact.name}: per-layer sensitivity" + (" and rescue" if wanted else "")):
            simulate, simulation = _simulation(runtime, bundle, data, plain_artifact, judge, progress)
            record, won = rescue.run(runtime.name, plain, bundle.module, _metric(plain), why or "--sensitivity",
                                     build, attempt, progress.say, rescue=wanted, pre_rank=pre_rank,
                                     time_limit_s=plan.rescue_time_limit_s, simulate=simulate)
        if record.simulated:
            record = replace(record, simulation=simulation)
        results.rescues.append(record)
        progress.say(f"{runtime.name}: {record.outcome}")
        if won is None:
            if shortfall:
                raise ParityBelowFloor(f"{plain_artifact.name} {shortfall}; {rescue.short_outcome(record)}; it does "
                                       f"not ship (see --parity-floor)")
            return None
        moved = won.artifact
        for file in moved.files():
            file.replace(staging / file.name)
        moved = replace(moved, path=str(staging / Path(moved.path).name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results.artifacts[moved.name] = moved
    results.parity.append(won.parity)
    if won.accuracy is not None:
        results.accuracy.append(won.accuracy)
    if plan.robustness and data.eval is not None:
        from edgepack import evaluate

        session = exporting.open_session(runtime, moved, plan.measure.threads, plan.measure.device)
        results.robustness.append(evaluate.artifact_robustness(moved.name, session, data.eval))
    results.ships_instead[plain_artifact.name] = moved.name
    return moved


SQNR_SAMPLES = 64  # calibration samples the SQNR pre-rank of large models runs


def _simulation(runtime: "Runtime", bundle: "ModelBundle", data: "BuildData", plain: Artifact,
                judge: Callable[[Artifact, Optional[Parity], Optional[Accuracy]], "Judged"],
                progress: Progress) -> tuple[Optional[Callable[[tuple[str, ...]], "Judged"]], str]:
    """Judging the runtime's int8 simulation with some layers in float as the gates judge an artifact (parity on the
    parity data, accuracy on the eval data), under the plain artifact's name, and what the simulation runs; None
    when the runtime has no simulation or it cannot be built (the sensitivity pass then builds each layer's
    artifact)."""
    from edgepack import evaluate
    from edgepack.quiet import captured

    try:
        with captured():
            simulation = runtime.int8_simulation(bundle, data.calibration)
    except Exception as exc:  # noqa: BLE001 - the simulation only saves time
        progress.say(f"sensitivity: no int8 simulation ({type(exc).__name__}: {one_line(exc)}); each layer is built")
        return None, ""
    if simulation is None:
        return None, ""
    progress.say(f"sensitivity: layers ranked in {runtime.name}'s int8 simulation; only sets it says hold are built")

    def simulate(keep: tuple[str, ...]) -> "Judged":
        with simulation.keeping(keep) as session:
            parity = evaluate.parity(plain.name, session, bundle, data.parity)
            accuracy = (evaluate.artifact_accuracy(plain.name, session, data.eval, bundle.provenance.task)
                        if data.eval is not None else None)
        return judge(plain, parity, accuracy)

    return simulate, simulation.description


def _options(plan: BuildPlan, runtime: str) -> Any:
    return next(rt.options for rt in plan.runtimes if rt.name == runtime)


def _missed(plain: "Judged") -> str:
    """What the plain int8 artifact missed, as a clause; "" when it holds."""
    missed = [plain.shortfall] if plain.shortfall else []
    if not plain.within_budgets and plain.accuracy_drop is not None:
        missed.append(f"loses {plain.accuracy_drop:.2f} pp of accuracy, over --max-accuracy-drop")
    return f"{plain.artifact.name} {'; and '.join(missed)}" if missed else ""


def _judge(runtime: "Runtime", plan: BuildPlan, bundle: "ModelBundle", data: "BuildData",
           reference: Sequence[Accuracy]) -> Callable[[Artifact, Optional[Parity], Optional[Accuracy]], "Judged"]:
    """Judging one int8 artifact through its runtime as the build's gates would: the parity floor on the parity data,
    every accuracy budget on the eval data. Figures already measured (the plain artifact's) are passed in."""
    from edgepack import evaluate, exporting
    from edgepack.gates import observe
    from edgepack.rescue import Judged

    budgets = [b for b in plan.budgets if b.metric == "accuracy_drop"]
    passes = [p.name for p in bundle.provenance.passes]

    def judge(artifact: Artifact, parity: Optional[Parity], accuracy: Optional[Accuracy]) -> Judged:
        if parity is None:
            session = exporting.open_session(runtime, artifact, plan.measure.threads, plan.measure.device)
            parity = evaluate.parity(artifact.name, session, bundle, data.parity)
            if data.eval is not None:
                accuracy = evaluate.artifact_accuracy(artifact.name, session, data.eval, bundle.provenance.task)
        shortfall = plan.parity_floor.shortfall(parity) or ""
        drops = [observe(b, artifact, [], [*reference, *([accuracy] if accuracy else [])], passes)[0]
                 for b in budgets]
        within = all(d is not None and d <= b.limit for d, b in zip(drops, budgets))
        drop = max((d for d in drops if d is not None), default=None)
        return Judged(artifact=artifact, score=_score(parity, accuracy), parity=parity, accuracy=accuracy,
                      accuracy_drop=drop, shortfall=shortfall, within_budgets=within, holds=not shortfall and within)

    return judge


def _score(parity: Parity, accuracy: Optional[Accuracy]) -> float:
    """The figure a rescue ranks layers by (higher is better): the task's accuracy on the eval data when there is
    one, else the parity figure the floor judges."""
    if accuracy is not None and accuracy.score is not None:
        return accuracy.score
    if parity.task in ("classification", "segmentation") and parity.top1_agreement is not None:
        return parity.top1_agreement
    if parity.task == "embedding" and parity.cosine is not None:
        return parity.cosine
    return -parity.relative_error


def _metric(plain: "Judged") -> "Metric":
    from edgepack.rescue import Metric

    acc, parity = plain.accuracy, plain.parity
    if acc is not None and acc.score is not None:
        return Metric(f"{acc.metric} on {acc.samples} samples of {acc.dataset}", percent=True)
    where = f"on {parity.samples} samples of {parity.inputs_from}"
    if parity.task in ("classification", "segmentation") and parity.top1_agreement is not None:
        return Metric(f"agreement with eager PyTorch {where}", percent=True)
    if parity.task == "embedding" and parity.cosine is not None:
        return Metric(f"cosine to eager PyTorch {where}", percent=False)
    return Metric(f"negated relative error against eager PyTorch {where}", percent=False)
