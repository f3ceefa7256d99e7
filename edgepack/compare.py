"""`edgepack compare A B`: two artifacts timed interleaved on this host (A B A B …, each round of each artifact in a
fresh measuring child of `measure.py`), then judged on the pooled runs: the p50 ratio B/A with its confidence
interval, the one-sided Mann-Whitney U tests, and optionally the regression gate's own rule.

Comparing two reports (`check --baseline`) sets runs made at different times, maybe on different machines, against
each other; interleaving puts both artifacts under the same machine load, which is the only fair comparison on a
noisy shared runner.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence

from edgepack.errors import UsageError, one_line
from edgepack.records import Measurement, ModelInput, Record, Report, Verdict
from edgepack.stats import percentile

DEFAULT_ROUNDS = 5
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 10
FROM_FILE = "read from the artifact file; ids unknown, fed zeros"  # how a ModelInput inspected from a file says so

StageFn = Callable[[str], ContextManager[None]]


@dataclass(frozen=True)
class Side:
    """One artifact to compare, resolved from what the user named (a file, or a build directory)."""

    label: str  # "A" or "B"
    given: str  # what the user passed
    path: Path
    runtime: str
    name: str  # the report's artifact name, or the file's name
    inputs: tuple[ModelInput, ...]  # what the session takes (floats for quantized I/O: sessions quantize inside)
    settings: dict[str, str] = field(default_factory=dict)  # session settings the artifact must run with
    source: str = ""  # where `inputs` and `settings` came from


@dataclass(frozen=True)
class ComparedArtifact(Record):
    label: str
    path: str
    runtime: str
    name: str
    measurement: Measurement  # every round's runs pooled, in round order; memory: the rounds' median
    round_p50_ms: tuple[float, ...]  # each round's own p50, to see drift across rounds
    p50_ms: float  # the median of the rounds' p50s: the figure compared (one slow process cannot move it)
    inputs_from: str = ""


@dataclass(frozen=True)
class Comparison(Record):
    a: ComparedArtifact
    b: ComparedArtifact
    where: str
    threads: int
    rounds: int
    runs_per_round: int
    warmup: int
    order: str  # e.g. "A B A B A B"
    ratio: float  # B's p50_ms / A's p50_ms (medians of the rounds' p50s)
    ratio_low: float
    ratio_high: float
    confidence: float
    interval_method: str
    p_slower: Optional[float]  # one-sided Mann-Whitney U on the rounds' p50s: B's tend to be larger (None: 1 round)
    p_faster: Optional[float]  # ... smaller
    verdict: str  # "B is slower" | "B is faster" | "no significant difference"
    alpha: float
    regression: Optional[Verdict] = None  # with --max-regression: the regression gate's verdict on B against A


# ---- resolving what the user named ----------------------------------------------------------------------------------
def resolve(given: Path, label: str) -> Side:
    """A file (its runtime from the report.json beside it when that report lists it, else from its suffix) or a build
    directory (its report.json's shipped artifact). Anything else is a UsageError naming what to pass."""
    if given.is_dir():
        return _from_build_dir(given, label)
    if not given.exists():
        raise UsageError(f"{label} {given}: no such file or directory; pass an artifact file (.onnx, .pte, .tflite) "
                         f"or a build directory holding report.json")
    listed = _listed_in_report(given, label)
    if listed is not None:
        return listed
    runtime = runtime_of_file(given, label)
    return Side(label, str(given), given, runtime, given.name, inspect_inputs(given, runtime, label),
                source=f"the inputs declared in {given.name}")


def check_runnable(side: Side) -> None:
    """The side's runtime is installed here (MissingDependency, exit 2, naming the extra, when it is not)."""
    from edgepack.errors import MissingDependency
    from edgepack.runtimes import get_runtime

    missing = get_runtime(side.runtime).missing()
    if missing:
        raise MissingDependency(f"{side.label} {side.given}: {side.runtime} is not usable here: {'; '.join(missing)}")


def _from_build_dir(directory: Path, label: str) -> Side:
    from edgepack.report.reading import read_report

    report_file = directory / "report.json"
    if not report_file.is_file():
        raise UsageError(f"{label} {directory} is a directory without report.json; pass an artifact file or the "
                         f"--out directory of a build")
    report = read_report(report_file)
    shipped = [a for a in report.artifacts if a.name in report.shipping]
    if len(shipped) != 1:
        names = ", ".join(Path(a.path).name for a in shipped) or "none"
        raise UsageError(f"{label} {directory}: its report.json ships {len(shipped)} artifacts ({names}); pass the "
                         f"artifact file to compare")
    artifact = shipped[0]
    path = directory / Path(artifact.path).name
    if not path.is_file():
        raise UsageError(f"{label} {directory}: report.json ships {path.name}, which is not in the directory")
    return Side(label, str(directory), path, artifact.runtime, artifact.name, _report_inputs(report, artifact.name,
                                                                                             path, label),
                dict(artifact.session_options), f"{directory}/report.json")


def _listed_in_report(path: Path, label: str) -> Optional[Side]:
    """The artifact as the report.json beside it describes it, when that report lists this very file (same name and
    sha256); None when there is no such report."""
    from edgepack.fileio import sha256_file
    from edgepack.report.reading import read_report

    report_file = path.parent / "report.json"
    if not report_file.is_file():
        return None
    try:
        report = read_report(report_file)
    except UsageError:
        return None  # a file beside an unreadable report is still a file; its own inputs describe it
    artifact = next((a for a in report.artifacts if Path(a.path).name == path.name), None)
    if artifact is None or artifact.sha256 != sha256_file(path):
        return None
    return Side(label, str(path), path, artifact.runtime, artifact.name,
                _report_inputs(report, artifact.name, path, label), dict(artifact.session_options), str(report_file))


def _report_inputs(report: Report, name: str, path: Path, label: str) -> tuple[ModelInput, ...]:
    if report.model.inputs:
        return tuple(report.model.inputs)
    artifact = report.artifact(name)
    if artifact.inputs:  # reports before 0.2: the artifact's tensors
        return tuple(_model_input(t.name, t.shape, "float32" if t.scale is not None else t.dtype)
                     for t in artifact.inputs)
    return inspect_inputs(path, artifact.runtime, label)


def runtime_of_file(path: Path, label: str) -> str:
    """The one registered runtime of this host whose file format is the file's suffix (a bare .onnx file is timed by
    ONNX Runtime on the CPU; a GPU build's artifacts are compared through their build directory, whose report names
    the runtime)."""
    from edgepack.runtimes import REGISTRY, runtime_class

    formats = {name: runtime_class(name).file_format for name in REGISTRY if runtime_class(name).measured_on == "host"}
    suffix = path.suffix.lower().lstrip(".")
    matches = [name for name, fmt in formats.items() if fmt == suffix]
    if len(matches) != 1:
        known = ", ".join(f".{fmt} ({name})" for name, fmt in sorted(formats.items()))
        what = f"unknown artifact type {path.suffix or '(no suffix)'!r}" if not matches else (
            f"{path.suffix} files are run by {' and '.join(matches)}")
        raise UsageError(f"{label} {path}: {what}; compare takes {known}, or a build directory")
    return matches[0]


def inspect_inputs(path: Path, runtime: str, label: str) -> tuple[ModelInput, ...]:
    """The inputs a file declares, read with its runtime's own library; a file it cannot read is a UsageError."""
    from edgepack.errors import MissingDependency
    from edgepack.runtimes import get_runtime

    missing = get_runtime(runtime).missing()
    if missing:
        raise MissingDependency(f"{label} {path}: {runtime} is not usable here: {'; '.join(missing)}")
    readers = {"onnx": _onnx_inputs, "pte": _pte_inputs, "tflite": _tflite_inputs}
    reader = readers.get(path.suffix.lower().lstrip("."))
    if reader is None:
        raise UsageError(f"{label} {path}: edgepack reads the inputs of .onnx, .pte and .tflite files only; pass the "
                         f"build directory this file was written to (its report.json describes the inputs)")
    try:
        inputs = reader(path)
    except Exception as exc:  # each library raises its own types for a file that is not a model
        raise UsageError(f"{label} {path}: not a readable {runtime} artifact ({one_line(exc)})") from None
    if not inputs:
        raise UsageError(f"{label} {path}: the artifact declares no inputs")
    return inputs


def _model_input(name: str, shape: Sequence[Any], dtype: str) -> ModelInput:
    dims = tuple(_dim(d) for d in shape)
    if dtype.startswith("float") or dtype in ("half", "double"):
        return ModelInput(name, dims, "float32", "float")
    if dtype == "bool":
        return ModelInput(name, dims, "bool", "mask", how=FROM_FILE)
    return ModelInput(name, dims, dtype, "index", 0, 1, FROM_FILE)


def _dim(value: Any) -> int:
    """A declared dimension; a symbolic or unknown one (a dynamic batch) is fed as 1."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return 1
    return size if size > 0 else 1


def _onnx_inputs(path: Path) -> tuple[ModelInput, ...]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        out.append(_model_input(value.name, [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim],
                                dtype))
    return tuple(out)


def _tflite_inputs(path: Path) -> tuple[ModelInput, ...]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    out = []
    for d in interpreter.get_input_details():
        scale = d.get("quantization", (0.0, 0))[0]
        dtype = "float32" if scale else d["dtype"].__name__  # quantized I/O: the session takes floats
        out.append(_model_input(d["name"], list(d["shape"]), dtype))
    return tuple(out)


SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "half", 6: "float32", 7: "double",
                11: "bool"}


def _pte_inputs(path: Path) -> tuple[ModelInput, ...]:
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(str(path)).metadata("forward")
    out = []
    for i in range(meta.num_inputs()):
        tensor = meta.input_tensor_meta(i)
        dtype = SCALAR_TYPES.get(int(tensor.dtype()), f"scalar type {int(tensor.dtype())}")
        out.append(_model_input(f"input_{i}", list(tensor.sizes()), dtype))
    return tuple(out)


def check_same_inputs(a: Side, b: Side) -> None:
    """Both artifacts must take the same inputs (count, shape, dtype), since one set of inputs is fed to both."""
    def text(side: Side) -> str:
        return ", ".join(f"{'x'.join(map(str, d.shape))} {d.dtype}" for d in side.inputs)

    if [(d.shape, d.dtype) for d in a.inputs] != [(d.shape, d.dtype) for d in b.inputs]:
        raise UsageError(f"A ({a.runtime}) takes {text(a)} and B ({b.runtime}) takes {text(b)}: they cannot be fed "
                         f"the same inputs; compare two artifacts of one model")


def shared_inputs(a: Side, b: Side) -> list[Any]:
    """One batch of inputs both artifacts take: id ranges from whichever side knows them (a report's embedding
    range beats a file's unknown one)."""
    from edgepack.data.loaders import synthetic

    domains = [da if da.range_is_known or da.how != FROM_FILE else db for da, db in zip(a.inputs, b.inputs)]
    batch = domains[0].shape[0] if domains[0].shape else 1
    return list(synthetic(domains, batch, seed=0).arrays)


# ---- measuring and judging ------------------------------------------------------------------------------------------
def compare(a: Side, b: Side, rounds: int = DEFAULT_ROUNDS, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
            threads: int = 1, max_regression: Optional[str] = None,
            stage: Callable[[str], ContextManager[None]] = lambda text: contextlib.nullcontext()) -> Comparison:
    from edgepack.measure import MeasureSpec, measure_artifact, where_label
    from edgepack.regression import ALPHA, latency_verdict, rank_test
    from edgepack.stats import median_of_medians, median_ratio_interval

    threshold = latency_threshold(max_regression) if max_regression is not None else None
    check_same_inputs(a, b)
    inputs = shared_inputs(a, b)
    where = where_label("")
    baselines: dict[str, int] = {}  # runtime -> its baseline child's peak, measured once
    taken: dict[str, list[Measurement]] = {"A": [], "B": []}
    for i in range(1, rounds + 1):
        for side in (a, b):
            with stage(f"round {i}/{rounds}: {side.label} {side.name} ({runs} runs)"):
                spec = MeasureSpec(side.runtime, threads, runs, warmup, where)
                m = measure_artifact(side.name, side.path, inputs, spec, side.settings,
                                     baseline_rss=baselines.get(side.runtime), keep_samples=True)
            if m.baseline_rss_bytes is not None:
                baselines[side.runtime] = m.baseline_rss_bytes
            taken[side.label].append(m)
    pooled_a, pooled_b = (_pooled(taken[label]) for label in ("A", "B"))
    interval = median_ratio_interval([m.samples_ms for m in taken["A"]], [m.samples_ms for m in taken["B"]])
    # a round (one process) is the unit of replication: the runs of one process share its luck (a process sometimes
    # runs slow from start to end), so the rank test compares the rounds' p50s, not runs pooled as if independent
    rounds_a, rounds_b = ([m.p50_ms for m in taken[label]] for label in ("A", "B"))
    p_slower = rank_test(rounds_b, rounds_a) if rounds >= 2 else None
    p_faster = rank_test(rounds_a, rounds_b) if rounds >= 2 else None
    verdict = ("no rank test with one round" if p_slower is None or p_faster is None else
               "B is slower" if p_slower < ALPHA else "B is faster" if p_faster < ALPHA else
               "no significant difference")
    p50_a, p50_b = (median_of_medians([r.samples_ms for r in taken[label]]) for label in ("A", "B"))
    ratio = p50_b / p50_a if p50_a > 0 else math.inf
    regression = None
    if threshold is not None:
        # the regression gate's rule (a significant rank test and a p50 ratio over the threshold), on the rounds
        regression = latency_verdict(threshold, b.name, replace(pooled_b, p50_ms=p50_b, samples_ms=tuple(rounds_b)),
                                     replace(pooled_a, p50_ms=p50_a, samples_ms=tuple(rounds_a)), "rounds' p50s")
    return Comparison(
        a=_compared(a, pooled_a, taken["A"]), b=_compared(b, pooled_b, taken["B"]), where=where, threads=threads,
        rounds=rounds, runs_per_round=runs, warmup=warmup, order=" ".join(["A B"] * rounds), ratio=ratio,
        ratio_low=interval.low, ratio_high=interval.high, confidence=interval.confidence,
        interval_method=interval.method, p_slower=p_slower, p_faster=p_faster, verdict=verdict, alpha=ALPHA,
        regression=regression)


# with n rounds each, the one-sided Mann-Whitney U test's smallest p-value is 1 / C(2n, n): 0.05 at 3 rounds, 0.014 at 4
MIN_ROUNDS_TO_JUDGE = 4


def slower_when_interleaved(report: Report, threads: int, runs: int, warmup: int, stage: StageFn,
                            rounds: int = MIN_ROUNDS_TO_JUDGE) -> Callable[[str, str], Optional[str]]:
    """For `--runtime auto`: a check that measures two of the report's artifacts interleaved (fastest, other, ...)
    and returns why `other` is slower when the rank test on the rounds' p50s says so, else None. Timings taken in
    separate processes at different moments cannot tell a few percent apart on a shared machine; rounds can."""
    def side(name: str, label: str) -> Side:
        artifact = next(a for a in report.artifacts if a.name == name)
        return Side(label, name, Path(artifact.path), artifact.runtime, name, report.model.inputs,
                    dict(artifact.session_options), "the build's report")

    def check(fastest: str, other: str) -> Optional[str]:
        c = compare(side(fastest, "A"), side(other, "B"), rounds, runs, warmup, threads, stage=stage)
        # slower: the rank test on the rounds' p50s says so, or the ratio's interval (a bootstrap over rounds, then
        # runs, so process-to-process variation widens it) lies wholly above 1
        if c.verdict != "B is slower" and not c.ratio_low > 1.0:
            return None
        test = f"one-sided rank test p = {c.p_slower:.3f}" if c.p_slower is not None else "no rank test"
        return (f"{other} is slower than {fastest} measured interleaved ({c.rounds} rounds of {c.runs_per_round} "
                f"runs: p50 ratio {c.ratio:.2f}, {c.confidence:.0%} interval {c.ratio_low:.2f}–{c.ratio_high:.2f}, "
                f"{test})")

    return check


def latency_threshold(text: str) -> Any:
    """--max-regression for compare: a percentage (or latency=N%), latency being the only metric compare judges."""
    from edgepack.regression import parse_max_regression

    thresholds = parse_max_regression(text)
    others = [t.metric for t in thresholds if t.named and t.metric != "latency"]
    if others:
        raise UsageError(f"--max-regression {text!r}: compare judges latency only, not {', '.join(others)}; use a "
                         f"percentage such as 10% or latency=10%")
    return next(t for t in thresholds if t.metric == "latency")


def _pooled(rounds: Sequence[Measurement]) -> Measurement:
    from edgepack.measure import pool_measurements

    return pool_measurements(rounds, f"{len(rounds)} rounds in fresh child processes, interleaved with the other "
                                     f"artifact; init, first run and memory are the rounds' medians")


def _compared(side: Side, pooled: Measurement, rounds: Sequence[Measurement]) -> ComparedArtifact:
    round_p50 = tuple(m.p50_ms for m in rounds)
    return ComparedArtifact(side.label, str(side.path), side.runtime, side.name, pooled, round_p50,
                            percentile(sorted(round_p50), 50), side.source)


def summary_lines(c: Comparison) -> list[str]:
    """What the terminal shows: each artifact, where it was measured, p50s and memory, the ratio, the rank tests."""
    from edgepack.gates import describe_verdict, format_value

    lines = []
    for x in (c.a, c.b):
        lines.append(f"{x.label}: {x.name} ({x.path}, {x.runtime})")
    lines.append(f"measured on {c.where}, {c.threads} thread(s): {_plural(c.rounds, 'round')} of "
                 f"{c.runs_per_round} runs (+{c.warmup} warm-up) each, interleaved {c.order}, every round in a fresh "
                 f"child process")
    for x in (c.a, c.b):
        m = x.measurement
        lines.append(f"{x.label} p50 {_ms(x.p50_ms)} (the rounds' median; rounds " + ", ".join(
            _ms(v) for v in x.round_p50_ms) + f"), all {m.runs} runs: p50 {_ms(m.p50_ms)}, p90 {_ms(m.p90_ms)}; peak "
                     f"memory {format_value(m.peak_over_baseline_bytes, 'bytes')} over a baseline child")
    lines.append(f"B/A p50 ratio ×{c.ratio:.3f} ({(c.ratio - 1) * 100:+.1f}%), {c.confidence:.0%} interval "
                 f"[×{c.ratio_low:.3f}, ×{c.ratio_high:.3f}], {c.interval_method}")
    if c.p_slower is None or c.p_faster is None:
        lines.append(f"Mann-Whitney U: {c.verdict} (use --rounds {MIN_ROUNDS_TO_JUDGE} or more)")
    else:
        lines.append(f"Mann-Whitney U on the rounds' p50s (one-sided, {c.rounds} vs {c.rounds}): {c.verdict} "
                     f"(p={c.p_slower:.2g} that B is slower, p={c.p_faster:.2g} that B is faster; significant "
                     f"below {c.alpha:g})")
    if c.regression is not None:
        lines.append(describe_verdict(c.regression))
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ms(value: float) -> str:
    return f"{value:.4g} ms"
