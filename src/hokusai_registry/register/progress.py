"""Progress bars for large transfers, a status line for waits and one-off notes, via rich; small files
pass silently."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, runtime_checkable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.status import Status

from hokusai_registry.register.client import Meter, NullMeter

MIN_BAR_BYTES = 4 * 1024 * 1024
PLAIN_STATUS_SECONDS = 30.0  # how often a status line is repeated when stderr is not a terminal (a CI log)


class TransferProgress(Protocol):
    def transfer(self, action: str, path: str, size: int) -> AbstractContextManager[Meter]: ...


class StatusLine(Protocol):
    """One line saying what is being waited for; ``update`` replaces its text."""

    def update(self, text: str) -> None: ...


@runtime_checkable
class ShowsStatus(Protocol):
    """A progress that can also show a status line (``Bars`` and ``Quiet`` can)."""

    def status(self, text: str) -> AbstractContextManager[StatusLine]: ...


@runtime_checkable
class ShowsNotes(Protocol):
    """A progress that can also print a line once, e.g. which key a registration runs as (``Bars`` can)."""

    def note(self, text: str, *, warning: bool = False) -> None: ...


def note(progress: TransferProgress, text: str, *, warning: bool = False) -> None:
    """``progress.note(text)``, or nothing for a progress without notes (a caller's own, or ``Quiet``)."""
    if isinstance(progress, ShowsNotes):
        progress.note(text, warning=warning)


class _NoLine:
    def update(self, text: str) -> None:
        pass


@contextmanager
def _no_status(text: str) -> Iterator[StatusLine]:
    yield _NoLine()


def status(progress: TransferProgress, text: str) -> AbstractContextManager[StatusLine]:
    """``progress.status(text)``, or a silent line for a caller's progress that only draws transfers
    (``TransferProgress`` had no status line at first, and such callers must keep working)."""
    return progress.status(text) if isinstance(progress, ShowsStatus) else _no_status(text)


class Quiet:
    @contextmanager
    def transfer(self, action: str, path: str, size: int) -> Iterator[Meter]:
        yield NullMeter()

    def status(self, text: str) -> AbstractContextManager[StatusLine]:
        return _no_status(text)


class _TaskMeter:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def restart(self) -> None:
        self._progress.reset(self._task)

    def advance(self, size: int) -> None:
        self._progress.advance(self._task, size)


class Bars:
    """One bar per file of at least ``min_bytes``; on a non-terminal the final state is printed once."""

    def __init__(self, console: Console, min_bytes: int = MIN_BAR_BYTES) -> None:
        self.console, self.min_bytes = console, min_bytes

    def note(self, text: str, *, warning: bool = False) -> None:
        """``text`` as one line (plain text: markup in it is shown as is), a warning in yellow."""
        prefix = "[yellow]warning:[/yellow] " if warning else ""
        self.console.print(prefix + escape(text), highlight=False)

    @contextmanager
    def transfer(self, action: str, path: str, size: int) -> Iterator[Meter]:
        if size < self.min_bytes:
            yield NullMeter()
            return
        columns = (
            TextColumn(f"{action} {path}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        with Progress(*columns, console=self.console) as progress:
            yield _TaskMeter(progress, progress.add_task(path, total=size))

    @contextmanager
    def status(self, text: str) -> Iterator[StatusLine]:
        """A spinner with ``text`` on a terminal; elsewhere the text as a plain line, repeated at most every
        ``PLAIN_STATUS_SECONDS``, so a log shows the wait without a line per poll."""
        if self.console.is_terminal:
            with self.console.status(text) as spinner:
                yield _SpinnerLine(spinner)
            return
        line = _PlainLine(self.console)
        line.update(text)
        yield line


class _SpinnerLine:
    def __init__(self, spinner: Status) -> None:
        self._spinner = spinner

    def update(self, text: str) -> None:
        self._spinner.update(text)


class _PlainLine:
    def __init__(self, console: Console) -> None:
        self._console, self._printed = console, -PLAIN_STATUS_SECONDS

    def update(self, text: str) -> None:
        if time.monotonic() - self._printed >= PLAIN_STATUS_SECONDS:
            self._console.print(text, highlight=False)
            self._printed = time.monotonic()
