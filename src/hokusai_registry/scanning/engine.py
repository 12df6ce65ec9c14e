"""Scan a model version's files without loading them: the public API, and the dispatch by kind.

Every file is read once for its SHA-256 and its kind (from content, not name, sniff.py), then handed
to its kind's scanner: pickles are disassembled and their globals graded (pickles.py); zip, tar and
compressed streams are opened and every member dispatched the same way, down to ``Limits.max_depth``
containers (archives.py); numpy, safetensors, HDF5, Keras, skops and MLmodel files are parsed for
the parts that can carry code (formats.py). Nothing is ever unpickled, imported or executed.

A file the scanners cannot read, or one that decompresses past ``Limits`` (state.py), is an
``error``, never clean.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import IO

from hokusai_registry.scanning import archives, formats
from hokusai_registry.scanning.pickle_walk import TooManyOpcodes
from hokusai_registry.scanning.pickles import pickle_globals, scan_pickle
from hokusai_registry.scanning.report import Finding, ScannedFile, ScanReport, Verdict, worst
from hokusai_registry.scanning.sniff import HEAD_BYTES, Kind, sniff
from hokusai_registry.scanning.sources import StoredFile
from hokusai_registry.scanning.state import READ_BYTES, Bomb, Limits, Scan

__all__ = ["Limits", "pickle_globals", "scan_files", "scan_path", "scanner_name"]


@functools.cache
def scanner_name() -> str:
    """What looked, for the report: our version and picklescan's (read once: a metadata look-up is
    about 0.2 ms, on every registration)."""
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
# One stored file, and every file inside it


def _scan_stored(path: str, local: Path, limits: Limits) -> tuple[ScannedFile, list[Finding]]:
    sha, size, head = _hash(local)
    kind = sniff(head, whole=size <= len(head))
    with local.open("rb") as stream:
        scan = Scan(limits, _scan)
        try:
            kind = _scan(scan, path, stream, depth=0)
        except Bomb as exc:
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


def _scan(scan: Scan, path: str, stream: IO[bytes], depth: int) -> Kind:
    """Scan one (possibly nested) file: sniff it, hand it to its kind's scanner; returns its kind."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    head = stream.read(HEAD_BYTES)
    kind = sniff(head, whole=size <= len(head))
    try:
        found = _SCANNERS[kind](scan, path, stream, size, depth)
    except Bomb:
        raise
    except TooManyOpcodes as exc:
        scan.add(path, Verdict.ERROR, f"too large to scan: {exc}")
    except Exception as exc:  # a file the scanner cannot read is an error verdict, not a crash
        scan.add(path, Verdict.ERROR, f"could not be scanned ({type(exc).__name__}: {str(exc)[:160]})")
    else:
        kind = found or kind
    return kind


_Scanner = Callable[[Scan, str, IO[bytes], int, int], "Kind | None"]


def _nothing(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Raw tensor data, ONNX protobuf, empty files: nothing in them runs on load."""


_SCANNERS: dict[Kind, _Scanner] = {
    Kind.EMPTY: _nothing,
    Kind.BINARY: _nothing,
    Kind.TEXT: formats.scan_text,
    Kind.ZIP: archives.scan_zip,
    Kind.TAR: archives.scan_tar,
    Kind.GZIP: archives.scan_compressed,
    Kind.BZ2: archives.scan_compressed,
    Kind.XZ: archives.scan_compressed,
    Kind.ZLIB: archives.scan_compressed,
    Kind.SEVEN_ZIP: archives.scan_seven_zip,
    Kind.NUMPY: formats.scan_npy,
    Kind.HDF5: formats.scan_hdf5,
    Kind.SAFETENSORS: formats.scan_safetensors,
    Kind.PICKLE: scan_pickle,
}
