"""The result table fits the terminal it is printed on, and every build ends with one verdict line."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest

from edgepack.cli.output import Output

ROWS = [
    {"artifact": "executorch-int8", "precision": "int8", "size": "54.18 KB", "p50": "0.045 ms", "p90": "0.045 ms",
     "peak memory": "4.59 MB", "max abs diff": "4.83e-03", "parity": "100.00% top-1", "accuracy": "97.50%",
     "budgets": "pass"},
    {"artifact": "litert-fp32 (reference)", "precision": "fp32", "size": "46.97 KB", "p50": "0.011 ms",
     "p90": "0.012 ms", "peak memory": "3.54 MB", "max abs diff": "1.79e-07", "parity": "100.00% top-1",
     "accuracy": "97.78%", "budgets": "—"},
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [80, 100, 120, 200])
def test_the_table_fits_the_terminal_and_cuts_no_header_or_figure(monkeypatch, columns: int) -> None:
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((columns, 24)))
    Output(quiet=True).table("model → target", ROWS)
    text = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue())  # colour codes take no columns
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines), [line for line in lines if len(line) > columns]
    assert "…" not in text  # nothing truncated
    for row in ROWS:  # the figures people look at are there at every width
        for key in ("artifact", "size", "p50", "parity", "accuracy", "budgets"):
            assert row[key] in text, (columns, key)
    if columns >= 200:
        assert "max abs diff" in text  # a wide terminal gets every column
