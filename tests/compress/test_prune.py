"""Structured pruning through torch-pruning: channel counts, MACs, transformer heads, schedules, export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.compress import PruneConfig, apply_passes, parse_pass
from edgepack.compress.prune import per_step_ratio, schedule
from edgepack.errors import UsageError
from edgepack.models import zoo
from edgepack.models.architectures import DigitsCNN, TinyViT


def _conv_outs(module: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def test_resnet18_cifar_at_half_has_at_least_3x_fewer_macs(bundle_of):
    bundle = bundle_of(zoo.build("resnet18-cifar"), (1, 3, 32, 32))
    out = apply_passes(bundle, [parse_pass("prune", "0.5")])
    record = out.provenance.passes[-1]
    assert record.macs_before / record.macs_after >= 3.0
    assert record.params_before / record.params_after >= 3.0
    assert out.provenance.macs == record.macs_after and out.provenance.params == record.params_after
    assert out.module.fc.out_features == 10 and out.module.fc.in_features == 256
    assert out.module(out.example_inputs[0]).shape == (1, 10)


def test_cnn_channels_halved_classifier_kept(bundle_of):
    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5)])
    assert _conv_outs(out.module) == {"features.0": 8, "features.3": 16, "features.7": 32}
    assert (out.module.classifier.in_features, out.module.classifier.out_features) == (32, 10)
    record = out.provenance.passes[-1]
    change = {c.layer: c for c in record.changes}["features.7"]
    assert (change.type, change.in_features, change.out_features) == ("Conv2d", (32, 16), (64, 32))
    assert any(s.layer == "classifier" and "ignored" in s.reason for s in record.skipped)


def test_round_to_keeps_multiples_of_eight(bundle_of):
    out = apply_passes(bundle_of(DigitsCNN(width=1.5), (1, 1, 8, 8)), [PruneConfig(ratio=0.4, round_to=8)])
    # 24, 48, 96 channels keep 0.6 of each (14.4, 28.8, 57.6): floored, then down to multiples of 8
    assert _conv_outs(out.module) == {"features.0": 8, "features.3": 24, "features.7": 56}
    unrounded = apply_passes(bundle_of(DigitsCNN(width=1.5), (1, 1, 8, 8)), [PruneConfig(ratio=0.4, round_to=1)])
    assert _conv_outs(unrounded.module) == {"features.0": 14, "features.3": 28, "features.7": 57}


def test_taylor_needs_training_data(bundle_of):
    with pytest.raises(UsageError, match="taylor needs labelled training data"):
        apply_passes(bundle_of(DigitsCNN(), (1, 1, 8, 8)), [PruneConfig(ratio=0.5, importance="taylor")])


def test_taylor_and_global_importance_run(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    out = apply_passes(bundle, [PruneConfig(ratio=0.5, importance="taylor")], train=train, eval=test)
    assert _conv_outs(out.module) == {"features.0": 8, "features.3": 16, "features.7": 32}
    record = out.provenance.passes[-1]
    assert record.accuracy_before is not None and record.accuracy_before > 0.9
    assert all(p.grad is None for p in out.module.parameters())  # gradients used for scores are dropped
    glob = apply_passes(bundle, [PruneConfig(ratio=0.5, global_pruning=True, round_to=1, importance="l1")])
    before, after = sum(_conv_outs(bundle.module).values()), sum(_conv_outs(glob.module).values())
    assert after == pytest.approx(before * 0.5, abs=3)


def test_schedule_arithmetic():
    assert schedule(0.5, 1) == [0.0, 0.5]
    cumulative = schedule(0.5, 3)
    assert cumulative[0] == 0.0 and cumulative[-1] == pytest.approx(0.5)
    step = per_step_ratio(0.5, 3)
    assert step == pytest.approx(1 - 0.5 ** (1 / 3))  # 0.2063
    remaining = 1.0
    for k in range(1, 4):
        remaining *= 1 - step
        assert cumulative[k] == pytest.approx(1 - remaining)
    assert per_step_ratio(0.75, 2) == pytest.approx(0.5)


def test_iterative_pruning_reaches_the_target_and_finetunes_between_steps(bundle_of, digits):
    train, test = digits
    bundle = bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8))
    messages: list[str] = []
    out = apply_passes(bundle, [PruneConfig(ratio=0.75, steps=2, round_to=1, epochs=1)], train=train, eval=test,
                       progress=messages.append)
    assert _conv_outs(out.module) == {"features.0": 4, "features.3": 8, "features.7": 16}
    record = out.provenance.passes[-1]
    assert [(e.step, e.epoch) for e in record.training] == [(1, 1), (2, 1)]
    assert [m.split(":")[0] for m in messages] == ["pass 1/1", "prune step 1/2", "prune step 1 fine-tune epoch 1/1",
                                                   "prune step 2/2", "prune step 2 fine-tune epoch 1/1"]
    assert record.accuracy_after is not None
    assert any("0.5000 of the remaining" in n for n in record.notes)
    with pytest.raises(UsageError, match="training data"):
        apply_passes(bundle, [PruneConfig(ratio=0.5, epochs=1)])


def _vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(image_size=8, patch=2, in_channels=1, dim=48, depth=2, num_heads=4)


def test_vit_head_pruning_updates_num_heads(bundle_of, onnx_diff):
    out = apply_passes(bundle_of(_vit(), (2, 1, 8, 8)), [PruneConfig(ratio=0.5, heads=0.5)])
    for block in out.module.blocks:
        assert block.attn.num_heads == 2 and block.attn.head_dim == 12
        assert block.attn.qkv.out_features == 3 * 2 * 12
    assert out.module(out.example_inputs[0]).shape == (2, 10)
    heads = [c for c in out.provenance.passes[-1].changes if c.type == "attention"]
    assert [(c.num_heads, c.head_dim) for c in heads] == [((4, 2), (12, 12)), ((4, 2), (12, 12))]
    assert onnx_diff(out.module, out.example_inputs[0]) < 1e-4


def test_vit_head_dim_pruning_keeps_heads(bundle_of):
    out = apply_passes(bundle_of(_vit(), (2, 1, 8, 8)), [PruneConfig(ratio=0.5, round_to=1)])
    for block in out.module.blocks:
        assert (block.attn.num_heads, block.attn.head_dim) == (4, 6)
    assert out.module.patch_embed.out_channels == 24 and out.module.pos_embed.shape[-1] == 24
    assert out.module(out.example_inputs[0]).shape == (2, 10)


def test_heads_on_a_cnn_is_a_usage_error(bundle_of):
    with pytest.raises(UsageError, match="found none in DigitsCNN"):
        apply_passes(bundle_of(DigitsCNN(), (1, 1, 8, 8)), [PruneConfig(ratio=0.5, heads=0.5)])


def test_transformer_encoder_prunes_and_runs(bundle_of):
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(16, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(1))

    out = apply_passes(bundle_of(Encoder(), (2, 6, 16)), [PruneConfig(ratio=0.5)])
    assert out.module.encoder.layers[0].self_attn.embed_dim == 16
    assert out.module(out.example_inputs[0]).shape == (2, 5)


def test_unknown_ignore_name_is_refused(bundle_of):
    with pytest.raises(UsageError, match="did you mean features.3"):
        apply_passes(bundle_of(DigitsCNN(), (1, 1, 8, 8)), [PruneConfig(ratio=0.5, ignore=("features.33",))])


def test_pruned_cnn_exports_to_onnx(bundle_of, onnx_diff):
    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5)])
    assert onnx_diff(out.module, out.example_inputs[0]) < 1e-4


@pytest.mark.slow
def test_pruned_cnn_exports_to_executorch_and_litert(bundle_of, tmp_path):
    import numpy as np

    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [PruneConfig(ratio=0.5)])
    x = out.example_inputs[0]
    with torch.no_grad():
        ref = out.module(x).numpy()

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    program = to_edge_transform_and_lower(torch.export.export(out.module, (x,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    pte = tmp_path / "model.pte"
    pte.write_bytes(program.buffer)
    method = Runtime.get().load_program(str(pte)).load_method("forward")
    assert np.abs(method.execute([x])[0].numpy() - ref).max() < 1e-4

    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    tflite = tmp_path / "model.tflite"
    litert_torch.convert(out.module, (x,)).export(str(tflite))
    interpreter = Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.abs(got - ref).max() < 1e-4
