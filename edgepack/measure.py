"""The benchmark harness shared by every runtime: each artifact is timed in a fresh child process.

Peak memory is the child's own peak RSS (getrusage in the child) minus that of a baseline child which imports the
same runtime and builds the same inputs but loads no model (run once per runtime and build by the Measurer):
in-process numbers are unreliable, since freed memory stays in RSS. The parent runs `python -m edgepack.measure ...`
and reads one JSON line back.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

from edgepack.errors import ToolError
from edgepack.records import Measurement
from edgepack.stats import latency_summary, percentile

if TYPE_CHECKING:
    import numpy as np

    from edgepack.plan import MeasurePlan
    from edgepack.records import Artifact

RESULT_PREFIX = "EDGEPACK_MEASURE "
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class MeasureSpec:
    runtime: str
    threads: int
    runs: int
    warmup: int
    where_label: str = ""  # overrides the default "host <arch> (<cpu>)" label, e.g. for proxies


def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    return {"machine": platform.machine(), "cpu": host_cpu(), "logical_cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def where_label(target_arch: str) -> str:
    """"host x86_64 (CPU)", marked as a proxy when the target runs on another architecture."""
    machine = platform.machine()
    arch_aliases = {"arm64": ("arm64", "aarch64"), "x86_64": ("x86_64", "amd64")}
    label = f"host {machine} ({host_cpu()})"
    if target_arch and machine.lower() not in arch_aliases.get(target_arch, (target_arch,)):
        label += f" (proxy for {target_arch})"
    return label


class Measurer:
    """Times artifacts where the plan says: in a child process on this host, or on a phone over adb with the
    runtime's runner binary."""

    def __init__(self, plan: "MeasurePlan", target_arch: str) -> None:
        self.plan = plan
        self.label = "host" if plan.on_host else plan.device
        self.where = where_label(target_arch) if plan.on_host else ""
        # session settings that place each artifact where it is measured (a GPU's provider and device id)
        self._placement: dict[str, dict[str, str]] = {}
        self._device: Any = None
        # runtime -> peak RSS of its baseline child: the same imports and inputs for every artifact of this build, so
        # measured once per runtime (an ExecuTorch child spends ~4 s importing its runtime)
        self._baselines: dict[str, int] = {}
        if plan.on_phone:
            from edgepack.device.adb import AdbDevice

            self._device = AdbDevice.resolve(plan.device)

    def measure(self, artifact: "Artifact", inputs: Sequence["np.ndarray"], runs: Optional[int] = None) -> Measurement:
        """`inputs`: one batch of every model input (the example inputs), fed to every timed call. `runs`: timed
        runs in this process (default: the plan's). Every run's latency is kept: the latency verdicts' intervals and
        the regression gate's rank test are computed from them."""
        p = self.plan
        runs = p.runs if runs is None else runs
        if not p.measures:
            raise ToolError(f"{artifact.name}: this build measures nothing (--device none)")
        if self._device is not None:
            return self._device.measure(artifact, p.runner(artifact.runtime), p.threads, p.warmup, runs)
        spec = MeasureSpec(artifact.runtime, p.threads, runs, p.warmup, self.where)
        settings = {**artifact.session_options, **self.placement(artifact.runtime)}
        measurement = measure_artifact(artifact.name, Path(artifact.path), inputs, spec, settings,
                                       baseline_rss=self._baselines.get(artifact.runtime), keep_samples=True)
        if measurement.baseline_rss_bytes is not None:
            self._baselines[artifact.runtime] = measurement.baseline_rss_bytes
        return measurement

    def placement(self, runtime: str) -> dict[str, str]:
        """The session settings that put `runtime`'s artifacts on the measured device ({} on this host's CPU)."""
        if runtime not in self._placement:
            from edgepack.runtimes import get_runtime

            self._placement[runtime] = get_runtime(runtime).session_placement(self.plan.device)
        return self._placement[runtime]


def measure_artifact(artifact_name: str, path: Path, inputs: Sequence["np.ndarray"], spec: MeasureSpec,
                     settings: Optional[Mapping[str, str]] = None, timeout_s: float = 600.0,
                     baseline_rss: Optional[int] = None, keep_samples: bool = False) -> Measurement:
    """Time one artifact in a child process, and a baseline child for the memory figure. The children read the
    inputs from a file, so each input keeps its dtype and values (token ids stay valid ids). `keep_samples`: the
    Measurement carries every timed run's latency in run order (`edgepack compare` pools them across rounds)."""
    import numpy as np

    from edgepack.runtimes import get_runtime

    with host_measurement_lock(), tempfile.TemporaryDirectory(prefix="edgepack-measure-") as tmp:
        inputs_file = Path(tmp) / "inputs.npz"
        np.savez(inputs_file, *[np.asarray(x) for x in inputs])
        base = [sys.executable, "-m", "edgepack.measure", "--runtime", spec.runtime, "--inputs", str(inputs_file),
                "--threads", str(spec.threads)]
        if baseline_rss is None:  # a caller that measured this runtime's baseline already passes it
            baseline_rss = int(_run_child(base + ["--baseline"], spec.threads, timeout_s)["peak_rss_bytes"])
        chosen = [f"--setting={k}={v}" for k, v in (settings or {}).items()]
        result = _run_child(base + ["--artifact", str(path), "--runs", str(spec.runs), "--warmup", str(spec.warmup),
                                    *chosen], spec.threads, timeout_s)
    samples = result["samples_ms"]
    peak, base_peak = int(result["peak_rss_bytes"]), baseline_rss
    facts = result.get("facts") or {}
    where = facts.get("where") or spec.where_label or f"host {platform.machine()} ({host_cpu()})"
    return Measurement(
        artifact=artifact_name, runtime=spec.runtime, where=where, cpu=host_cpu(), threads=spec.threads,
        warmup=spec.warmup, **latency_summary(samples), init_ms=result["init_ms"],
        first_run_ms=result["first_run_ms"],
        peak_rss_bytes=peak, baseline_rss_bytes=base_peak, peak_over_baseline_bytes=max(0, peak - base_peak),
        versions=get_runtime(spec.runtime).versions(),
        samples_ms=tuple(float(x) for x in result["samples_ms"]) if keep_samples else (),
        notes=tuple(facts.get("notes") or ("latency: wall time of one call from Python, inputs already in memory; "
                                           "memory: child peak RSS minus a baseline child with the same imports and "
                                           "inputs",)),
        accelerator=str(facts.get("accelerator") or ""),
        device_memory_bytes=None if facts.get("device_memory_bytes") is None else int(facts["device_memory_bytes"]),
    )


def pool_measurements(rounds: Sequence[Measurement], note: str) -> Measurement:
    """Every process's runs in one Measurement, in process order, with `process_runs` saying how many each ran (the
    latency gates and `edgepack compare` bootstrap over processes, then runs); init, first run and memory: the
    processes' medians. `note`: how the processes came about, added to the first one's notes."""
    samples = [s for m in rounds for s in m.samples_ms]
    if not samples or any(not m.samples_ms for m in rounds):
        raise ValueError("pooling needs every process's per-run samples")
    first = rounds[0]

    def median_of(values: Sequence[Optional[float]]) -> Optional[float]:
        known = sorted(float(v) for v in values if v is not None)
        return percentile(known, 50) if known else None

    peak = median_of([m.peak_rss_bytes for m in rounds])
    over = median_of([m.peak_over_baseline_bytes for m in rounds])
    return Measurement(
        artifact=first.artifact, runtime=first.runtime, where=first.where, cpu=first.cpu, threads=first.threads,
        warmup=first.warmup, **latency_summary(samples), init_ms=median_of([m.init_ms for m in rounds]),
        first_run_ms=median_of([m.first_run_ms for m in rounds]),
        peak_rss_bytes=None if peak is None else int(peak), baseline_rss_bytes=first.baseline_rss_bytes,
        peak_over_baseline_bytes=None if over is None else int(over), versions=first.versions,
        accelerator=first.accelerator,  # a GPU's re-measure keeps what ran it and the GPU memory budgets judge
        device_memory_bytes=None if (gpu := median_of([m.device_memory_bytes for m in rounds])) is None else int(gpu),
        notes=(*first.notes, note), samples_ms=tuple(samples),
        process_runs=tuple(n for m in rounds for n in (m.process_runs or (len(m.samples_ms),))))


@contextlib.contextmanager
def host_measurement_lock() -> Iterator[None]:
    """One measurement at a time on this host, across processes: builds running side by side (`build --auto` on
    Ray, parallel CI jobs on one machine) would otherwise time each other. A lock file in the temporary directory,
    held with flock, so it is released when a process dies."""
    import fcntl

    path = Path(tempfile.gettempdir()) / "edgepack-measure.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_child(cmd: list[str], threads: int, timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ToolError(f"measurement child timed out after {timeout_s:.0f} s: {' '.join(cmd[3:])}") from None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise ToolError(f"measurement child failed (exit {proc.returncode}): {tail}")


def peak_rss_bytes() -> int:
    """This process's peak RSS. On Linux, VmHWM: ru_maxrss survives exec and would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


# ---- child side -----------------------------------------------------------------------------------------------------
def _child(argv: Optional[list[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgepack.measure")
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--artifact")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--setting", action="append", default=[], help="KEY=VALUE: a session setting of the artifact")
    args = parser.parse_args(argv)

    import numpy as np

    from edgepack.runtimes import get_runtime

    runtime = get_runtime(args.runtime)
    runtime.import_runtime()
    with np.load(args.inputs, allow_pickle=False) as archive:
        inputs = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    result: dict[str, Any] = {"init_ms": None, "first_run_ms": None, "samples_ms": []}
    if not args.baseline:
        t0 = time.perf_counter()
        settings = dict(item.split("=", 1) for item in args.setting)
        session = runtime.timed_session(Path(args.artifact), args.threads, settings, inputs)
        result["init_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        session.run()
        result["first_run_ms"] = (time.perf_counter() - t0) * 1e3
        for _ in range(args.warmup):
            session.run()
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            session.run()
            samples.append((time.perf_counter() - t0) * 1e3)
        result["samples_ms"] = samples
        result["facts"] = session.facts()
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child()
