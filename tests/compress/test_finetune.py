"""The fine-tune pass: needs labelled data, records each epoch's loss and accuracy before/after, reports progress."""

from __future__ import annotations

import re

import pytest

from edgepack.compress import FinetuneConfig, PruneConfig, apply_passes
from edgepack.errors import UsageError
from edgepack.models import zoo
from edgepack.records import TrainingEpoch


def test_finetune_without_data_is_a_usage_error(bundle_of):
    with pytest.raises(UsageError, match="finetune needs labelled training data"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [FinetuneConfig(epochs=1)])


def test_finetune_recovers_a_pruned_model(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    messages: list[str] = []
    out = apply_passes(bundle, [PruneConfig(ratio=0.75, round_to=1), FinetuneConfig(epochs=3, lr=3e-3)],
                       train=train, eval=test, progress=messages.append)
    prune, finetune = out.provenance.passes
    assert finetune.accuracy_before == prune.accuracy_after
    assert finetune.accuracy_after > finetune.accuracy_before
    assert all(isinstance(e, TrainingEpoch) for e in finetune.training)
    assert [e.epoch for e in finetune.training] == [1, 2, 3]
    assert finetune.training[-1].loss < finetune.training[0].loss
    assert finetune.changes == () and prune.training == ()
    assert finetune.params_after == finetune.params_before
    assert not out.module.training
    # every epoch reaches the user, with its loss
    epochs = [m for m in messages if m.startswith("finetune epoch")]
    assert messages[-4] == "pass 2/2: finetune" and len(epochs) == 3
    assert re.fullmatch(r"finetune epoch 3/3: loss \d+\.\d{4}", epochs[-1]), epochs


def test_finetune_is_deterministic_for_a_seed(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    first = apply_passes(bundle, [FinetuneConfig(epochs=1, seed=3)], train=train.take(128), eval=test)
    second = apply_passes(bundle, [FinetuneConfig(epochs=1, seed=3)], train=train.take(128), eval=test)
    assert first.provenance.passes[-1].training == second.provenance.passes[-1].training
