"""The scanner of pickles: both disassemblers over the same bytes, their globals graded, nested loads.

Our walk (pickle_walk.py) finds where pickle data ends and what is raw data inside it; picklescan
lists the globals of exactly the pickle bytes; grading.py grades the union. A pickle that calls a
nested loader (``pickle.loads``, torch's ``_load_from_bytes``) has the bytes it would open scanned
too. Used for pickle files, and for the object payload of an .npy file (formats.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

from hokusai_registry.scanning import grading
from hokusai_registry.scanning.opcodes import PickleStream
from hokusai_registry.scanning.pickle_walk import Embedded, PickleLayout, walk
from hokusai_registry.scanning.report import Verdict
from hokusai_registry.scanning.sniff import Kind
from hokusai_registry.scanning.state import Scan
from hokusai_registry.scanning.streams import view

__all__ = ["PickleGlobals", "pickle_globals", "scan_pickle"]

MAX_FINDINGS = 25  # per pickle: a report stays readable (and storable) whatever a pickle imports


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

    layout = walk(PickleStream(stream))
    if layout.inert:
        return PickleGlobals(frozenset(), frozenset(), layout, False)
    kept = _without(layout.skip, layout.end)
    result = scan_pickle_bytes(PickleStream(view(stream, kept)), file_id)
    theirs = frozenset((str(g.module), str(g.name)) for g in result.globals)
    return PickleGlobals(frozenset(layout.imports), theirs, layout, bool(result.scan_err))


def scan_pickle(
    scan: Scan, path: str, stream: IO[bytes], size: int, depth: int, start: int = 0
) -> Kind | None:
    """Disassemble, grade every global either disassembler found, scan what nested loaders would open."""
    window = view(stream, [(start, size)])
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


def _scan_embedded(scan: Scan, path: str, window: IO[bytes], embedded: list[Embedded], depth: int) -> None:
    """Byte strings a nested loader (``pickle.loads``, torch's ``_load_from_bytes``) would open."""
    if embedded and scan.too_deep(path, depth):
        return
    for item in embedded:
        if item.data is not None:
            inner: IO[bytes] = io.BytesIO(item.data)
            label = f"{path}!<embedded string of {item.length} bytes>"
        else:
            inner = view(window, [(item.offset, item.offset + item.length)])
            label = f"{path}!<embedded bytes at {item.offset}>"
        with inner:
            scan.nested(label, inner, depth + 1)
