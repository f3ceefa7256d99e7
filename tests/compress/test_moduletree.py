"""Layer lookup: names as the user sees them, close matches for typos, layers that cannot be swapped."""

from __future__ import annotations

import pytest
from torch import nn

from edgepack.compress import moduletree
from edgepack.errors import UsageError
from edgepack.models.architectures import DigitsCNN
from edgepack.models.outputs import OutputSelector


def test_classifier_is_the_last_linear():
    assert moduletree.classifier_name(DigitsCNN()) == "classifier"
    assert moduletree.classifier_name(nn.Sequential(nn.Conv2d(1, 2, 1))) is None


def test_select_leaves_out_classifier_and_ignored_layers():
    model = DigitsCNN()
    chosen, left_out = moduletree.select(model, (nn.Conv2d, nn.Linear), layers=(), keep_classifier=True,
                                         option="test", ignore=("features.3",))
    assert [n for n, _ in chosen] == ["features.0", "features.7"]
    assert [(s.layer, s.type, s.reason) for s in left_out] == [
        ("features.3", "Conv2d", "ignored"), ("classifier", "Linear", "classifier (keep_classifier)")]
    chosen, _ = moduletree.select(model, (nn.Conv2d, nn.Linear), layers=("classifier", "features"),
                                  keep_classifier=True, option="test")
    assert [n for n, _ in chosen] == ["features.0", "features.3", "features.7", "classifier"]


def test_unknown_names_list_close_ones_or_some_layers():
    with pytest.raises(UsageError, match="DigitsCNN has no layer 'clasifier'; did you mean classifier"):
        moduletree.resolve(DigitsCNN(), ["clasifier"], "--lowrank layers")
    with pytest.raises(UsageError, match="its layers include features.0, features.3"):
        moduletree.resolve(DigitsCNN(), ["zzz"], "--lowrank layers")


def test_user_root_unwraps_the_output_selector():
    inner = DigitsCNN()
    assert moduletree.user_root(OutputSelector(inner, "[0]")) is inner
    assert moduletree.user_root(inner) is inner


def test_replacement_refused_inside_torch_attention():
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    root = nn.Sequential(layer)
    assert "MultiheadAttention" in moduletree.replacement_refused(root, "0.self_attn.out_proj")
    assert "TransformerEncoderLayer" in moduletree.replacement_refused(root, "0.linear1")
    assert moduletree.replacement_refused(DigitsCNN(), "classifier") is None
