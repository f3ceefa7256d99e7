"""Error hierarchy. Each class carries the process exit code the CLI returns for it."""

from __future__ import annotations


class EdgepackError(Exception):
    """Base of every error edgepack raises on purpose."""

    exit_code = 1


class UsageError(EdgepackError):
    """Bad input from the user: a missing file, a malformed budget, an unknown name (exit 2)."""

    exit_code = 2


class MissingDependency(UsageError):
    """A runtime or library is not installed; the message names the pip extra that brings it (exit 2)."""


class ToolError(EdgepackError):
    """A library or external tool failed in a way the user did not cause (exit 1)."""

    exit_code = 1


class BudgetExceeded(EdgepackError):
    """At least one budget failed; the report was still written (exit 3)."""

    exit_code = 3


EXIT_CODES = {
    0: "every budget met",
    1: "internal or tool failure",
    2: "bad input or missing dependency",
    3: "a budget failed (the report is still written)",
}


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception message, for one-line user errors."""
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return type(exc).__name__
