"""What a worker sets up as it builds the app: start-up objects exempt from garbage collection (p99:
full-collection pauses), and whether PostgreSQL prepares its statements."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services import Registry, run_postgres

# Builds the app as a worker does, then runs a probe that prints one number last.
BUILD = """
from hokusai_registry.server.app import create_app
create_app()
"""
FROZEN = "import gc; print(gc.get_freeze_count())"
# Six runs of one statement in one session: psycopg 3 prepares it at the sixth, if allowed to.
PREPARED = """
import sqlalchemy as sa
engine = sa.create_engine({uri!r})
with engine.connect() as conn:
    for _ in range(6):
        conn.execute(sa.text("SELECT 1"))
    print(conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one())
"""


def after_start(registry: Registry, cwd: Path, probe: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", BUILD + probe],
        env={**registry.worker_env(), **env},
        cwd=cwd,  # MLflow's app falls back to ./mlflow.db when no store is configured
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_a_worker_freezes_what_it_built_at_start(registry: Registry, tmp_path: Path) -> None:
    assert after_start(registry, tmp_path, FROZEN) > 100_000  # MLflow's app is ~340,000 objects


def test_the_setting_turns_it_off(registry: Registry, tmp_path: Path) -> None:
    assert after_start(registry, tmp_path, FROZEN, HOKUSAI_REGISTRY_GC_FREEZE="false") == 0


def test_a_worker_prepares_repeated_statements_unless_told_not_to(registry: Registry, tmp_path: Path) -> None:
    with run_postgres() as uri:
        probe = PREPARED.format(uri=uri)
        assert after_start(registry, tmp_path, probe) == 1
        assert after_start(registry, tmp_path, probe, HOKUSAI_REGISTRY_PREPARED_STATEMENTS="false") == 0
