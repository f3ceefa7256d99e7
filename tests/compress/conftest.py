"""Shared helpers for the compression pass tests: tiny models, bundles, digits subsets, an ONNX round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgepack.data.dataset import ArrayDataset
from edgepack.models.bundle import ModelBundle
from edgepack.models.loader import count_params_and_macs
from edgepack.records import Provenance


@pytest.fixture(autouse=True)
def one_thread():
    """Other suites share this machine's two cores: one intra-op thread keeps the timings steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_bundle(module: torch.nn.Module, shape: tuple[int, ...], seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    x = torch.randn(*shape)
    module = module.eval()
    params, macs = count_params_and_macs(module, (x,))
    provenance = Provenance(source="test", kind="python", model_name=type(module).__name__, output_taken="tensor",
                            params=params, macs=macs, input_shapes=(tuple(shape),))
    return ModelBundle(module, (x,), ("input",), provenance)


@pytest.fixture(scope="session")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    """Small, fixed subsets of the real digits split: enough signal for accuracy to move, quick to train on."""
    from edgepack.data.digits import load_split

    train, test = load_split()
    rng = np.random.default_rng(0)
    pick_train, pick_test = rng.permutation(len(train))[:400], rng.permutation(len(test))[:200]
    return (ArrayDataset(train.name, train.inputs[pick_train], train.labels[pick_train]),
            ArrayDataset(test.name, test.inputs[pick_test], test.labels[pick_test]))


def onnx_max_diff(module: torch.nn.Module, x: torch.Tensor, out_dir: Path) -> float:
    """Export with the dynamo exporter, run in ONNX Runtime, return the largest difference from eager."""
    import onnxruntime as ort

    path = out_dir / "model.onnx"
    module = module.eval()
    torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = module(x).numpy()
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max())


@pytest.fixture
def bundle_of():
    return make_bundle


@pytest.fixture
def onnx_diff(tmp_path):
    return lambda module, x: onnx_max_diff(module, x, tmp_path)
