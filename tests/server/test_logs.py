"""The JSON log formatter, uvicorn's log config and ``configure``: one JSON object per line, text untouched.

Whatever changes process-wide logging (dictConfig, MLflow's handler, ``configure``) runs in a child
process, as in a worker, so the test process's own logging is never touched.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from hokusai_registry.server import launch, logs
from hokusai_registry.settings import Settings

AUDIT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")  # audit.py's isoformat
ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'  # what uvicorn's h11 and httptools protocols log


def record(
    name: str,
    msg: str,
    *args: object,
    level: int = logging.INFO,
    exc_info: Any = None,
    sinfo: str | None = None,
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info, sinfo=sinfo)


def formatted(rec: logging.LogRecord) -> dict[str, object]:
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert isinstance(entry, dict)
    return entry


def test_a_plain_record_has_the_audit_lines_field_names() -> None:
    rec = record("mlflow.store.db.utils", "Creating %s tables", "initial", level=logging.WARNING)
    rec.created = 1_767_225_600.25  # 2026-01-01T00:00:00.250 UTC
    assert formatted(rec) == {
        "time": "2026-01-01T00:00:00.250+00:00",
        "level": "WARNING",
        "logger": "mlflow.store.db.utils",
        "message": "Creating initial tables",
    }
    assert AUDIT_TIME.fullmatch(str(formatted(record("x", "now"))["time"]))


def test_an_access_record_gets_method_path_status_and_client() -> None:
    args = ("127.0.0.1:51234", "GET", "/api/2.0/mlflow/experiments/search?max_results=5", "1.1", 200)
    entry = formatted(record("uvicorn.access", ACCESS_FORMAT, *args))
    assert entry == {
        "time": entry["time"],
        "level": "INFO",
        "logger": "uvicorn.access",
        "message": '127.0.0.1:51234 - "GET /api/2.0/mlflow/experiments/search?max_results=5 HTTP/1.1" 200',
        "method": "GET",
        "path": "/api/2.0/mlflow/experiments/search",
        "query": "max_results=5",
        "status": 200,
        "client": "127.0.0.1:51234",
    }
    without_query = formatted(record("uvicorn.access", ACCESS_FORMAT, "", "POST", "/graphql", "1.1", 401))
    assert "query" not in without_query and "duration_ms" not in without_query
    assert (without_query["path"], without_query["status"], without_query["client"]) == ("/graphql", 401, "")


def test_an_exception_is_one_exc_info_string() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        rec = record(
            "uvicorn.error", "Exception in ASGI application", level=logging.ERROR, exc_info=sys.exc_info()
        )
    entry = formatted(rec)
    assert entry["message"] == "Exception in ASGI application"
    exc_info = str(entry["exc_info"])
    assert exc_info.startswith("Traceback (most recent call last):") and exc_info.endswith(
        "ValueError: bad value"
    )
    stacked = formatted(record("mlflow", "here", sinfo="Stack (most recent call last):\n  File x"))
    assert stacked["stack_info"] == "Stack (most recent call last):\n  File x"


def test_non_ascii_and_newlines_stay_on_one_ascii_line() -> None:
    line = logs.JsonFormatter().format(record("mlflow", "modèle %s\nzweite Zeile ✓", "模型"))
    assert line.isascii() and "\n" not in line
    assert json.loads(line)["message"] == "modèle 模型\nzweite Zeile ✓"


def test_a_record_whose_arguments_do_not_fit_still_gives_a_line() -> None:
    assert formatted(record("mlflow", "%d items", "many"))["message"] == "%d items ('many',)"


def test_text_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("hokusai_registry.tests.text")
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(asctime)s %(message)s")
    handler.setFormatter(formatter)
    monkeypatch.setattr(logger, "handlers", [handler])
    last_resort, excepthook = logging.lastResort, threading.excepthook
    logs.configure("text")
    assert handler.formatter is formatter
    assert (logging.lastResort, threading.excepthook) == (last_resort, excepthook)
    assert logs.log_config_opts("text", Path("/nonexistent")) == []


def test_up_writes_the_log_config_uvicorn_loads(tmp_path: Path) -> None:
    assert logs.log_config_opts("json", tmp_path) == ["--log-config", str(tmp_path / logs.LOG_CONFIG_NAME)]
    assert json.loads((tmp_path / logs.LOG_CONFIG_NAME).read_text()) == logs.uvicorn_log_config()


def test_the_log_config_is_mlflows_with_our_formatter() -> None:
    """Same loggers, levels, handlers and streams as the file `mlflow server` gives uvicorn."""
    import mlflow.server

    mlflow_config = yaml.safe_load(Path(mlflow.server._UVICORN_LOG_CONFIG).read_text())
    ours = logs.uvicorn_log_config()
    assert {k: v for k, v in ours["loggers"].items() if k != "py.warnings"} == mlflow_config["loggers"]
    for name, handler in mlflow_config["handlers"].items():
        assert ours["handlers"][name] == {**handler, "formatter": "json"}
    assert ours["disable_existing_loggers"] is mlflow_config["disable_existing_loggers"] is False


def test_mlflow_server_passes_our_log_config_instead_of_its_own(tmp_path: Path) -> None:
    import mlflow.server

    opts = launch.uvicorn_opts(Settings(data_dir=tmp_path, log_format="json"), None)
    command = mlflow.server._build_uvicorn_command(opts, "127.0.0.1", 5000, 2, "a:b", is_factory=True)
    assert command.count("--log-config") == 1
    assert command[command.index("--log-config") + 1] == str(tmp_path / logs.LOG_CONFIG_NAME)


WORKER = """
import json, logging, logging.config, sys, threading, warnings
from hokusai_registry.server import audit, logs

log_format = sys.argv[1]
if log_format == "json":  # what uvicorn does with `up`'s --log-config, before it imports the app
    logging.config.dictConfig(logs.uvicorn_log_config())
warnings.warn("at import", DeprecationWarning)
import mlflow  # installs MLflow's handler on mlflow, sqlalchemy.engine, alembic, huey

audit.configure()
logs.configure(log_format)  # create_app
logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
access = ("127.0.0.1:1", "GET", "/health", "1.1", 200)
logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', *access)
logging.getLogger("mlflow.server").info("from mlflow")
logging.getLogger("alembic.runtime").warning("from alembic")
logging.getLogger("some.library").warning("from a library without handlers")
logging.getLogger("some.library").info("below the last resort's level: not written")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("mlflow.server").exception("failed")
warnings.warn("later", UserWarning)
thread = threading.Thread(target=lambda: 1 / 0, name="scan-1")
thread.start()
thread.join()
audit.record(key_id="k_1", user="u", method="POST", path="/p", status=200, duration_ms=1.0)
"""


def run_worker(log_format: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WORKER, log_format], capture_output=True, text=True, timeout=120, check=True
    )


def test_json_makes_every_line_of_a_worker_json_but_keeps_audit_lines() -> None:
    done = run_worker("json")
    out = [json.loads(line) for line in done.stdout.splitlines()]
    err = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["logger"], e["path"], e["status"]) for e in out] == [("uvicorn.access", "/health", 200)]
    audit_lines = [e for e in err if "key_id" in e]
    assert audit_lines == [{**audit_lines[0], "key_id": "k_1", "user": "u", "method": "POST", "path": "/p"}]
    assert list(audit_lines[0]) == ["time", "key_id", "user", "method", "path", "status", "duration_ms"]
    lines = [e for e in err if "key_id" not in e]
    assert [(e["level"], e["logger"]) for e in lines] == [
        ("WARNING", "py.warnings"),
        ("INFO", "uvicorn.error"),
        ("INFO", "mlflow.server"),
        ("WARNING", "alembic.runtime"),
        ("WARNING", "some.library"),
        ("ERROR", "mlflow.server"),
        ("WARNING", "py.warnings"),
        ("ERROR", "threading"),
    ]
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in lines)
    assert "DeprecationWarning: at import" in lines[0]["message"]
    assert str(lines[5]["exc_info"]).endswith("ZeroDivisionError: division by zero")
    assert lines[7]["message"] == "Exception in thread scan-1"
    assert "ZeroDivisionError" in str(lines[7]["exc_info"])


def test_text_leaves_mlflows_format_as_it_is() -> None:
    lines = run_worker("text").stderr.splitlines()
    assert any(
        re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.server: from mlflow", x) for x in lines
    )
    assert "from a library without handlers" in lines  # logging's own last resort: the bare message
    assert "Traceback (most recent call last):" in lines  # raw lines, as before
    assert [x for x in lines if x.startswith("{")] == [
        x for x in lines if '"key_id": "k_1"' in x
    ]  # audit only
