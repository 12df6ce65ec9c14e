"""Containers: compressed streams (gzip, bz2, xz, zlib), zip and tar, each member scanned in turn.

Members are streamed from the archive: stored zip members and tar members are read in place,
compressed zip members inflated to a temporary file only when they need more than a sniff (a gzip,
bz2, xz or zlib stream always is). Decompression
charges the stored file's budget (``Limits.max_expanded``) and watches the ratio
(``Limits.max_ratio``); zip layouts that declare a bomb (sizes, ratios, overlapping members) are
refused before anything is inflated. A bad CRC is a finding, never a reason to stop reading.
"""

from __future__ import annotations

import bz2
import io
import itertools
import lzma
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from hokusai_registry.scanning.formats import scan_config_archive
from hokusai_registry.scanning.report import Verdict
from hokusai_registry.scanning.sniff import HEAD_BYTES, Kind, sniff
from hokusai_registry.scanning.state import READ_BYTES, Bomb, KiB, MiB, Scan, human_size
from hokusai_registry.scanning.streams import view

__all__ = ["scan_compressed", "scan_seven_zip", "scan_tar", "scan_zip"]

_RAW_BYTES = 64 * KiB  # compressed input per step, so the ratio guard looks often


# ---------------------------------------------------------------------------------------------
# Compressed streams


def _read_raw(stream: IO[bytes], counter: list[int]) -> Iterator[bytes]:
    while chunk := stream.read(_RAW_BYTES):
        counter[0] += len(chunk)
        yield chunk


class _Inflater:
    """One decompressor API over zlib, bz2 and lzma, emitting bounded chunks (never one huge one)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make, self.decompressor = make, make()
        self.is_zlib = isinstance(self.decompressor, type(zlib.decompressobj()))

    def feed(self, data: bytes) -> Iterator[bytes]:
        d = self.decompressor
        yield d.decompress(data, READ_BYTES)
        if self.is_zlib:
            while d.unconsumed_tail and not d.eof:
                yield d.decompress(d.unconsumed_tail, READ_BYTES)
        else:
            while not d.eof and not d.needs_input:
                yield d.decompress(b"", READ_BYTES)

    @property
    def eof(self) -> bool:
        return bool(self.decompressor.eof)

    def restart(self) -> bytes:
        """After one stream ends: its trailing bytes, and a fresh decompressor for the next stream."""
        rest: bytes = self.decompressor.unused_data
        self.decompressor = self.make()
        return rest


def _inflate(
    scan: Scan, raw: Iterator[bytes], counter: list[int], inflater: _Inflater, multi: bool, limit: int | None
) -> Iterator[bytes]:
    """Decompressed chunks, charging the file's budget and watching the ratio as they come.

    ``multi``: gzip, bz2 and xz files may hold several streams back to back; bytes after a complete
    stream that do not decompress are trailing data (gzip pads with zeros), not an error."""
    produced, completed, between = 0, 0, False
    try:
        for data in raw:
            between = False
            while data:
                for out in inflater.feed(data):
                    if limit is not None and produced + len(out) > limit:
                        out = out[: limit - produced]  # as zipfile does: no more than the header says
                    produced += len(out)
                    scan.expand(len(out))
                    if produced > scan.limits.ratio_floor and produced > scan.limits.max_ratio * max(
                        1, counter[0]
                    ):
                        raise Bomb(
                            f"decompresses more than {scan.limits.max_ratio}:1 (a decompression bomb?)"
                        )
                    if out:
                        yield out
                    if limit is not None and produced >= limit:
                        return
                data = b""
                if inflater.eof:
                    completed += 1
                    if not multi:
                        return
                    data = inflater.restart().lstrip(b"\x00")
                    between = not data
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        if completed:
            return
        raise
    if not (inflater.eof or between):
        raise EOFError("compressed stream ends early")


_DECOMPRESSORS: dict[Kind, Callable[[], Any]] = {
    Kind.GZIP: lambda: zlib.decompressobj(31),
    Kind.ZLIB: zlib.decompressobj,
    Kind.BZ2: bz2.BZ2Decompressor,
    Kind.XZ: lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
}


def scan_compressed(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """gzip, bz2, xz, zlib (joblib's compress=): inflate to a temporary file and scan what comes out.

    What decompressed before an error is scanned too: a loader would have read it."""
    if scan.too_deep(path, depth):
        return
    stream.seek(0)
    kind = sniff(stream.read(HEAD_BYTES), whole=True)
    stream.seek(0)
    counter = [0]
    chunks = _inflate(
        scan,
        _read_raw(stream, counter),
        counter,
        _Inflater(_DECOMPRESSORS[kind]),
        kind is not Kind.ZLIB,
        None,
    )
    with tempfile.TemporaryFile() as out:
        try:
            for chunk in chunks:
                out.write(chunk)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            scan.add(path, Verdict.ERROR, f"could not be decompressed ({kind.value}: {exc})")
        out.seek(0)
        scan.nested(path, out, depth + 1)


# ---------------------------------------------------------------------------------------------
# Zip


_CRC_DETAIL = "CRC-32 does not match its header (changed after the archive was written; torch does not check)"


def scan_zip(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    directory = _central_directory_size(stream, size)
    if directory > scan.limits.max_directory:
        scan.add(
            path, Verdict.ERROR, f"a central directory of {human_size(directory)} (too many members to list)"
        )
        return
    stream.seek(0)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        scan.add(path, Verdict.ERROR, f"not a readable zip archive ({exc})")
        return
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if not members or scan.too_deep(path, depth):
            return
        if len(members) > scan.limits.max_members:
            scan.add(
                path, Verdict.ERROR, f"more than {scan.limits.max_members:,} members (only the first scanned)"
            )
            members = members[: scan.limits.max_members]
        readable = _zip_members(scan, path, stream, members)
        if readable is None:
            return
        members = readable
        scan_config_archive(scan, path, archive, members)
        for info in members:
            member_path = f"{path}!{info.filename}"
            try:
                _scan_zip_member(scan, member_path, stream, archive, info, depth)
            except Bomb:
                raise
            except Exception as exc:
                scan.add(
                    member_path, Verdict.ERROR, f"could not be read ({type(exc).__name__}: {str(exc)[:160]})"
                )


def _central_directory_size(stream: IO[bytes], size: int) -> int:
    """The size the end-of-central-directory record (or its zip64 twin) declares, before zipfile
    reads all of it into memory; 0 if there is none (zipfile will then refuse the file itself)."""
    tail_start = max(0, size - 65_557)
    stream.seek(tail_start)
    tail = stream.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return 0
    (directory,) = struct.unpack_from("<I", tail, end + 12)
    locator = end - 20
    if directory == 0xFFFFFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        stream.seek(record)
        zip64 = stream.read(56)
        if len(zip64) == 56 and zip64[:4] == b"PK\x06\x06":
            (directory,) = struct.unpack_from("<Q", zip64, 40)
    return int(directory)


def _zip_members(
    scan: Scan, path: str, stream: IO[bytes], members: list[zipfile.ZipInfo]
) -> list[zipfile.ZipInfo] | None:
    """The members that can be read in place; None for a bomb layout (declared sizes past the budget
    or the ratio, or two members sharing bytes). A member without a local header is an error."""
    limits = scan.limits
    declared = sum(info.file_size for info in members if info.compress_type != zipfile.ZIP_STORED)
    if declared > limits.max_expanded - scan.expanded:
        scan.add(path, Verdict.ERROR, f"declares {human_size(declared)} of compressed members (a zip bomb?)")
        return None
    for info in members:
        ratio = info.file_size / max(1, info.compress_size)
        if (
            info.compress_type != zipfile.ZIP_STORED
            and info.file_size > limits.ratio_floor
            and ratio > limits.max_ratio
        ):
            scan.add(
                f"{path}!{info.filename}",
                Verdict.ERROR,
                f"expands more than {limits.max_ratio}:1 (a zip bomb?)",
            )
            return None
    readable, spans = [], []
    for info in sorted(members, key=lambda info: info.header_offset):
        try:
            spans.append((info.header_offset, _data_offset(stream, info) + info.compress_size))
        except zipfile.BadZipFile as exc:
            scan.add(f"{path}!{info.filename}", Verdict.ERROR, f"could not be read ({exc})")
            continue
        readable.append(info)
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        if end > next_start:
            scan.add(path, Verdict.ERROR, "members overlap each other (a zip bomb layout)")
            return None
    order = {id(info): index for index, info in enumerate(members)}
    return sorted(readable, key=lambda info: order[id(info)])  # central directory order


def _data_offset(stream: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a member's bytes start: after its local header, whose name and extra lengths may differ
    from the central directory's."""
    stream.seek(info.header_offset)
    header = stream.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return int(info.header_offset + 30 + name_length + extra_length)


def _scan_zip_member(
    scan: Scan, path: str, stream: IO[bytes], archive: zipfile.ZipFile, info: zipfile.ZipInfo, depth: int
) -> None:
    """Stored members are read in place; compressed ones are inflated (to a temporary file if they
    need more than a sniff). The CRC is checked on whatever is read in full, never trusted to stop."""
    if info.flag_bits & 0x1:
        scan.add(path, Verdict.ERROR, "encrypted: cannot be inspected")
        return
    start = _data_offset(stream, info)
    if info.compress_type == zipfile.ZIP_STORED:
        member = view(stream, [(start, start + min(info.compress_size, info.file_size))])
        if _needs_content(member):
            if _crc(member) != info.CRC:
                scan.add(path, Verdict.SUSPICIOUS, _CRC_DETAIL)
            scan.nested(path, member, depth + 1)
        return
    if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        with archive.open(info) as opened, _spool(scan, iter(lambda: opened.read(READ_BYTES), b"")) as member:
            scan.nested(path, member, depth + 1)  # zipfile's own reader (LZMA, ...): it checks the CRC
        return
    make: Callable[[], Any] = (
        (lambda: zlib.decompressobj(-15))
        if info.compress_type == zipfile.ZIP_DEFLATED
        else bz2.BZ2Decompressor
    )
    raw = view(stream, [(start, start + info.compress_size)])
    head = b"".join(
        _inflate(scan, _read_raw(raw, [0]), [info.compress_size], _Inflater(make), False, HEAD_BYTES)
    )
    if sniff(head, whole=len(head) >= info.file_size) in _HEAD_ONLY:
        return
    raw.seek(0)
    counter = [0]
    crc = [0]
    chunks = _inflate(scan, _read_raw(raw, counter), counter, _Inflater(make), False, info.file_size)
    with _spool(scan, _crc_chunks(chunks, crc)) as member:
        if crc[0] != info.CRC:
            scan.add(path, Verdict.SUSPICIOUS, _CRC_DETAIL)
        scan.nested(path, member, depth + 1)


_HEAD_ONLY = frozenset({Kind.BINARY, Kind.EMPTY, Kind.TEXT})  # kinds decided by their first bytes alone


def _needs_content(member: IO[bytes]) -> bool:
    head = member.read(HEAD_BYTES)
    size = member.seek(0, io.SEEK_END)
    member.seek(0)
    return sniff(head, whole=size <= len(head)) not in _HEAD_ONLY


def _crc(stream: IO[bytes]) -> int:
    crc = 0
    stream.seek(0)
    while chunk := stream.read(READ_BYTES):
        crc = zlib.crc32(chunk, crc)
    stream.seek(0)
    return crc


def _crc_chunks(chunks: Iterable[bytes], crc: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        crc[0] = zlib.crc32(chunk, crc[0])
        yield chunk


def _spool(scan: Scan, chunks: Iterable[bytes]) -> IO[bytes]:
    """Copy chunks to a temporary file (deleted on close) and rewind it."""
    out = tempfile.TemporaryFile()  # noqa: SIM115  # the caller closes it (and so deletes it)
    try:
        for chunk in chunks:
            out.write(chunk)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out


# ---------------------------------------------------------------------------------------------
# Tar


class _BoundedReads(io.RawIOBase):
    """A stream for tarfile that refuses one huge read: tarfile reads a pax or GNU long-name header's
    whole declared size into memory, and a forged header may declare gigabytes."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, count: int = -1) -> bytes:
        if count < 0 or count > _MAX_TAR_READ:
            raise OSError(f"a tar header or read of {count} bytes (more than {human_size(_MAX_TAR_READ)})")
        return self.raw.read(count)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


_MAX_TAR_READ = 64 * MiB


def scan_tar(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Members one by one (tarfile reads headers as it goes); each is a seekable view in place."""
    import tarfile

    if scan.too_deep(path, depth):
        return
    stream.seek(0)
    try:
        with tarfile.open(fileobj=_BoundedReads(stream), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > scan.limits.max_members:
                    limit = scan.limits.max_members
                    scan.add(path, Verdict.ERROR, f"more than {limit:,} members (only the first scanned)")
                    return
                extracted = archive.extractfile(member) if member.isreg() else None
                if extracted is not None:
                    with extracted:
                        scan.nested(f"{path}!{member.name}", extracted, depth + 1)
    except tarfile.TarError as exc:
        scan.add(path, Verdict.ERROR, f"not a readable tar archive ({exc})")


def scan_seven_zip(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """No 7z reader here: a 7z archive is never passed as clean."""
    scan.add(path, Verdict.SUSPICIOUS, "7z archive not inspected (no 7z reader)")
