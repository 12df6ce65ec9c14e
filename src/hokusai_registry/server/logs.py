"""``HOKUSAI_REGISTRY_LOG_FORMAT=json``: uvicorn's and MLflow's log lines as one JSON object per line.

Two hooks, because the lines come from two places. uvicorn configures its loggers from a
``--log-config`` file in every process it starts (the supervisor and each worker) before it imports
the app: `up` writes ours (``uvicorn_log_config``: the loggers and streams of MLflow's own file with
our formatter, and Python warnings) and hands it to uvicorn (``log_config_opts``). MLflow installs
its handler (on ``mlflow``, ``sqlalchemy.engine``, ``alembic``, ``huey``) when it is imported, later,
so ``create_app`` calls ``configure``, which gives every handler then installed our formatter.

What is written, and to which stream, does not change: only the format. The audit logger keeps its
own handler and format (its lines are JSON already). With ``text`` nothing is touched. Lines that
``mlflow server``'s own process prints before it starts uvicorn stay text (docs/operations.md).
Imports no MLflow: uvicorn's supervisor imports this module to build its formatter.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hokusai_registry.server import audit

LogFormat = Literal["text", "json"]
LOG_CONFIG_NAME = "uvicorn-log-config.json"
ACCESS_LOGGER = "uvicorn.access"


class JsonFormatter(logging.Formatter):
    """``time``, ``level``, ``logger``, ``message``; access lines add ``method``, ``path``, ``status``,
    ``client`` (and ``query`` when there is one).

    ``time`` is ISO 8601 UTC with milliseconds, as in audit lines. An exception is one ``exc_info``
    string (a stack one ``stack_info`` string), so a traceback never becomes lines of its own.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        if record.name == ACCESS_LOGGER:
            entry |= _access_fields(record.args)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage().rstrip("\n")  # a warning's text ends with one
    except Exception:  # bad %-arguments: keep the line (logging would print a raw traceback instead)
        return f"{record.msg!s} {record.args!r}"


def _access_fields(args: Any) -> dict[str, Any]:
    """uvicorn's access record carries (client_addr, method, full_path, http_version, status_code)."""
    if not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, full_path, _http_version, status = args
    path, _, query = str(full_path).partition("?")
    fields: dict[str, Any] = {"method": method, "path": path, "status": status, "client": client}
    if query:
        fields["query"] = query
    return fields


def formatter_capturing_warnings() -> JsonFormatter:
    """The log config's formatter factory; it also sends Python warnings through logging (py.warnings).

    dictConfig runs it before uvicorn imports the app, so warnings at import (MLflow's starlette
    deprecation) are JSON lines too instead of two raw lines each.
    """
    logging.captureWarnings(True)
    return JsonFormatter()


def uvicorn_log_config() -> dict[str, Any]:
    """MLflow's uvicorn log config (mlflow/server/uvicorn_log_config.yaml) with our formatter.

    Plus the ``py.warnings`` logger, on stderr where Python prints warnings.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.formatter_capturing_warnings"}},
        "handlers": {
            "default": {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO"},
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO", "propagate": False},
            "py.warnings": {"handlers": ["default"], "level": "WARNING", "propagate": False},
        },
    }


def log_config_opts(log_format: LogFormat, data_dir: Path) -> list[str]:
    """For `up`: with ``json``, write our uvicorn log config and return the option that loads it."""
    if log_format != "json":
        return []
    path = data_dir / LOG_CONFIG_NAME
    path.write_text(json.dumps(uvicorn_log_config(), indent=2) + "\n")
    return ["--log-config", str(path)]


def configure(log_format: LogFormat) -> None:
    """In a worker: give every installed handler but the audit log's the JSON formatter."""
    if log_format != "json":
        return
    formatter = JsonFormatter()
    named = [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    loggers = [logging.getLogger(), *named]
    for logger in loggers:
        if logger.name != audit.logger.name:
            for handler in logger.handlers:
                handler.setFormatter(formatter)
    # A record no handler takes (a library's warning) goes to logging's last resort: JSON too.
    last_resort = logging.StreamHandler(sys.stderr)
    last_resort.setLevel(logging.WARNING)
    last_resort.setFormatter(formatter)
    logging.lastResort = last_resort
    logging.captureWarnings(True)  # Python warnings, printed raw otherwise, go through that
    threading.excepthook = _log_thread_exception  # and a thread's uncaught exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # ignored, as by the default hook
        return
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("threading").error("Exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]
