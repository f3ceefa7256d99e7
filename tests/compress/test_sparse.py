"""Unstructured magnitude pruning: opt-in only, masks made permanent, sparsity measured per layer and overall."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.compress import SparseConfig, apply_passes, parse_pass
from edgepack.compress.sparse import sparsity
from edgepack.errors import UsageError
from edgepack.models import zoo


def test_sparse_needs_allow_sparse():
    with pytest.raises(UsageError, match="--allow-sparse"):
        SparseConfig(ratio=0.5)
    with pytest.raises(UsageError, match="--allow-sparse"):
        parse_pass("sparse", "0.5")
    assert parse_pass("sparse", "0.5", extra={"allow_sparse": True}) == SparseConfig(ratio=0.5, allow_sparse=True)


def test_per_layer_sparsity_is_measured_and_masks_are_baked_in(bundle_of):
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    out = apply_passes(bundle, [SparseConfig(ratio=0.5, allow_sparse=True)])
    record = out.provenance.passes[-1]
    layers = {c.layer: c for c in record.changes}
    assert set(layers) == {"features.0", "features.3", "features.7"}
    for name, change in layers.items():
        weight = out.module.get_submodule(name).weight
        assert change.weights == weight.numel()
        assert change.zeros == int((weight == 0).sum()) == round(weight.numel() * 0.5)
        assert change.sparsity == pytest.approx(0.5, abs=1e-3)
    assert [s.layer for s in record.skipped] == ["classifier"]
    assert float((out.module.classifier.weight == 0).float().mean()) < 0.01  # classifier left dense
    for m in out.module.modules():
        assert not m._forward_pre_hooks and not hasattr(m, "weight_orig")
    assert record.params_after == record.params_before and record.macs_after == record.macs_before
    assert any("dense runtimes" in n for n in record.notes)
    assert any(n.startswith("measured sparsity: 0.5") for n in record.notes)
    assert 0.4 < sparsity(out.module) < 0.5
    assert sparsity(bundle.module) < 0.01  # the input bundle still holds the dense model


def test_global_sparsity_spreads_unevenly_but_hits_the_total(bundle_of):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Linear(32, 32)
            self.small = nn.Linear(32, 32)
            self.out = nn.Linear(32, 4)
            with torch.no_grad():  # every small weight below every big one: global ranking takes `small` first
                self.big.weight.uniform_(0.5, 1.0)
                self.small.weight.uniform_(-0.01, 0.01)

        def forward(self, x):
            return self.out(self.small(self.big(x)))

    out = apply_passes(bundle_of(Two(), (1, 32)), [SparseConfig(ratio=0.5, allow_sparse=True, global_pruning=True)])
    layers = {c.layer: c.sparsity for c in out.provenance.passes[-1].changes}
    assert layers["small"] == 1.0 and layers["big"] == 0.0
    assert (layers["small"] + layers["big"]) / 2 == pytest.approx(0.5)


def test_layers_restrict_the_pass(bundle_of):
    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)),
                       [parse_pass("sparse", "ratio=0.25,layers=features.3", extra={"allow_sparse": True})])
    assert [c.layer for c in out.provenance.passes[-1].changes] == ["features.3"]
    assert float((out.module.features[0].weight == 0).float().mean()) == 0.0
