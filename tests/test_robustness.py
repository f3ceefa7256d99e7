"""Accuracy under seeded corruptions: severities hurt in order, sessions and eager models are checked alike."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from edgepack.errors import UsageError
from edgepack.records import CorruptionResult, Robustness
from edgepack.robustness import CORRUPTIONS, corrupt, eager_predict, robustness, session_predict


def test_accuracy_decreases_with_severity(digits_split, teacher):
    _, test = digits_split
    rows = robustness(eager_predict(teacher), test, seed=0)
    assert all(isinstance(r, CorruptionResult) for r in rows)
    clean = rows[0]
    assert (clean.corruption, clean.severity, clean.drop) == ("clean", 0, 0.0)
    assert clean.top1 == pytest.approx(0.9944, abs=1e-3)
    assert {r.corruption for r in rows[1:]} == set(CORRUPTIONS)
    for name in CORRUPTIONS:
        top1 = [r.top1 for r in rows if r.corruption == name]
        assert [r.severity for r in rows if r.corruption == name] == [1, 2, 3]
        assert top1[2] < top1[0] <= clean.top1, (name, top1)
        assert all(b <= a + 0.01 for a, b in itertools.pairwise(top1)), (name, top1)  # non-increasing, up to noise
        assert top1[2] < clean.top1 - 0.2, (name, top1)  # the strongest level really hurts
    for r in rows:
        assert r.drop == pytest.approx(clean.top1 - r.top1)
    # rows are records: they survive the report's JSON round trip
    assert Robustness.from_dict(Robustness("eager", test.name, rows).to_dict()).rows == rows


def test_a_session_is_checked_like_the_eager_model(digits_split, teacher):
    """Artifacts are checked through their session (list of float32 arrays -> list of outputs)."""
    _, test = digits_split
    small = test.take(60)
    eager = eager_predict(teacher)
    calls = []

    def session(arrays):
        calls.append(arrays[0].shape)
        assert arrays[0].dtype == np.float32
        return [eager(arrays[0])]

    assert robustness(session_predict(session), small, corruptions=["brightness"]) == \
        robustness(eager, small, corruptions=["brightness"])
    assert set(calls) == {(60, 1, 8, 8)}  # edgepack sessions take any batch: one call per corrupted copy
    calls.clear()
    robustness(session_predict(session, batch_size=1), small, corruptions=["brightness"], severities=(1,))
    assert set(calls) == {(1, 1, 8, 8)} and len(calls) == 2 * 60


def test_corruptions_are_seeded_and_stay_in_the_value_range(digits_split):
    _, test = digits_split
    x = test.inputs
    lo, hi = float(x.min()), float(x.max())
    noisy = corrupt(x, "gaussian_noise", 2, seed=3)
    assert np.array_equal(noisy, corrupt(x, "gaussian_noise", 2, seed=3))
    assert not np.array_equal(noisy, corrupt(x, "gaussian_noise", 2, seed=4))
    for name in CORRUPTIONS:
        out = corrupt(x, name, 3)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= lo and out.max() <= hi
    flat = np.full((2, 1, 8, 8), 0.25, dtype=np.float32)
    assert np.allclose(corrupt(flat, "gaussian_blur", 3, value_range=(-1, 1)), 0.25)  # blur keeps flat images
    assert np.allclose(corrupt(flat, "brightness", 1, value_range=(-1, 1)), 0.25 + 0.1 * 2)
    # blur acts on H and W only: channels are not mixed
    two = np.stack([np.zeros((8, 8)), np.ones((8, 8))])[None].astype(np.float32)
    assert np.array_equal(corrupt(two, "box_blur", 2, value_range=(0, 1)), two)


@pytest.mark.parametrize("name, severity", [("snow", 1), ("brightness", 0), ("brightness", 4), ("gaussian_blur", True)])
def test_bad_corruption_requests_are_usage_errors(name, severity):
    with pytest.raises(UsageError):
        corrupt(np.zeros((1, 1, 8, 8), np.float32), name, severity)


def test_blur_needs_images_and_robustness_needs_labels(digits_split, teacher):
    _, test = digits_split
    with pytest.raises(UsageError, match="4-D image"):
        corrupt(np.zeros((4, 64), np.float32), "gaussian_blur", 1)
    vectors = dataclasses.replace(test, arrays=test.inputs.reshape(len(test), 64))
    rows = robustness(lambda x: eager_predict(teacher)(x.reshape(-1, 1, 8, 8)), vectors)
    assert {r.corruption for r in rows} == {"clean", "gaussian_noise", "brightness"}  # blurs skipped
    with pytest.raises(UsageError, match="no labels"):
        robustness(eager_predict(teacher), dataclasses.replace(test, labels=None))
