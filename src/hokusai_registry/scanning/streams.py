"""Seekable views over byte ranges of a stream, so nothing is copied to be scanned.

A zip member stored in place, an .npy payload past its header, a pickle with joblib's raw arrays cut
out, the bytes a nested loader would open: each is scanned as a stream of its own over the file.
"""

from __future__ import annotations

import bisect
import io
from typing import IO, Any

from hokusai_registry.scanning.state import KiB

__all__ = ["view"]


class _Ranges(io.RawIOBase):
    """Some byte ranges of a seekable stream, concatenated, as one seekable stream (read-only).

    A zip member stored in place, an .npy payload, or a pickle with joblib's raw arrays cut out: no
    bytes are copied."""

    def __init__(self, base: IO[bytes], ranges: list[tuple[int, int]]) -> None:
        super().__init__()
        self._base = base
        self._ranges = [(start, end) for start, end in ranges if end > start]
        self._starts: list[int] = []
        total = 0
        for start, end in self._ranges:
            self._starts.append(total)
            total += end - start
        self._size, self._pos = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, origin + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        start, end = self._ranges[index]
        inner = self._pos - self._starts[index]
        count = min(len(buffer), end - start - inner)
        self._base.seek(start + inner)
        data = self._base.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def view(base: IO[bytes], ranges: list[tuple[int, int]]) -> IO[bytes]:
    """The concatenated ``[start, end)`` ranges of ``base``, buffered, from position 0."""
    return io.BufferedReader(_Ranges(base, ranges), 64 * KiB)
