"""What a file is, from its first bytes and never its name.

A loader does not care what a file is called: ``torch.load("config.json")`` unpickles a pickle, and a
zip named ``weights.bin`` is still a zip. So every decision here looks at content only. Pure
functions over a prefix of the file (``HEAD_BYTES``), no file I/O. Old pickles, which have no
header, are told by reading their first opcodes (opcodes.py).
"""

from __future__ import annotations

import enum
import io
import re
import struct
import zlib

from hokusai_registry.scanning import grading
from hokusai_registry.scanning.opcodes import PickleParseError, iter_ops
from hokusai_registry.scanning.report import Verdict

__all__ = ["HEAD_BYTES", "Kind", "sniff"]

HEAD_BYTES = 64 * 1024  # what the scanner reads to decide; also the prefix old pickles are parsed over


class Kind(enum.StrEnum):
    EMPTY = "empty"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZ2 = "bz2"
    XZ = "xz"
    ZLIB = "zlib"
    SEVEN_ZIP = "7z"
    NUMPY = "numpy"
    HDF5 = "hdf5"
    SAFETENSORS = "safetensors"
    PICKLE = "pickle"
    TEXT = "text"
    BINARY = "binary"


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAGIC: list[tuple[bytes, Kind]] = [
    (b"PK\x03\x04", Kind.ZIP),
    (b"PK\x05\x06", Kind.ZIP),  # an empty zip is all end-of-central-directory record
    (b"\x1f\x8b\x08", Kind.GZIP),
    (b"\xfd7zXZ\x00", Kind.XZ),
    (b"7z\xbc\xaf\x27\x1c", Kind.SEVEN_ZIP),
    (b"\x93NUMPY", Kind.NUMPY),
    (_HDF5_SIGNATURE, Kind.HDF5),
]
_BZ2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")  # a first block, or the end-of-stream marker
_ZLIB_SECOND_BYTES = frozenset({0x01, 0x5E, 0x9C, 0xDA})  # joblib's levels 1-9 all write one of these
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.]*")
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


def sniff(head: bytes, *, whole: bool) -> Kind:
    """The kind of a file starting with ``head``; ``whole`` says head is all of it (not a prefix)."""
    if not head:
        return Kind.EMPTY
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _is_tar(head):
        return Kind.TAR
    if _BZ2.match(head):
        return Kind.BZ2
    if _is_hdf5_with_user_block(head):
        return Kind.HDF5
    if _is_safetensors(head):
        return Kind.SAFETENSORS
    if head[0] == 0x80 and len(head) > 1 and head[1] <= 5:
        return Kind.PICKLE  # PROTO n: protocols 2-5 always start so (0 and 1 are accepted too)
    if _is_zlib(head):
        return Kind.ZLIB
    if _is_old_pickle(head, whole):
        return Kind.PICKLE
    if _is_text(head, whole):
        return Kind.TEXT
    return Kind.BINARY


def _is_tar(head: bytes) -> bool:
    """POSIX/GNU tar (``ustar`` at 257), or an old v7 header whose checksum adds up."""
    if head[257:262] == b"ustar":
        return True
    if len(head) < 512 or not any(head[:100]):
        return False
    try:
        stored = int(head[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    block = head[:148] + b" " * 8 + head[156:512]
    return stored in (sum(block), sum(struct.unpack("148b8x356b", head[:512])) + 256)


def _is_hdf5_with_user_block(head: bytes) -> bool:
    """HDF5 may start after a user block of 512, 1024, 2048, ... bytes."""
    return any(head[offset : offset + 8] == _HDF5_SIGNATURE for offset in (512, 1024, 2048, 4096, 8192))


def _is_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header itself."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= _SAFETENSORS_MAX_HEADER and head[8:10] in (b'{"', b"{}", b"{ ", b"{\n")


def _is_zlib(head: bytes) -> bool:
    """A zlib stream (joblib's ``compress=``): the two header bytes, and the start inflates."""
    if len(head) < 3 or head[0] != 0x78 or head[1] not in _ZLIB_SECOND_BYTES:
        return False
    try:
        zlib.decompressobj().decompress(head[:4096], 1024)
    except zlib.error:
        return False
    return True


def _is_old_pickle(head: bytes, whole: bool) -> bool:
    """Protocols 0 and 1 have no header: parse the prefix as opcodes, executing nothing.

    A pickle if it imports something (GLOBAL, INST, STACK_GLOBAL) and then calls or finishes, if it
    starts by importing a name the grading knows (``cos\nsystem\n`` and garbage still runs
    os.system's import), or if it parses cleanly up to where the prefix was cut off. Text (YAML,
    JSON, a vocabulary starting ``cabbage\ncarrot``) fails within a few opcodes without either; an
    old pickle that never imports could not run code anyway.
    """
    stream = io.BytesIO(head)
    imported = False
    try:
        for index, (name, arg) in enumerate(iter_ops(stream)):
            if name in ("GLOBAL", "INST") and index == 0 and _known(*arg):
                return True
            if name in ("GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"):
                imported = True
            if imported and name in _CALLS:
                return True
    except PickleParseError:
        return not whole and stream.tell() >= len(head)
    return False


_CALLS = frozenset({"REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "STOP"})


def _known(module: str, name: str) -> bool:
    return bool(_IDENTIFIER.fullmatch(module)) and grading.grade(module, name)[0] is not Verdict.SUSPICIOUS


def _is_text(head: bytes, whole: bool) -> bool:
    """UTF-8 without control characters other than tab, newlines, form feed and escape."""
    if _CONTROL.search(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return not whole and exc.start >= len(head) - 3  # a character cut by the prefix's end
    return True
