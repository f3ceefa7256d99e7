"""Pass configs validate themselves on construction, with one-line UsageErrors that say what would be right."""

from __future__ import annotations

import pytest

from edgepack.compress import (
    DistillConfig,
    DropLayersConfig,
    FinetuneConfig,
    LowRankConfig,
    NdLinearConfig,
    PruneConfig,
    SparseConfig,
)
from edgepack.errors import UsageError


@pytest.mark.parametrize("build, message", [
    (lambda: PruneConfig(ratio=True), "ratio=True is not a finite number"),
    (lambda: PruneConfig(ratio=float("nan")), "is not a finite number"),
    (lambda: PruneConfig(ratio=1.0), "ratio=1.0 is outside (0, 1); use e.g. ratio=0.5"),
    (lambda: PruneConfig(ratio=0.5, heads=1.0), "heads=1.0 is outside (0, 1)"),
    (lambda: PruneConfig(ratio=0.5, round_to=0), "round_to=0 is below 1; use 1 for no rounding"),
    (lambda: PruneConfig(ratio=0.5, lr=0.0), "lr=0.0 must be positive"),
    (lambda: PruneConfig(ratio=0.5, ignore="fc"), "ignore must be a list of layer names"),
    (lambda: SparseConfig(ratio=0.5), "pass --allow-sparse"),
    (lambda: LowRankConfig(), "exactly one of ratio="),
    (lambda: LowRankConfig(energy=0.0), "energy=0.0 is outside (0, 1]"),
    (lambda: LowRankConfig(rank=4, min_params=-1), "min_params=-1 is below 0"),
    (lambda: NdLinearConfig(epochs=-1), "epochs=-1 is below 0"),
    (lambda: DropLayersConfig(), "not both and not neither"),
    (lambda: DropLayersConfig(middle=0), "middle=0 is below 1"),
    (lambda: DropLayersConfig(indices=(1,), container=""), "container must be a module name"),
    (lambda: FinetuneConfig(epochs=2, batch_size=0), "batch_size=0 is below 1"),
    (lambda: DistillConfig(width=1.0), "width=1.0 is outside (0, 1)"),
    (lambda: DistillConfig(), "distill needs either width=W"),
    (lambda: DistillConfig(width=0.5, student="zoo:digits-cnn"), "got both"),
    (lambda: DistillConfig(student=" "), "must be a model spec"),
    (lambda: DistillConfig(width=0.5, alpha=1.5), "alpha=1.5 is outside [0, 1]"),
    (lambda: DistillConfig(width=0.5, max_stage_ratio=1), "must be above 1 (e.g. 3), or none for one stage"),
    (lambda: DistillConfig(width=0.5, epochs=0), "epochs=0 is below 1"),
    (lambda: DistillConfig(width=0.5, weight_decay=-1), "weight_decay=-1 must be 0 or more"),
])
def test_bad_values_are_refused(build, message):
    with pytest.raises(UsageError) as info:
        build()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_configs_are_frozen_and_serialise():
    config = PruneConfig(ratio=0.5, ignore=("a", "b"))
    with pytest.raises(AttributeError):
        config.ratio = 0.1  # type: ignore[misc]
    assert config.to_dict()["ignore"] == ["a", "b"]
    pairs = DistillConfig(width=0.5, feature_pairs=(("t", "s"),)).to_dict()["feature_pairs"]
    assert pairs == [["t", "s"]]


def test_training_data_needs_are_declared():
    assert PruneConfig(ratio=0.5).needs_training_data() is None
    assert PruneConfig(ratio=0.5, importance="taylor").needs_training_data() == "prune importance=taylor"
    assert PruneConfig(ratio=0.5, epochs=2).needs_training_data() == "prune epochs=2"
    assert NdLinearConfig(epochs=1).needs_training_data() == "ndlinear epochs=1"
    assert DistillConfig(width=0.5).needs_training_data() == "distill"
    assert FinetuneConfig(epochs=1).needs_training_data() == "finetune"
    assert LowRankConfig(rank=2).needs_training_data() is None
    # at alpha=1 the teacher labels every input, so distillation can learn from unlabelled data
    assert DistillConfig(width=0.5).needs_labels() and not DistillConfig(width=0.5, alpha=1.0).needs_labels()
    assert DistillConfig(student="zoo:digits-cnn").needs_model_loader() == "distill student=zoo:digits-cnn"
    assert DistillConfig(width=0.5).needs_model_loader() is None
