"""Every refusal the registry answers is JSON ``{"error_code", "message"}``, whoever wrote it.

Ours already are (credentials.py). MLflow's are not all: its per-resource 403 is the plain text
``Permission denied`` (Flask's ``make_forbidden_response``, its FastAPI middleware's
``PlainTextResponse``), Flask's unknown-route 404 is an HTML page, its host and CORS checks answer
plain text. The stock client shows those as "failed with error code 403 != 200. Response body:
'Permission denied'"; a JSON body makes it raise ``PERMISSION_DENIED: <message>``, and the message
here says who was refused what, and what fixes it.

Only a 401/403/404/409/503 whose body is not JSON yet is held, until its last chunk, and rewritten:
status and every other header stay, ``content-type`` and ``content-length`` are replaced. Anything
else (successful responses, artifact streams, JSON errors, HEAD answers) passes through message by
message, unchanged, except that a 503 without ``Retry-After`` (MLflow's own, for a database error in
its sessions) gets one: a 503 says "try again", and ``Retry-After`` says when (outages.py). The
one request body looked at is ``runs/create``'s, to recognise the first run a tenant starts in the
shared Default experiment. No Flask here: this runs on the event loop.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai_registry.server import outages
from hokusai_registry.server.context import Principal
from hokusai_registry.server.credentials import ERROR_CODES

__all__ = ["Asked", "BodyTap", "JsonErrorSend", "is_json", "refusal_body", "serve", "with_retry_after"]

MAX_HELD_BYTES = 64 * 1024  # an error page larger than this passes unchanged rather than being held
MAX_MESSAGE_CHARS = 1000
MLFLOW_FORBIDDEN = "Permission denied"  # MLflow's whole per-resource 403 body, Flask and FastAPI side
# werkzeug's NotFound description: the page Flask answers when no route matched (pinned in the tests).
WERKZEUG_NOT_FOUND = "The requested URL was not found on the server."
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
DEFAULT_EXPERIMENT_IDS = (None, "", "0", 0)
GRANT_API = "POST /api/3.0/mlflow/users/permissions/grant"
_RUNS_CREATE = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/runs/create")
_PARAGRAPH = re.compile(r"<p>([^<]*)</p>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Asked:
    """What the refused request asked, as the message needs it: never the key, only its id."""

    method: str
    path: str
    principal: Principal | None
    body: bytes | None = None  # the request body, only where a message depends on it (runs/create)

    @property
    def who(self) -> str:
        if self.principal is None:
            return "this request"
        return f"user '{self.principal.username}' (API key {self.principal.key_id})"


def sees_body(method: str, path: str) -> bool:
    """The requests whose body a refusal's message reads: a run created in the Default experiment."""
    return method == "POST" and bool(_RUNS_CREATE.fullmatch(path))


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _headers(start: Message) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in start.get("headers", [])]


def with_retry_after(start: Message) -> Message:
    """A 503's start message with ``Retry-After`` added if it has none; any other message as it is."""
    if start["status"] != HTTPStatus.SERVICE_UNAVAILABLE:
        return start
    headers = _headers(start)
    if _header(headers, b"retry-after") is not None:
        return start
    return {**start, "headers": [*headers, (b"retry-after", outages.RETRY_AFTER.encode())]}


def holds(start: Message) -> bool:
    """True for a refusal that is not JSON yet (and can be rewritten: no trailers, not compressed)."""
    headers = _headers(start)
    return (
        start["status"] in ERROR_CODES
        and not start.get("trailers", False)
        and not is_json(_header(headers, b"content-type") or "")
        and _header(headers, b"content-encoding") is None
    )


def text_of(body: bytes, content_type: str) -> str:
    """A refusal body as one line of text: an HTML page's paragraphs (or its text), else the body."""
    charset = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    try:
        text = body.decode(charset.group(1) if charset else "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    if "html" in content_type.lower():
        text = " ".join(_PARAGRAPH.findall(text)) or _TAG.sub(" ", text)
        text = html.unescape(text)
    return " ".join(text.split())[:MAX_MESSAGE_CHARS]


def asks_for_default_experiment(body: bytes | None) -> bool:
    """A ``runs/create`` body naming experiment "0", or none (the client's default): False if unreadable."""
    if body is None:
        return False
    try:
        request = json.loads(body) if body.strip() else {}
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("experiment_id") in DEFAULT_EXPERIMENT_IDS


def permission_message(asked: Asked) -> str:
    """MLflow's bare "Permission denied", said with who, what, and how to fix it."""
    if sees_body(asked.method, asked.path) and asks_for_default_experiment(asked.body):
        return (
            f"{asked.who} may not create runs in the Default experiment (id 0): it is shared by every "
            'user of this registry and belongs to none of them. Call mlflow.set_experiment("<name>") '
            "before mlflow.start_run(): it creates an experiment of your own"
        )
    return (
        f"{asked.who} may not {asked.method} {asked.path}: MLflow found no permission for that user on "
        "this resource (a resource or route that does not exist is refused the same way). The "
        f"resource's owner or an admin can grant one ({GRANT_API})"
    )


def refusal_body(status: int, content_type: str, body: bytes, asked: Asked) -> bytes:
    """The JSON that replaces a refusal's non-JSON body; MLflow's own text is kept where it says more."""
    text = text_of(body, content_type)
    error_code = ERROR_CODES[status]
    if status == HTTPStatus.FORBIDDEN and text == MLFLOW_FORBIDDEN:
        message = permission_message(asked)
    elif status == HTTPStatus.NOT_FOUND and "html" in content_type.lower() and WERKZEUG_NOT_FOUND in text:
        error_code = ENDPOINT_NOT_FOUND
        message = (
            f"no endpoint answers {asked.method} {asked.path} on this registry: check the path, and that "
            "MLFLOW_TRACKING_URI is the registry's address"
        )
    else:
        message = text or f"{asked.method} {asked.path}: {HTTPStatus(status).phrase}"
    return json.dumps({"error_code": error_code, "message": message}).encode()


def json_headers(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    """The same headers, in order, with the body's type and length replaced by the JSON one's."""
    kept = [
        (name, value) for name, value in headers if name.lower() not in (b"content-type", b"content-length")
    ]
    return [*kept, (b"content-type", b"application/json"), (b"content-length", str(length).encode())]


@dataclass
class BodyTap:
    """``receive`` that keeps a copy of the request body (up to MAX_HELD_BYTES) and passes every
    message on as it came, so the refusal of a ``runs/create`` can say which experiment it asked for."""

    receive: Receive
    _chunks: list[bytes] = field(default_factory=list, init=False)
    _size: int = field(default=0, init=False)
    _complete: bool = field(default=False, init=False)

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            chunk = bytes(message.get("body", b""))
            self._size += len(chunk)
            if self._size <= MAX_HELD_BYTES:
                self._chunks.append(chunk)
            self._complete = not message.get("more_body", False)
        return message

    @property
    def body(self) -> bytes | None:
        """The whole body once read, or None (not read yet, or too large to keep)."""
        return b"".join(self._chunks) if self._complete and self._size <= MAX_HELD_BYTES else None


@dataclass
class JsonErrorSend:
    """``send`` that holds a non-JSON refusal until its last body chunk and sends it rewritten as JSON.

    Everything else is sent on at once, the same message objects. A refusal whose body outgrows
    MAX_HELD_BYTES, or that is followed by anything but body chunks, is released as it came.
    """

    send: Send
    method: str
    path: str
    principal: Principal | None
    tap: BodyTap | None = None
    _start: Message | None = field(default=None, init=False)
    _chunks: list[Message] = field(default_factory=list, init=False)
    _size: int = field(default=0, init=False)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = with_retry_after(message)
        if self._start is None:
            if message["type"] == "http.response.start" and holds(message):
                self._start = message
            else:
                await self.send(message)
            return
        if message["type"] != "http.response.body":
            await self.release()
            await self.send(message)
            return
        self._chunks.append(message)
        self._size += len(message.get("body", b""))
        if self._size > MAX_HELD_BYTES:
            await self.release()
        elif not message.get("more_body", False):
            await self._send_as_json(self._start)

    async def _send_as_json(self, start: Message) -> None:
        headers = _headers(start)
        down = outages.seen()
        if start["status"] == HTTPStatus.UNAUTHORIZED and self.principal is not None and down is not None:
            # Our layer accepted the key; MLflow's permission check says "not authenticated" only
            # because loading the user failed: the database is down, which is a 503 (outages.py).
            start = {**start, "status": HTTPStatus.SERVICE_UNAVAILABLE}
            headers = [(name, value) for name, value in headers if name.lower() != b"www-authenticate"]
            headers.append((b"retry-after", outages.RETRY_AFTER.encode()))
            body = outages.body(down)
        else:
            asked = Asked(self.method, self.path, self.principal, self.tap.body if self.tap else None)
            body = refusal_body(
                start["status"],
                _header(headers, b"content-type") or "",
                b"".join(bytes(chunk.get("body", b"")) for chunk in self._chunks),
                asked,
            )
        self._start, self._chunks = None, []
        await self.send({**start, "headers": json_headers(headers, len(body))})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def release(self) -> None:
        """Send what is held as it came (the app stopped mid-body, or the body is too large to hold)."""
        held, self._start, chunks, self._chunks = self._start, None, self._chunks, []
        if held is not None:
            await self.send(held)
            for chunk in chunks:
                await self.send(chunk)


async def serve(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, principal: Principal | None
) -> None:
    """Run ``app`` for one request with its non-JSON refusals rewritten (HEAD: only a 503's Retry-After
    added); non-HTTP untouched."""
    method = scope.get("method", "GET")
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    if method == "HEAD":

        async def send_with_retry_after(message: Message) -> None:
            await send(with_retry_after(message) if message["type"] == "http.response.start" else message)

        await app(scope, receive, send_with_retry_after)
        return
    path = scope["path"]
    tap = BodyTap(receive) if sees_body(method, path) else None
    json_send = JsonErrorSend(send, method, path, principal, tap)
    watching = outages.watch()
    try:
        await app(scope, tap or receive, json_send)
        await json_send.release()
    finally:
        outages.unwatch(watching)
