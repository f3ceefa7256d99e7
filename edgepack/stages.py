"""The stages `pipeline.build` calls, one function each: load, data, compress, export, parity, accuracy, measure,
publish. They import torch and the runtimes, so only the pipeline imports this module, inside `build`."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgepack.config import Target
from edgepack.data.dataset import ArrayDataset
from edgepack.errors import MissingDependency, ToolError, UsageError
from edgepack.quiet import captured
from edgepack.records import Accuracy, Artifact, Measurement, Parity, Report, Robustness
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import QAT_RUNTIMES, ExportRequest, QatRequest, Runtime, Session

PARITY_SAMPLES = 256
DEVICE_RUNTIMES = ("executorch", "litert")  # runtimes whose runners edgepack drives over adb
SYNTHETIC_CALIBRATION_SAMPLES = 64


@dataclass(frozen=True)
class BuildData:
    calibration: ArrayDataset
    parity: ArrayDataset  # inputs for eager-vs-artifact comparison
    eval: Optional[ArrayDataset] = None
    train: Optional[ArrayDataset] = None


def available_runtimes(names: Sequence[str]) -> list[Runtime]:
    runtimes = [get_runtime(n) for n in names]
    for rt in runtimes:
        missing = rt.missing()
        if missing:
            raise MissingDependency(f"runtime {rt.name} cannot run here: {missing[0]}")
    return runtimes


def load(model_request: Any) -> tuple[Any, Any]:
    from edgepack.models.loader import load_model

    with captured():
        bundle, zoo_entry = load_model(model_request)
    if len(bundle.example_inputs) != 1:
        # calibration, parity, accuracy and the runners all feed one tensor; say so rather than fail later
        raise UsageError(f"--model {model_request.spec}: forward takes {len(bundle.example_inputs)} inputs; edgepack "
                         f"builds single-input models (wrap it so forward takes one tensor)")
    return bundle, zoo_entry


class DataResolver:
    """Resolves --calibration/--eval/--train specs against one model's input shape and its zoo dataset."""

    def __init__(self, bundle: Any, zoo_entry: Any) -> None:
        self.bundle = bundle
        self.shape = bundle.provenance.input_shapes[0]
        self.zoo_dataset = zoo_entry.dataset if zoo_entry else None
        self._classes: Optional[int] = None

    def get(self, spec: Optional[str], option: str, split: str) -> Optional[ArrayDataset]:
        from edgepack.data.loaders import load_dataset

        if not spec:
            return None
        return load_dataset(spec, self.shape, option=option, split=split, zoo_dataset=self.zoo_dataset,
                            preprocessing=dict(self.bundle.provenance.preprocessing))

    def labelled(self, spec: Optional[str], option: str, split: str) -> Optional[ArrayDataset]:
        from edgepack.data.loaders import check_labels

        data = self.get(spec, option, split)
        if data is not None:
            check_labels(data, self.num_classes(), option)
        return data

    def num_classes(self) -> int:
        if self._classes is None:
            import torch

            with torch.no_grad():
                out = self.bundle.module(*self.bundle.example_inputs)
            self._classes = int(np.prod(out.shape[1:]))
        return self._classes


def load_training_data(resolver: DataResolver, train_spec: Optional[str], eval_spec: Optional[str],
                       needs_training: bool) -> tuple[Optional[ArrayDataset], Optional[ArrayDataset]]:
    """(train, eval). Passes and QAT train on the zoo model's own training split unless --train says otherwise."""
    if train_spec is None and needs_training and resolver.zoo_dataset:
        train_spec = "zoo"
    return resolver.labelled(train_spec, "--train", "train"), resolver.labelled(eval_spec, "--eval", "test")


def load_data(request: Any, bundle: Any, zoo_entry: Any, target: Target, runtime_names: Sequence[str],
              precision: str, warnings: list[str]) -> BuildData:
    from edgepack.data.loaders import stratified_subset, synthetic

    resolver = DataResolver(bundle, zoo_entry)
    needs_training = bool(request.passes) or request.qat_epochs is not None
    train, evaluation = load_training_data(resolver, request.train, request.eval, needs_training)
    wanted = request.calibration_samples
    if wanted is None:
        wanted = max(int(target.runtime(n).options.get("calibration_samples", 128)) for n in runtime_names)
    if wanted < 1:
        raise UsageError(f"--calibration-samples {wanted}: use 1 or more")
    calibration = resolver.get(request.calibration, "--calibration", "train")
    if calibration is None and resolver.zoo_dataset:
        calibration = resolver.get("zoo", "--calibration", "train")
    if calibration is None:
        calibration = synthetic(resolver.shape, SYNTHETIC_CALIBRATION_SAMPLES)
        if precision == "int8":
            warnings.append("no --calibration data: INT8 was calibrated on synthetic N(0,1) inputs, which can cost "
                            "accuracy; pass --calibration DATA (.npz or image folder) drawn from real inputs")
    calibration = stratified_subset(calibration, wanted)
    parity = evaluation if evaluation is not None else calibration
    return BuildData(calibration, stratified_subset(parity, PARITY_SAMPLES, seed=1), evaluation, train)


def compress(bundle: Any, passes: Sequence[Any], data: BuildData) -> Any:
    from edgepack.compress import apply_passes

    with captured():
        return apply_passes(bundle, list(passes), train=data.train, eval=data.eval)


def qat_request(epochs: Optional[int], precision: str, data: BuildData) -> Optional[QatRequest]:
    if epochs is None:
        return None
    if epochs < 1:
        raise UsageError(f"--qat {epochs}: use 1 or more epochs")
    if precision != "int8":
        raise UsageError("--qat trains an int8 model; drop --precision fp32")
    if data.train is None:
        raise UsageError("--qat needs labelled training data: --train DATA (zoo models use their own split)")
    return QatRequest(data.train, epochs)


def export_plans(runtime_name: str, precision: str, qat: Optional[QatRequest],
                 warnings: list[str]) -> list[tuple[str, Optional[QatRequest]]]:
    """(precision, qat) per artifact to build, in order; the last one ships."""
    plans: list[tuple[str, Optional[QatRequest]]] = [("fp32", None)]
    if precision == "int8":
        plans.append(("int8", None))
        if qat is not None and runtime_name in QAT_RUNTIMES:
            plans.append(("int8", qat))
        elif qat is not None:
            warnings.append(f"{runtime_name} has no quantization-aware training path here; its int8 artifact is "
                            f"post-training quantized (QAT runs for {', '.join(QAT_RUNTIMES)})")
    return plans


def export(runtime: Runtime, bundle: Any, precision: str, out_dir: Path, calibration: ArrayDataset,
           options: dict[str, Any], parent: Optional[Artifact], qat: Optional[QatRequest] = None) -> Artifact:
    import logging

    # the exporters log registry chatter (e.g. absent torchvision ops) at warning level; it is not the user's concern
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    request = ExportRequest(precision=precision, out_dir=out_dir, calibration=calibration, options=options,
                            parent=parent, qat=qat)
    with captured():
        return runtime.export(bundle, request)


def open_session(runtime: Runtime, artifact: Artifact, threads: int) -> Session:
    """Load an artifact quietly; its session also runs quietly (runtimes log delegate creation and the like)."""
    with captured():
        session = runtime.load(Path(artifact.path), threads)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with captured():
            return session(inputs)

    return run


def _eager_outputs(bundle: Any, inputs: np.ndarray) -> np.ndarray:
    from edgepack.training import predict

    batch = int(bundle.example_inputs[0].shape[0])
    if bundle.provenance.kind != "pt2" and batch == 1:
        batch = 256  # plain modules take any batch; exported programs keep the batch they were exported with
    elif len(inputs) % batch:
        raise UsageError(f"{len(inputs)} samples do not divide into the model's batch of {batch}")
    return predict(bundle.module, inputs, batch_size=batch)


def _session_outputs(session: Session, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([session([inputs[i:i + batch]])[0] for i in range(0, len(inputs), batch)])


def parity(name: str, session: Session, bundle: Any, data: ArrayDataset) -> Parity:
    ref = _eager_outputs(bundle, data.inputs)
    got = _session_outputs(session, data.inputs)
    if ref.shape != got.shape:
        raise ToolError(f"{name}: output shape {got.shape} differs from eager {ref.shape}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    flat_ref, flat_got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    agreement = float(np.mean(flat_ref.argmax(1) == flat_got.argmax(1)))
    return Parity(name, len(data), float(diff.max()), float(diff.mean()), agreement, data.name)


def _accuracy(name: str, logits: np.ndarray, data: ArrayDataset) -> Accuracy:
    from edgepack.training import topk_accuracy

    assert data.labels is not None  # checked when the data was loaded
    logits = logits.reshape(len(logits), -1)
    top5 = topk_accuracy(logits, data.labels, 5) if logits.shape[1] > 5 else None
    return Accuracy(name, data.name, len(data), topk_accuracy(logits, data.labels, 1), top5)


def robustness(name: str, predict: Any, data: ArrayDataset) -> Robustness:
    from edgepack.robustness import robustness as corrupted_accuracy

    return Robustness(name, data.name, tuple(corrupted_accuracy(predict, data)))


def eager_robustness(bundle: Any, data: ArrayDataset) -> Robustness:
    from edgepack.robustness import eager_predict

    return robustness("eager", eager_predict(bundle.module), data)


def artifact_robustness(name: str, session: Session, data: ArrayDataset) -> Robustness:
    from edgepack.robustness import session_predict

    return robustness(name, session_predict(session, batch_size=64), data)


def eager_accuracy(bundle: Any, data: ArrayDataset) -> Accuracy:
    return _accuracy("eager", _eager_outputs(bundle, data.inputs), data)


def artifact_accuracy(name: str, session: Session, data: ArrayDataset) -> Accuracy:
    return _accuracy(name, _session_outputs(session, data.inputs), data)


def where_label(target: Target) -> str:
    from edgepack.measure import host_cpu

    machine = platform.machine()
    arch_aliases = {"arm64": ("arm64", "aarch64"), "x86_64": ("x86_64", "amd64")}
    label = f"host {machine} ({host_cpu()})"
    wanted = getattr(target, "arch", "") or ""
    if wanted and machine.lower() not in arch_aliases.get(wanted, (wanted,)):
        label += f" (proxy for {wanted})"
    return label


@dataclass(frozen=True)
class Measurer:
    """Where artifacts are timed: the host harness, or a phone over adb with the runtime's runner binary."""

    label: str
    threads: int
    runs: int
    warmup: int
    host_where: str
    device: Any = None  # device.adb.AdbDevice
    runners: dict[str, Path] = field(default_factory=dict)

    def measure(self, artifact: Artifact, input_shapes: Sequence[Sequence[int]]) -> Measurement:
        if self.device is not None:
            return self.device.measure(artifact, self.runners[artifact.runtime], self.threads, self.warmup, self.runs)
        from edgepack.measure import MeasureSpec, measure_artifact

        spec = MeasureSpec(artifact.runtime, self.threads, self.runs, self.warmup, self.host_where)
        return measure_artifact(artifact.name, Path(artifact.path), input_shapes, spec)


def measurer(target: Target, device: Optional[str], runners: dict[str, str], runtime_names: Sequence[str],
             threads: int, runs: int, warnings: list[str]) -> Measurer:
    if threads < 1:
        raise UsageError(f"--threads {threads}: use 1 or more")
    if runs < 1:
        raise UsageError(f"--runs {runs}: use 1 or more")
    device = device or target.device
    if device == "host":
        cpus = os.cpu_count() or 1
        if threads > cpus:
            warnings.append(f"{threads} threads asked but this host has {cpus} logical CPUs; measured with {cpus}")
            threads = cpus
        return Measurer("host", threads, runs, target.warmup, where_label(target))
    from edgepack.device.adb import AdbDevice, check_arm64_runner

    paths = {**target.runner, **runners}
    resolved = {}
    for name in runtime_names:
        if name not in DEVICE_RUNTIMES:
            raise UsageError(f"--device {device} measures {', '.join(DEVICE_RUNTIMES)} artifacts on a phone; "
                             f"{name} has no phone runner here (use --runtime executorch or litert)")
        if name not in paths:
            raise UsageError(f"measuring {name} on {device} needs its arm64 runner binary: pass --runner "
                             f"{name}=PATH (edgepack never downloads binaries)")
        path = Path(paths[name]).expanduser()
        if not path.is_file():
            raise UsageError(f"--runner {name}={path}: no such file")
        check_arm64_runner(path)
        resolved[name] = path
    adb = AdbDevice.resolve(device)
    return Measurer(device, threads, runs, target.warmup, "", adb, resolved)


def versions(runtimes: Sequence[Runtime]) -> dict[str, str]:
    from edgepack import __version__
    from edgepack.runtimes.base import package_versions

    out = {"edgepack": __version__, **package_versions("torch", "numpy")}
    for rt in runtimes:
        out.update(rt.versions())
    return out


def host() -> dict[str, Any]:
    from edgepack.measure import host_info

    return host_info()


def _remove_previous_artifacts(out: Path, keep: set[str]) -> None:
    """Delete artifacts an earlier build listed in out/manifest.json that this build does not produce again, so the
    directory never holds a file its report does not describe. Only files edgepack itself listed are touched."""
    import json

    manifest = out / "manifest.json"
    if not manifest.is_file():
        return
    try:
        listed = [a["file"] for a in json.loads(manifest.read_text(encoding="utf-8")).get("artifacts", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return
    for name in listed:
        if name not in keep and Path(name).name == name:
            (out / name).unlink(missing_ok=True)


def publish(report: Report, out: Path, data: BuildData, threads: int, bundle: bool) -> Report:
    """Move artifacts from staging into `out`, then write manifest and reports; report.json goes last."""
    from edgepack.report import render as reporting

    out.mkdir(parents=True, exist_ok=True)
    _remove_previous_artifacts(out, {Path(a.path).name for a in report.artifacts})
    moved = []
    for artifact in report.artifacts:
        final = out / Path(artifact.path).name
        os.replace(artifact.path, final)
        moved.append(replace(artifact, path=str(final)))
    report = replace(report, artifacts=tuple(moved))
    reporting.write_manifest(report, out / "manifest.json", data.calibration)
    if bundle:
        from edgepack.report.mobile_bundle import write_bundle

        write_bundle(report, out, data.calibration, threads)
    reporting.write_markdown(report, out / "report.md")
    reporting.write_json(report, out / "report.json")
    return report
