"""Where `build --auto` runs its candidate builds: in this process one after another (`local`, the default), or as
Ray tasks (`ray` starts a local Ray instance; `ray:ADDRESS` joins a running cluster), several at once.

Every executor returns the same thing for the same jobs: the build's output directory in the job's `where` (a Ray
task builds in a scratch directory on its node and sends the files back), or the one-line reason it failed. Builds
on one host still measure one at a time: measure.py holds a host-wide lock around its measuring children, so
candidates running side by side never time each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence, Union

from edgepack.errors import MissingDependency, UsageError

if TYPE_CHECKING:
    from edgepack.config import Target
    from edgepack.plan import BuildRequest

Job = tuple["BuildRequest", "Target", Path]  # the build to run, its target, and where its output must end up


@dataclass(frozen=True)
class BuildFailure:
    message: str
    exit_code: int


@dataclass(frozen=True)
class Built:
    seconds: float


Outcome = Union[Built, BuildFailure]


class Executor(Protocol):
    name: str

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run every job; each outcome in the order of the jobs."""


class LocalExecutor:
    name = "local"

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [_build(request, target, where) for request, target, where in jobs]


class RayExecutor:
    """Candidate builds as Ray tasks (one CPU each). The model spec and data paths must be readable where the tasks
    run: the same checkout, or a shared filesystem."""

    def __init__(self, address: Optional[str]) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependency("--executor ray needs Ray: pip install 'edgepack[ray]'") from None
        import logging

        self.name = f"ray:{address}" if address else "ray (local instance)"
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"--executor ray:{address or ''}: cannot reach a Ray cluster there "
                                 f"({str(exc).splitlines()[0][:160]})") from None
        self._remote = ray.remote(num_cpus=1)(build_packed)
        self._ray = ray

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        refs = [self._remote.remote(request, target) for request, target, _ in jobs]
        outcomes: list[Outcome] = []
        for (_, _, where), ref in zip(jobs, refs):
            packed = self._ray.get(ref)
            if "error" in packed:
                outcomes.append(BuildFailure(packed["error"], packed["exit_code"]))
                continue
            for name, data in packed["files"].items():
                path = where / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            outcomes.append(Built(packed["seconds"]))
        return outcomes


def make_executor(spec: str) -> Executor:
    """`local`, `ray` or `ray:ADDRESS`; anything else is a one-line error naming them."""
    if spec == "local":
        return LocalExecutor()
    kind, _, address = spec.partition(":")
    if kind == "ray":
        return RayExecutor(address or None)
    raise UsageError(f"--executor {spec!r}: use local, ray (a local Ray instance) or ray:ADDRESS (a running cluster)")


def build_packed(request: "BuildRequest", target: "Target") -> dict[str, Any]:
    """A build run where this is called (a Ray worker), its output directory returned as {relative path: bytes}, or
    {"error": one line, "exit_code": n}: exceptions cross process boundaries badly, a line and a code do not."""
    import tempfile
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="edgepack-task-") as tmp:
        where = Path(tmp) / "build"
        outcome = _build(replace(request, out=where), target, where)
        if isinstance(outcome, BuildFailure):
            return {"error": outcome.message, "exit_code": outcome.exit_code}
        files = {str(f.relative_to(where)): f.read_bytes() for f in where.rglob("*") if f.is_file()}
        return {"files": files, "seconds": outcome.seconds}


def _build(request: "BuildRequest", target: "Target", where: Path) -> Outcome:
    from dataclasses import replace

    from edgepack.errors import EdgepackError, one_line
    from edgepack.pipeline import execute
    from edgepack.plan import plan
    from edgepack.progress import SilentProgress

    started = time.perf_counter()
    try:
        execute(plan(replace(request, out=where), target), SilentProgress())
    except EdgepackError as exc:
        return BuildFailure(one_line(exc), exc.exit_code)
    return Built(time.perf_counter() - started)
