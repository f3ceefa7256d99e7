"""Tiny models and data shared by the ExecuTorch and LiteRT runtime tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgepack.models.bundle import ModelBundle
from edgepack.records import Provenance

CALIBRATION_SAMPLES = 128  # what targets/android-arm64.yaml asks for


class WideNet(nn.Module):
    """Conv + depthwise + pointwise net on 8x8 inputs with ~84k weights, so int8 files are clearly smaller.

    With `unusual_ops`, it adds two ops XNNPACK does not take: avg_pool2d with ceil_mode (its partitioner logs a
    reason) and cumsum (no XNNPACK config at all).
    """

    def __init__(self, unusual_ops: bool = False) -> None:
        super().__init__()
        self.unusual_ops = unusual_ops
        self.stem = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(64, 128, 1), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(128, 64, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pw(self.dw(self.stem(x))))
        if self.unusual_ops:
            x = F.avg_pool2d(x, 3, 2, ceil_mode=True)
        y = self.fc(x.mean((2, 3)))
        return torch.cumsum(y, 1) if self.unusual_ops else y


class TransformerHead(nn.Module):
    """One pre-norm transformer block (attention, softmax, GELU MLP) over 16 tokens of width 32, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        from edgepack.models.architectures import Block

        self.block = Block(32, 4)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 16, 32)
        return self.head(self.block(x[:, 0]).mean(1))


def _make_bundle(module: nn.Module, shape: tuple[int, ...], name: str) -> ModelBundle:
    torch.manual_seed(0)
    example = torch.randn(shape)
    provenance = Provenance(source=f"tests:{name}", kind="python", model_name=name, output_taken="tensor",
                            params=sum(p.numel() for p in module.parameters()), macs=0, input_shapes=(shape,))
    return ModelBundle(module.eval(), (example,), ("input",), provenance)


def _eager(bundle: ModelBundle, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return bundle.module(torch.from_numpy(inputs)).numpy()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Other suites share this machine's two cores: eager references and calibration use one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_bundle():
    return _make_bundle


@pytest.fixture(scope="session")
def eager():
    return _eager


@pytest.fixture(scope="session")
def digits_split():
    from edgepack.data import digits

    return digits.load_split()


@pytest.fixture(scope="session")
def digits_bundle() -> ModelBundle:
    from edgepack.models.loader import ModelRequest, load_model

    bundle, _ = load_model(ModelRequest("zoo:digits-cnn"))
    return bundle


@pytest.fixture(scope="session")
def calibration(digits_split):
    return digits_split[0].take(CALIBRATION_SAMPLES)


@pytest.fixture(scope="session")
def wide_bundle() -> ModelBundle:
    torch.manual_seed(0)
    return _make_bundle(WideNet(), (1, 1, 8, 8), "wide-net")


@pytest.fixture(scope="session")
def unusual_ops_bundle() -> ModelBundle:
    torch.manual_seed(0)
    return _make_bundle(WideNet(unusual_ops=True), (1, 1, 8, 8), "unusual-ops-net")


@pytest.fixture(scope="session")
def transformer_bundle() -> ModelBundle:
    torch.manual_seed(0)
    return _make_bundle(TransformerHead(), (1, 1, 16, 32), "transformer-block")


@pytest.fixture(scope="session")
def token_data():
    """Random (N, 1, 16, 32) inputs for the transformer block: 100 to calibrate, 100 to compare."""
    from edgepack.data.dataset import ArrayDataset

    x = np.random.default_rng(0).standard_normal((200, 1, 16, 32)).astype(np.float32)
    return ArrayDataset("random tokens (calibration)", x[:100]), ArrayDataset("random tokens (eval)", x[100:])


class _ClampCustomOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.edgepack_test.clamp_unit(x) * 2


@pytest.fixture(scope="session")
def custom_op_bundle() -> ModelBundle:
    """A model calling a custom op with a fake kernel: torch.export captures it, but no edge runtime has a kernel."""
    if not hasattr(torch.ops.edgepack_test, "clamp_unit"):
        @torch.library.custom_op("edgepack_test::clamp_unit", mutates_args=())
        def clamp_unit(x: torch.Tensor) -> torch.Tensor:
            return x.clamp(-1, 1)

        @clamp_unit.register_fake
        def _(x: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(x)

    return _make_bundle(_ClampCustomOp(), (1, 4), "custom-op-net")
