"""A dependency down is a 503 with Retry-After, never a 500: which exceptions say so, and the handlers.

The pure functions first, then the pieces that use them (the key layer, the auth-store cache, the
epoch query, json_errors), then ``install`` on small Flask and FastAPI apps standing in for MLflow's.
The fleet e2e tests (tests/e2e/test_fleet.py) stop the real PostgreSQL and S3.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from hokusai_registry.server import json_errors, outages
from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.context import Principal, RequestState, current_request
from hokusai_registry.server.credentials import Refusal
from hokusai_registry.server.keys import KeyStore

REFUSED = "connection to server at 10.0.0.7, port 5432 failed: Connection refused"


def operational(text: str = REFUSED) -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        "SELECT * FROM hokusai_api_keys WHERE key_hash = %s", ("secret-hash",), Exception(text)
    )


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as caught:
        return caught


def raised_during(error: BaseException, handling: BaseException) -> BaseException:
    try:
        try:
            raise handling
        except BaseException:
            raise error  # noqa: B904 - the implicit __context__ is the point
    except BaseException as caught:
        return caught


# --- which exceptions mean "down" -----------------------------------------------------------------------

MLFLOW_503 = MlflowException("x", error_code=TEMPORARILY_UNAVAILABLE)
DOWN = [
    (operational(), "database"),
    (sa.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), "database"),
    (sa.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), "database"),
    (sa.exc.DisconnectionError("gone"), "database"),
    (sa.exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True), "database"),
    (sqlite3.OperationalError("database is locked"), "database"),
    (MlflowException("db error", error_code=TEMPORARILY_UNAVAILABLE), "database"),
    (raised_from(MLFLOW_503, ConnectTimeoutError(endpoint_url="")), "artifact store"),
    (EndpointConnectionError(endpoint_url="http://s3"), "artifact store"),
    (ConnectTimeoutError(endpoint_url="http://s3"), "artifact store"),
    (ReadTimeoutError(endpoint_url="http://s3"), "artifact store"),
    (ConnectionClosedError(endpoint_url="http://s3"), "artifact store"),
    (client_error("SlowDown", 503), "artifact store"),
    (client_error("InternalError", 500), "artifact store"),
    # wrapped, as MLflow and boto3 wrap them
    (raised_from(MlflowException("x", error_code=INTERNAL_ERROR), EndpointConnectionError(endpoint_url="x")),
     "artifact store"),
    (raised_during(RuntimeError("S3UploadFailedError: Failed to upload"), client_error("SlowDown", 503)),
     "artifact store"),
    (raised_from(MlflowException("x", error_code=INTERNAL_ERROR), operational()), "database"),
]  # fmt: skip
NOT_DOWN = [
    ValueError("bad input"),
    sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sa.exc.ProgrammingError("SELECT", {}, Exception("syntax error")),
    MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST),
    MlflowException("a bug", error_code=INTERNAL_ERROR),
    client_error("AccessDenied", 403),
    client_error("NoSuchKey", 404),
    NoCredentialsError(),
    SSLError(endpoint_url="http://s3", error=Exception("CERTIFICATE_VERIFY_FAILED")),
    raised_from(ValueError("x"), KeyError("y")),
]


@pytest.mark.parametrize(("error", "what"), DOWN, ids=[f"{type(e).__name__}-{w}" for e, w in DOWN])
def test_these_mean_a_dependency_is_down(error: BaseException, what: str) -> None:
    assert outages.dependency(error) == what


@pytest.mark.parametrize("error", NOT_DOWN, ids=[type(e).__name__ for e in NOT_DOWN])
def test_these_do_not(error: BaseException) -> None:
    assert outages.dependency(error) is None


def test_a_cycle_in_the_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert outages.dependency(first) is None
    assert len(list(outages.causes(first))) == 2


def test_the_message_names_what_is_down_and_when_to_retry_never_the_drivers_text() -> None:
    text = outages.message("database", operational())
    assert "database cannot be reached" in text and f"try again in {outages.RETRY_AFTER_SECONDS} s" in text
    assert "OperationalError" in text
    for secret in ("10.0.0.7", "5432", "SELECT", "secret-hash"):
        assert secret not in text
    assert json.loads(outages.body("artifact store")) == {
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": outages.message("artifact store"),
    }


def test_the_log_line_names_the_drivers_error_without_sql_or_parameters() -> None:
    wrapped = raised_from(outages.unavailable("database", operational()), operational())
    assert outages.describe(wrapped) == f"OperationalError: {REFUSED}"
    assert "secret-hash" not in outages.describe(operational()) and "SELECT" not in outages.describe(
        operational()
    )
    assert outages.message("database", wrapped).count("(OperationalError)") == 1


def test_a_refusal_is_a_503_with_retry_after() -> None:
    refusal = outages.refusal("database", operational())
    assert (refusal.status, refusal.error_code, refusal.reason) == (
        503,
        "TEMPORARILY_UNAVAILABLE",
        "database_down",
    )
    assert refusal.response_headers()["Retry-After"] == outages.RETRY_AFTER
    assert "WWW-Authenticate" not in refusal.response_headers()


def test_unavailable_is_the_mlflow_exception_mlflow_answers_503_for() -> None:
    error = outages.unavailable("artifact store", EndpointConnectionError(endpoint_url="x"))
    assert isinstance(error, MlflowException)
    assert error.error_code == "TEMPORARILY_UNAVAILABLE" and error.get_http_status_code() == 503
    assert outages.dependency(error) == "artifact store"  # it says so, without a chain
    assert (
        outages.dependency(
            raised_from(outages.unavailable("database"), EndpointConnectionError(endpoint_url="x"))
        )
        == "database"
    )
    assert outages.as_unavailable(ValueError("x")) is None


def test_an_outage_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    outages._last_noted.clear()
    logged = [outages.note("database", operational(), "here", clock=lambda: now[0]) for _ in range(3)]
    now[0] += outages.NOTE_INTERVAL
    logged.append(outages.note("database", operational(), "here", clock=lambda: now[0]))
    logged.append(
        outages.note(
            "artifact store", EndpointConnectionError(endpoint_url="x"), "there", clock=lambda: now[0]
        )
    )
    assert logged == [True, False, False, True, True]
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 3


def test_what_a_request_ran_into_is_seen_by_that_request_only_also_from_its_worker_thread() -> None:
    outages.record("database")  # outside a request: nowhere to note it
    assert outages.seen() is None
    token = outages.watch()
    try:
        context = contextvars.copy_context()  # as anyio gives a Flask thread
        thread = threading.Thread(target=context.run, args=(outages.record, "artifact store"))
        thread.start()
        thread.join()
        assert outages.seen() == "artifact store"
        other = contextvars.copy_context()
        assert other.run(outages.seen) == "artifact store"  # the same request's list
    finally:
        outages.unwatch(token)
    assert outages.seen() is None


# --- the pieces that use them ----------------------------------------------------------------------------


def test_a_key_looked_up_while_the_database_is_down_is_a_503_not_a_401(tmp_path: Path) -> None:
    keys = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32)
    new = keys.create("alice", scope="write")

    def down(_digest: str) -> None:
        raise operational()

    keys.find_by_hash = down
    authenticator = Authenticator(keys, ttl=5)
    with pytest.raises(Refusal) as refused:
        authenticator.resolve(new.key, authenticator.digest(new.key))
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": outages.RETRY_AFTER}
    assert "database cannot be reached" in refused.value.message


def test_an_unknown_key_is_still_a_401_and_other_errors_still_raise(tmp_path: Path) -> None:
    keys = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32)
    authenticator = Authenticator(keys, ttl=5)
    with pytest.raises(Refusal) as refused:
        authenticator.resolve("hk_live_" + "x" * 40, authenticator.digest("hk_live_" + "x" * 40))
    assert refused.value.status == 401

    def broken(_digest: str) -> None:
        raise ValueError("a bug")

    keys.find_by_hash = broken
    with pytest.raises(ValueError, match="a bug"):
        authenticator.resolve("hk_live_" + "y" * 40, authenticator.digest("hk_live_" + "y" * 40))


@pytest.fixture
def request_state() -> Iterator[RequestState]:
    state = RequestState(Principal("k_1", "alice", "write"), read_only=True)
    token, watching = current_request.set(state), outages.watch()
    try:
        yield state
    finally:
        outages.unwatch(watching)
        current_request.reset(token)


def test_the_auth_epochs_unreadable_raise_mlflows_temporarily_unavailable(
    tmp_path: Path, request_state: RequestState
) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from hokusai_registry.server.auth_store import CachedAuthStore
    from hokusai_registry.server.schema import create_tables

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    create_tables(store.engine)
    store.create_user("alice", "a-long-enough-password-1A!")
    cached = CachedAuthStore(store, 2.0, on_user_deleted=lambda _: None)
    with store.engine.begin() as conn:  # what the database answers while it is away, here: no such table
        conn.execute(sa.text("DROP TABLE hokusai_auth_epoch"))
    with pytest.raises(MlflowException) as raised:
        cached.get_user("alice")
    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE" and raised.value.get_http_status_code() == 503
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    assert outages.seen() == "database"


def test_the_epoch_query_raises_sqlalchemys_wrapper_and_returns_its_connection(tmp_path: Path) -> None:
    from hokusai_registry.server.schema import read_epochs

    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'empty.db'}", pool_size=1, max_overflow=0, pool_timeout=1
    )
    for _ in range(3):  # a connection kept by a failed query would exhaust the one-connection pool
        with pytest.raises(sa.exc.OperationalError) as raised:
            read_epochs(engine, "alice")
        assert isinstance(raised.value.orig, sqlite3.OperationalError)
        assert "alice" not in str(raised.value)  # parameters hidden
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# --- json_errors: Retry-After on every 503 -----------------------------------------------------------------


def serve(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    method: str = "GET",
    principal: Principal | None = None,
    down: str | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        if down:
            outages.record(down)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": "/api/2.0/mlflow-artifacts/artifacts/1/x",
        "headers": [],
    }
    asyncio.run(json_errors.serve(app, scope, receive, send, principal))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


JSON = [(b"content-type", b"application/json")]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_503_without_retry_after_gets_one(method: str) -> None:
    status, headers, _ = serve(
        503, JSON, b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "m"}', method=method
    )
    assert status == 503 and headers[b"retry-after"] == outages.RETRY_AFTER.encode()
    status, headers, body = serve(503, [(b"content-type", b"text/plain")], b"down", method="GET")
    assert (
        headers[b"retry-after"] == outages.RETRY_AFTER.encode()
        and json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    )


def test_a_503_keeps_its_own_retry_after_and_other_statuses_get_none() -> None:
    assert serve(503, [*JSON, (b"retry-after", b"30")], b"{}")[1][b"retry-after"] == b"30"
    assert b"retry-after" not in serve(500, JSON, b"{}")[1]
    assert b"retry-after" not in serve(200, JSON, b"{}")[1]


MLFLOW_401 = [(b"content-type", b"text/plain; charset=utf-8"), (b"www-authenticate", b'Basic realm="mlflow"')]
NOT_AUTHENTICATED = (
    b"You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/index.html"
)


def test_mlflows_not_authenticated_for_a_key_we_accepted_while_the_database_was_down_is_a_503() -> None:
    """MLflow's FastAPI permission check turns a failed get_user into this 401."""
    tenant = Principal("k_1", "alice", "write")
    status, headers, body = serve(401, MLFLOW_401, NOT_AUTHENTICATED, principal=tenant, down="database")
    assert status == 503 and headers[b"retry-after"] == outages.RETRY_AFTER.encode()
    assert b"www-authenticate" not in headers
    assert json.loads(body) == json.loads(outages.body("database"))
    # no outage seen, or no key accepted: the 401 stays a 401
    assert serve(401, MLFLOW_401, NOT_AUTHENTICATED, principal=tenant)[0] == 401
    assert serve(401, MLFLOW_401, NOT_AUTHENTICATED, principal=None, down="database")[0] == 401


# --- install: the handlers on Flask and Starlette ----------------------------------------------------------


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A Flask app and a FastAPI app (with a mounted sub-app) whose routes raise what they are told to."""
    from fastapi import FastAPI
    from flask import Flask, request
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR
    from starlette.responses import JSONResponse

    monkeypatch.delenv(ARTIFACTS_DESTINATION_ENV_VAR, raising=False)
    errors: dict[str, Exception] = {
        "db": operational(), "s3": EndpointConnectionError(endpoint_url="http://s3"),
        "bug": ValueError("a bug"), "mlflow-503": MlflowException("m", error_code=TEMPORARILY_UNAVAILABLE),
        "mlflow-404": MlflowException("no such thing", error_code=RESOURCE_DOES_NOT_EXIST),
        "wrapped": raised_from(  # type: ignore[dict-item]
            MlflowException("x", error_code=INTERNAL_ERROR), EndpointConnectionError(endpoint_url="s")
        ),
    }  # fmt: skip
    flask = Flask("stand-in")

    @flask.before_request
    def before() -> None:
        if (which := request.args.get("before")) is not None:
            raise errors[which]

    @flask.after_request
    def after(response: Any) -> Any:
        if (which := request.args.get("after")) is not None:
            raise errors[which]
        return response

    @flask.route("/flask/<which>")
    def raising(which: str) -> str:
        if which == "ok":
            return "ok"
        raise errors[which]

    fastapi = FastAPI()

    async def mlflows_own(_request: Any, exc: MlflowException) -> JSONResponse:  # as MLflow's app has
        return JSONResponse(json.loads(exc.serialize_as_json()), status_code=exc.get_http_status_code())

    fastapi.add_exception_handler(MlflowException, mlflows_own)

    @fastapi.get("/native/{which}")
    async def native(which: str) -> dict[str, str]:
        raise errors[which]

    @fastapi.middleware("http")
    async def checking(request: Any, call_next: Any) -> Any:  # as MLflow's permission check runs
        if (which := request.query_params.get("middleware")) is not None:
            raise errors[which]
        return await call_next(request)

    sub = FastAPI()

    @sub.get("/keys")
    async def keys() -> dict[str, str]:
        raise errors["db"]

    fastapi.mount("/sub", sub)
    outages.install(fastapi, flask)
    outages.install(fastapi, flask)  # building the app twice wraps nothing twice
    return fastapi, flask


def is_503(status: int, headers: Any, body: bytes) -> bool:
    return (
        status == 503
        and headers.get("Retry-After") == outages.RETRY_AFTER
        and json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    )


@pytest.mark.parametrize("query", ["", "?before=db", "?after=db", "?before=mlflow-503"])
def test_flask_answers_an_outage_anywhere_in_a_request_with_the_503(
    apps: tuple[Any, Any], query: str
) -> None:
    _, flask = apps
    which = "s3" if not query else "ok"
    answer = flask.test_client().get(f"/flask/{which}{query}")
    assert is_503(answer.status_code, answer.headers, answer.data), answer.data


def test_flask_keeps_its_500_for_anything_else_and_logs_outages_without_a_traceback(
    apps: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    _, flask = apps
    assert flask.test_client().get("/flask/bug").status_code == 500
    assert any("a bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    caplog.clear()
    outages._last_noted.clear()
    for _ in range(3):
        assert flask.test_client().get("/flask/db").status_code == 503
    assert not any(r.exc_info for r in caplog.records)
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/native/db",
        "/native/s3",
        "/native/mlflow-503",
        "/native/wrapped",
        "/sub/keys",
        "/native/bug?middleware=db",
    ],
)
def test_starlette_answers_an_outage_from_a_route_a_middleware_or_a_mounted_app_with_the_503(
    apps: tuple[Any, Any], path: str
) -> None:
    from starlette.testclient import TestClient

    fastapi, _ = apps
    answer = TestClient(fastapi, raise_server_exceptions=False).get(path)
    assert is_503(answer.status_code, answer.headers, answer.content), answer.content


def test_starlette_keeps_its_answers_for_anything_else(apps: tuple[Any, Any]) -> None:
    from starlette.testclient import TestClient

    client = TestClient(apps[0], raise_server_exceptions=False)
    assert (client.get("/native/bug").status_code, client.get("/native/bug").text) == (
        500,
        "Internal Server Error",
    )
    missing = client.get("/native/mlflow-404")  # MLflow's own handler still answers its exceptions
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
