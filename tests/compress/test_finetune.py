"""The fine-tune pass: needs labelled data, records losses and accuracy before/after."""

from __future__ import annotations

import pytest

from edgepack.compress import FinetuneConfig, PruneConfig, apply_passes
from edgepack.errors import UsageError
from edgepack.models import zoo


def test_finetune_without_data_is_a_usage_error(bundle_of):
    with pytest.raises(UsageError, match="finetune needs labelled training data"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [FinetuneConfig(epochs=1)])


def test_finetune_recovers_a_pruned_model(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    out = apply_passes(bundle, [PruneConfig(ratio=0.75, round_to=1), FinetuneConfig(epochs=3, lr=3e-3)],
                       train=train, eval=test)
    prune, finetune = out.provenance.passes
    assert finetune.accuracy_before == prune.accuracy_after
    assert finetune.accuracy_after > finetune.accuracy_before
    assert [c["epoch"] for c in finetune.changes] == [1, 2, 3]
    assert finetune.changes[-1]["loss"] < finetune.changes[0]["loss"]
    assert finetune.params_after == finetune.params_before
    assert not out.module.training


def test_finetune_is_deterministic_for_a_seed(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    first = apply_passes(bundle, [FinetuneConfig(epochs=1, seed=3)], train=train.take(128), eval=test)
    second = apply_passes(bundle, [FinetuneConfig(epochs=1, seed=3)], train=train.take(128), eval=test)
    assert first.provenance.passes[-1].changes == second.provenance.passes[-1].changes
