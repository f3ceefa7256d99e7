"""Data loaders on files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgepack.data import digits
from edgepack.data.loaders import check_labels, float_input, load_dataset, stratified_subset
from edgepack.errors import UsageError


def test_digits_split_is_fixed_and_preprocessed():
    train, test = digits.load_split()
    assert len(train) == 1437 and len(test) == 360
    assert train.inputs.shape[1:] == (1, 8, 8) and train.inputs.dtype == np.float32
    assert -1.0 <= train.inputs.min() and train.inputs.max() <= 1.0
    assert np.bincount(test.labels).min() >= 35  # stratified
    again, _ = digits.load_split()
    assert np.array_equal(train.labels, again.labels)


def test_npz_with_alternative_key_names(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.ones((6, 1, 8, 8), np.float64), labels=np.arange(6))
    data = load_dataset(str(path), float_input((1, 1, 8, 8)), option="--eval")
    assert data.inputs.dtype == np.float32 and data.labels.tolist() == list(range(6))


def test_a_one_input_model_takes_the_only_array_besides_the_labels_whatever_its_name(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, tokens=np.full((4, 1, 8, 8), 2.0), y=np.arange(4))  # named after forward's parameter
    data = load_dataset(str(path), float_input((1, 1, 8, 8)), option="--eval")
    assert data.inputs.shape == (4, 1, 8, 8) and np.all(data.inputs == 2.0) and data.labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("arrays,fragment", [
    ({"z": np.zeros((2, 1, 8, 8)), "w": np.zeros((2, 1, 8, 8))}, "no input array"),
    ({"x": np.zeros((2, 1, 8, 8)), "y": np.zeros(3, int)}, "labels 'y' must hold one row per sample (2)"),
    ({"x": np.zeros((2, 1, 8, 8)), "y": np.array(["a", "b"])}, "as integers (classes) or floats"),
    ({"x": np.zeros((2, 1, 4, 4))}, "samples have shape (1, 4, 4)"),
    ({"x": np.zeros((0, 1, 8, 8))}, "the dataset is empty"),
])
def test_npz_errors(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError) as err:
        load_dataset(str(path), float_input((1, 1, 8, 8)), option="--eval")
    assert fragment in str(err.value)


def test_image_folder(tmp_path):
    for label, value in (("cat", 0), ("dog", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(str(tmp_path), float_input((1, 3, 8, 8)), option="--eval", preprocessing={"mean": [0.5] * 3,
                                                                                      "std": [0.5] * 3})
    assert data.inputs.shape == (6, 3, 8, 8)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.allclose(data.inputs[0], -1.0) and np.allclose(data.inputs[-1], 1.0)
    assert data.preprocessing["classes"] == ["cat", "dog"]


def test_empty_image_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(UsageError, match="no images found"):
        load_dataset(str(tmp_path), float_input((1, 3, 8, 8)), option="--calibration")


def test_stratified_subset_is_balanced_and_seeded():
    _, test = digits.load_split()
    sub = stratified_subset(test, 50, seed=3)
    assert len(sub) == 50 and np.bincount(sub.labels, minlength=10).tolist() == [5] * 10
    assert np.array_equal(sub.inputs, stratified_subset(test, 50, seed=3).inputs)
    assert not np.array_equal(sub.inputs, stratified_subset(test, 50, seed=4).inputs)


def test_label_range_check():
    _, test = digits.load_split()
    check_labels(test, "classification", (1, 10), "--eval")
    with pytest.raises(UsageError, match="labels span 0..9 but the model has 5 classes"):
        check_labels(test, "classification", (1, 5), "--eval")
