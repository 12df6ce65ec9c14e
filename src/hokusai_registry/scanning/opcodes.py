"""Pickle opcodes, read from bytes as CPython's unpickler reads them, and a stream to read them from.

``iter_ops`` is as lenient as the unpickler (``pickletools`` rejects ``I0x10`` and non-ASCII GLOBAL
lines, which the unpickler takes), so no opcode after such a construct is hidden from the scanner;
sniffing (sniff.py) and the walk of the stack (pickle_walk.py) both read with it. ``PickleStream`` is
how a file looks to it and to picklescan: byte arguments past ``SKIP_BYTES`` are skipped, never held.
"""

from __future__ import annotations

import codecs
import io
import pickletools
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = ["SKIP_BYTES", "PickleParseError", "PickleStream", "Skipped", "iter_ops"]

SKIP_BYTES = 8 * 1024 * 1024  # byte arguments larger than this are skipped over, never held
MAX_LINE = 16 * 1024 * 1024  # protocol-0 arguments are lines; a longer one is a parse error


class PickleParseError(ValueError):
    """The bytes are not a pickle any unpickler would read this far."""


def _line(stream: Any) -> bytes:
    data: bytes = stream.readline()
    if not data.endswith(b"\n"):
        raise PickleParseError("no newline where a protocol-0 argument ends")
    return data[:-1]


def _read_int(stream: Any) -> int | bool:
    data = _line(stream)
    if data in (b"00", b"01"):
        return data == b"01"
    return _parse_int(data)


def _read_long(stream: Any) -> int:
    data = _line(stream)
    return _parse_int(data[:-1] if data.endswith(b"L") else data)


def _parse_int(data: bytes) -> int:
    for base in (0, 10):  # the unpickler's int(s, 0) takes 0x10; "010" only parses in base 10
        try:
            return int(data, base)
        except ValueError:
            continue
    raise PickleParseError(f"not an integer: {data[:40]!r}")


def _read_string(stream: Any) -> str:
    data = _line(stream)
    if len(data) < 2 or data[:1] != data[-1:] or data[:1] not in (b"'", b'"'):
        raise PickleParseError("a STRING argument without quotes")
    return codecs.escape_decode(data[1:-1])[0].decode("latin-1")


def _read_name(stream: Any) -> str:
    return _line(stream).decode("utf-8", "surrogateescape")


def _read_name_pair(stream: Any) -> tuple[str, str]:
    return _read_name(stream), _read_name(stream)


_LENIENT: dict[str, Callable[[Any], object]] = {
    "INT": _read_int,
    "LONG": _read_long,
    "STRING": _read_string,
    "GLOBAL": _read_name_pair,
    "INST": _read_name_pair,
    "PERSID": _read_name,
}
_BY_CODE = {op.code.encode("latin-1"): op for op in pickletools.opcodes}


def iter_ops(stream: Any) -> Iterator[tuple[str, Any]]:
    """``(opcode name, argument)`` up to and including STOP; GLOBAL's argument is a pair."""
    while True:
        position = stream.tell()
        code = stream.read(1)
        op = _BY_CODE.get(code)
        if op is None:
            raise PickleParseError(
                f"pickle data ends before STOP at byte {position}"
                if not code
                else f"byte {position} ({code!r}) is not an opcode"
            )
        try:
            reader = _LENIENT.get(op.name) or (op.arg.reader if op.arg else None)
            arg = reader(stream) if reader else None
        except (ValueError, struct.error, OverflowError, EOFError) as exc:
            raise PickleParseError(f"{op.name} at byte {position}: {exc}") from None
        yield op.name, arg
        if op.name == "STOP":
            return


class Skipped(bytes):
    """Stands for ``size`` bytes that were skipped, not read: only its length and prefix are known.

    The opcode readers check an argument's length and then keep it (``bytearray(data)``,
    ``str(data, "utf-8")`` see only the empty buffer), so a 2 GiB BINBYTES8 costs no memory."""

    size: int
    prefix: bytes

    def __new__(cls, size: int, prefix: bytes) -> Skipped:
        obj = super().__new__(cls, b"")
        obj.size, obj.prefix = size, prefix
        return obj

    def __len__(self) -> int:
        return self.size


class PickleStream:
    """A seekable binary stream as the opcode readers (ours and picklescan's) should see it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        position = raw.tell()
        self.size = raw.seek(0, io.SEEK_END)
        raw.seek(position)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.size - self.raw.tell()
        if n <= SKIP_BYTES:
            return self.raw.read(n)
        prefix = self.raw.read(16)
        start = self.raw.tell()
        end = min(self.size, start - len(prefix) + n)
        self.raw.seek(end)
        return Skipped(end - start + len(prefix), prefix)

    def readline(self, limit: int = -1) -> bytes:
        return self.raw.readline(MAX_LINE if limit < 0 else min(limit, MAX_LINE))

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)
