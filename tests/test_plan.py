"""Planning: every model-free decision and check, in milliseconds, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgepack.budgets import parse_budget
from edgepack.errors import UsageError
from edgepack.models.request import ModelRequest
from edgepack.plan import BuildRequest, plan

MODEL = ModelRequest("zoo:digits-cnn")


def request(**kw) -> BuildRequest:
    return BuildRequest(model=MODEL, **kw)


def steps(p) -> list[tuple[str, str, bool]]:
    return [(s.artifact, s.parent, s.ships) for s in p.steps]


def test_x86_int8_derives_from_the_fp32_onnx_file_and_ships():
    p = plan(request())
    assert steps(p) == [("onnxruntime-fp32", "eager", False), ("onnxruntime-int8", "onnxruntime-fp32", True)]
    assert p.shipping == ("onnxruntime-int8",)
    assert p.measure.threads == 1 and p.measure.device == "host"
    assert p.data.calibration_samples == 256 and not p.data.needs_training


def test_mobile_runtimes_export_int8_from_the_eager_model():
    p = plan(request(target="android-arm64"))
    assert steps(p) == [("executorch-fp32", "eager", False), ("executorch-int8", "eager", True),
                        ("litert-fp32", "eager", False), ("litert-int8", "eager", True)]
    assert p.bundle is True


def test_qat_artifact_ships_from_eager_and_the_ptq_one_is_kept_for_comparison():
    p = plan(request(target="android-arm64", qat_epochs=2))
    assert ("executorch-int8", "eager", False) in steps(p)
    assert ("executorch-int8-qat", "eager", True) in steps(p)
    assert ("litert-int8", "eager", True) in steps(p)  # no QAT path: post-training int8 ships
    assert any("litert has no quantization-aware training path" in w for w in p.warnings)
    assert p.data.needs_training


def test_fp32_builds_ship_the_fp32_artifact():
    p = plan(request(precision="fp32", runtimes=("all",), target="x86-cpu"))
    assert p.shipping == ("onnxruntime-fp32", "executorch-fp32", "litert-fp32", "openvino-fp32")


@pytest.mark.parametrize("kw, message", [
    (dict(runtimes=("tensorrt",)), "cannot use runtime 'tensorrt'"),
    (dict(runtimes=("onnxruntime", "onnxruntime")), "name each runtime once"),
    (dict(budgets=(parse_budget("accuracy_drop", "1pp"),)), "--max-accuracy-drop needs --eval"),
    (dict(robustness=True), "--robustness needs --eval"),
    (dict(threads=0), "--threads 0: use 1 or more"),
    (dict(runs=0), "--runs 0: use 1 or more"),
    (dict(calibration_samples=0), "--calibration-samples 0"),
    (dict(qat_epochs=0), "--qat 0"),
    (dict(qat_epochs=2, precision="fp32"), "--qat trains an int8 model"),
    (dict(runners=(("executorch", "x"),)), "--runner is for measuring on a phone"),
    (dict(device="usb"), "--device 'usb': use host, adb, adb:SERIAL, gpu, gpu:N or none"),
    (dict(device="adb"), "has no phone runner"),
    (dict(target="android-arm64", device="adb"), "needs its arm64 executor_runner binary"),
    (dict(target="android-arm64", device="adb", runners=(("onnxruntime", "x"),)), "does not use runtime"),
    (dict(precision="fp16"), "--precision fp16: runtime onnxruntime builds fp32, int8"),
    (dict(rescue_time_limit_s=0.0), "--rescue-time-limit 0: give a number of seconds above 0"),
    (dict(device="none", runtimes=("auto",)), "--runtime auto ships the fastest runtime, which needs measuring"),
    (dict(device="none", budgets=(parse_budget("memory", "1MB"),)), "--device none measures nothing, so the memory"),
    (dict(device="gpu"), "cannot measure on gpu:0: onnxruntime measures on this host's CPU"),
    (dict(target="cuda", device="host"), "--device host: onnxruntime-gpu measures on an NVIDIA GPU"),
])
def test_model_free_mistakes_are_refused_in_the_plan(kw, message):
    with pytest.raises(UsageError, match=None) as info:
        plan(request(**kw))
    assert message in str(info.value)


def test_cuda_builds_fp32_then_fp16_and_int8_from_it_and_device_none_measures_nothing():
    p = plan(request(target="cuda", device="none"))
    assert steps(p) == [("onnxruntime-gpu-fp32", "eager", False), ("onnxruntime-gpu-fp16", "onnxruntime-gpu-fp32",
                                                                   False), ("onnxruntime-gpu-int8",
                                                                            "onnxruntime-gpu-fp32", True)]
    assert not p.measure.measures and any("not measured on a GPU" in w for w in p.warnings)
    assert plan(request(target="cuda", device="none", precision="fp16")).shipping == ("onnxruntime-gpu-fp16",)


def test_a_runner_that_is_not_an_arm64_binary_is_refused_before_any_device_lookup(tmp_path):
    runner = tmp_path / "executor_runner"
    runner.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not an ELF executable"):
        plan(request(target="android-arm64", runtimes=("executorch",), device="adb",
                     runners=(("executorch", str(runner)),)))


def test_an_out_directory_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        plan(request(out=blocker))
    with pytest.raises(UsageError, match="not a writable directory"):
        plan(request(out=blocker / "sub"))


def test_planning_is_fast_and_imports_no_torch():
    code = ("import sys, time; t = time.perf_counter(); from edgepack.plan import BuildRequest, plan; "
            "from edgepack.models.request import ModelRequest; "
            "p = plan(BuildRequest(ModelRequest('zoo:digits-cnn'), target='android-arm64', runtimes=('all',))); "
            "print(time.perf_counter() - t, 'torch' in sys.modules, len(p.steps))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and out[2] == "4"
    assert float(out[0]) < 1.0


BAD_WITHOUT_MODEL = [
    ["--runtime", "nope"],
    ["--max-accuracy-drop", "1pp"],
    ["--target", "{bad_target}"],
    ["--out", "{blocked_out}"],
]


@pytest.mark.parametrize("args", BAD_WITHOUT_MODEL)
def test_cli_refuses_model_free_mistakes_in_under_a_second_without_torch(args, tmp_path):
    bad_target = tmp_path / "bad.yaml"
    bad_target.write_text("name: bad\nruntimes: {onnxruntime: {activation_type: int16}}\n")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")
    args = [a.format(bad_target=bad_target, blocked_out=blocked) for a in args]
    code = ("import sys, time, json; t = time.perf_counter(); from edgepack.cli import cli; "
            f"rc = cli.main({['build', '--model', 'zoo:digits-cnn'] + args!r}, standalone_mode=False); "
            "print(json.dumps([rc, time.perf_counter() - t, 'torch' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "EDGEPACK_DEBUG": ""})
    rc, seconds, torch_imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 2, proc.stderr
    assert not torch_imported
    assert seconds < 1.0, seconds
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
