"""Scan a model version's files without loading them: content sniffing, archive traversal, grading.

Every file is read once for its SHA-256 and its kind (from content, not name), then by kind:
pickles are disassembled (picklescan, and our own walk of the stack, below) and their
globals graded (grading.py); zip, tar and compressed streams are opened and every member scanned the
same way, down to ``Limits.max_depth`` containers; numpy, safetensors, HDF5, Keras and skops files are
parsed for the parts that can carry code. Nothing is ever unpickled, imported or executed.

Bounds: members are streamed from the archive (stored ones read in place, compressed ones inflated
to a temporary file only when they need more than a sniff), byte arguments of pickles are skipped
rather than read, and decompression stops at ``Limits.max_expanded`` bytes per file or a ratio above
``Limits.max_ratio``: a zip bomb is an ``error``, never clean.
"""

from __future__ import annotations

import ast
import bisect
import bz2
import hashlib
import io
import itertools
import json
import lzma
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from hokusai_registry.scanning import grading
from hokusai_registry.scanning.report import Finding, ScannedFile, ScanReport, Verdict, worst
from hokusai_registry.scanning.sniff import HEAD_BYTES, Kind, PickleParseError, iter_ops, sniff
from hokusai_registry.scanning.sources import StoredFile

__all__ = [
    "Limits",
    "PickleGlobals",
    "PickleLayout",
    "pickle_globals",
    "scan_files",
    "scan_path",
    "scanner_name",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
READ_BYTES = 1 * MiB  # hashing, copying and inflating chunk
_RAW_BYTES = 64 * KiB  # compressed input per step, so the ratio guard looks often
MAX_FINDINGS = 25  # per pickle: a report stays readable (and storable) whatever a pickle imports


@dataclass(frozen=True)
class Limits:
    """What one stored file may make the scanner do; past any of them the file is an ``error``."""

    max_depth: int = 3  # containers (zip, tar, gzip, ...) around the innermost member
    max_members: int = 10_000  # per archive
    max_expanded: int = 8 * GiB  # bytes produced by decompression, per stored file
    max_ratio: int = 1_000  # decompressed : compressed, checked once past ratio_floor
    ratio_floor: int = 64 * MiB
    max_document: int = 16 * MiB  # JSON the scanner parses (Keras configs, safetensors headers)
    max_directory: int = 64 * MiB  # a zip's central directory, which zipfile holds in memory


def scanner_name() -> str:
    """What looked, for the report: our version and picklescan's."""
    return f"hokusai-registry {_version('hokusai-registry')} (picklescan {_version('picklescan')})"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def scan_files(files: Iterable[tuple[StoredFile, Path]], limits: Limits | None = None) -> ScanReport:
    """Scan each stored file at its local path; one ScannedFile each, findings for what is not clean."""
    limits = limits or Limits()
    scanned: list[ScannedFile] = []
    findings: list[Finding] = []
    for stored, local in files:
        try:
            file, found = _scan_stored(stored.path, local, limits)
        except OSError as exc:  # gone or unreadable: an error verdict for this file, the others still scanned
            file = ScannedFile(stored.path, stored.size, "", "unknown", Verdict.ERROR)
            found = [Finding(stored.path, Verdict.ERROR, f"could not be read ({exc})")]
        scanned.append(file)
        findings.extend(found)
    return ScanReport(scanner=scanner_name(), files=scanned, findings=findings)


def scan_path(root: Path, limits: Limits | None = None) -> ScanReport:
    """Every regular file under ``root`` (symlinks are not followed), as the stored files of a model."""
    paths = sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())
    pairs = [(StoredFile(path.relative_to(root).as_posix(), path.stat().st_size), path) for path in paths]
    return scan_files(pairs, limits)


# ---------------------------------------------------------------------------------------------
# One stored file


class _Bomb(Exception):
    """Decompression went past a limit: the whole stored file is an error."""


@dataclass
class _Scan:
    """The state of scanning one stored file: its findings, its decompression budget, its scratch dir."""

    limits: Limits
    scratch: Path
    findings: list[Finding] = field(default_factory=list)
    expanded: int = 0
    _seen: set[Finding] = field(default_factory=set)

    def add(self, path: str, verdict: Verdict, detail: str) -> None:
        finding = Finding(path, verdict, detail)
        if finding not in self._seen:
            self._seen.add(finding)
            self.findings.append(finding)

    def expand(self, count: int) -> None:
        self.expanded += count
        if self.expanded > self.limits.max_expanded:
            raise _Bomb(f"expands past {_size(self.limits.max_expanded)} (a decompression bomb?)")


def _scan_stored(path: str, local: Path, limits: Limits) -> tuple[ScannedFile, list[Finding]]:
    sha, size, head = _hash(local)
    kind = sniff(head, whole=size <= len(head))
    with tempfile.TemporaryDirectory(prefix="hokusai-scan-") as scratch, local.open("rb") as stream:
        scan = _Scan(limits, Path(scratch))
        try:
            kind = _scan(scan, path, stream, depth=0)
        except _Bomb as exc:
            scan.add(path, Verdict.ERROR, str(exc))
    verdict = worst([finding.verdict for finding in scan.findings])
    return ScannedFile(path, size, sha, kind.value, verdict), scan.findings


def _hash(local: Path) -> tuple[str, int, bytes]:
    """SHA-256, size and first bytes, in one streaming read."""
    digest, size, head = hashlib.sha256(), 0, b""
    with local.open("rb") as stream:
        while chunk := stream.read(READ_BYTES):
            if not head:
                head = chunk[:HEAD_BYTES]
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, head


def _scan(scan: _Scan, path: str, stream: IO[bytes], depth: int) -> Kind:
    """Scan one (possibly nested) file: sniff it, hand it to its kind's scanner; returns its kind."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    head = stream.read(HEAD_BYTES)
    kind = sniff(head, whole=size <= len(head))
    try:
        found = _SCANNERS[kind](scan, path, stream, size, depth)
    except _Bomb:
        raise
    except _TooManyOpcodes as exc:
        scan.add(path, Verdict.ERROR, f"too large to scan: {exc}")
    except Exception as exc:  # a file the scanner cannot read is an error verdict, not a crash
        scan.add(path, Verdict.ERROR, f"could not be scanned ({type(exc).__name__}: {str(exc)[:160]})")
    else:
        kind = found or kind
    return kind


_Scanner = Callable[[_Scan, str, IO[bytes], int, int], "Kind | None"]


def _nothing(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Raw tensor data, ONNX protobuf, empty files: nothing in them runs on load."""


def _too_deep(scan: _Scan, path: str, depth: int) -> bool:
    if depth + 1 <= scan.limits.max_depth:
        return False
    scan.add(path, Verdict.ERROR, f"nested too deep (more than {scan.limits.max_depth} archive levels)")
    return True


# ---------------------------------------------------------------------------------------------
# Seekable views and spooling


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


def _view(base: IO[bytes], ranges: list[tuple[int, int]]) -> IO[bytes]:
    return io.BufferedReader(_Ranges(base, ranges), 64 * KiB)


def _spool(scan: _Scan, chunks: Iterable[bytes]) -> IO[bytes]:
    """Copy chunks to a temporary file (deleted on close) and rewind it."""
    out = tempfile.TemporaryFile(dir=scan.scratch)  # noqa: SIM115  # the caller closes it (and so deletes it)
    try:
        for chunk in chunks:
            out.write(chunk)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out


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
    scan: _Scan, raw: Iterator[bytes], counter: list[int], inflater: _Inflater, multi: bool, limit: int | None
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
                        raise _Bomb(
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


def _scan_compressed(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """gzip, bz2, xz, zlib (joblib's compress=): inflate to a temporary file and scan what comes out.

    What decompressed before an error is scanned too: a loader would have read it."""
    if _too_deep(scan, path, depth):
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
    with tempfile.TemporaryFile(dir=scan.scratch) as out:
        try:
            for chunk in chunks:
                out.write(chunk)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            scan.add(path, Verdict.ERROR, f"could not be decompressed ({kind.value}: {exc})")
        out.seek(0)
        _scan(scan, path, out, depth + 1)


# ---------------------------------------------------------------------------------------------
# Zip


_CRC_DETAIL = "CRC-32 does not match its header (changed after the archive was written; torch does not check)"


def _scan_zip(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    directory = _central_directory_size(stream, size)
    if directory > scan.limits.max_directory:
        scan.add(path, Verdict.ERROR, f"a central directory of {_size(directory)} (too many members to list)")
        return
    stream.seek(0)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        scan.add(path, Verdict.ERROR, f"not a readable zip archive ({exc})")
        return
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if not members or _too_deep(scan, path, depth):
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
        _scan_config_archive(scan, path, archive, members)
        for info in members:
            member_path = f"{path}!{info.filename}"
            try:
                _scan_zip_member(scan, member_path, stream, archive, info, depth)
            except _Bomb:
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
    scan: _Scan, path: str, stream: IO[bytes], members: list[zipfile.ZipInfo]
) -> list[zipfile.ZipInfo] | None:
    """The members that can be read in place; None for a bomb layout (declared sizes past the budget
    or the ratio, or two members sharing bytes). A member without a local header is an error."""
    limits = scan.limits
    declared = sum(info.file_size for info in members if info.compress_type != zipfile.ZIP_STORED)
    if declared > limits.max_expanded - scan.expanded:
        scan.add(path, Verdict.ERROR, f"declares {_size(declared)} of compressed members (a zip bomb?)")
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
    scan: _Scan, path: str, stream: IO[bytes], archive: zipfile.ZipFile, info: zipfile.ZipInfo, depth: int
) -> None:
    """Stored members are read in place; compressed ones are inflated (to a temporary file if they
    need more than a sniff). The CRC is checked on whatever is read in full, never trusted to stop."""
    if info.flag_bits & 0x1:
        scan.add(path, Verdict.ERROR, "encrypted: cannot be inspected")
        return
    start = _data_offset(stream, info)
    if info.compress_type == zipfile.ZIP_STORED:
        member = _view(stream, [(start, start + min(info.compress_size, info.file_size))])
        if _needs_content(member):
            if _crc(member) != info.CRC:
                scan.add(path, Verdict.SUSPICIOUS, _CRC_DETAIL)
            _scan(scan, path, member, depth + 1)
        return
    if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        with archive.open(info) as opened, _spool(scan, iter(lambda: opened.read(READ_BYTES), b"")) as member:
            _scan(scan, path, member, depth + 1)  # zipfile's own reader (LZMA, ...): it checks the CRC
        return
    make: Callable[[], Any] = (
        (lambda: zlib.decompressobj(-15))
        if info.compress_type == zipfile.ZIP_DEFLATED
        else bz2.BZ2Decompressor
    )
    raw = _view(stream, [(start, start + info.compress_size)])
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
        _scan(scan, path, member, depth + 1)


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
            raise OSError(f"a tar header or read of {count} bytes (more than {_size(_MAX_TAR_READ)})")
        return self.raw.read(count)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


_MAX_TAR_READ = 64 * MiB


def _scan_tar(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Members one by one (tarfile reads headers as it goes); each is a seekable view in place."""
    import tarfile

    if _too_deep(scan, path, depth):
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
                        _scan(scan, f"{path}!{member.name}", extracted, depth + 1)
    except tarfile.TarError as exc:
        scan.add(path, Verdict.ERROR, f"not a readable tar archive ({exc})")


# ---------------------------------------------------------------------------------------------
# Pickles, walked without unpickling.
#
# picklescan lists a pickle's globals; the walk answers what it does not: where pickle data ends and
# raw data begins (joblib writes each numpy array's bytes *inside* the pickle stream, legacy
# ``torch.save`` appends storages after five pickles), which STACK_GLOBAL operands were computed at
# load time, which byte strings are embedded archives a nested loader would open, and whether a
# function the pickle carries is called while it loads. Nothing is imported or called: globals are
# ``(module, name)`` pairs, call results are opaque. The opcodes are read by sniff.iter_ops, which
# accepts everything CPython's unpickler accepts (pickletools stops at ``I0x10`` or a non-ASCII
# GLOBAL line, and would hide every opcode after them).


SKIP_BYTES = 8 * MiB  # byte arguments larger than this are skipped over, never held
MAX_LINE = 16 * MiB  # protocol-0 arguments are lines; a longer one is a parse error
MAX_OPS = 5_000_000  # picklescan keeps every opcode of a pickle in a list (~100 B each): bounds memory
MAX_EMBEDDED = 64  # embedded archives remembered per file
_KEEP_ITEMS = 256  # container items the walk keeps (it needs small ones: shapes, dtype states)
_KEEP_CHARS = 4096  # longer strings become opaque (still an unresolved name if imported)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's first pickle before the zip format
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"})
_CODE_BUILDERS = frozenset({"_make_function", "_create_function"})  # cloudpickle, dill
# cloudpickle/dill helpers whose first argument names what they import or look up: graded by name.
_NAMING = frozenset({"subimport", "dynamic_subimport", "_import_module", "_builtin_type", "_load_type"})


class _TooManyOpcodes(Exception):
    """A pickle with more opcodes than the scanner will hold (see MAX_OPS)."""


class _Skipped(bytes):
    """Stands for ``size`` bytes that were skipped, not read: only its length and prefix are known.

    The opcode readers check an argument's length and then keep it (``bytearray(data)``,
    ``str(data, "utf-8")`` see only the empty buffer), so a 2 GiB BINBYTES8 costs no memory."""

    size: int
    prefix: bytes

    def __new__(cls, size: int, prefix: bytes) -> _Skipped:
        obj = super().__new__(cls, b"")
        obj.size, obj.prefix = size, prefix
        return obj

    def __len__(self) -> int:
        return self.size


class _PickleStream:
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
        return _Skipped(end - start + len(prefix), prefix)

    def readline(self, limit: int = -1) -> bytes:
        return self.raw.readline(MAX_LINE if limit < 0 else min(limit, MAX_LINE))

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)


@dataclass(eq=False)
class _Ref:
    module: str
    name: str


@dataclass(eq=False)
class _Obj:
    """The result of calling ``func`` while loading (REDUCE, NEWOBJ, INST, OBJ)."""

    func: object
    args: object
    state: object = None


class _Opaque:
    """A value only known at load time (a persistent id, or a string too long to keep)."""


class _Data:
    """A value that is known not to be a str (bytes, a set, a buffer, a container too big to keep)."""


_OPAQUE = _Opaque()
_DATA = _Data()


@dataclass(frozen=True)
class _Embedded:
    """A byte string inside a pickle that starts like a pickle or a zip (what a nested loader opens):
    ``offset``/``length`` into the stream, or ``data`` when it was a str (``_codecs.encode``)."""

    offset: int
    length: int
    data: bytes | None = None


@dataclass
class PickleLayout:
    """What a walk over one file's pickle stream(s) found."""

    end: int = 0  # pickle data stops here; raw storages (legacy torch) or trailing bytes follow
    skip: list[tuple[int, int]] = field(default_factory=list)  # raw array bytes inside [0, end): joblib
    imports: set[tuple[str, str]] = field(default_factory=set)  # what GLOBAL/STACK_GLOBAL/INST name
    unresolved: int = 0  # STACK_GLOBALs (or EXT codes) whose name is only known at load time
    helper_args: set[tuple[str, str]] = field(default_factory=set)  # ("subimport", "os"): see _NAMING
    calls_carried_code: bool = False  # a function rebuilt from code in the pickle is called on load
    embedded: list[_Embedded] = field(default_factory=list)
    pickles: int = 0
    ops: int = 0
    error: str | None = None  # a parse failure after something was imported
    inert: bool = False  # the first pickle fails before importing anything: nothing could run

    @property
    def imported(self) -> bool:
        return bool(self.imports or self.unresolved)


def _walk(stream: _PickleStream) -> PickleLayout:
    """Walk every pickle in ``stream`` from its start, symbolically; never raises PickleParseError."""
    layout = PickleLayout()
    legacy_torch = False
    while stream.tell() < stream.size:
        segment = _Segment(stream, layout)
        try:
            value = segment.run()
        except PickleParseError as exc:
            if segment.imported:
                layout.error, layout.end = str(exc), stream.size
            elif layout.pickles == 0:
                layout.inert = True
            break  # after a complete pickle, bytes that import nothing are data, not a pickle
        layout.pickles += 1
        layout.end = stream.tell()
        legacy_torch = legacy_torch or (layout.pickles == 1 and value == _TORCH_LEGACY_MAGIC)
        if legacy_torch and layout.pickles == 5:
            break  # magic, protocol, sys_info, the object, storage keys; raw storages follow
    return layout


class _Segment:
    """One pickle, from PROTO (or its first opcode) to STOP, with its own stack and memo."""

    def __init__(self, stream: _PickleStream, layout: PickleLayout, depth: int = 0) -> None:
        self.stream, self.layout, self.depth = stream, layout, depth
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.imported = False

    def run(self) -> Any:
        for name, arg, _ in iter_ops(self.stream):
            self.layout.ops += 1
            if self.layout.ops > MAX_OPS:
                raise _TooManyOpcodes(f"more than {MAX_OPS:,} opcodes")
            if name == "STOP":
                return self.pop()
            try:
                self.step(name, arg)
            except (IndexError, KeyError, TypeError) as exc:
                raise PickleParseError(f"{name}: the stack does not hold what it needs ({exc!r})") from None
        raise PickleParseError("pickle data ends before STOP")

    # stack helpers, as pickle._Unpickler has them
    def pop(self) -> Any:
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def step(self, name: str, arg: Any) -> None:  # one branch per opcode family, as in pickle.py
        if name in _LITERALS:
            self.push(self.literal(arg))
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "POP":
            _ = self.pop() if self.stack else self.pop_mark()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.push(self.stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if arg < 0:
                raise PickleParseError("negative PUT argument")
            self.memo[arg] = self.stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.push(self.memo[arg])
        elif name in _CONTAINERS:
            self.container(name)
        elif name in ("GLOBAL", "INST"):
            ref = self.import_(*arg)
            self.push(ref if name == "GLOBAL" else _Obj(ref, _bounded(self.pop_mark())))
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            self.push(self.stack_global(module, attr))
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.layout.unresolved += 1  # copyreg's extension registry: a global by number
            self.imported = True
            self.push(_OPAQUE)
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ"):
            self.call(name)
        elif name == "BUILD":
            state = self.pop()
            target = self.stack[-1]
            if isinstance(target, _Obj):
                target.state = state
                self.after_build(target)
        elif name == "PERSID":
            self.push(_OPAQUE)
        elif name == "BINPERSID":
            self.stack[-1] = _OPAQUE
        elif name == "NEXT_BUFFER":
            self.push(_DATA)
        # PROTO, FRAME, READONLY_BUFFER change nothing a scanner needs

    def literal(self, arg: Any) -> Any:
        if isinstance(arg, bytes | bytearray):
            self.maybe_embedded(arg)
            return _DATA  # contents are never needed again; do not keep them
        if isinstance(arg, str):
            self.maybe_embedded_str(arg)
            return arg if len(arg) <= _KEEP_CHARS else _OPAQUE
        return arg

    def container(self, name: str) -> None:
        if name == "EMPTY_TUPLE":
            self.push(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(self.stack) < count:
                raise PickleParseError(f"{name} on a stack of {len(self.stack)}")
            items = self.stack[-count:]
            del self.stack[-count:]
            self.push(tuple(items))
        elif name == "TUPLE":
            self.push(_bounded(self.pop_mark()))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            self.push([] if name == "EMPTY_LIST" else {} if name == "EMPTY_DICT" else _DATA)
        elif name == "LIST":
            self.push(list(self.pop_mark()[:_KEEP_ITEMS]))
        elif name == "DICT":
            items = self.pop_mark()
            self.push(_pairs({}, items))
        elif name == "FROZENSET":
            self.pop_mark()
            self.push(_DATA)
        elif name == "ADDITEMS":
            self.pop_mark()
            _ = self.stack[-1]  # the set must exist
        elif name == "APPEND":
            value = self.pop()
            _append(self.stack[-1], [value])
        elif name == "APPENDS":
            items = self.pop_mark()
            _append(self.stack[-1], items)
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            _pairs(self.stack[-1], [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark()
            _pairs(self.stack[-1], items)

    def import_(self, module: str, attr: str) -> _Ref:
        self.imported = True
        self.layout.imports.add((module, attr))
        return _Ref(module, attr)

    def stack_global(self, module: Any, attr: Any) -> _Ref:
        if type(module) is str and type(attr) is str:
            return self.import_(module, attr)
        if module is _OPAQUE or attr is _OPAQUE or isinstance(module, _Obj) or isinstance(attr, _Obj):
            self.layout.unresolved += 1  # a name computed while loading: cannot be known here
            self.imported = True
            return _Ref("unknown", "unknown")
        raise PickleParseError("STACK_GLOBAL requires str")  # as the unpickler says, before importing

    def call(self, name: str) -> None:
        if name == "OBJ":
            items = self.pop_mark()
            func, args = items[0], tuple(items[1:_KEEP_ITEMS])
        elif name == "NEWOBJ_EX":
            _kwargs, args, func = self.pop(), self.pop(), self.pop()
        else:
            args, func = self.pop(), self.pop()
        if isinstance(func, _Obj) and _is_ref(func.func, names=_CODE_BUILDERS):
            self.layout.calls_carried_code = True  # calls a function defined by the pickle itself
        if isinstance(func, _Ref) and func.name in _NAMING:
            named = args[0] if isinstance(args, tuple) and args and type(args[0]) is str else "unknown"
            self.layout.helper_args.add((func.name, named))
        self.push(_Obj(func, args))

    def after_build(self, target: _Obj) -> None:
        """joblib: a NumpyArrayWrapper's BUILD is followed by the array's bytes (or, for object
        arrays, a nested pickle): skip the first, walk the second."""
        func = target.func
        if not (
            isinstance(func, _Ref) and func.module in _JOBLIB_WRAPPERS and func.name == "NumpyArrayWrapper"
        ):
            return
        state = target.state
        if not isinstance(state, dict):
            raise PickleParseError("a joblib array wrapper without its state")
        itemsize, has_object = _dtype_size(state.get("dtype"))
        if has_object:
            if self.depth > 2:
                raise PickleParseError("joblib object arrays nested too deep")
            nested = _Segment(self.stream, self.layout, self.depth + 1)
            nested.run()
            self.imported = self.imported or nested.imported
            return
        shape = state.get("shape")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise PickleParseError("a joblib array wrapper with an unreadable shape")
        count = 1
        for n in shape:
            count *= n
        start = self.stream.tell()
        padding = 0
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.stream.read(1)
            if len(pad) != 1:
                raise PickleParseError("joblib array data ends early")
            padding = 1 + pad[0]
        end = start + padding + count * itemsize
        if end > self.stream.size:
            raise PickleParseError("joblib array data ends early")
        self.stream.seek(end)
        self.layout.skip.append((start, end))

    def maybe_embedded(self, data: bytes | bytearray) -> None:
        prefix = data.prefix if isinstance(data, _Skipped) else bytes(data[:16])
        if len(self.layout.embedded) < MAX_EMBEDDED and _looks_embedded(prefix):
            self.layout.embedded.append(_Embedded(self.stream.tell() - len(data), len(data)))

    def maybe_embedded_str(self, text: str) -> None:
        if len(self.layout.embedded) >= MAX_EMBEDDED or len(text) > SKIP_BYTES:
            return
        if not _looks_embedded(text[:16].encode("latin-1", "replace")):
            return
        try:
            data = text.encode("latin-1")  # protocol 2 writes bytes as _codecs.encode(str, "latin1")
        except UnicodeEncodeError:
            return
        self.layout.embedded.append(_Embedded(-1, len(data), data))


_LITERALS = frozenset(
    {
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
        "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE", "NEWTRUE",
        "NEWFALSE",
    }
)  # fmt: skip
_CONTAINERS = frozenset(
    {
        "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET",
        "LIST", "DICT", "FROZENSET", "ADDITEMS", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
    }
)  # fmt: skip


def _is_ref(value: object, names: frozenset[str]) -> bool:
    return isinstance(value, _Ref) and value.name in names


def _looks_embedded(prefix: bytes) -> bool:
    return (len(prefix) > 1 and prefix[0] == 0x80 and prefix[1] <= 5) or prefix.startswith(b"PK\x03\x04")


def _bounded(items: list[Any]) -> tuple[Any, ...] | _Data:
    return tuple(items) if len(items) <= _KEEP_ITEMS else _DATA


def _append(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items[: max(0, _KEEP_ITEMS - len(target))])


def _pairs(target: Any, items: list[Any]) -> Any:
    if len(items) % 2:
        raise PickleParseError("odd number of items for a dict")
    if isinstance(target, dict):
        for key, value in zip(items[::2], items[1::2], strict=True):
            if len(target) >= _KEEP_ITEMS:
                break
            if isinstance(key, str | int | float | bool | None):
                target[key] = value
    return target


def _dtype_size(dtype: object) -> tuple[int, bool]:
    """(itemsize, holds objects) of a pickled ``numpy.dtype(descr, ...)`` with its BUILD state."""
    if not (isinstance(dtype, _Obj) and isinstance(dtype.args, tuple) and dtype.args):
        raise PickleParseError("a joblib array wrapper without a readable dtype")
    descr = dtype.args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and type(state[7]) is int else 0
    if not isinstance(descr, str):
        raise PickleParseError("a joblib array wrapper without a readable dtype")
    if descr.startswith("O") or flags & 0x01:  # NPY_ITEM_REFCOUNT: the array holds Python objects
        return 0, True
    if len(state) > 5 and type(state[5]) is int and state[5] > 0:
        return state[5], False  # flexible and structured dtypes carry their element size
    import numpy  # a dtype from its type string: numpy parses it, nothing is unpickled

    try:
        return int(numpy.dtype(descr).itemsize), False
    except TypeError as exc:
        raise PickleParseError(f"a joblib array of unknown dtype {descr!r}") from exc


# ---------------------------------------------------------------------------------------------
# Pickles: both disassemblers, grading, nested loaders


@dataclass(frozen=True)
class PickleGlobals:
    """The globals of one file's pickle stream(s), as our walk and as picklescan see them."""

    ours: frozenset[tuple[str, str]]
    picklescan: frozenset[tuple[str, str]]
    layout: PickleLayout
    picklescan_error: bool


def pickle_globals(stream: IO[bytes], file_id: str = "<pickle>") -> PickleGlobals:
    """Disassemble the pickle(s) in a seekable stream (from its position 0) without loading them.

    Our walk finds where pickle data ends and what to skip (joblib's raw arrays, legacy torch's
    storages); picklescan then lists the globals of exactly those bytes. Both lists are graded."""
    from picklescan.scanner import scan_pickle_bytes

    layout = _walk(_PickleStream(stream))
    if layout.inert:
        return PickleGlobals(frozenset(), frozenset(), layout, False)
    kept = _without(layout.skip, layout.end)
    result = scan_pickle_bytes(_PickleStream(_view(stream, kept)), file_id)
    theirs = frozenset((str(g.module), str(g.name)) for g in result.globals)
    return PickleGlobals(frozenset(layout.imports), theirs, layout, bool(result.scan_err))


def _scan_pickle(
    scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int, start: int = 0
) -> Kind | None:
    """Disassemble, grade every global either disassembler found, scan what nested loaders would open."""
    window = _view(stream, [(start, size)])
    found = pickle_globals(window, path)
    layout = found.layout
    if layout.inert:
        return Kind.BINARY  # fails as a pickle before importing anything: it cannot run code
    refs = found.ours | found.picklescan
    facts = grading.PickleFacts(layout.unresolved, frozenset(layout.helper_args), layout.calls_carried_code)
    graded = grading.grade_pickle(refs, facts)  # worst first
    for verdict, detail in graded[:MAX_FINDINGS]:
        scan.add(path, verdict, detail)
    if len(graded) > MAX_FINDINGS:
        rest = graded[MAX_FINDINGS:]
        scan.add(path, rest[0][0], f"and {len(rest)} more globals like these (not listed)")
    if layout.error:
        scan.add(path, Verdict.ERROR, f"could not be parsed as a pickle ({layout.error})")
    elif found.picklescan_error:
        scan.add(path, Verdict.SUSPICIOUS, "parses only leniently (holds a construct no pickler writes)")
    if any(grading.loads_nested(module, name) for module, name in refs):
        _scan_embedded(scan, path, window, layout.embedded, depth)
    return None


def _without(skip: list[tuple[int, int]], end: int) -> list[tuple[int, int]]:
    """[0, end) minus the skipped spans."""
    kept, position = [], 0
    for start, stop in sorted(skip):
        kept.append((position, min(start, end)))
        position = stop
    kept.append((position, end))
    return [(a, b) for a, b in kept if b > a]


def _scan_embedded(scan: _Scan, path: str, window: IO[bytes], embedded: list[_Embedded], depth: int) -> None:
    """Byte strings a nested loader (``pickle.loads``, torch's ``_load_from_bytes``) would open."""
    if embedded and _too_deep(scan, path, depth):
        return
    for item in embedded:
        if item.data is not None:
            inner: IO[bytes] = io.BytesIO(item.data)
            label = f"{path}!<embedded string of {item.length} bytes>"
        else:
            inner = _view(window, [(item.offset, item.offset + item.length)])
            label = f"{path}!<embedded bytes at {item.offset}>"
        with inner:
            _scan(scan, label, inner, depth + 1)


# ---------------------------------------------------------------------------------------------
# numpy, safetensors, HDF5, Keras, text


def _scan_npy(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """An .npy header is a Python literal; an object dtype means the payload is a pickle."""
    from numpy.lib.format import descr_to_dtype

    stream.seek(6)
    major = stream.read(2)[:1]
    length_format, offset = ("<H", 10) if major == b"\x01" else ("<I", 12)
    raw_length = stream.read(offset - 8)
    if major not in (b"\x01", b"\x02", b"\x03") or len(raw_length) != offset - 8:
        scan.add(path, Verdict.ERROR, "not a readable .npy header")
        return
    (length,) = struct.unpack(length_format, raw_length)
    if length > 1 * MiB:
        scan.add(path, Verdict.ERROR, "an .npy header over 1 MiB")
        return
    text = stream.read(length).decode("utf-8" if major == b"\x03" else "latin-1")
    try:
        header = ast.literal_eval(text)
        dtype = descr_to_dtype(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError) as exc:
        scan.add(path, Verdict.ERROR, f"not a readable .npy header ({type(exc).__name__})")
        return
    if dtype.hasobject:
        _scan_pickle(scan, path, stream, size, depth, start=offset + length)


def _scan_safetensors(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """A JSON header and raw tensors: clean if the header is what the safetensors library accepts."""
    stream.seek(0)
    (length,) = struct.unpack("<Q", stream.read(8))
    problem = None
    try:
        header = json.loads(stream.read(length)) if 8 + length <= size else None
        problem = _safetensors_problem(header, size - 8 - length)
    except (ValueError, UnicodeDecodeError) as exc:
        problem = f"header is not JSON ({exc})"
    if problem:
        scan.add(path, Verdict.ERROR, f"not a valid safetensors file: {problem}")


def _safetensors_problem(header: object, data_size: int) -> str | None:
    if not isinstance(header, dict):
        return "header is not a JSON object"
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                return "__metadata__ is not a map of strings"
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            return f"tensor {name!r} has no dtype"
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            return f"tensor {name!r} has no valid shape"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        if not 0 <= offsets[0] <= offsets[1] <= data_size:
            return f"tensor {name!r} lies outside the file"
    return None


_LAMBDA = re.compile(rb'"class_name":\s*"(Lambda|__lambda__)"')
_JSON_START = b'{"class_name"'


def _scan_hdf5(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Without an HDF5 library: a Keras .h5 model keeps its architecture as JSON text in a
    ``model_config`` attribute (attributes are never compressed), so search the bytes for it."""
    has_config, has_lambda, starts = False, False, list[int]()
    stream.seek(0)
    offset, tail = 0, b""
    while chunk := stream.read(READ_BYTES):
        data = tail + chunk
        has_config = has_config or b"model_config" in data
        has_lambda = has_lambda or bool(_LAMBDA.search(data))
        position = data.find(_JSON_START)
        while position != -1 and len(starts) < 16:
            absolute = offset - len(tail) + position
            if absolute not in starts:
                starts.append(absolute)
            position = data.find(_JSON_START, position + 1)
        tail = data[-64:]
        offset += len(chunk)
    if has_lambda:
        scan.add(path, Verdict.UNSAFE, "Keras Lambda layer (runs code on load)")
    if not has_config:
        return  # weights only: nothing in it names code
    configs = [
        config for config in (_json_at(stream, start, scan.limits.max_document) for start in starts) if config
    ]
    if not configs:
        scan.add(path, Verdict.SUSPICIOUS, "HDF5 Keras model_config not inspected (could not be parsed)")
    for config in configs:
        for verdict, detail in _keras_findings(config):
            scan.add(path, verdict, detail)


def _json_at(stream: IO[bytes], start: int, limit: int) -> object:
    stream.seek(start)
    text = stream.read(limit).decode("utf-8", "replace")
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return None


def _scan_config_archive(
    scan: _Scan, path: str, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]
) -> None:
    """Zips whose JSON names the code a loader will import: a Keras v3 ``.keras`` (``config.json``,
    where a Lambda layer carries code) and a skops file (``schema.json``, every type it rebuilds)."""
    names = {info.filename: info for info in members}
    if "config.json" in names and {"metadata.json", "model.weights.h5", "model.weights.npz"} & names.keys():
        config = _read_json_member(scan, path, archive, names["config.json"])
        for verdict, detail in _keras_findings(config):
            scan.add(f"{path}!config.json", verdict, detail)
    if "schema.json" in names:
        schema = _read_json_member(scan, path, archive, names["schema.json"])
        if isinstance(schema, dict) and "_skops_version" in schema:
            for verdict, detail in _graded_refs(_skops_refs(schema), "skops schema"):
                scan.add(f"{path}!schema.json", verdict, detail)


def _read_json_member(scan: _Scan, path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> object:
    where = f"{path}!{info.filename}"
    if info.file_size > scan.limits.max_document:
        scan.add(where, Verdict.ERROR, "too large to inspect")
        return None
    try:
        with archive.open(info) as opened:
            return json.loads(opened.read(scan.limits.max_document))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        scan.add(where, Verdict.ERROR, f"could not be read ({exc})")
        return None


def _dicts(document: object) -> Iterator[dict[str, Any]]:
    """Every JSON object in a document, without recursion (a deep document cannot overflow the stack)."""
    todo = [document]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node.values())
            yield node


def _graded_refs(refs: Iterable[tuple[str, str]], label: str) -> list[tuple[Verdict, str]]:
    """Module/name pairs a config makes its loader import, graded like pickle globals."""
    found: dict[str, Verdict] = {}
    for module, name in refs:
        verdict, detail = grading.grade(module, name)
        if verdict is not Verdict.CLEAN:
            found[f"{label}: {detail}"] = verdict
    return sorted(((v, d) for d, v in found.items()), key=lambda item: (-item[0].rank, item[1]))


_KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
_LAMBDA_DETAIL = "Keras Lambda layer (runs code on load)"


def _keras_findings(config: object) -> list[tuple[Verdict, str]]:
    """Lambda layers, and objects a Keras config names by module outside Keras (graded as globals)."""
    lambdas = any(node.get("class_name") in ("Lambda", "__lambda__") for node in _dicts(config))
    found = [(Verdict.UNSAFE, _LAMBDA_DETAIL)] if lambdas else []
    return found + _graded_refs(_keras_refs(config), "Keras config")


def _keras_refs(config: object) -> Iterator[tuple[str, str]]:
    for node in _dicts(config):
        class_name, module = node.get("class_name"), node.get("module")
        if not isinstance(module, str) or any(
            module == m or module.startswith(m + ".") for m in _KERAS_MODULES
        ):
            continue
        name = node.get("config") if class_name == "function" else class_name  # a function by reference
        if isinstance(name, str):
            yield module, name


def _skops_refs(schema: object) -> Iterator[tuple[str, str]]:
    """skops rebuilds every ``__module__``/``__class__`` it names (and calls some: its ReduceNode), and
    MLflow trusts the types the model's own MLmodel lists: so they are graded here."""
    for node in _dicts(schema):
        module, name = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(name, str):
            yield module, name
        module, name = node.get("module_path"), node.get("function")
        if isinstance(module, str) and isinstance(name, str):
            yield module, name


_MAX_MLMODEL = 1 * MiB  # an MLmodel is a few KiB; larger YAML is not parsed


def _scan_text(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Text is data, except an MLmodel whose flavor runs Python code shipped with the model."""
    stream.seek(0)
    if size > _MAX_MLMODEL or b"flavors:" not in stream.read(HEAD_BYTES):
        return
    import yaml

    stream.seek(0)
    try:
        document = yaml.safe_load(stream.read())
    except yaml.YAMLError:
        return
    flavors = document.get("flavors") if isinstance(document, dict) else None
    if not isinstance(flavors, dict):
        return
    for name, flavor in flavors.items():
        if isinstance(flavor, dict) and (flavor.get("model_code_path") or flavor.get("code")):
            scan.add(
                path, Verdict.SUSPICIOUS, f"MLmodel flavor {name} runs Python code shipped with the model"
            )


def _scan_seven_zip(scan: _Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    scan.add(path, Verdict.SUSPICIOUS, "7z archive not inspected (no 7z reader)")


def _size(count: int) -> str:
    return f"{count / GiB:.1f} GiB" if count >= GiB else f"{count / MiB:.0f} MiB"


_SCANNERS: dict[Kind, _Scanner] = {
    Kind.EMPTY: _nothing,
    Kind.BINARY: _nothing,
    Kind.TEXT: _scan_text,
    Kind.ZIP: _scan_zip,
    Kind.TAR: _scan_tar,
    Kind.GZIP: _scan_compressed,
    Kind.BZ2: _scan_compressed,
    Kind.XZ: _scan_compressed,
    Kind.ZLIB: _scan_compressed,
    Kind.SEVEN_ZIP: _scan_seven_zip,
    Kind.NUMPY: _scan_npy,
    Kind.HDF5: _scan_hdf5,
    Kind.SAFETENSORS: _scan_safetensors,
    Kind.PICKLE: _scan_pickle,
}
