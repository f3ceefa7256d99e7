"""How long-running work reports to whoever is watching: stages with a start and an end, lines said inside a stage
(epochs, pruning steps, distillation stages), and warnings. The CLI owns the terminal; library code only calls this."""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Progress(Protocol):
    def stage(self, text: str) -> contextlib.AbstractContextManager[None]: ...

    def say(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class SilentProgress:
    """For library use and tests: reports nothing."""

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        yield

    def say(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass
