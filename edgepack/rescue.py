"""Per-layer INT8 sensitivity and mixed-precision rescue, measured through the runtime that ships the artifact.

Sensitivity: for each quantizable layer (Conv/Linear, by the model's own module names), build the int8 artifact with
that layer alone kept in float and measure the metric the build is judged by; the layer's effect is the metric's
change against the plain int8 artifact. Rescue: keep the most sensitive layers in float, greedily, each step rebuilt and
judged for real (effects do not simply add up), until the artifact meets the parity floor and every accuracy budget, or
the bound on float layers is reached. A runtime whose exports are slow (ExecuTorch) may instead supply a simulation of
its int8 program: layers are then scored there, each greedy step keeps whichever of the best-ranked layers scores
best with those already kept, and only the steps the simulation says hold are built.

This module holds the ranking and the greedy loop only; building an artifact and judging it are the pipeline's
callables, so the loop knows nothing of runtimes, files or data. Importing it stays torch-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from edgepack.errors import EdgepackError, UsageError, one_line
from edgepack.records import Artifact, LayerSensitivity, Rescue, RescueAttempt

if TYPE_CHECKING:
    import numpy as np

    from edgepack.records import Accuracy, Parity

# the leaf module types whose weights int8 quantizes, and which a runtime can keep in float one by one
WEIGHTED_LAYER_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                        "ConvTranspose3d")
MAX_FLOAT_SHARE = 0.5  # a rescue keeps at most this share of the quantizable layers in float
# above this many quantizable layers, a runtime that can show layer outputs pre-ranks them by SQNR and only this many
# (the lowest SQNR) go through the metric pass, each of which builds and judges one artifact
METRIC_LAYERS = 16
# seconds a sensitivity ranking and rescue may spend by default (--rescue-time-limit): each step exports and judges
# one artifact, which for a mid-size model on ExecuTorch takes a minute, so an unbounded rescue could take an hour
TIME_LIMIT_S = 300.0
# with a simulation, each greedy step tries this many of the best-ranked layers not yet kept and keeps the one that
# scores best with those already kept: effects do not add up, and a simulated set costs a fraction of a second
FORWARD_CANDIDATES = 8


@dataclass(frozen=True)
class Judged:
    """One int8 artifact measured through its runtime: the figures a rescue decides by."""

    artifact: Artifact
    score: float  # the rescue's metric: higher is better
    parity: Parity
    accuracy: Optional[Accuracy] = None
    accuracy_drop: Optional[float] = None  # pp against the original, when an accuracy budget is judged
    shortfall: str = ""  # why it is below the parity floor; "" when it meets it
    within_budgets: bool = True  # meets every accuracy budget
    holds: bool = False  # meets the parity floor and every accuracy budget

    def attempt(self, layers: tuple[str, ...], simulated: bool = False) -> RescueAttempt:
        return RescueAttempt(float_layers=layers, score=self.score, accuracy_drop=self.accuracy_drop,
                             shortfall=self.shortfall, holds=self.holds, simulated=simulated)


@dataclass(frozen=True)
class Metric:
    """What the scores are: a description with the data, and whether they are fractions shown as percentages."""

    text: str
    percent: bool


BuildFn = Callable[[tuple[str, ...]], Artifact]  # the int8 artifact with these layers in float
SimulateFn = Callable[[tuple[str, ...]], Judged]  # these layers in float in a simulation of the int8 program
PreRankFn = Callable[[list[str]], Optional[dict[str, float]]]  # layer -> SQNR (dB) of its output; None: cannot
JudgeFn = Callable[[Artifact], Judged]
SayFn = Callable[[str], None]


def quantizable_layers(module: Any) -> list[tuple[str, str]]:
    """(module name, class name) of every weighted leaf layer, in the model's order."""
    return [(name, type(m).__name__) for name, m in module.named_modules()
            if name and type(m).__name__ in WEIGHTED_LAYER_TYPES and getattr(m, "weight", None) is not None]


def is_within(layer: str, names: Sequence[str]) -> bool:
    """Whether module `layer` is one of `names` or sits inside one: what keeping those names in float covers."""
    return any(layer == name or layer.startswith(name + ".") for name in names)


def weighted_layers_under(module: Any, name: str) -> list[tuple[str, np.ndarray]]:
    """(layer name, weight as numpy) of the weighted layers that module `name` is or contains: what keeping `name`
    in float keeps in float. An unknown name is a UsageError naming some known ones."""
    layers = dict(module.named_modules())
    if name not in layers:
        known = [n for n, _ in quantizable_layers(module)]
        raise UsageError(f"the model has no module named {name!r}; its quantizable layers: "
                         f"{', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")
    found = [(n, m.weight.detach().cpu().numpy()) for n, m in layers.items()
             if is_within(n, (name,)) and type(m).__name__ in WEIGHTED_LAYER_TYPES
             and getattr(m, "weight", None) is not None]
    if not found:
        raise UsageError(f"module {name!r} holds no Conv or Linear layer; there is nothing to keep in float")
    return found


def weight_sqnr(module: Any, layers: Sequence[str]) -> dict[str, float]:
    """SQNR (dB) of each layer's weight after a per-output-channel symmetric int8 round trip, computed in eager
    PyTorch: the pre-rank for runtimes that cannot show layer outputs. It sees outlier weights (one large weight
    crushes its channel's other values onto a few levels), not outlier activations."""
    import numpy as np

    out = {}
    for name in layers:
        signal = noise = 0.0
        for _, weight in weighted_layers_under(module, name):
            w = weight.reshape(weight.shape[0], -1).astype(np.float64)
            scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            noise += float(np.square(w - np.clip(np.round(w / scale), -127, 127) * scale).sum())
            signal += float(np.square(w).sum())
        out[name] = float(10 * np.log10(signal / noise)) if noise > 0 else float("inf")
    return out


def max_float_layers(layers: int) -> int:
    """The bound on layers a rescue keeps in float: half the quantizable layers (none of a one-layer model)."""
    return int(layers * MAX_FLOAT_SHARE)


def _try(attempt: Callable[[tuple[str, ...]], Judged], layers: tuple[str, ...]) -> Judged | str:
    """The judged artifact (or simulation) with `layers` in float, or why it could not be built or judged."""
    try:
        return attempt(layers)
    except EdgepackError as exc:
        return one_line(exc)
    except Exception as exc:  # noqa: BLE001 - one attempt that fails is recorded; the plain artifact still stands
        return f"{type(exc).__name__}: {one_line(exc)}"


def rank(plain: Judged, layers: Sequence[tuple[str, str]], build: BuildFn, judge: JudgeFn, say: SayFn,
         pre_rank: Optional[PreRankFn] = None, metric_layers: Optional[int] = None,
         out_of_time: Callable[[], bool] = lambda: False, simulate: Optional[SimulateFn] = None,
         ) -> tuple[list[LayerSensitivity], dict[tuple[str, ...], Judged | str]]:
    """Each layer alone in float, built and judged through the runtime; most sensitive (largest recovery) first.
    With more layers than `metric_layers`, `pre_rank` (SQNR of each layer's output) picks the ones measured; the
    others follow, lowest SQNR first, then layers that could not be built. Once `out_of_time()`, the layers not yet
    measured are left unmeasured (ranked by SQNR alone). Also returns every result by its float layers, for the
    greedy loop. With `simulate`, every layer is measured in the simulation instead (nothing is built; effects are
    against the simulation's plain int8, `simulate(())`) and the returned results are empty."""
    metric_layers = METRIC_LAYERS if metric_layers is None else metric_layers
    sqnr: dict[str, float] = {}
    baseline = plain.score
    if simulate is not None:
        baseline = simulate(()).score  # raises when the simulation cannot run: the caller falls back to builds
    elif pre_rank is not None and len(layers) > metric_layers:
        try:
            sqnr = pre_rank([name for name, _ in layers]) or {}
        except Exception as exc:  # noqa: BLE001 - the pre-rank only saves time: without it every layer is measured
            say(f"sensitivity: no SQNR pre-rank ({type(exc).__name__}: {one_line(exc)}); every layer is measured")
    measured = [name for name, _ in layers]
    if sqnr:
        measured = sorted(sqnr, key=lambda name: sqnr[name])[:metric_layers]
        say(f"sensitivity: {len(measured)} of {len(layers)} layers, those with the lowest int8 SQNR, are measured")
    judged: dict[tuple[str, ...], Judged | str] = {}
    found = []
    for n, (name, kind) in enumerate(layers):
        if name not in measured or out_of_time():
            found.append(LayerSensitivity(layer=name, type=kind, score=None, effect=None, sqnr_db=sqnr.get(name)))
            continue
        if simulate is not None:
            say(f"sensitivity {n + 1}/{len(layers)}, simulated: {name} in float")
            result = _try(simulate, (name,))
        else:
            say(f"sensitivity {len(judged) + 1}/{len(measured)}: {name} in float")
            result = judged[(name,)] = _try(lambda keep: judge(build(keep)), (name,))
        if isinstance(result, str):
            found.append(LayerSensitivity(layer=name, type=kind, score=None, effect=None, error=result,
                                          sqnr_db=sqnr.get(name)))
        else:
            found.append(LayerSensitivity(layer=name, type=kind, score=result.score,
                                          effect=result.score - baseline, sqnr_db=sqnr.get(name)))

    def order(i: int) -> tuple[int, float, float, int]:
        layer = found[i]
        sqnr_db = layer.sqnr_db if layer.sqnr_db is not None else float("inf")
        if layer.effect is not None:  # equal effects: the lower output SQNR first, then the model's order
            return 0, -layer.effect, sqnr_db, i
        return (1, sqnr_db, 0.0, i) if not layer.error and layer.sqnr_db is not None else (2, 0.0, 0.0, i)

    return [found[i] for i in sorted(range(len(found)), key=order)], judged


def run(runtime: str, plain: Judged, module: Any, metric: Metric, reason: str, build: BuildFn, judge: JudgeFn,
        say: SayFn, rescue: bool, pre_rank: Optional[PreRankFn] = None,
        metric_layers: Optional[int] = None, time_limit_s: float = TIME_LIMIT_S,
        simulate: Optional[SimulateFn] = None) -> tuple[Rescue, Optional[Judged]]:
    """Rank the layers; when `rescue`, keep the most sensitive in float until the artifact holds. Returns the record
    and the judged artifact that holds (None when only ranking, or when no attempt within the bound holds). No new
    build starts after `time_limit_s`; the outcome then says the limit stopped it.

    With `simulate`, the layers are ranked in the simulation and the greedy steps are chosen there: each adds the
    one of the FORWARD_CANDIDATES best-ranked layers not yet kept that scores best with those already kept. Only a
    set of float layers the simulation says holds is built and judged through the runtime (and, when none does, the
    one it scores best, once), so the artifact that ships was still built and judged for real."""
    start = time.perf_counter()

    def out_of_time() -> bool:
        return time.perf_counter() - start > time_limit_s

    layers = quantizable_layers(module)
    bound = max_float_layers(len(layers))
    record = Rescue(runtime=runtime, artifact=plain.artifact.name, metric=metric.text, plain_score=plain.score,
                    percent=metric.percent, reason=reason, max_float_layers=bound)
    if len(layers) < 2:
        return _done(record, start, outcome=f"the model has {len(layers)} Conv/Linear layer(s): keeping one in float "
                                            f"would leave no int8 layer, so nothing was ranked or rescued"), None
    if simulate is not None:
        try:
            ranking, judged = rank(plain, layers, build, judge, say, out_of_time=out_of_time, simulate=simulate)
            record = _replace(record, simulated=True)
        except Exception as exc:  # noqa: BLE001 - the simulation only saves time: without it every layer is built
            say(f"sensitivity: the int8 simulation failed ({type(exc).__name__}: {one_line(exc)}); "
                f"each layer is built instead")
            simulate = None
    if simulate is None:
        ranking, judged = rank(plain, layers, build, judge, say, pre_rank, metric_layers, out_of_time)
    record = _replace(record, layers=tuple(ranking))
    stopped = (f" (stopped by the {time_limit_s:g} s time limit, --rescue-time-limit, after "
               f"{time.perf_counter() - start:.0f} s)")
    if not rescue:
        top = ranking[0]
        measured = sum(1 for layer in ranking if layer.effect is not None)
        what = f"{measured} of {len(ranking)}" if measured < len(ranking) else f"{len(ranking)}"
        found = (f"most sensitive {top.layer} ({_effect(top.effect, metric.percent)})"
                 if top.effect is not None and top.effect > 0 else "keeping any one of them in float does not raise "
                                                                     "the metric")
        limit = stopped if out_of_time() else ""
        record = _replace(record, stopped_at_s=time_limit_s if limit else None)
        return _done(record, start, outcome=f"measured {what} layer(s){limit}: {found}; nothing kept in float"), None
    attempts: list[RescueAttempt] = []
    best: Optional[tuple[tuple[str, ...], Judged]] = None
    best_simulated: Optional[tuple[tuple[str, ...], float]] = None
    built_any = False

    def built(layers: tuple[str, ...]) -> Optional[Judged]:
        """Build and judge the artifact with `layers` in float (or take the ranking's); the result when it holds."""
        nonlocal best, built_any
        built_any = True
        if layers in judged:
            result = judged[layers]
        else:
            say(f"rescue: {len(layers)} layer(s) in float ({', '.join(layers)})")
            result = _try(lambda keep: judge(build(keep)), layers)
        if isinstance(result, str):
            attempts.append(RescueAttempt(float_layers=layers, score=None, error=result))
            return None
        attempts.append(result.attempt(layers))
        if best is None or result.score > best[1].score:
            best = (layers, result)
        return result if result.holds else None

    kept: tuple[str, ...] = ()
    won: Optional[Judged] = None
    ranked = [layer.layer for layer in ranking if layer.effect is not None]
    while len(kept) < min(bound, len(ranked)):
        if simulate is None:
            kept = (*kept, ranked[len(kept)])
            if kept not in judged and out_of_time():
                break
        else:
            if out_of_time():
                break
            step = _best_addition(simulate, kept, [name for name in ranked if name not in kept][:FORWARD_CANDIDATES])
            if step is None:
                break
            kept, simulated = step
            if not simulated.holds:  # not worth a build
                attempts.append(simulated.attempt(kept, simulated=True))
                if best_simulated is None or simulated.score > best_simulated[1]:
                    best_simulated = (kept, simulated.score)
                continue
        won = built(kept)
        if won is not None:
            break
    if won is None and not built_any and best_simulated is not None and not out_of_time():
        won = built(best_simulated[0])  # the simulation never held: its best set is built and judged once
    if won is not None:
        in_float = attempts[-1].float_layers
        record = _replace(record, attempts=tuple(attempts), rescued=won.artifact.name, float_layers=in_float)
        return _done(record, start, outcome=f"{len(in_float)} layer(s) kept in float meet the budget: "
                                            f"{', '.join(in_float)} ({_score(won, metric)})"), won
    record = _replace(record, attempts=tuple(attempts), stopped_at_s=time_limit_s if out_of_time() else None)
    if best is not None:
        reached = f"the best kept {', '.join(best[0])} in float and reached {_score(best[1], metric)}"
    elif best_simulated is not None:
        reached = (f"none was built: the best simulated set, {', '.join(best_simulated[0])}, scored "
                   f"{_figure(best_simulated[1], metric)} in the simulation")
    else:
        reached = "no attempt could be built"
    limit = stopped.replace("(stopped", "(the search was stopped") if out_of_time() else ""
    return _done(record, start, outcome=f"no rescue with at most {bound} of {len(layers)} layers in float meets the "
                                        f"budget{limit}; {reached}"), None


def _best_addition(simulate: SimulateFn, kept: tuple[str, ...], candidates: Sequence[str],
                   ) -> Optional[tuple[tuple[str, ...], Judged]]:
    """The greedy step in the simulation: `kept` plus whichever candidate scores best with it (the earlier one in
    the ranking on a tie), and how it was judged; None when no candidate's set could be simulated."""
    best: Optional[tuple[tuple[str, ...], Judged]] = None
    for name in candidates:
        result = _try(simulate, (*kept, name))
        if isinstance(result, Judged) and (best is None or result.score > best[1].score):
            best = ((*kept, name), result)
    return best


def short_outcome(record: Rescue) -> str:
    """The outcome in a few words, for a one-line error that already gives the plain artifact's figures."""
    if record.rescued:
        return f"rescued with {', '.join(record.float_layers)} in float"
    tried = [a for a in record.attempts if a.score is not None and not a.simulated]
    if not tried:
        return record.outcome
    best = max(tried, key=lambda a: a.score or 0.0)
    figure = f"{best.score * 100:.1f}%" if record.percent and best.score is not None else f"{best.score:.4g}"
    within = (f" within the {record.stopped_at_s:g} s --rescue-time-limit ({len(tried)} attempt(s))"
              if record.stopped_at_s is not None else "")
    kept = (", ".join(best.float_layers) if len(best.float_layers) <= 2 else
            f"{len(best.float_layers)} layers in float: {best.float_layers[0]}, ... (see report.json rescues)")
    return (f"no rescue with up to {record.max_float_layers} of {len(record.layers)} layers in float holds{within} "
            f"(best {figure} with {kept})")


def _figure(score: float, metric: Metric) -> str:
    return f"{score * 100:.2f}%" if metric.percent else f"{score:.4g}"


def _score(judged: Judged, metric: Metric) -> str:
    figure = _figure(judged.score, metric)
    drop = "" if judged.accuracy_drop is None else f", accuracy drop {judged.accuracy_drop:.2f} pp"
    floor = f"; {judged.shortfall}" if judged.shortfall else ""
    return f"{metric.text.split(' on ', 1)[0]} {figure}{drop}{floor}"


def _effect(effect: Optional[float], percent: bool) -> str:
    if effect is None:
        return "could not be built"
    return f"{effect * 100:+.2f} pp" if percent else f"{effect:+.4g}"


def _replace(record: Rescue, **changes: Any) -> Rescue:
    from dataclasses import replace

    return replace(record, **changes)


def _done(record: Rescue, start: float, outcome: str) -> Rescue:
    return _replace(record, outcome=outcome, seconds=round(time.perf_counter() - start, 3))
