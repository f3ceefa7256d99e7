"""Running fixed-shape artifacts on any number of samples: chunking, padding, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import UsageError
from edgepack.runtimes._fixed_batch import run_in_chunks


def doubling(batch: int):
    """A stand-in for a static-shape program: refuses any batch but its own, returns 2x and the row sums."""
    calls = []

    def run_one(arrays):
        (x,) = arrays
        assert x.shape[0] == batch and x.dtype == np.float32
        calls.append(x.shape[0])
        return [2 * x, x.reshape(batch, -1).sum(1, keepdims=True)]

    return run_one, calls


@pytest.mark.parametrize("batch, n", [(1, 1), (1, 7), (4, 8), (4, 10), (4, 3)])
def test_chunks_cover_every_sample_once(batch, n):
    run_one, calls = doubling(batch)
    x = np.arange(n * 6, dtype=np.float64).reshape(n, 2, 3)  # float64 in: converted to float32
    out, sums = run_in_chunks(run_one, [x], [(batch, 2, 3)], "m.pte")
    assert out.shape == (n, 2, 3) and np.array_equal(out, 2 * x.astype(np.float32))
    assert np.array_equal(sums[:, 0], x.reshape(n, -1).sum(1).astype(np.float32))
    assert len(calls) == -(-n // batch)  # zero-padded last chunk, padded rows dropped


def test_wrong_sample_shape_names_the_expected_one():
    run_one, _ = doubling(1)
    with pytest.raises(UsageError, match=r"has shape \(3, 4\); expected \(N, 2, 3\)"):
        run_in_chunks(run_one, [np.zeros((3, 4), np.float32)], [(1, 2, 3)], "m.pte")


def test_input_count_and_sample_counts_must_agree():
    run_one, _ = doubling(1)
    with pytest.raises(UsageError, match="takes 1 input"):
        run_in_chunks(run_one, [np.zeros((1, 2)), np.zeros((1, 2))], [(1, 2)], "m")
    with pytest.raises(UsageError, match="disagree"):
        run_in_chunks(run_one, [np.zeros((2, 2)), np.zeros((3, 2))], [(1, 2), (1, 2)], "m")
    with pytest.raises(UsageError, match="0 samples"):
        run_in_chunks(run_one, [np.zeros((0, 2))], [(1, 2)], "m")
