"""NdLinear: the Kronecker-structured layer, its exact initialisation, the pass, export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.compress import NdLinearConfig, apply_passes
from edgepack.compress.ndlinear_layer import NdLinear, factor_pair, from_linear, nearest_kronecker
from edgepack.errors import UsageError
from edgepack.models.architectures import TinyViT


def test_factor_pairs_are_balanced():
    assert factor_pair(48) == (6, 8)
    assert factor_pair(144) == (12, 12)
    assert factor_pair(96) == (8, 12)
    assert factor_pair(4) == (2, 2)
    assert factor_pair(7) is None and factor_pair(2) is None


def test_layer_computes_the_kronecker_product_map():
    torch.manual_seed(0)
    layer = NdLinear((3, 4), (5, 2))
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 7, 12)  # extra leading axes pass through
    dense = torch.kron(layer.outer.weight, layer.inner.weight)
    assert dense.shape == (10, 12)
    with torch.no_grad():
        assert torch.allclose(layer(x), x @ dense.T + layer.bias, atol=1e-5)
    assert torch.equal(layer.weight_matrix(), dense)


def test_exact_kronecker_weight_is_recovered_exactly():
    torch.manual_seed(1)
    a, b = torch.randn(4, 3), torch.randn(5, 6)  # W = A (x) B maps 3*6 -> 4*5
    linear = nn.Linear(18, 20)
    with torch.no_grad():
        linear.weight.copy_(torch.kron(a, b))
    found_a, found_b, fit = nearest_kronecker(linear.weight, (3, 6), (4, 5))
    assert fit == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(torch.kron(found_a, found_b).float(), linear.weight, atol=1e-5)
    new, fit = from_linear(linear, (3, 6), (4, 5))
    x = torch.randn(8, 18)
    with torch.no_grad():
        assert torch.allclose(new(x), linear(x), atol=1e-5)


def test_fit_of_a_general_weight_is_the_top_singular_share():
    torch.manual_seed(2)
    w = torch.randn(6, 8)
    _, _, fit = nearest_kronecker(w, (2, 4), (2, 3))
    r = w.double().reshape(2, 3, 2, 4).permute(0, 2, 1, 3).reshape(4, 12)
    s = torch.linalg.svdvals(r)
    assert fit == pytest.approx(float(s[0] ** 2 / (s**2).sum()))
    assert 0 < fit < 1


def _vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(image_size=8, patch=2, in_channels=1, dim=48, depth=1, num_heads=4)


def test_pass_on_a_vit_replaces_linears_and_exports(bundle_of, onnx_diff):
    out = apply_passes(bundle_of(_vit(), (2, 1, 8, 8)), [NdLinearConfig()])
    block = out.module.blocks[0]
    assert isinstance(block.attn.qkv, NdLinear) and block.attn.qkv.in_shape == (6, 8)
    assert block.attn.qkv.out_shape == (12, 12)
    assert isinstance(out.module.head, nn.Linear)  # the classifier is kept
    record = out.provenance.passes[-1]
    changes = {c.layer: c for c in record.changes}
    qkv = changes["blocks.0.attn.qkv"]
    assert (qkv.in_shape, qkv.out_shape) == ((6, 8), (12, 12)) and 0 < qkv.kronecker_fit < 1
    params = {name: c.params for name, c in changes.items()}
    assert params["blocks.0.attn.qkv"] == (48 * 144 + 144, 12 * 6 + 12 * 8 + 144)
    assert params["blocks.0.mlp.fc1"] == (48 * 96 + 96, 8 * 6 + 12 * 8 + 96)
    assert record.params_before - record.params_after == sum(old - new for old, new in params.values())
    assert 0 < record.macs_after < record.macs_before
    assert any("not fine-tuned" in n for n in record.notes)
    assert onnx_diff(out.module, out.example_inputs[0]) < 1e-4


def test_prime_sizes_are_skipped_with_reason(bundle_of):
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.Linear(64, 4))
    out = apply_passes(bundle_of(model, (1, 13)), [NdLinearConfig(min_params=0)])
    record = out.provenance.passes[-1]
    assert [c.layer for c in record.changes] == ["2"]
    reasons = {s.layer: s.reason for s in record.skipped}
    assert "13 features have no factorization" in reasons["0"]
    assert reasons["3"] == "classifier (keep_classifier)"


def test_finetuning_needs_data_and_recovers_accuracy(bundle_of, digits):
    from edgepack.models import zoo

    with pytest.raises(UsageError, match="training data"):
        apply_passes(bundle_of(_vit(), (1, 1, 8, 8)), [NdLinearConfig(epochs=1)])
    train, test = digits
    bundle = bundle_of(zoo.build("digits-vit"), (1, 1, 8, 8))
    out = apply_passes(bundle, [NdLinearConfig(layers=("blocks.0.mlp",), epochs=2, lr=3e-3)], train=train, eval=test)
    record = out.provenance.passes[-1]
    assert [c.layer for c in record.changes] == ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert [(e.epoch, e.step) for e in record.training] == [(1, None), (2, None)]
    assert record.accuracy_before > 0.9 and record.accuracy_after is not None
