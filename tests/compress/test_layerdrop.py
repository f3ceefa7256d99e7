"""Dropping transformer blocks: timm-style ViT, nn.TransformerEncoder, Hugging Face layout; refusals."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from edgepack.compress import DropLayersConfig, apply_passes, parse_pass
from edgepack.compress.layerdrop import middle_indices
from edgepack.errors import UsageError
from edgepack.models.architectures import DigitsCNN, TinyViT
from edgepack.records import BlocksDropped


def _vit(depth: int = 4) -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(image_size=8, patch=2, in_channels=1, dim=16, depth=depth, num_heads=2)


def test_middle_indices():
    assert middle_indices(4, 2) == [1, 2]
    assert middle_indices(5, 1) == [2]
    assert middle_indices(5, 2) == [1, 2]
    assert middle_indices(12, 4) == [4, 5, 6, 7]


def test_vit_middle_blocks_dropped_and_output_matches_the_kept_blocks(bundle_of):
    bundle = bundle_of(_vit(4), (2, 1, 8, 8))
    kept_blocks = [bundle.module.blocks[i] for i in (0, 3)]
    out = apply_passes(bundle, [parse_pass("drop-layers", "middle=2")])
    assert len(out.module.blocks) == 2 and len(bundle.module.blocks) == 4
    record = out.provenance.passes[-1]
    assert record.dropped == BlocksDropped(container="blocks", dropped=(1, 2), kept=(0, 3), blocks=(4, 2))
    assert record.changes == ()
    assert record.params_after < record.params_before and record.macs_after < record.macs_before
    # the shortened model is the original with blocks 1 and 2 skipped
    model, x = bundle.module, bundle.example_inputs[0]
    with torch.no_grad():
        h = model.patch_embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([model.cls_token.expand(2, -1, -1), h], dim=1) + model.pos_embed
        for block in kept_blocks:
            h = block(h)
        expected = model.head(model.norm(h)[:, 0])
        assert torch.allclose(out.module(x), expected, atol=1e-6)


def test_listed_indices(bundle_of):
    out = apply_passes(bundle_of(_vit(4), (1, 1, 8, 8)), [parse_pass("drop-layers", "3,0")])
    assert out.provenance.passes[-1].dropped.kept == (1, 2)
    assert out.module(out.example_inputs[0]).shape == (1, 10)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def test_transformer_encoder_layers(bundle_of):
    bundle = bundle_of(Encoder(), (2, 5, 16))
    out = apply_passes(bundle, [DropLayersConfig(indices=(1,))])
    enc = out.module.encoder
    assert len(enc.layers) == 2 and enc.num_layers == 2
    x = bundle.example_inputs[0]
    with torch.no_grad():
        expected = bundle.module.head(bundle.module.encoder.layers[2](bundle.module.encoder.layers[0](x)).mean(1))
        assert torch.allclose(out.module(x), expected, atol=1e-5)


def test_hugging_face_encoder_layer_and_config(bundle_of):
    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(num_hidden_layers=4)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
            self.classifier = nn.Linear(8, 2)

        def forward(self, x):
            for layer in self.encoder.layer:
                x = x + layer(x)
            return self.classifier(x)

    out = apply_passes(bundle_of(Bert(), (1, 8)), [DropLayersConfig(middle=1)])
    assert len(out.module.encoder.layer) == 3 and out.module.config.num_hidden_layers == 3
    assert out.provenance.passes[-1].dropped.container == "encoder.layer"


def test_cnn_is_refused(bundle_of):
    with pytest.raises(UsageError, match="layer dropping needs a transformer with a ModuleList of blocks.*"
                                         "found none in DigitsCNN"):
        apply_passes(bundle_of(DigitsCNN(), (1, 1, 8, 8)), [DropLayersConfig(middle=1)])


def test_out_of_range_and_all_blocks_are_refused(bundle_of):
    bundle = bundle_of(_vit(3), (1, 1, 8, 8))
    with pytest.raises(UsageError, match="index 3 is out of range: blocks has blocks 0..2"):
        apply_passes(bundle, [DropLayersConfig(indices=(3,))])
    with pytest.raises(UsageError, match="every block"):
        apply_passes(bundle, [DropLayersConfig(middle=3)])
    with pytest.raises(UsageError, match="every block"):
        apply_passes(bundle, [DropLayersConfig(indices=(0, 1, 2))])


def test_several_block_lists_need_a_container(bundle_of):
    class EncDec(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
            self.decoder = nn.Module()
            self.decoder.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x):
            for layer in [*self.encoder.layers, *self.decoder.layers]:
                x = layer(x)
            return x

    bundle = bundle_of(EncDec(), (1, 4))
    with pytest.raises(UsageError, match="several block lists .*encoder.layers, decoder.layers.*container="):
        apply_passes(bundle, [DropLayersConfig(indices=(0,))])
    with pytest.raises(UsageError, match="did you mean decoder.layers"):
        apply_passes(bundle, [DropLayersConfig(indices=(0,), container="decoder.layer")])
    out = apply_passes(bundle, [DropLayersConfig(indices=(0,), container="decoder.layers")])
    assert len(out.module.decoder.layers) == 1 and len(out.module.encoder.layers) == 2
