"""Students derived from the teacher by width (torch-pruning at ratio 1 - width), and teacher assistants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.compress.student import assistant_for, count_params, derive_student
from edgepack.errors import UsageError
from edgepack.models import zoo

EXAMPLE = (torch.zeros(1, 1, 8, 8),)


def test_derive_student_halves_channels(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = derive_student(teacher, EXAMPLE, width=0.5)
    convs = [m for m in student.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32]
    assert [c.in_channels for c in convs] == [1, 8, 16]
    assert (student.classifier.in_features, student.classifier.out_features) == (32, 10)
    assert student(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    # the teacher is untouched
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert count_params(student) < count_params(teacher) / 3


def test_derive_student_keeps_the_strongest_teacher_filters(teacher):
    student = derive_student(teacher, EXAMPLE, width=0.5)
    t, s = teacher.features[0].weight, student.features[0].weight
    # every kept filter is one of the teacher's filters, copied as is
    assert all(any(torch.equal(f, g) for g in t) for f in s)


def test_derive_student_from_a_vit_narrows_heads(digits_split):
    vit = zoo.build("digits-vit")
    student = derive_student(vit, EXAMPLE, width=0.5)
    attn = student.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, attn.qkv.in_features) == (4, 6, 24)
    assert student.cls_token.shape[-1] == 24
    assert student.head.out_features == 10
    assert student(torch.from_numpy(digits_split[1].inputs[:5])).shape == (5, 10)


def test_unknown_ignored_layer_lists_close_names(teacher):
    with pytest.raises(UsageError, match="no layer 'classifer'; did you mean classifier"):
        derive_student(teacher, EXAMPLE, 0.5, ignored_layers=["classifer"])


def test_assistant_has_the_fewest_params_at_or_over_the_target(teacher):
    target = count_params(teacher) // 2
    assistant, width = assistant_for(teacher, EXAMPLE, target)
    assert count_params(assistant) >= target
    assert 0 < width < 1
    narrower = derive_student(teacher, EXAMPLE, width * 0.9)
    assert count_params(narrower) < count_params(assistant)
