"""Run a fixed-shape artifact on any number of samples.

ExecuTorch `.pte` and LiteRT `.tflite` files are exported at one static shape (a batch-1 `.pte` refuses batch 2), but
parity and accuracy callers pass N samples at once. This splits the inputs into chunks of the exported batch size,
runs each chunk and concatenates the outputs along the batch axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgepack.data.dataset import feed_array
from edgepack.errors import UsageError


def check_inputs(inputs: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]], what: str) -> int:
    """Validate inputs against the exported shapes; return the number of samples (the common batch size)."""
    if len(inputs) != len(shapes):
        raise UsageError(f"{what} takes {len(shapes)} input(s), got {len(inputs)}")
    counts = set()
    for i, (x, shape) in enumerate(zip(inputs, shapes)):
        if tuple(x.shape[1:]) != tuple(shape[1:]):
            expected = ", ".join(map(str, shape[1:]))
            raise UsageError(f"{what} input {i} has shape {tuple(x.shape)}; expected (N, {expected})")
        counts.add(x.shape[0])
    if len(counts) != 1:
        raise UsageError(f"{what} inputs disagree on the number of samples: {sorted(counts)}")
    return counts.pop()


def run_in_chunks(
    run_one: Callable[[list[np.ndarray]], list[np.ndarray]],
    inputs: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, ...]],
    what: str,
) -> list[np.ndarray]:
    """Call `run_one` on chunks of exactly the exported batch size and concatenate the outputs.

    A last partial chunk is padded with zeros and its padded rows dropped: fine for inference graphs, where samples
    in a batch do not interact.
    """
    n = check_inputs(inputs, shapes, what)
    if n == 0:
        raise UsageError(f"{what} was given 0 samples; pass at least one")
    batch = int(shapes[0][0]) if shapes and len(shapes[0]) else 1
    arrays = [feed_array(x) for x in inputs]
    if n == batch:
        return run_one(arrays)
    pieces: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        chunk = [x[start:start + batch] for x in arrays]
        real = chunk[0].shape[0]
        if real < batch:
            chunk = [np.concatenate([c, np.zeros((batch - real, *c.shape[1:]), c.dtype)]) for c in chunk]
        pieces.append([o[:real] for o in run_one(chunk)])
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]
