"""Scan time and peak memory of the scanning engine on large, mostly-tensor models (run by hand).

    .venv/bin/python bench/scan.py --sizes 10,300,2048 [--dir /tmp] [--keep]

For each size (MiB) it writes, in a temporary directory (deleted afterwards unless --keep):

- ``torch``: a ``torch.save``-shaped zip: ``archive/data.pkl`` (a state_dict naming one FloatStorage)
  and ``archive/data/0``, one stored member of that many MiB of float-like bytes;
- ``safetensors``: ``model.safetensors`` of that size, plus a small pickle and an MLmodel beside it;
- ``bare pickle``: a protocol-4 pickle holding one bytes object of that size, and an ``os.system``
  call after it (the scanner must skip the bytes and still see the call).

Each model is scanned by ``scan_path`` in a fresh subprocess under ``/usr/bin/time -v``, twice: with
the files evicted from the page cache first (``posix_fadvise(DONTNEED)``, cold) and right after (warm).
The table gives scan seconds (inside the child, imports excluded), the child's peak RSS, and that
peak minus the peak of an idle child that only imports the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scanning.corpus import (  # noqa: E402  # the repository root, for the corpus helpers
    FIXED_ZIP_DATE,
    _OrderedDict,
    _Storage,
    craft,
    tensor,
    write_large_pickle,
)

MiB = 1 << 20
CHILD = """
import json, logging, sys, time
logging.disable(logging.CRITICAL)
from pathlib import Path
from hokusai_registry.scanning.engine import scan_path
if sys.argv[1] != "--idle":
    start = time.perf_counter()
    report = scan_path(Path(sys.argv[1]))
    print(json.dumps({"seconds": time.perf_counter() - start, "verdict": report.verdict.value,
                      "files": len(report.files), "findings": [f.line() for f in report.findings]}))
"""


def tensor_block() -> bytes:
    """1 MiB of float32-looking bytes (a fixed seed: every run writes the same files)."""
    rng = random.Random(0)
    return struct.pack("<262144f", *(rng.gauss(0, 0.02) for _ in range(262144)))


def write_torch(directory: Path, mib: int, block: bytes) -> Path:
    numel = mib * MiB // 4
    state = _OrderedDict(
        [("embedding.weight", tensor(_Storage("FloatStorage", "0", numel), (numel // 1024, 1024)))]
    )
    directory.mkdir(parents=True)
    with zipfile.ZipFile(directory / "model.pt", "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl", FIXED_ZIP_DATE), craft(state, 2))
        archive.writestr(zipfile.ZipInfo("archive/byteorder", FIXED_ZIP_DATE), b"little")
        with archive.open(zipfile.ZipInfo("archive/data/0", FIXED_ZIP_DATE), "w", force_zip64=True) as member:
            for _ in range(mib):
                member.write(block)
        archive.writestr(zipfile.ZipInfo("archive/version", FIXED_ZIP_DATE), b"3\n")
    return directory


def write_safetensors(directory: Path, mib: int, block: bytes) -> Path:
    directory.mkdir(parents=True)
    tensor_entry = {"dtype": "F32", "shape": [mib * 256, 1024], "data_offsets": [0, mib * MiB]}
    header = json.dumps({"__metadata__": {"format": "pt"}, "embedding.weight": tensor_entry}).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    with (directory / "model.safetensors").open("wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        for _ in range(mib):
            out.write(block)
    state = _OrderedDict([("head.weight", tensor(_Storage("FloatStorage", "0", 4), (2, 2)))])
    (directory / "extra_state.pkl").write_bytes(craft(state, 2))
    (directory / "MLmodel").write_text("artifact_path: model\nflavors:\n  python_function: {}\n")
    return directory


def write_bare_pickle(directory: Path, mib: int, block: bytes) -> Path:
    directory.mkdir(parents=True)
    write_large_pickle(directory / "model.pkl", mib, malicious=True)
    return directory


VARIANTS: dict[str, Callable[[Path, int, bytes], Path]] = {
    "torch": write_torch,
    "safetensors": write_safetensors,
    "bare pickle": write_bare_pickle,
}


def evict(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_child(target: str) -> tuple[int, str]:
    """(peak RSS in KiB, the child's stdout) of one scan in a fresh interpreter."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", CHILD, target],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert peak, done.stderr
    return int(peak.group(1)), done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,300,2048", help="model sizes in MiB, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dir", type=Path, default=None, help="where to write the models (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the written models")
    args = parser.parse_args()
    idle, _ = min(run_child("--idle") for _ in range(3))
    block = tensor_block()
    rows = []
    for mib in [int(size) for size in args.sizes.split(",")]:
        for variant in args.variants.split(","):
            scratch = Path(tempfile.mkdtemp(prefix=f"hokusai-bench-{mib}-", dir=args.dir))
            try:
                model = VARIANTS[variant](scratch / "model", mib, block)
                evict(model)
                cold_peak, cold = run_child(str(model))
                warm_peak, warm = run_child(str(model))
                cold_result, warm_result = json.loads(cold), json.loads(warm)
                peak = max(cold_peak, warm_peak)
                rows.append(
                    f"| {mib} MiB | {variant} | {cold_result['seconds']:.2f} | {warm_result['seconds']:.2f} "
                    f"| {peak / 1024:.0f} | {(peak - idle) / 1024:+.0f} | {warm_result['verdict']} |"
                )
                print(rows[-1], file=sys.stderr)
            finally:
                if not args.keep:
                    for path in sorted(scratch.rglob("*"), reverse=True):
                        path.unlink() if path.is_file() else path.rmdir()
                    scratch.rmdir()
    print(f"\nidle child (imports the engine only): {idle / 1024:.0f} MiB peak RSS\n")
    print("| model | variant | cold s | warm s | peak RSS MiB | above idle MiB | verdict |")
    print("|---|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
