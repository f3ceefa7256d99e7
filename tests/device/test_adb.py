"""adb measurement without a phone: pure command construction, ELF checks, and a fake `adb` on PATH."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from edgepack.device.adb import (
    EM_AARCH64,
    AdbDevice,
    check_arm64_runner,
    describe,
    parse_devices,
    parse_getprop,
    remote_command,
    remote_workdir,
    runner_argv,
)
from edgepack.device.runner_output import RunnerStats, parse_benchmark_model
from edgepack.errors import ToolError, UsageError
from edgepack.records import Artifact
from edgepack.runtimes import REGISTRY
from edgepack.runtimes.base import RuntimeBase

FIXTURES = Path(__file__).parent / "fixtures"

GETPROP = """[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.model]: [Pixel 7]
[ro.soc.manufacturer]: [Google]
[ro.soc.model]: [GS201]
"""

FAKE_ADB = '''
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args == ["devices"]:
    sys.stdout.write(os.environ.get("FAKE_ADB_DEVICES", "List of devices attached\\n\\n"))
    sys.exit(int(os.environ.get("FAKE_ADB_DEVICES_RC", "0")))
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["shell", "getprop"]:
    sys.stdout.write(os.environ["FAKE_ADB_GETPROP"])
elif args[0] == "push" and os.environ.get("FAKE_ADB_PUSH_FAIL"):
    sys.stderr.write("adb: error: failed to copy: No space left on device\\n")
    sys.exit(1)
elif args[0] == "shell" and len(args) == 2 and "&&" in args[1]:
    sys.stdout.write(open(os.environ["FAKE_ADB_RUNNER_OUTPUT"]).read())
    sys.exit(int(os.environ.get("FAKE_ADB_RUNNER_RC", "0")))
'''


def elf_header(machine: int, elf_class: int = 2) -> bytes:
    """A minimal little-endian ELF header: enough for the runner check, which reads the first 20 bytes."""
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    return ident + (3).to_bytes(2, "little") + machine.to_bytes(2, "little") + bytes(44)


@pytest.fixture
def arm64_runner(tmp_path) -> Path:
    path = tmp_path / "runner_arm64"
    path.write_bytes(elf_header(EM_AARCH64))
    return path


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """An `adb` on PATH that logs its arguments and answers from environment variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_ADB))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "adb.log"
    log.touch()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_GETPROP", GETPROP)
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nSER123\tdevice\n\n")

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return calls


def artifact_file(tmp_path: Path, fmt: str, runtime: str = "") -> Artifact:
    path = tmp_path / f"digits-cnn-int8.{fmt}"
    path.write_bytes(b"model bytes")
    runtime = runtime or {"pte": "executorch", "tflite": "litert"}[fmt]
    return Artifact(name=f"{runtime}-int8", path=str(path), format=fmt, runtime=runtime, precision="int8",
                    size_bytes=11, sha256="0" * 64, inputs=(), outputs=())


# ---- pure command construction ----------------------------------------------------------------------------------
def test_executor_runner_command_runs_warmup_plus_timed_iterations():
    assert runner_argv("executorch", "/d/executor_runner", "/d/m.pte", threads=4, warmup=10, runs=50) == [
        "/d/executor_runner", "--model_path=/d/m.pte", "--num_executions=60", "--cpu_threads=4"]


def test_benchmark_model_command():
    assert runner_argv("litert", "/d/benchmark_model", "/d/m.tflite", threads=1, warmup=5, runs=20) == [
        "/d/benchmark_model", "--graph=/d/m.tflite", "--num_threads=1", "--warmup_runs=5", "--num_runs=20",
        "--report_peak_memory_footprint=true"]


def test_runtime_without_phone_runner_and_bad_counts_are_usage_errors():
    with pytest.raises(UsageError, match="onnxruntime has no phone runner; adb measures executorch, litert"):
        runner_argv("onnxruntime", "r", "m.onnx", 1, 1, 1)
    with pytest.raises(UsageError, match="unknown runtime 'tvm'"):
        runner_argv("tvm", "r", "m.so", 1, 1, 1)
    with pytest.raises(UsageError, match="threads >= 1"):
        runner_argv("executorch", "r", "m.pte", 0, 1, 1)


def test_remote_command_quotes_once_for_the_device_shell():
    cmd = remote_command("/data/local/tmp/edgepack-ab", ["/data/local/tmp/edgepack-ab/run", "--graph=my model.tflite"])
    assert cmd == "cd /data/local/tmp/edgepack-ab && /data/local/tmp/edgepack-ab/run '--graph=my model.tflite'"
    assert shlex.split(cmd.split(" && ", 1)[1])[1] == "--graph=my model.tflite"


def test_remote_workdir_is_fresh_under_data_local_tmp():
    a, b = remote_workdir(), remote_workdir()
    assert a.startswith("/data/local/tmp/edgepack-") and a != b
    assert remote_workdir("cafe") == "/data/local/tmp/edgepack-cafe"


def test_parse_devices_and_getprop():
    text = "* daemon started successfully\nList of devices attached\nSER123\tdevice\nemulator-5554\toffline\n" \
           "R58\tno permissions (user in plugdev group); see [http://developer.android.com/tools/device.html]\n"
    devices = parse_devices(text)
    assert devices[:2] == [("SER123", "device"), ("emulator-5554", "offline")]
    assert devices[2][1].startswith("no permissions")
    props = parse_getprop(GETPROP)
    assert describe("SER123", props) == ("device adb:SER123 (Pixel 7, arm64-v8a)", "Google GS201")
    assert describe("X", {})[0] == "device adb:X (unknown model, unknown abi)"


# ---- runner ELF checks ----------------------------------------------------------------------------------------------
def test_arm64_runner_is_accepted(arm64_runner):
    check_arm64_runner(arm64_runner)


@pytest.mark.parametrize("machine, elf_class, named", [(62, 2, "x86-64"), (40, 1, "32-bit ARM"), (183, 1, "32-bit")])
def test_runner_for_another_machine_is_refused(tmp_path, machine, elf_class, named):
    path = tmp_path / "runner"
    path.write_bytes(elf_header(machine, elf_class))
    with pytest.raises(UsageError, match=named) as info:
        check_arm64_runner(path)
    assert info.value.exit_code == 2 and "AArch64" in str(info.value)


def test_host_python_is_not_an_android_runner():
    if os.uname().machine == "aarch64":
        pytest.skip("the host is arm64")
    with pytest.raises(UsageError, match="AArch64"):
        check_arm64_runner(Path(sys.executable).resolve())


def test_non_elf_and_missing_runners_are_refused(tmp_path):
    script = tmp_path / "runner.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(UsageError, match="not an ELF"):
        check_arm64_runner(script)
    with pytest.raises(UsageError, match="does not exist"):
        check_arm64_runner(tmp_path / "absent")


# ---- resolving a device with a fake adb -----------------------------------------------------------------------------
def test_resolve_the_only_device(fake_adb):
    device = AdbDevice.resolve("adb")
    assert device.serial == "SER123" and Path(device.adb).name == "adb"
    assert AdbDevice.resolve("adb:SER123").serial == "SER123"


def test_resolve_errors(fake_adb, monkeypatch):
    with pytest.raises(UsageError, match="use 'adb' or 'adb:SERIAL'"):
        AdbDevice.resolve("usb")
    with pytest.raises(UsageError, match="OTHER is not attached; attached: SER123"):
        AdbDevice.resolve("adb:OTHER")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nA1\tdevice\nB2\tdevice\n")
    with pytest.raises(UsageError, match=r"2 devices attached \(A1, B2\); pick one with adb:SERIAL"):
        AdbDevice.resolve("adb")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nA1\tunauthorized\n")
    with pytest.raises(UsageError, match="A1 is unauthorized; accept the USB debugging prompt"):
        AdbDevice.resolve("adb:A1")
    with pytest.raises(UsageError, match=r"no Android device ready over adb; found A1 \(unauthorized\)"):
        AdbDevice.resolve("adb")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\n\n")
    with pytest.raises(UsageError, match="lists none") as info:
        AdbDevice.resolve("adb")
    assert info.value.exit_code == 2
    monkeypatch.setenv("FAKE_ADB_DEVICES_RC", "1")
    with pytest.raises(UsageError, match="'adb devices' failed"):
        AdbDevice.resolve("adb")


def test_no_adb_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="no 'adb' on PATH"):
        AdbDevice.resolve("adb")


# ---- measuring with a fake adb --------------------------------------------------------------------------------------
def test_measure_executorch_pushes_runs_parses_and_cleans_up(fake_adb, monkeypatch, tmp_path, arm64_runner):
    monkeypatch.setenv("FAKE_ADB_RUNNER_OUTPUT", str(FIXTURES / "executor_runner_recent.txt"))
    artifact = artifact_file(tmp_path, "pte")
    m = AdbDevice.resolve("adb").measure(artifact, arm64_runner, threads=1, warmup=3, runs=10)
    assert m.where == "device adb:SER123 (Pixel 7, arm64-v8a)" and m.cpu == "Google GS201"
    assert (m.artifact, m.runtime, m.threads, m.warmup, m.runs) == ("executorch-int8", "executorch", 1, 3, 10)
    assert m.p50_ms == pytest.approx(0.3505) and m.first_run_ms == pytest.approx(0.912)
    assert m.versions["runner"] == "runner_arm64" and m.versions["android"] == "14"

    calls = [c[2:] for c in fake_adb() if c[:1] == ["-s"]]
    assert all(c[:2] == ["-s", "SER123"] for c in fake_adb() if c != ["devices"])
    workdir = calls[1][3]
    assert calls[1] == ["shell", "mkdir", "-p", workdir] and workdir.startswith("/data/local/tmp/edgepack-")
    assert calls[2] == ["push", artifact.path, f"{workdir}/digits-cnn-int8.pte"]
    assert calls[3] == ["push", str(arm64_runner), f"{workdir}/runner_arm64"]
    assert calls[4] == ["shell", "chmod", "755", f"{workdir}/runner_arm64"]
    assert "--num_executions=13" in calls[5][1] and f"--model_path={workdir}/digits-cnn-int8.pte" in calls[5][1]
    assert calls[-1] == ["shell", "rm", "-rf", workdir]


def test_measure_litert_reads_memory_and_says_which_percentiles_are_bounds(fake_adb, monkeypatch, tmp_path,
                                                                           arm64_runner):
    monkeypatch.setenv("FAKE_ADB_RUNNER_OUTPUT", str(FIXTURES / "benchmark_model_recent.txt"))
    m = AdbDevice.resolve("adb:SER123").measure(artifact_file(tmp_path, "tflite"), arm64_runner, threads=4)
    assert m.runtime == "litert" and m.threads == 4 and m.runs == 8912
    assert m.p50_ms == pytest.approx(0.102) and m.p90_ms == pytest.approx(0.152)
    assert m.peak_rss_bytes == int(9.875 * 1024 * 1024) and m.baseline_rss_bytes is None
    assert any("upper" in n or "bounds" in n for n in m.notes)
    run = next(c[3] for c in fake_adb() if len(c) == 4 and c[2] == "shell" and "&&" in c[3])
    assert "--num_threads=4" in run and "--report_peak_memory_footprint=true" in run


def test_failed_runner_is_a_tool_error_and_still_cleans_up(fake_adb, monkeypatch, tmp_path, arm64_runner):
    monkeypatch.setenv("FAKE_ADB_RUNNER_OUTPUT", str(FIXTURES / "benchmark_model_failed.txt"))
    monkeypatch.setenv("FAKE_ADB_RUNNER_RC", "1")
    with pytest.raises(ToolError, match="benchmark_model failed on SER123 \\(exit 1\\): ERROR: Benchmarking failed"):
        AdbDevice.resolve("adb").measure(artifact_file(tmp_path, "tflite"), arm64_runner)
    assert fake_adb()[-1][2:5] == ["shell", "rm", "-rf"]


def test_failed_push_is_a_tool_error_and_still_cleans_up(fake_adb, monkeypatch, tmp_path, arm64_runner):
    monkeypatch.setenv("FAKE_ADB_PUSH_FAIL", "1")
    with pytest.raises(ToolError, match="No space left on device"):
        AdbDevice.resolve("adb").measure(artifact_file(tmp_path, "pte"), arm64_runner)
    calls = fake_adb()
    assert calls[-1][2:5] == ["shell", "rm", "-rf"]
    assert not any(c[2:3] == ["shell"] and "&&" in " ".join(c) for c in calls)


class PhoneOnlyRuntime(RuntimeBase):
    """A runtime added later: its module declares the phone runner, its flags and its parser; adb.py is unchanged."""

    name = "phone-only"
    file_format = "bin"
    extra = "phone-only"
    modules = ()
    phone_runner = "my_runner"

    def phone_runner_argv(self, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
        return [runner, model, f"-t{threads}", f"-n{warmup + runs}"]

    def parse_phone_runner_output(self, text: str, warmup: int) -> RunnerStats:
        return parse_benchmark_model(text)


def test_a_new_runtime_measures_on_the_phone_through_its_own_declarations(fake_adb, monkeypatch, tmp_path,
                                                                          arm64_runner):
    monkeypatch.setitem(REGISTRY, "phone-only", f"{__name__}:PhoneOnlyRuntime")
    monkeypatch.setenv("FAKE_ADB_RUNNER_OUTPUT", str(FIXTURES / "benchmark_model_recent.txt"))
    m = AdbDevice.resolve("adb").measure(artifact_file(tmp_path, "bin", "phone-only"), arm64_runner, threads=2,
                                         warmup=1, runs=5)
    assert m.runtime == "phone-only" and m.p50_ms == pytest.approx(0.102)
    run = next(c[3] for c in fake_adb() if len(c) == 4 and c[2] == "shell" and "&&" in c[3])
    assert run.endswith("digits-cnn-int8.bin -t2 -n6")


def test_wrong_runner_is_refused_before_anything_is_pushed(fake_adb, tmp_path):
    runner = tmp_path / "x86_runner"
    runner.write_bytes(elf_header(62))
    with pytest.raises(UsageError, match="x86-64"):
        AdbDevice.resolve("adb").measure(artifact_file(tmp_path, "pte"), runner)
    assert not any("push" in c for c in fake_adb())


@pytest.mark.slow
def test_build_measures_on_the_phone_through_the_cli(fake_adb, monkeypatch, tmp_path, arm64_runner):
    """`edgepack build --device adb` end to end: real export, the phone's runner output in the report."""
    from click.testing import CliRunner

    from edgepack.cli import cli

    monkeypatch.setenv("FAKE_ADB_RUNNER_OUTPUT", str(FIXTURES / "executor_runner_recent.txt"))
    out = tmp_path / "phone"
    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", "android-arm64", "--runtime",
                                      "executorch", "--device", "adb", "--runner", f"executorch={arm64_runner}",
                                      "--threads", "4", "--runs", "10", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    measured = {m["artifact"]: m for m in report["measurements"]}
    assert set(measured) == {"executorch-fp32", "executorch-int8"}
    from edgepack.device.runner_output import parse_executor_runner

    # the target's warm-up count (10) is dropped from the runner's per-iteration times
    expected = parse_executor_runner((FIXTURES / "executor_runner_recent.txt").read_text(), 10)
    for m in measured.values():
        assert m["where"] == "device adb:SER123 (Pixel 7, arm64-v8a)"
        assert m["threads"] == 4  # a phone is not capped to the host's core count
        assert m["p50_ms"] == pytest.approx(expected.p50_ms) and m["warmup"] == 10
    pushed = [c for c in fake_adb() if "push" in c]
    assert len(pushed) == 4  # artifact and runner, for each of the two artifacts
    assert sum(1 for c in fake_adb() if "rm" in c) == 2


def test_build_refuses_a_missing_runner_before_exporting(fake_adb, tmp_path):
    from click.testing import CliRunner

    from edgepack.cli import cli

    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", "android-arm64", "--device",
                                      "adb", "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "needs its arm64 executor_runner binary: pass --runner executorch=PATH" in result.output
    assert not (tmp_path / "o").exists() and fake_adb() == []
