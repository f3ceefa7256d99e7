"""Shared fixtures: a CLI runner, a tiny user model file, and one real digits build reused across tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli import cli

TINY_MODELS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TupleOut(Tiny):
    def forward(self, x):
        logits = super().forward(x)
        return logits, logits.softmax(-1)


class DictOut(Tiny):
    def forward(self, x):
        return {"hidden": x.mean(), "logits": super().forward(x)}


class HFOutput:
    def __init__(self, logits):
        self.logits = logits


class HFStyle(Tiny):
    def forward(self, x):
        return HFOutput(super().forward(x))


class Histc(nn.Module):
    def forward(self, x):
        return torch.histc(x, 4).unsqueeze(0)


def build():
    torch.manual_seed(0)
    return Tiny(), torch.randn(1, 1, 8, 8)


def build_tuple():
    return TupleOut(), torch.randn(1, 1, 8, 8)


def build_dict():
    return DictOut(), torch.randn(1, 1, 8, 8)


def build_hf():
    return HFStyle(), torch.randn(1, 1, 8, 8)


def build_histc():
    return Histc(), torch.randn(1, 1, 8, 8)


def build_no_shape():
    return Tiny()


class TwoInputs(nn.Module):
    def forward(self, a, b):
        return a + b


def build_two_inputs():
    return TwoInputs(), (torch.randn(1, 4), torch.randn(1, 4))


def not_a_module():
    return 42
'''


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user_models") / "models.py"
    path.write_text(textwrap.dedent(TINY_MODELS))
    return path


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    """One real x86-cpu build of the trained digits CNN with a size budget and held-out accuracy."""
    out = tmp_path_factory.mktemp("digits_build") / "out"
    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", "x86-cpu", "--budget", "1MB",
                                      "--eval", "zoo", "--runs", "30", "--out", str(out), "--quiet"])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return out, report, result


@pytest.fixture(scope="session")
def digits_split():
    """The real digits split, loaded once per session."""
    from edgepack.data import digits

    return digits.load_split()


@pytest.fixture()
def teacher():
    """A fresh trained digits-cnn (99.4 % held-out); fresh per test because distillation puts it in eval mode."""
    from edgepack.models import zoo

    return zoo.build("digits-cnn")
