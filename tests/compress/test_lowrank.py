"""Low-rank SVD: exact parameter arithmetic, the break-even refusal, fidelity at full rank, export."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from edgepack.compress import LowRankConfig, apply_passes, parse_pass
from edgepack.compress.lowrank import break_even_rank, choose_rank, factorize_conv, factorize_linear


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(x)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_linear_512x10_at_rank_4_has_exact_parameter_count(bundle_of):
    bundle = bundle_of(Head(), (2, 512))
    out = apply_passes(bundle, [LowRankConfig(rank=4, min_params=0, layers=("fc",))])
    fc = out.module.fc
    assert isinstance(fc, nn.Sequential)
    assert (fc[0].in_features, fc[0].out_features, fc[0].bias) == (512, 4, None)
    assert (fc[1].in_features, fc[1].out_features) == (4, 10)
    assert _params(out.module) == 512 * 4 + 4 * 10 + 10
    record = out.provenance.passes[-1]
    assert (record.params_before, record.params_after) == (512 * 10 + 10, 512 * 4 + 4 * 10 + 10)
    assert record.macs_after < record.macs_before
    change = record.changes[0]
    assert (change.layer, change.type, change.rank, change.full_rank) == ("fc", "Linear", 4, 10)
    assert change.params == (512 * 10 + 10, 512 * 4 + 4 * 10 + 10)
    assert change.break_even_rank == pytest.approx(5120 / 522, abs=0.01) and 0 < change.energy_kept < 1
    assert len(change.spectrum) == 10 and change.spectrum[0] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(change.spectrum))
    assert bundle.module.fc.weight.shape == (10, 512)  # the input bundle is left alone


def test_break_even_rank_is_refused_and_one_below_is_taken(bundle_of):
    layer = nn.Linear(512, 10)
    assert break_even_rank(layer) == pytest.approx(5120 / 522)
    refused = apply_passes(bundle_of(Head(), (1, 512)), [LowRankConfig(rank=10, min_params=0, layers=("fc",))])
    assert isinstance(refused.module.fc, nn.Linear)
    skip = refused.provenance.passes[-1].skipped[0]
    assert (skip.layer, skip.rank, skip.full_rank) == ("fc", 10, 10) and "break-even" in skip.reason
    taken = apply_passes(bundle_of(Head(), (1, 512)), [LowRankConfig(rank=9, min_params=0, layers=("fc",))])
    assert _params(taken.module) == 512 * 9 + 9 * 10 + 10 < 5130

    square = nn.Linear(16, 16)  # break-even exactly 8: rank 8 holds 256 weights, the same as the layer
    assert break_even_rank(square) == 8
    conv = nn.Conv2d(8, 16, 3)
    assert break_even_rank(conv) == pytest.approx(16 * 8 * 9 / (8 * 9 + 16))


def test_conv_refusal_at_break_even(bundle_of):
    net = ConvNet()
    limit = break_even_rank(net.conv1)  # 13.09: rank 14 would not save anything, 13 does
    out = apply_passes(bundle_of(net, (1, 8, 8, 8)),
                       [LowRankConfig(rank=int(limit) + 1, min_params=0, layers=("conv1",))])
    assert isinstance(out.module.conv1, nn.Conv2d)
    out = apply_passes(bundle_of(ConvNet(), (1, 8, 8, 8)),
                       [LowRankConfig(rank=int(limit), min_params=0, layers=("conv1",))])
    first, second = out.module.conv1
    assert (first.out_channels, first.kernel_size, second.kernel_size) == (13, (3, 3), (1, 1))
    assert _params(out.module.conv1) == 13 * 8 * 9 + 16 * 13 + 16


def test_full_rank_factorization_reproduces_linear_and_conv():
    torch.manual_seed(0)
    linear = nn.Linear(24, 12)
    x = torch.randn(5, 24)
    with torch.no_grad():
        assert torch.allclose(factorize_linear(linear, 12)(x), linear(x), atol=1e-5)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1)
    xc = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        assert torch.allclose(factorize_conv(conv, 6)(xc), conv(xc), atol=1e-5)


def test_truncation_error_is_the_discarded_spectrum():
    torch.manual_seed(1)
    linear = nn.Linear(40, 30, bias=False)
    s = torch.linalg.svdvals(linear.weight.detach().double())
    approx = factorize_linear(linear, 7)
    with torch.no_grad():
        dense = (approx[1].weight @ approx[0].weight).double()
    error = torch.linalg.matrix_norm(linear.weight.detach().double() - dense) ** 2
    assert float(error) == pytest.approx(float((s[7:] ** 2).sum()), rel=1e-4)  # Eckart-Young


def test_rank_choice_by_ratio_energy_and_rank():
    s = torch.tensor([3.0, 2.0, 1.0])  # energy 9/14, 13/14, 14/14
    assert choose_rank(s, LowRankConfig(energy=0.6)) == 1
    assert choose_rank(s, LowRankConfig(energy=0.9)) == 2
    assert choose_rank(s, LowRankConfig(energy=0.95)) == 3
    assert choose_rank(s, LowRankConfig(energy=1.0)) == 3
    ten = torch.linspace(10, 1, 10)
    assert choose_rank(ten, LowRankConfig(ratio=0.5)) == 5  # ratio = fraction of the rank cut
    assert choose_rank(ten, LowRankConfig(ratio=0.8)) == 2
    assert choose_rank(ten, LowRankConfig(ratio=0.99)) == 1
    assert choose_rank(ten, LowRankConfig(rank=3)) == 3


def test_rank_sweep_parameter_counts(bundle_of):
    for rank in (1, 2, 4, 8):
        out = apply_passes(bundle_of(ConvNet(), (1, 8, 8, 8)),
                           [LowRankConfig(rank=rank, min_params=0, targets="all")])
        record = out.provenance.passes[-1]
        expected = {"conv1": rank * 8 * 9 + 16 * rank + 16, "conv2": rank * 16 * 9 + 32 * rank,
                    "fc1": 512 * rank + rank * 64 + 64}
        assert {c.layer: c.params[1] for c in record.changes} == expected
        assert [s.layer for s in record.skipped] == ["fc2"]  # the classifier, by default
        assert record.params_after == record.params_before - sum(
            c.params[0] - c.params[1] for c in record.changes)


def test_min_params_and_grouped_conv_are_skipped_with_reasons(bundle_of):
    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
            self.small = nn.Linear(64, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(self.small(self.dw(x).mean((2, 3))))

    out = apply_passes(bundle_of(Depthwise(), (1, 64, 4, 4)), [LowRankConfig(rank=2, targets="all")])
    reasons = {s.layer: s.reason for s in out.provenance.passes[-1].skipped}
    assert "groups=64" in reasons["dw"]
    assert "min_params=1024" in reasons["small"]
    assert reasons["out"] == "classifier (keep_classifier)"


def test_unknown_layer_lists_close_names(bundle_of):
    with pytest.raises(Exception) as info:
        apply_passes(bundle_of(ConvNet(), (1, 8, 8, 8)), [parse_pass("lowrank", "rank=2,layers=fc3,conv1")])
    assert info.type.__name__ == "UsageError"
    assert "'fc3'" in str(info.value) and "fc1" in str(info.value)


def test_factorized_model_exports_to_onnx(bundle_of, onnx_diff):
    out = apply_passes(bundle_of(ConvNet(), (1, 8, 8, 8)), [LowRankConfig(ratio=0.5, min_params=0, targets="all")])
    assert len(out.provenance.passes[-1].changes) == 3
    assert onnx_diff(out.module, out.example_inputs[0]) < 1e-4


def test_torch_transformer_layers_are_left_whole_with_reasons(bundle_of):
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            layer = nn.TransformerEncoderLayer(32, 4, 128, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            return self.head(self.encoder(x).mean(1))

    out = apply_passes(bundle_of(Encoder(), (2, 5, 32)), [LowRankConfig(rank=4, min_params=0)])
    record = out.provenance.passes[-1]
    assert record.changes == ()
    skipped = {s.layer: s.reason for s in record.skipped}
    assert "MultiheadAttention reads" in skipped["encoder.layers.0.self_attn.out_proj"]
    assert "TransformerEncoderLayer reads" in skipped["encoder.layers.0.linear1"]
    assert out.module(out.example_inputs[0]).shape == (2, 4)
