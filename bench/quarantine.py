"""The quarantine's lookup (every upload, download and download URI asks it) as versions accumulate.

    .venv/bin/python bench/quarantine.py [--sizes 1000,10000,100000] [--postgres]

Times ``Quarantine.check_write`` and ``check_path`` in-process for a path no version holds (the common
case: a new model's files), at each number of versions, against the query before d8a68ce (``LIKE
'path/%'``, which no index answers) in the same run. Stock MLflow has no quarantine to compare with.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hokusai_registry.server import scan_store  # noqa: E402
from hokusai_registry.server.quarantine import Quarantine, ancestors, normalized  # noqa: E402
from tests.server.test_quarantine_lookup import store  # noqa: E402
from tests.services import run_postgres  # noqa: E402

PATH = "1/models/m-new/artifacts/MLmodel"


def like_lookup(engine: sa.Engine, path: str) -> object:
    """check_write's lookup as it was: prefixes under the path by LIKE."""
    below = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    prefix = scan_store.scans.c.artifact_prefix
    near = prefix.in_(ancestors(path)) | prefix.like(below, escape="\\")
    live = scan_store.scans.c.state != scan_store.DELETED
    with engine.connect() as conn:
        return conn.execute(scan_store.scans.select().where(live).where(near).limit(1)).first()


def fill(engine: sa.Engine, size: int) -> None:
    store(engine, [f"{i % 50}/models/m-{i}/artifacts" for i in range(size)])
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE hokusai_scans"))


def p50_ms(call: Callable[[], object], repeat: int = 60) -> float:
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bench(engine: sa.Engine, sizes: list[int]) -> str:
    scan_store.create_tables(engine)
    quarantine = Quarantine(engine)
    lines = [
        "| versions | check_write p50 ms | check_path p50 ms | before d8a68ce (LIKE) p50 ms |",
        "|---|---|---|---|",
    ]
    for size in sizes:
        fill(engine, size)
        with engine.begin() as conn:  # the tables as they were: no byte-ordered index (PostgreSQL)
            conn.execute(sa.text("DROP INDEX IF EXISTS hokusai_scans_prefix_bytes"))
        before = p50_ms(lambda: like_lookup(engine, normalized(PATH)))
        scan_store.create_tables(engine)
        write = p50_ms(lambda: quarantine.check_write(PATH))
        read = p50_ms(lambda: quarantine.check_path(PATH))
        lines.append(f"| {size:,} | {write:.2f} | {read:.2f} | {before:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.postgres:
        with run_postgres() as uri:
            print(f"## quarantine lookup, PostgreSQL 15\n\n{bench(sa.create_engine(uri), sizes)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/registry.db")
        print(f"## quarantine lookup, SQLite\n\n{bench(engine, sizes)}")


if __name__ == "__main__":
    main()
