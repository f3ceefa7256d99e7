"""The one owner of the terminal: progress on stderr (stages, lines said inside them, warnings) and results on stdout.

Native libraries print straight to file descriptors 1 and 2, which `quiet.captured()` redirects while they run; so
progress writes to its own duplicate of stderr, taken before any capture, and still reaches the user mid-stage.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from typing import IO, Any, Iterator

import click


PIPED_WIDTH = 160
# the result table's columns, least needed first: dropped one by one until the table fits the terminal
DROPPED_FIRST = ("max abs diff", "p90", "peak memory", "precision")


def _table_width(rows: list[dict[str, str]], columns: list[str]) -> int:
    """Characters a rich table of these columns needs: each column's widest cell plus borders and padding."""
    return sum(max([len(c)] + [len(r[c]) for r in rows]) + 3 for c in columns) + 1


def _wrapped(items: list[str], width: int) -> list[str]:
    """Items joined by " · " into lines of at most `width` characters, never splitting an item."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += " · " + item
        else:
            lines.append(item)
    return lines


def _uncaptured_stderr() -> IO[str]:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stderr (tests): nothing to dodge
        return sys.stderr
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


class Output:
    """Progress (a `progress.Progress`) and result printing for one command."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(file=_uncaptured_stderr(), highlight=False)
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        t0 = time.perf_counter()
        with self.console.status(f"{text} …"):
            yield
        self.console.print(f"[green]✓[/] {text} [dim]({time.perf_counter() - t0:.1f} s, "
                           f"total {time.perf_counter() - self.start:.1f} s)[/]")

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  [dim]{text}[/]")

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {text}")

    def result(self, text: str) -> None:
        click.echo(text)

    def failure(self, text: str) -> None:
        click.echo(text, err=True)

    def table(self, title: str, rows: list[dict[str, str]]) -> None:
        """The rows as a table that fits the terminal: columns of least interest are dropped first, and below that
        one block of lines per row, so no header or figure is ever cut."""
        from rich.console import Console
        from rich.table import Table

        # piped output gets a fixed width so the table is not squeezed into 80 columns
        width = shutil.get_terminal_size((PIPED_WIDTH, 24)).columns if sys.stdout.isatty() else PIPED_WIDTH
        columns = list(rows[0]) if rows else []
        for optional in DROPPED_FIRST:
            if _table_width(rows, columns) <= width:
                break
            if optional in columns:
                columns.remove(optional)
        console = Console(file=sys.stdout, highlight=False, width=width)
        if _table_width(rows, columns) > width:
            console.print(title)
            for row in rows:
                first, *rest = list(row)
                console.print(f"  {row[first]}")
                for line in _wrapped([f"{key} {row[key]}" for key in rest], width - 4):
                    console.print(f"    {line}", soft_wrap=True)
            return
        table = Table(title=title)
        for header in columns:
            table.add_column(header, no_wrap=True)
        for row in rows:
            table.add_row(*(row[c] for c in columns))
        console.print(table)

    def json(self, data: Any) -> None:
        import json

        click.echo(data if isinstance(data, str) else json.dumps(data, indent=2))
