"""The uvicorn options `up` hands ``mlflow server``, read back with uvicorn's own command-line parser."""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from uvicorn.main import main as uvicorn_command

from hokusai_registry.server import launch
from hokusai_registry.settings import ConfigError, Settings


def uvicorn_params(opts: str) -> dict[str, Any]:
    """What uvicorn makes of ``opts``, as it parses them when `mlflow server` starts it."""
    context = uvicorn_command.make_context("uvicorn", [*shlex.split(opts), "app:app"])
    return dict(context.params)


def test_idle_connections_outlive_the_load_balancers_by_default(tmp_path: Path) -> None:
    """uvicorn's own default (5 s) is shorter than any load balancer's idle timeout (the ALB's: 60 s):
    the server would close connections the balancer still reuses, failing a request now and then."""
    settings = Settings(data_dir=tmp_path)
    params = uvicorn_params(launch.uvicorn_opts(settings, None))
    assert params["timeout_keep_alive"] == settings.lb_idle_timeout_seconds + 5 == 65


def test_the_keep_alive_follows_the_load_balancers_idle_timeout(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, lb_idle_timeout_seconds=600)
    assert uvicorn_params(launch.uvicorn_opts(settings, None))["timeout_keep_alive"] == 605


def test_the_operators_uvicorn_options_are_kept_and_win(tmp_path: Path) -> None:
    opts = launch.uvicorn_opts(
        Settings(data_dir=tmp_path, log_format="json"), "--timeout-keep-alive 7 --limit-concurrency 100"
    )
    params = uvicorn_params(opts)
    assert (params["timeout_keep_alive"], params["limit_concurrency"]) == (7, 100)
    assert params["log_config"] == str(tmp_path.resolve() / "uvicorn-log-config.json")


def test_up_gives_the_options_to_mlflow_server(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(launch.UVICORN_OPTS_ENV, "--limit-concurrency 100")
    prepared = launch.prepare(Settings(data_dir=tmp_path / "data", lb_idle_timeout_seconds=120))
    params = uvicorn_params(prepared.env[launch.UVICORN_OPTS_ENV])
    assert (params["timeout_keep_alive"], params["limit_concurrency"]) == (125, 100)


def test_gunicorn_is_refused_before_mlflow_server_starts(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(launch.GUNICORN_OPTS_ENV, "--timeout 60")
    with pytest.raises(ConfigError, match="unset MLFLOW_GUNICORN_OPTS"):
        launch.prepare(Settings(data_dir=tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_up_serves_its_sqlite_databases_logging_ahead(tmp_path: Path) -> None:
    """Both of `up`'s embedded databases, before any worker opens them (database.py says why)."""
    settings = Settings(data_dir=tmp_path / "data")
    launch.prepare(settings)
    for name in ("mlflow.db", "auth.db"):
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / name)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",), name
