"""Error hierarchy. Each class carries the process exit code the CLI returns for it, and may carry evidence: the tail of
what native libraries printed while the failure happened (kept off the terminal, shown with EDGEPACK_DEBUG=1 and
saved in the report)."""

from __future__ import annotations

import difflib
import re
from typing import Iterable


class EdgepackError(Exception):
    """Base of every error edgepack raises on purpose."""

    exit_code = 1

    def __init__(self, message: str = "", *, evidence: str = "") -> None:
        super().__init__(message)
        # an instance attribute, so it survives pickling (BaseException pickles __dict__ beside args)
        self.evidence = evidence


class UsageError(EdgepackError):
    """Bad input from the user: a missing file, a malformed budget, an unknown name (exit 2)."""

    exit_code = 2


class MissingDependency(UsageError):
    """A runtime or library is not installed; the message names the pip extra that brings it (exit 2)."""


class ParityBelowFloor(EdgepackError):
    """An artifact computes too differently from eager PyTorch to ship (exit 3, like a failed budget)."""

    exit_code = 3


class ToolError(EdgepackError):
    """A library or external tool failed in a way the user did not cause (exit 1)."""

    exit_code = 1


EXIT_CODES = {
    0: "every budget met",
    1: "internal or tool failure",
    2: "bad input or missing dependency",
    3: "a budget failed (the report is still written)",
}

ELLIPSIS = "…"
# CSI sequences (colours, cursor moves) and OSC sequences (titles, links) that exporters write into their messages
_TERMINAL_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# where a single token longer than the limit (a path, a dotted name) may be cut when it has no space to cut at
_TOKEN_SEPARATORS = "/\\.,;:=)]}"


def strip_terminal_codes(text: str) -> str:
    """`text` without terminal colour and cursor codes."""
    return _TERMINAL_CODES.sub("", text)


def evidence_of(exc: BaseException) -> str:
    """The native output an exception carries (set by `quiet.captured()` or given to EdgepackError), or ""."""
    evidence = getattr(exc, "evidence", "")
    return evidence if isinstance(evidence, str) else ""


def attach_evidence(exc: BaseException, evidence: str) -> None:
    """Give `exc` the captured output unless it already carries some (the innermost capture is the closest)."""
    if not evidence or evidence_of(exc):
        return
    try:
        exc.evidence = evidence  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # exceptions with __slots__ or read-only attributes: nothing to attach to
        pass


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis saying it was cut.

    Never mid-word: the cut falls on the last space that fits. Only a single token longer than the limit (a long path
    or dotted name with no space in it) is cut inside, at its last separator (/ . , : ...) when it has one.
    """
    limit = max(limit, 2)
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    window = text[: room + 1]  # one more: a space right after the room is a boundary too
    space = window.rfind(" ")
    if space > 0:
        cut = text[:space]
    else:
        separator = max(window[:room].rfind(c) for c in _TOKEN_SEPARATORS)
        cut = text[: separator + 1] if separator > 0 else text[:room]
    return cut.rstrip(" ,;:-") + ELLIPSIS


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first meaningful line of an exception message (or of a text), without terminal codes, at most `limit`
    characters, shortened at a word boundary; for one-line user errors quoting upstream messages."""
    text = strip_terminal_codes(str(exc)).strip()
    for line in text.splitlines():
        line = " ".join(line.split())  # tabs and runs of spaces from formatted upstream output
        if line:
            return shorten(line, limit)
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


def did_you_mean(word: str, choices: Iterable[object], n: int = 3) -> str:
    """" (did you mean 'a' or 'b'?)" for the known names closest to a misspelt one; empty when none is close."""
    matches = difflib.get_close_matches(word, [str(c) for c in choices], n=n, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""

