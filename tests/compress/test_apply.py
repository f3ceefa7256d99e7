"""apply_passes: dispatch on config type, composition in order, records, provenance, the input left untouched."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch import nn

from edgepack.compress import (
    DistillConfig,
    DropLayersConfig,
    FinetuneConfig,
    LowRankConfig,
    PassResult,
    PruneConfig,
    apply_passes,
    parse_recipe,
)
from edgepack.compress import apply as apply_module
from edgepack.errors import ToolError, UsageError
from edgepack.models import zoo
from edgepack.models.outputs import OutputSelector
from edgepack.records import LayerChange, PassRecord, Provenance, SkippedLayer


def test_passes_compose_in_order_and_are_recorded(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-vit"), (1, 1, 8, 8))
    recipe = parse_recipe([{"prune": {"ratio": 0.25, "round_to": 4}}, {"drop-layers": {"middle": 1}},
                           {"lowrank": {"ratio": 0.5, "min_params": 0, "layers": ["head"]}}])
    messages: list[str] = []
    out = apply_passes(bundle, recipe, train=train, eval=test, progress=messages.append)
    records = out.provenance.passes
    assert [r.name for r in records] == ["prune", "drop-layers", "lowrank"]
    for before, after in itertools.pairwise(records):
        assert after.params_before == before.params_after and after.macs_before == before.macs_after
        assert after.accuracy_before == before.accuracy_after
    assert records[0].params_before == bundle.provenance.params
    assert (out.provenance.params, out.provenance.macs) == (records[-1].params_after, records[-1].macs_after)
    assert out.provenance.params == sum(p.numel() for p in out.module.parameters())
    assert records[0].config == {"ratio": 0.25, "importance": "group", "global_pruning": False, "round_to": 4,
                                 "steps": 1, "heads": None, "epochs": 0, "lr": 0.001, "seed": 0,
                                 "keep_classifier": True, "ignore": []}
    assert all(r.seconds >= 0 for r in records)
    assert isinstance(out.module.head, nn.Sequential) and len(out.module.blocks) == 2
    assert messages == ["pass 1/3: prune", "prune step 1/1: 0.250 of channels gone", "pass 2/3: drop-layers",
                        "pass 3/3: lowrank"]
    assert all(isinstance(c, LayerChange) for r in records for c in r.changes)
    assert all(isinstance(s, SkippedLayer) for r in records for s in r.skipped)
    assert records[1].dropped is not None and records[1].dropped.dropped == (1,)
    # the input bundle is untouched
    assert len(bundle.module.blocks) == 3 and bundle.provenance.passes == ()
    assert bundle.module.blocks[0].attn.qkv.out_features == 144
    # records survive the JSON round trip the report relies on
    again = Provenance.from_dict(out.provenance.to_dict())
    assert again.passes == records and isinstance(again.passes[0], PassRecord)


def test_accuracy_is_none_without_eval_data(bundle_of):
    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5)])
    record = out.provenance.passes[-1]
    assert record.accuracy_before is None and record.accuracy_after is None


def test_non_config_is_refused_before_any_work(bundle_of):
    with pytest.raises(UsageError, match="is not a compression pass config"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5), {"prune": 0.5}])


def test_a_pass_that_breaks_the_model_is_a_tool_error(bundle_of, monkeypatch):
    def breaks(module, config, ctx):
        module.classifier = nn.Linear(3, 10)
        return PassResult(module)

    monkeypatch.setattr(apply_module, "pass_function", lambda config: breaks)
    with pytest.raises(ToolError, match="after the prune pass the model no longer runs"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5)])


def test_missing_training_data_is_refused_before_any_pass_runs(bundle_of, monkeypatch, digits):
    ran = []

    def record(module, config, ctx):
        ran.append(config)
        return PassResult(module)

    monkeypatch.setattr(apply_module, "pass_function", lambda config: record)
    with pytest.raises(UsageError, match="prune epochs=2 needs labelled training data"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)),
                     [DropLayersConfig(middle=1), PruneConfig(ratio=0.5, epochs=2), FinetuneConfig(epochs=1)])
    assert ran == []
    with pytest.raises(UsageError, match=r"distill needs labelled training data; .+ has no labels"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [DistillConfig(width=0.5)],
                     train=_unlabelled(digits[0]))
    with pytest.raises(UsageError, match="distill student=zoo:digits-cnn names a model to load, and no model loader"):
        apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [DistillConfig(student="zoo:digits-cnn")],
                     train=digits[0])
    assert ran == []


def _unlabelled(data):
    return dataclasses.replace(data, labels=None)


def test_layer_names_are_the_users_under_an_output_wrapper(bundle_of):
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(256, 64)
            self.out = nn.Linear(64, 10)

        def forward(self, x):
            logits = self.out(torch.relu(self.fc(x)))
            return logits, logits.softmax(-1)

    bundle = bundle_of(OutputSelector(TupleOut(), "[0]"), (1, 256))
    out = apply_passes(bundle, [LowRankConfig(rank=8, layers=("fc",)), PruneConfig(ratio=0.5, round_to=1)])
    lowrank, prune = out.provenance.passes
    assert lowrank.changes[0].layer == "fc"
    assert any(s.layer == "out" and "ignored" in s.reason for s in prune.skipped)
    assert out.module(out.example_inputs[0]).shape == (1, 10)
    with pytest.raises(UsageError, match="has no layer 'model.fc'"):
        apply_passes(bundle, [LowRankConfig(rank=8, layers=("model.fc",))])


def test_empty_pass_list_returns_an_equal_copy(bundle_of):
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    out = apply_passes(bundle, [])
    assert out.module is not bundle.module and out.provenance == bundle.provenance
    x = bundle.example_inputs[0]
    with torch.no_grad():
        assert torch.equal(out.module(x), bundle.module(x))


def test_drop_layers_then_prune_on_the_zoo_vit(bundle_of, onnx_diff):
    out = apply_passes(bundle_of(zoo.build("vit-tiny"), (1, 3, 32, 32)),
                       [DropLayersConfig(indices=(1, 2)), PruneConfig(ratio=0.5, heads=0.5)])
    assert len(out.module.blocks) == 2 and out.module.blocks[0].attn.num_heads == 2
    assert onnx_diff(out.module, out.example_inputs[0]) < 1e-4
