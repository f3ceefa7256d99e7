"""Keep library chatter off the user's terminal: exporters and runtimes print from C++ (glog, TFLite INFO lines)
straight to file descriptors 1 and 2, and from Python as warnings. Stages run inside `captured()`, which keeps the tail
of what was printed; when the block fails, that tail rides on the exception as its `evidence` (see errors.py):

    with captured() as cap:
        convert(model)
    log(cap.tail(lines=20))          # or, after a failure: errors.evidence_of(exc)
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
import warnings
from typing import IO, Iterator, Optional

from edgepack.errors import attach_evidence, one_line, strip_terminal_codes

EVIDENCE_LINES = 20  # what an exception escaping a captured block carries
KEEP_BYTES = 64 * 1024  # only the end of the output is read back: a chatty converter can print megabytes
KEEP_WARNINGS = 20
WARNINGS_IN_TAIL = 5  # warnings are mostly deprecation noise; the native output's end usually says what failed


class Captured:
    """What a `captured()` block printed: the end of its native output and its last Python warnings.

    Filled in when the block ends (the output is read back from a temporary file then), so read it after the block.
    """

    def __init__(self) -> None:
        self.text = ""  # the last KEEP_BYTES of fds 1 and 2, terminal codes removed
        self.truncated = False  # whether earlier output was dropped to keep only the tail
        self.warnings: tuple[str, ...] = ()  # "Category: message", the last KEEP_WARNINGS

    def tail(self, lines: int = EVIDENCE_LINES) -> str:
        """The last `lines` non-empty lines of output, then the last few warnings (lines starting "warning: ")."""
        if lines <= 0:
            return ""
        output = [line.rstrip() for line in self.text.splitlines() if line.strip()]
        return "\n".join(output[-lines:] + [f"warning: {w}" for w in self.warnings[-WARNINGS_IN_TAIL:]])


def _screen_text(raw: bytes) -> str:
    """Decoded output as a terminal would have shown it: colour codes gone, a progress bar's last redraw per line."""
    text = strip_terminal_codes(raw.decode("utf-8", errors="replace"))
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def _read_tail(sink: IO[bytes], result: Captured) -> None:
    size = sink.seek(0, os.SEEK_END)
    sink.seek(max(0, size - KEEP_BYTES))
    raw = sink.read()
    if size > KEEP_BYTES:
        result.truncated = True
        raw = raw.split(b"\n", 1)[-1]  # the first line read is cut at an arbitrary byte
    result.text = _screen_text(raw)


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Redirect fds 1 and 2 into a temporary file, and record Python warnings, for the duration of the block.

    An exception escaping the block gets `evidence` (the last EVIDENCE_LINES lines) unless it already carries some.
    """
    result = Captured()
    try:
        with _warnings_recorded(result), _output_redirected(result):
            yield result
    except Exception as exc:
        attach_evidence(exc, result.tail())
        raise


@contextlib.contextmanager
def _warnings_recorded(result: Captured) -> Iterator[None]:
    """Every warning is recorded (the last KEEP_WARNINGS), none reaches the terminal."""
    recent: collections.deque[str] = collections.deque(maxlen=KEEP_WARNINGS)

    def record(message: object, category: type[Warning], filename: str, lineno: int, file: object = None,
               line: Optional[str] = None) -> None:
        recent.append(f"{category.__name__}: {one_line(str(message))}")

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = record
        try:
            yield
        finally:
            result.warnings = tuple(recent)


@contextlib.contextmanager
def _output_redirected(result: Captured) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no real file descriptors (embedded interpreters): only warnings are captured
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            _read_tail(sink, result)
