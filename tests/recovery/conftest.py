"""Shared fixtures: the real digits split and the trained zoo teacher, loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits_split():
    from edgepack.data import digits

    return digits.load_split()


@pytest.fixture()
def teacher():
    """A fresh trained digits-cnn (99.4 % held-out); fresh per test because distillation puts it in eval mode."""
    from edgepack.models import zoo

    return zoo.build("digits-cnn")


@pytest.fixture(autouse=True)
def _one_thread():
    # other suites run beside this one on 2 cores; one thread each is faster overall and deterministic
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
