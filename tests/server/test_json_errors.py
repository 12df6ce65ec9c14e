"""Refusals that are not JSON become JSON; everything else passes through, message by message.

A tiny ASGI app stands in for MLflow, answering what MLflow answers; the e2e suite
(tests/e2e/test_json_refusals.py) drives the real thing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import werkzeug.exceptions

from hokusai_registry.server import json_errors
from hokusai_registry.server.context import Principal
from hokusai_registry.server.credentials import ERROR_CODES, Refusal

TENANT = Principal("k_0123456789ab", "acme", "write")
Sent = list[dict[str, Any]]


def app_answering(
    status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes], *, read_body: bool = True
) -> Callable[..., Any]:
    """An ASGI app that reads the request body, then answers ``status`` with ``chunks`` as body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while read_body:
            message = await receive()
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})

    return app


def run(
    app: Callable[..., Any],
    *,
    method: str = "GET",
    path: str = "/api/2.0/mlflow/registered-models/get",
    request_body: list[bytes] | None = None,
    principal: Principal | None = TENANT,
) -> tuple[Sent, list[dict[str, Any]]]:
    """``app`` served through ``json_errors.serve``: what reached the client, and what the app received."""
    sent: Sent = []
    chunks = request_body or [b""]
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = incoming.pop(0)
        received.append(message)
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(json_errors.serve(app, scope, receive, send, principal))
    return sent, received


def headers_of(sent: Sent) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


def body_of(sent: Sent) -> bytes:
    return b"".join(message.get("body", b"") for message in sent[1:])


FLASK_403 = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"17"), (b"vary", b"Origin")]


def test_mlflows_plain_text_403_becomes_json_saying_who_what_and_the_fix() -> None:
    sent, _ = run(app_answering(403, FLASK_403, [b"Permission ", b"denied"]))
    assert sent[0]["status"] == 403
    headers = headers_of(sent)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body_of(sent))).encode()
    assert headers[b"vary"] == b"Origin"
    assert [name for name, _ in sent[0]["headers"]].count(b"content-length") == 1
    body = json.loads(body_of(sent))
    assert body["error_code"] == "PERMISSION_DENIED"
    message = body["message"]
    assert "user 'acme'" in message and "k_0123456789ab" in message
    assert "GET /api/2.0/mlflow/registered-models/get" in message
    assert "owner or an admin can grant" in message
    assert sent[-1].get("more_body", False) is False


def test_fastapi_plain_text_403_without_content_length_gets_one() -> None:
    """MLflow's CORS block sends text/plain with no content-length at all."""
    sent, _ = run(app_answering(403, [(b"content-type", b"text/plain")], [b"Cross-origin request blocked"]))
    assert headers_of(sent)[b"content-length"] == str(len(body_of(sent))).encode()
    assert json.loads(body_of(sent)) == {
        "error_code": "PERMISSION_DENIED",
        "message": "Cross-origin request blocked",
    }


def test_the_message_names_the_key_id_never_a_key() -> None:
    principal = Principal("k_feedfacecafe", "acme", "write")
    sent, _ = run(app_answering(403, FLASK_403, [b"Permission denied"]), principal=principal)
    assert b"k_feedfacecafe" in body_of(sent)
    assert b"hk_live_" not in body_of(sent)


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/runs/create", "/ajax-api/2.0/mlflow/runs/create"])
@pytest.mark.parametrize(
    "request_body",
    [[b'{"experiment_id": "0", "start_time": 1}'], [b'{"experiment_', b'id": "0"}'], [b'{"start_time": 1}']],
    ids=["exp-0", "exp-0-in-two-chunks", "no-experiment-id"],
)
def test_a_run_refused_in_the_default_experiment_says_to_set_an_experiment(
    path: str, request_body: list[bytes]
) -> None:
    sent, received = run(
        app_answering(403, FLASK_403, [b"Permission denied"]),
        method="POST",
        path=path,
        request_body=request_body,
    )
    message = json.loads(body_of(sent))["message"]
    assert "Default experiment (id 0)" in message and 'mlflow.set_experiment("<name>")' in message
    assert "user 'acme' (API key k_0123456789ab)" in message
    assert [m["body"] for m in received] == request_body  # the app got the same messages, unchanged


def test_a_run_refused_in_another_experiment_gets_the_grant_message() -> None:
    sent, _ = run(
        app_answering(403, FLASK_403, [b"Permission denied"]),
        method="POST",
        path="/api/2.0/mlflow/runs/create",
        request_body=[b'{"experiment_id": "17"}'],
    )
    message = json.loads(body_of(sent))["message"]
    assert "set_experiment" not in message and "owner or an admin can grant" in message


def test_only_runs_create_has_its_body_looked_at() -> None:
    sent, _ = run(
        app_answering(403, FLASK_403, [b"Permission denied"]),
        method="POST",
        path="/api/2.0/mlflow/experiments/create",
        request_body=[b'{"experiment_id": "0"}'],
    )
    assert "set_experiment" not in json.loads(body_of(sent))["message"]


def test_flasks_unknown_route_page_is_endpoint_not_found() -> None:
    page = (
        b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
        b"<p>The requested URL was not found on the server. If you entered the URL manually please "
        b"check your spelling and try again.</p>\n"
    )
    sent, _ = run(app_answering(404, FLASK_403, [page]), path="/no/such/route")
    body = json.loads(body_of(sent))
    assert sent[0]["status"] == 404
    assert body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "GET /no/such/route" in body["message"]


def test_the_unknown_route_sentence_is_werkzeugs() -> None:
    assert json_errors.WERKZEUG_NOT_FOUND in str(werkzeug.exceptions.NotFound.description)


def test_other_plain_text_refusals_keep_their_text_and_get_the_status_code() -> None:
    retry = [(b"content-type", b"text/plain"), (b"retry-after", b"5")]
    sent, _ = run(app_answering(503, retry, [b"Artifact serving is disabled"]))
    assert headers_of(sent)[b"retry-after"] == b"5"
    assert json.loads(body_of(sent)) == {
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": "Artifact serving is disabled",
    }
    sent, _ = run(app_answering(404, [(b"content-type", b"text/plain")], [b"No such endpoint: gw"]))
    assert json.loads(body_of(sent))["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    sent, _ = run(app_answering(409, [], [b""]))
    assert json.loads(body_of(sent)) == {
        "error_code": "RESOURCE_ALREADY_EXISTS",
        "message": "GET /api/2.0/mlflow/registered-models/get: Conflict",
    }


def test_mlflows_401_keeps_its_www_authenticate() -> None:
    headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b'Basic realm="mlflow"')]
    sent, _ = run(app_answering(401, headers, [b"You are not authenticated."]))
    assert headers_of(sent)[b"www-authenticate"] == b'Basic realm="mlflow"'
    assert json.loads(body_of(sent))["error_code"] == "UNAUTHENTICATED"


def test_a_refusal_that_is_already_json_is_untouched() -> None:
    body = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No such artifact"}'
    for content_type in (b"application/json", b"application/problem+json; charset=utf-8"):
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        app = app_answering(404, headers, [body[:10], body[10:]])
        sent, _ = run(app)
        assert [m.get("body") for m in sent] == [None, body[:10], body[10:]]
        assert sent[0]["headers"] == headers


def test_a_success_streams_through_chunk_by_chunk_as_it_came() -> None:
    chunks = [b"a" * 70_000, b"b", b"c" * 10]  # one chunk larger than anything held
    headers = [(b"content-type", b"application/octet-stream")]
    seen: Sent = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, chunk in enumerate(chunks):
            message = {"type": "http.response.body", "body": chunk, "more_body": index < 2}
            seen.append(message)
            await send(message)
            assert sent[-1] is message  # already passed on before the app sends the next

    sent: Sent = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/api/2.0/mlflow-artifacts/artifacts/x", "headers": []}
    asyncio.run(json_errors.serve(app, scope, receive, send, TENANT))
    assert sent[1:] == seen and all(a is b for a, b in zip(sent[1:], seen, strict=True))
    assert sent[0]["headers"] == headers


def test_head_is_untouched() -> None:
    sent, _ = run(app_answering(403, FLASK_403, [b""]), method="HEAD")
    assert sent[0]["headers"] == FLASK_403 and body_of(sent) == b""


def test_statuses_outside_the_refusals_are_untouched() -> None:
    for status in (400, 405, 500):
        sent, _ = run(app_answering(status, FLASK_403, [b"<p>oops</p>"]))
        assert sent[0]["headers"] == FLASK_403 and body_of(sent) == b"<p>oops</p>"


def test_a_compressed_refusal_is_untouched() -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-encoding", b"gzip")]
    sent, _ = run(app_answering(403, headers, [b"\x1f\x8b..."]))
    assert sent[0]["headers"] == headers and body_of(sent) == b"\x1f\x8b..."


def test_a_refusal_too_large_to_hold_is_released_as_it_came() -> None:
    chunks = [b"x" * 40_000, b"y" * 40_000, b"z"]
    sent, _ = run(app_answering(404, [(b"content-type", b"text/html")], chunks))
    assert sent[0]["headers"] == [(b"content-type", b"text/html")]
    assert [m["body"] for m in sent[1:]] == chunks


def test_a_refusal_the_app_left_unfinished_is_released_when_it_returns() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": FLASK_403})
        await send({"type": "http.response.body", "body": b"Permission", "more_body": True})

    sent, _ = run(app)
    assert sent[0]["headers"] == FLASK_403 and body_of(sent) == b"Permission"


def test_without_a_principal_the_message_says_this_request() -> None:
    sent, _ = run(app_answering(403, FLASK_403, [b"Permission denied"]), principal=None)
    assert json.loads(body_of(sent))["message"].startswith("this request may not GET ")


def test_html_refusals_become_their_text() -> None:
    page = b"<html><body><h1>Forbidden</h1><b>no</b> &amp; never</body></html>"
    assert json_errors.text_of(page, "text/html") == "Forbidden no & never"
    assert json_errors.text_of("caf\xe9".encode("latin-1"), "text/plain; charset=latin-1") == "caf\xe9"


def test_one_mapping_from_status_to_error_code() -> None:
    assert [Refusal(status, "m").error_code for status in (401, 403, 503)] == [
        ERROR_CODES[401],
        ERROR_CODES[403],
        ERROR_CODES[503],
    ]
    assert set(ERROR_CODES) == {401, 403, 404, 409, 503}
