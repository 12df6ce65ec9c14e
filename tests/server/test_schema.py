"""The auth epoch every worker reads once per request to know whether its auth caches are stale."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from hokusai_registry.server.schema import bump_epoch, create_tables, read_epochs


def test_epoch_starts_at_zero_and_moves_with_every_bump(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/auth.db")
    create_tables(engine)
    create_tables(engine)  # idempotent: every worker and every `keys` command calls it
    assert read_epochs(engine, None)[0] == 0
    bump_epoch(engine)
    bump_epoch(engine)
    assert read_epochs(engine, None)[0] == 2
