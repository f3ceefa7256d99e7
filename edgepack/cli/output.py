"""The one owner of the terminal: progress on stderr (stages, lines said inside them, warnings) and results on stdout.

Native libraries print straight to file descriptors 1 and 2, which `quiet.captured()` redirects while they run; so
progress writes to its own duplicate of stderr, taken before any capture, and still reaches the user mid-stage.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import IO, Any, Iterator

import click


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
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for header in (rows[0] if rows else {}):
            table.add_column(header)
        for row in rows:
            table.add_row(*row.values())
        # piped output gets a fixed width so the table is not squeezed into 80 columns
        Console(file=sys.stdout, highlight=False,
                width=None if sys.stdout.isatty() else 160).print(table)

    def json(self, data: Any) -> None:
        import json

        click.echo(data if isinstance(data, str) else json.dumps(data, indent=2))
