"""Keep library chatter off the user's terminal: exporters and runtimes print from C++ (glog, TFLite INFO lines)
straight to file descriptors 1 and 2, and from Python as warnings. Stages run inside `captured()`; when one fails,
the tail of what it printed is kept for the error message."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Iterator


class Captured:
    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 5) -> str:
        return "\n".join(self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Redirect fds 1 and 2 (and Python warnings) into a temporary file for the duration of the block."""
    result = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no real file descriptors (embedded interpreters): capture nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield result
        return
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield result
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            result.text = sink.read().decode("utf-8", errors="replace")
