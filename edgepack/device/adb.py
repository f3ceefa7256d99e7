"""Measure an artifact on an Android phone over adb, with a runner binary the user built for arm64.

The real `adb` client does the work (subprocess): push the artifact and the runner to a fresh directory under
/data/local/tmp, run warm-up and timed iterations, parse the runner's output into a Measurement, and always remove
what was pushed. Which runner, its command line and how to read its output are the runtime's own declarations
(`phone_runner`, `phone_runner_argv`, `parse_phone_runner_output`), so a new runtime needs no change here.
Command construction is pure and tested without a device.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import ToolError, UsageError
from edgepack.fileio import sha256_file
from edgepack.records import Artifact, Measurement
from edgepack.runtimes import REGISTRY, runtime_class

if TYPE_CHECKING:
    from edgepack.device.runner_output import RunnerStats
    from edgepack.runtimes.base import RuntimeBase

REMOTE_ROOT = "/data/local/tmp"
EM_AARCH64 = 183
# e_machine values a wrongly chosen runner usually has, to name them in the error.
_MACHINES = {3: "x86", 8: "MIPS", 40: "32-bit ARM", 62: "x86-64", 183: "AArch64 (arm64)", 243: "RISC-V"}
ADB_TIMEOUT_S = 120.0


# ---- pure helpers ---------------------------------------------------------------------------------------------------
def elf_machine(path: Path) -> tuple[int, int]:
    """(ELF class, e_machine) of a file; UsageError if it is not an ELF file."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
    except OSError as exc:
        raise UsageError(f"cannot read runner {path}: {exc.strerror}") from None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise UsageError(f"runner {path} is not an ELF executable; pass an arm64 Android build of the runner")
    machine = header[18:20]
    return header[4], int.from_bytes(machine, "little") if header[5] == 1 else int.from_bytes(machine, "big")


def check_arm64_runner(path: Path) -> None:
    """Refuse a runner that cannot execute on an arm64 phone (a host build is the usual mistake)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"runner {path} does not exist; pass the path of an arm64 Android build of the runner")
    elf_class, machine = elf_machine(path)
    if machine != EM_AARCH64 or elf_class != 2:
        found = _MACHINES.get(machine, f"e_machine {machine}")
        bits = "64-bit" if elf_class == 2 else "32-bit"
        raise UsageError(f"runner {path} is a {bits} {found} executable; android-arm64 needs an AArch64 build "
                         f"(e_machine {EM_AARCH64})")


def parse_devices(text: str) -> list[tuple[str, str]]:
    """`adb devices` output -> [(serial, state)], e.g. ("R58M123", "device"), ("emulator-5554", "offline")."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], " ".join(parts[1:])))
    return out


def parse_getprop(text: str) -> dict[str, str]:
    """`adb shell getprop` output ("[ro.product.model]: [Pixel 7]") -> {key: value}."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and "]: [" in line and line.endswith("]"):
            key, value = line[1:-1].split("]: [", 1)
            props[key] = value
    return props


def adb_argv(adb: str, serial: str, *args: str) -> list[str]:
    return [adb, "-s", serial, *args]


def phone_runtime(runtime: str) -> RuntimeBase:
    """The runtime that measures on a phone with its own runner; UsageError naming those that can."""
    cls = runtime_class(runtime)
    if cls.phone_runner is None:
        capable = sorted(name for name in REGISTRY if runtime_class(name).phone_runner)
        raise UsageError(f"{runtime} has no phone runner; adb measures {', '.join(capable)} artifacts")
    return cls()


def runner_argv(runtime: str, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
    """The runtime's phone runner command line on the device."""
    if threads < 1 or warmup < 0 or runs < 1:
        raise UsageError(f"need threads >= 1, warmup >= 0 and runs >= 1; got {threads}, {warmup}, {runs}")
    return phone_runtime(runtime).phone_runner_argv(runner, model, threads, warmup, runs)


def remote_command(workdir: str, argv: Sequence[str]) -> str:
    """One shell string for `adb shell`: adb joins its arguments with spaces, so quote them here, once."""
    return f"cd {shlex.quote(workdir)} && {shlex.join(argv)}"


def remote_workdir(token: str | None = None) -> str:
    return f"{REMOTE_ROOT}/edgepack-{token or secrets.token_hex(6)}"


def parse_runner_output(runtime: str, text: str, warmup: int) -> RunnerStats:
    return phone_runtime(runtime).parse_phone_runner_output(text, warmup)


def describe(serial: str, props: dict[str, str]) -> tuple[str, str]:
    """(where, cpu) labels for the Measurement, from getprop."""
    model = props.get("ro.product.model") or "unknown model"
    abi = props.get("ro.product.cpu.abi") or "unknown abi"
    soc = " ".join(p for p in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if p)
    cpu = soc or props.get("ro.board.platform") or props.get("ro.hardware") or "unknown"
    return f"device adb:{serial} ({model}, {abi})", cpu


# ---- the device -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdbDevice:
    adb: str  # path of the adb client
    serial: str

    @classmethod
    def resolve(cls, spec: str) -> AdbDevice:
        """'adb' (the only attached phone) or 'adb:SERIAL' -> a device that is attached and authorised."""
        if spec != "adb" and not spec.startswith("adb:"):
            raise UsageError(f"unknown device {spec!r}; use 'adb' or 'adb:SERIAL'")
        wanted = spec[4:] if spec.startswith("adb:") else ""
        if spec.startswith("adb:") and not wanted:
            raise UsageError("device 'adb:' names no serial; use 'adb' or 'adb:SERIAL' (see `adb devices`)")
        adb = shutil.which("adb")
        if adb is None:
            raise UsageError("no 'adb' on PATH; install Android SDK platform-tools to measure on a phone")
        try:
            proc = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=ADB_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise UsageError(f"'adb devices' did not answer in {ADB_TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            raise UsageError(f"'adb devices' failed (exit {proc.returncode}): {_tail(proc.stderr or proc.stdout)}")
        devices = parse_devices(proc.stdout)
        ready = [serial for serial, state in devices if state == "device"]
        if wanted:
            states = dict(devices)
            if wanted not in states:
                attached = ", ".join(s for s, _ in devices) or "none"
                raise UsageError(f"device {wanted} is not attached; attached: {attached}")
            if states[wanted] != "device":
                raise UsageError(f"device {wanted} is {states[wanted]}{_state_hint(states[wanted])}")
            return cls(adb, wanted)
        if not ready:
            others = ", ".join(f"{s} ({st})" for s, st in devices)
            raise UsageError("no Android device ready over adb" + (f"; found {others}" if others else
                                                                    " (`adb devices` lists none)"))
        if len(ready) > 1:
            raise UsageError(f"{len(ready)} devices attached ({', '.join(ready)}); pick one with adb:SERIAL")
        return cls(adb, ready[0])

    def run(self, *args: str, timeout: float = ADB_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = adb_argv(self.adb, self.serial, *args)
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ToolError(f"adb {args[0]} on {self.serial} timed out after {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise ToolError(f"adb {' '.join(args[:2])} on {self.serial} failed (exit {proc.returncode}): "
                            f"{_tail(proc.stdout)}")
        return proc

    def properties(self) -> dict[str, str]:
        return parse_getprop(self.run("shell", "getprop").stdout)

    def measure(self, artifact: Artifact, runner: Path, threads: int = 1, warmup: int = 10, runs: int = 50,
                timeout_s: float = 600.0) -> Measurement:
        """Push, run and parse; whatever was pushed is removed even when a step fails."""
        runner, model = Path(runner), Path(artifact.path)
        workdir = remote_workdir()
        remote_model, remote_runner = f"{workdir}/{model.name}", f"{workdir}/{runner.name}"
        argv = runner_argv(artifact.runtime, remote_runner, remote_model, threads, warmup, runs)  # validates first
        check_arm64_runner(runner)
        if not model.is_file():
            raise UsageError(f"artifact {artifact.name} has no file at {model}")
        props = self.properties()
        try:
            self.run("shell", "mkdir", "-p", workdir)
            self.run("push", str(model), remote_model, timeout=timeout_s)
            self.run("push", str(runner), remote_runner, timeout=timeout_s)
            self.run("shell", "chmod", "755", remote_runner)
            proc = self.run("shell", remote_command(workdir, argv), timeout=timeout_s, check=False)
        finally:
            self.run("shell", "rm", "-rf", workdir, check=False)
        if proc.returncode != 0:
            raise ToolError(f"{artifact.runtime}'s {runtime_class(artifact.runtime).phone_runner} failed on "
                            f"{self.serial} (exit {proc.returncode}): {_tail(proc.stdout)}")
        stats = parse_runner_output(artifact.runtime, proc.stdout, warmup)
        where, cpu = describe(self.serial, props)
        return Measurement(
            artifact=artifact.name, runtime=artifact.runtime, where=where, cpu=cpu, threads=threads,
            warmup=warmup, runs=stats.runs, p50_ms=stats.p50_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms,
            mean_ms=stats.mean_ms, std_ms=stats.std_ms, min_ms=stats.min_ms, max_ms=stats.max_ms,
            init_ms=stats.init_ms, first_run_ms=stats.first_run_ms, peak_rss_bytes=stats.peak_rss_bytes,
            baseline_rss_bytes=None, peak_over_baseline_bytes=stats.peak_over_baseline_bytes,
            versions={"runner": runner.name, "runner_sha256": sha256_file(runner),
                      "android": props.get("ro.build.version.release", "unknown"),
                      "sdk": props.get("ro.build.version.sdk", "unknown")},
            notes=stats.notes,
        )


def _state_hint(state: str) -> str:
    if state == "unauthorized":
        return "; accept the USB debugging prompt on the phone"
    if state == "offline":
        return "; reconnect it or restart adb (`adb kill-server`)"
    return ""


def _tail(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"
