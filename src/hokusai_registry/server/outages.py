"""A dependency is down: which exceptions say the database or the artifact store cannot be reached right
now, and the 503 ``TEMPORARILY_UNAVAILABLE`` with ``Retry-After`` such a request gets instead of a 500.

MLflow answers 503 for a database error inside its own managed sessions (it maps SQLAlchemy's
``OperationalError`` to ``TEMPORARILY_UNAVAILABLE``). Everything that reaches PostgreSQL or S3 without
them raised the driver's or botocore's own exception, which Flask and Starlette answer with a 500: our
key, epoch and scan tables, and MLflow's artifact repository talking to S3. A 500 says "this request is
broken"; a 503 with ``Retry-After`` says "the same request will work later", which is what every client
and load balancer should hear during an outage.

- :func:`dependency` names what is down from an exception (its ``__cause__``/``__context__`` chain
  included), or None when the exception says nothing of the kind;
- :func:`unavailable` is the ``MlflowException`` MLflow's own code paths already answer 503 for (its
  Flask handlers, its FastAPI permission check), :func:`refusal` our ASGI layer's 503;
- :func:`install` adds error handlers to MLflow's Flask app and to the FastAPI app (and the apps mounted
  in it) that answer any such exception with the 503, whatever route raised it, and has the artifact
  repository raise :func:`as_unavailable` for a file whose download met an outage (MLflow folds those
  into one 500 otherwise, mlflow_adapter assumption 11).

Everything but ``install`` is a pure function. ``json_errors`` adds ``Retry-After`` to any 503 that
reaches the client without one (MLflow's own, for instance).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Any, Literal

from hokusai_registry.client import OUTAGE
from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.credentials import Refusal

__all__ = [
    "ERROR_CODE",
    "RETRY_AFTER",
    "RETRY_AFTER_SECONDS",
    "Dependency",
    "as_unavailable",
    "body",
    "causes",
    "culprit",
    "dependency",
    "describe",
    "install",
    "message",
    "note",
    "record",
    "refusal",
    "seen",
    "unavailable",
    "unwatch",
    "watch",
]

log = logging.getLogger(__name__)

ERROR_CODE = "TEMPORARILY_UNAVAILABLE"
# The stock MLflow client waits exactly this long before each of its 7 retries of a 503 (urllib3 honours
# Retry-After), so it rides out outages up to about 7 x this; our `register` client honours it too.
RETRY_AFTER_SECONDS = 5
RETRY_AFTER = str(RETRY_AFTER_SECONDS)
Dependency = Literal["database", "artifact store"]
MAX_CHAIN = 16  # exceptions followed through __cause__/__context__
# PEP 249 drivers whose OperationalError/InterfaceError mean the connection failed or broke.
DBAPI_DRIVERS = frozenset({"psycopg", "psycopg2", "pg8000", "asyncpg", "pymysql", "MySQLdb", "sqlite3"})
DBAPI_OUTAGES = frozenset({"OperationalError", "InterfaceError"})
# S3 error codes that mean "S3 is overloaded or failing", not "this request is wrong".
S3_UNAVAILABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
MLFLOW_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
ORIGINAL = "hokusai_original"  # on a wrapper install() made: what it wraps, so installing twice wraps once
MARK = "hokusai_dependency"  # on an exception unavailable() made: which dependency it is about


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``raise ... from``) or was being handled when it was raised."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one(exc: BaseException) -> Dependency | None:
    module = type(exc).__module__.split(".")[0]
    if module == "sqlalchemy":
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return "database"
        if isinstance(exc, sa_exc.TimeoutError):  # no pool connection within pool_timeout
            return "database"
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return "database"
        return None
    if module in DBAPI_DRIVERS and any(kind.__name__ in DBAPI_OUTAGES for kind in type(exc).__mro__):
        return "database"
    if module == "botocore":
        import botocore.exceptions as boto_exc

        if isinstance(exc, boto_exc.SSLError):  # a certificate problem does not pass by waiting
            return None
        if isinstance(exc, boto_exc.ConnectionError | boto_exc.HTTPClientError):
            return "artifact store"
        if isinstance(exc, boto_exc.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if error.get("Code") in S3_UNAVAILABLE_CODES or status in (500, 502, 503, 504):
                return "artifact store"
        return None
    marked: Dependency | None = getattr(exc, MARK, None)  # one of ours (unavailable())
    return marked


def _mlflow_unavailable(exc: BaseException) -> bool:
    """MLflow's TEMPORARILY_UNAVAILABLE, which it raises for its managed sessions' OperationalError."""
    module = type(exc).__module__.split(".")[0]
    return module == "mlflow" and getattr(exc, "error_code", None) == MLFLOW_UNAVAILABLE


def dependency(exc: BaseException) -> Dependency | None:
    """What ``exc`` says cannot be reached right now, or None if it says nothing of the kind.

    The first exception in the chain that names a dependency decides (an ``MlflowException`` raised
    ``from`` a botocore connection error is the artifact store's); an MLflow ``TEMPORARILY_UNAVAILABLE``
    that names none is the database's, which is what MLflow raises it for.
    """
    chain = list(causes(exc))
    for link in chain:
        found = _one(link)
        if found is not None:
            return found
    return "database" if any(_mlflow_unavailable(link) for link in chain) else None


def culprit(exc: BaseException) -> BaseException:
    """The exception in the chain that says what is down (the driver's or botocore's), else ``exc``."""
    for link in causes(exc):
        if _one(link) is not None and not hasattr(link, MARK):
            return link
    return exc


def describe(exc: BaseException) -> str:
    """For the log: the culprit's type and the first line of the driver's own message, without the SQL
    and parameters SQLAlchemy appends (a parameter may be a key's hash)."""
    found = culprit(exc)
    text = str(getattr(found, "orig", None) or found).strip().splitlines()
    return f"{type(found).__name__}: {text[0][:300] if text else ''}"


def message(what: Dependency, exc: BaseException | None = None) -> str:
    """What the client is told: what is down and when to try again; never the driver's text (it can
    hold the SQL, its parameters, host names)."""
    kind = f" ({type(culprit(exc)).__name__})" if exc is not None else ""
    return (
        f"the registry's {what} {OUTAGE}{kind}; the request was not completed: "
        f"try again in {RETRY_AFTER_SECONDS} s"
    )


def body(what: Dependency, exc: BaseException | None = None) -> bytes:
    return json.dumps({"error_code": ERROR_CODE, "message": message(what, exc)}).encode()


def headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Retry-After": RETRY_AFTER}


def refusal(what: Dependency, exc: BaseException | None = None) -> Refusal:
    """The 503 our ASGI layer answers when authenticating needs a dependency that is down."""
    return Refusal(503, message(what, exc), {"Retry-After": RETRY_AFTER}, f"{what.replace(' ', '_')}_down")


def unavailable(what: Dependency, exc: BaseException | None = None) -> Exception:
    """The ``MlflowException`` MLflow's handlers and its permission check answer 503 for."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    error: Exception = MlflowException(message(what, exc), error_code=TEMPORARILY_UNAVAILABLE)
    setattr(error, MARK, what)
    return error


# --- what this request ran into ----------------------------------------------------------------------------

# The dependencies found down while serving the current request, for the one answer that cannot say so
# itself: MLflow's FastAPI permission check turns any exception from the auth store's ``get_user`` into a
# 401 "You are not authenticated" (``_authenticate_custom_for_fastapi``), so json_errors asks here before
# passing that 401 on for a request our layer had authenticated. A list, so that the copy of the context
# Flask's thread runs in records into the same one.
_seen: ContextVar[list[Dependency] | None] = ContextVar("hokusai_outages_seen", default=None)


def watch() -> Token[list[Dependency] | None]:
    """Start recording for the current request; pass the token to ``unwatch`` when it is answered."""
    return _seen.set([])


def unwatch(token: Token[list[Dependency] | None]) -> None:
    _seen.reset(token)


def record(what: Dependency) -> None:
    """Note that the current request found ``what`` down (nothing happens outside a request)."""
    seen = _seen.get()
    if seen is not None and what not in seen:
        seen.append(what)


def seen() -> Dependency | None:
    """The first dependency the current request found down, if any."""
    found = _seen.get()
    return found[0] if found else None


_last_noted: dict[str, float] = {}
_note_lock = threading.Lock()
NOTE_INTERVAL = 10.0  # seconds between log lines about the same dependency, per process


def note(what: Dependency, exc: BaseException, where: str, clock: Any = time.monotonic) -> bool:
    """Record that the current request found ``what`` down, and log it, at most once per NOTE_INTERVAL
    per dependency; True if it logged."""
    record(what)
    now = clock()
    with _note_lock:
        if now - _last_noted.get(what, float("-inf")) < NOTE_INTERVAL:
            return False
        _last_noted[what] = now
    log.warning("%s unreachable (%s: %s); answering 503 with Retry-After", what, where, describe(exc))
    return True


# --- the error handlers ----------------------------------------------------------------------------------


def install(fastapi_app: Any, flask_app: Any) -> None:
    """Answer any exception that means a dependency is down with the 503, on both sides of the server.

    Flask: a handler for its 500 (``InternalServerError``, registered by its code: the ASGI layer imports
    this module, which therefore imports no Flask). Flask calls it for any exception no other handler
    took, from a view or a before/after-request hook, with ``original_exception`` set; it answers the
    503 for an outage and Flask's own 500 otherwise. Starlette: handlers for the outage exception
    classes (a route's exception, answered where it is raised), and for ``Exception``, which also sees
    what a middleware raised (MLflow's permission check runs in one); apps mounted in the FastAPI app
    (the key API) get the same handlers, since their own error middleware answers first.
    """
    import sqlalchemy.exc as sa_exc
    from botocore import exceptions as boto_exc
    from mlflow.exceptions import MlflowException
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Mount

    def flask_server_error(error: Any) -> Any:  # werkzeug's InternalServerError (no Flask import here)
        original = getattr(error, "original_exception", None)
        what = dependency(original) if original is not None else None
        if what is None or original is None:
            return error
        note(what, original, "flask")
        return flask_app.response_class(
            body(what, original),
            status=503,
            headers={"Retry-After": RETRY_AFTER},
            mimetype="application/json",
        )

    flask_app.register_error_handler(500, flask_server_error)
    # Flask logs a traceback for every such request before the handler answers; an outage gets one line
    # per NOTE_INTERVAL instead (note()), so its log stays readable while every request fails.
    logs = getattr(flask_app.log_exception, ORIGINAL, flask_app.log_exception)

    def log_exception(exc_info: Any) -> None:
        error = exc_info[1] if isinstance(exc_info, tuple) else None
        what = dependency(error) if isinstance(error, BaseException) else None
        if what is None or error is None:
            logs(exc_info)
        else:
            note(what, error, "flask")

    setattr(log_exception, ORIGINAL, logs)
    flask_app.log_exception = log_exception

    def outage_response(what: Dependency, exc: BaseException, where: str) -> Response:
        note(what, exc, where)
        return Response(body(what, exc), status_code=503, headers=headers())

    async def on_outage(request: Request, exc: Exception) -> Response:
        what = dependency(exc)
        if what is None:  # only registered for outage classes; a subclass that is not one: as before
            raise exc
        return outage_response(what, exc, request.url.path)

    async def on_any(request: Request, exc: Exception) -> Response:
        what = dependency(exc)
        if what is None:
            return PlainTextResponse("Internal Server Error", status_code=500)  # Starlette's own answer
        return outage_response(what, exc, request.url.path)

    outage_classes: tuple[type[Exception], ...] = (
        sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
        boto_exc.ConnectionError, boto_exc.HTTPClientError,
    )  # fmt: skip

    def add_handlers(app: Any) -> None:
        for kind in outage_classes:
            app.add_exception_handler(kind, on_outage)
        found = app.exception_handlers.get(MlflowException)
        original = getattr(found, ORIGINAL, found)  # installed twice: wrap MLflow's handler, not ours

        async def on_mlflow_exception(request: Request, exc: Exception) -> Any:
            what = dependency(exc)
            status = getattr(exc, "get_http_status_code", lambda: 500)()
            if what is not None and status >= 500:
                return outage_response(what, exc, request.url.path)
            if original is None:
                raise exc
            answer = original(request, exc)
            return await answer if hasattr(answer, "__await__") else answer

        setattr(on_mlflow_exception, ORIGINAL, original)
        app.add_exception_handler(MlflowException, on_mlflow_exception)
        app.add_exception_handler(Exception, on_any)

    add_handlers(fastapi_app)
    for route in fastapi_app.router.routes:
        if isinstance(route, Mount) and isinstance(route.app, Starlette):
            add_handlers(route.app)
    mlflow_adapter.translate_download_errors(as_unavailable)


def as_unavailable(exc: Exception) -> Exception | None:
    """The ``MlflowException`` for an outage, for a caller that folds errors by their code; else None."""
    what = dependency(exc)
    return unavailable(what, exc) if what is not None else None
