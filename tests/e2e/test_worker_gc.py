"""A worker exempts MLflow's start-up objects from garbage collection (p99: full-collection pauses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services import Registry

# Builds the app as a worker does, then reports how many objects the collector no longer walks.
PROBE = """
import gc
from hokusai_registry.server.app import create_app
create_app()
print(gc.get_freeze_count())
"""


def frozen_after_start(registry: Registry, cwd: Path, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**registry.worker_env(), **env},
        cwd=cwd,  # MLflow's app falls back to ./mlflow.db when no store is configured
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_a_worker_freezes_what_it_built_at_start(registry: Registry, tmp_path: Path) -> None:
    assert frozen_after_start(registry, tmp_path) > 100_000  # MLflow's app is ~340,000 objects


def test_the_setting_turns_it_off(registry: Registry, tmp_path: Path) -> None:
    assert frozen_after_start(registry, tmp_path, HOKUSAI_REGISTRY_GC_FREEZE="false") == 0
