"""Progress bars for large transfers, via rich; small files pass silently."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hokusai_registry.register.client import Meter, NullMeter

MIN_BAR_BYTES = 4 * 1024 * 1024


class TransferProgress(Protocol):
    def transfer(self, action: str, path: str, size: int) -> AbstractContextManager[Meter]: ...


class Quiet:
    @contextmanager
    def transfer(self, action: str, path: str, size: int) -> Iterator[Meter]:
        yield NullMeter()


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
