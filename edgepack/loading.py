"""Loading what a build works on: the model (a ModelBundle) and the data each stage needs, resolved against it.

Shared by `build`, `compress` and `distill`. Imports torch (through the model loader), so commands import it lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional


from edgepack.data.dataset import ArrayDataset
from edgepack.models.request import ModelRequest
from edgepack.quiet import captured

if TYPE_CHECKING:
    from edgepack.models.bundle import ModelBundle
    from edgepack.models.zoo import ZooEntry
    from edgepack.plan import DataPlan

SYNTHETIC_CALIBRATION_SAMPLES = 64


@dataclass(frozen=True)
class LoadedModel:
    bundle: "ModelBundle"
    zoo_entry: Optional["ZooEntry"]  # the zoo entry it came from (its dataset and preprocessing), if any


@dataclass(frozen=True)
class BuildData:
    calibration: ArrayDataset
    parity: ArrayDataset  # inputs for eager-vs-artifact comparison
    eval: Optional[ArrayDataset] = None
    train: Optional[ArrayDataset] = None


def load_bundle(request: ModelRequest) -> LoadedModel:
    """The model, checked to run on its example inputs; library chatter during loading stays off the terminal."""
    from edgepack.models.loader import load_model

    with captured():
        bundle, zoo_entry = load_model(request)
    return LoadedModel(bundle, zoo_entry)


class DataResolver:
    """Resolves --calibration/--eval/--train specs against one model's inputs and its zoo dataset."""

    def __init__(self, model: LoadedModel) -> None:
        self.bundle = model.bundle
        self.inputs = model.bundle.provenance.inputs
        self.zoo_dataset = model.zoo_entry.dataset if model.zoo_entry else None
        self._output_shape: Optional[tuple[int, ...]] = None

    def get(self, spec: Optional[str], option: str, split: str) -> Optional[ArrayDataset]:
        from edgepack.data.loaders import load_dataset

        if not spec:
            return None
        return load_dataset(spec, self.inputs, option=option, split=split, zoo_dataset=self.zoo_dataset,
                            preprocessing=dict(self.bundle.provenance.preprocessing))

    def labelled(self, spec: Optional[str], option: str, split: str) -> Optional[ArrayDataset]:
        from edgepack.data.loaders import check_labels

        data = self.get(spec, option, split)
        if data is not None:
            check_labels(data, self.bundle.provenance.task, self.output_shape(), option)
        return data

    def output_shape(self) -> tuple[int, ...]:
        if self._output_shape is None:
            import torch

            with torch.no_grad():
                out = self.bundle.module(*self.bundle.example_inputs)
            self._output_shape = tuple(int(d) for d in out.shape)
        return self._output_shape

    def training_data(self, train_spec: Optional[str], eval_spec: Optional[str],
                      needs_training: bool) -> tuple[Optional[ArrayDataset], Optional[ArrayDataset]]:
        """(train, eval). Passes and QAT train on the zoo model's own training split unless --train says otherwise."""
        if train_spec is None and needs_training and self.zoo_dataset:
            train_spec = "zoo"
        return self.labelled(train_spec, "--train", "train"), self.labelled(eval_spec, "--eval", "test")


def load_build_data(plan: "DataPlan", model: LoadedModel, int8: bool, warnings: list[str]) -> BuildData:
    from edgepack.data.loaders import stratified_subset, synthetic

    resolver = DataResolver(model)
    train, evaluation = resolver.training_data(plan.train, plan.eval, plan.needs_training)
    calibration = resolver.get(plan.calibration, "--calibration", "train")
    if calibration is None and resolver.zoo_dataset:
        calibration = resolver.get("zoo", "--calibration", "train")
    if calibration is None:
        calibration = synthetic(resolver.inputs, SYNTHETIC_CALIBRATION_SAMPLES)
        if int8:
            warnings.append(f"no --calibration data: INT8 was calibrated on {calibration.name}, which can cost "
                            f"accuracy; pass --calibration DATA (.npz or image folder) drawn from real inputs")
    calibration = stratified_subset(calibration, plan.calibration_samples)
    parity = evaluation if evaluation is not None else calibration
    return BuildData(calibration, stratified_subset(parity, plan.parity_samples, seed=1), evaluation, train)
