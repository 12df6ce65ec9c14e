"""HTTP to the registry with one retry policy and one error translation, for JSON calls and files.

Why not MLflow's REST client here: it retries on its own schedule and turns a refusal into an
exception without the status or ``Retry-After``, so a 401, a 403 and a disabled artifact route could
not be told apart. Files are streamed from and to disk in 1 MiB chunks, so memory stays flat whatever
the model size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from hokusai_registry.client import ARTIFACTS, CHUNK, Digest, Sha256Meter, error_body, read_chunks
from hokusai_registry.register.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds
from hokusai_registry.register.translate import refusal, transient, unreachable


class Meter(Protocol):
    """Where transfer progress goes; ``restart`` when a retry sends a file again from its start."""

    def restart(self) -> None: ...
    def advance(self, size: int) -> None: ...


class NullMeter:
    def restart(self) -> None:
        pass

    def advance(self, size: int) -> None:
        pass


class RegistryClient:
    """A connection to one registry with one key. Not thread-safe; one per registration."""

    def __init__(self, url: str, api_key: str, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "hokusai-registry-register"},
            timeout=httpx.Timeout(300.0, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def _send(self, step: str, attempt: Callable[[], httpx.Response], path: str) -> httpx.Response:
        """Run ``attempt`` until it gets a non-transient answer or the retry budget is spent."""
        started, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            try:
                response = attempt()
            except httpx.TransportError as exc:
                delay = self.retry.next_delay(attempts, time.monotonic() - started, None)
                if delay is None:
                    raise unreachable(step, self.url, exc, attempts, time.monotonic() - started) from exc
            else:
                # Only a retryable status needs its body read; a 200 may still be streaming.
                if response.status_code not in RETRY_STATUSES or not transient(
                    response.status_code, response.text
                ):
                    return response
                wait = retry_after_seconds(response.headers.get("retry-after"))
                delay = self.retry.next_delay(attempts, time.monotonic() - started, wait)
                if delay is None:
                    elapsed = time.monotonic() - started
                    raise refusal(
                        step,
                        response.status_code,
                        response.text,
                        path=path,
                        attempts=attempts,
                        elapsed=elapsed,
                    )
            time.sleep(delay)

    def request(
        self, step: str, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One JSON call, retried; any final status is returned for the caller to judge."""
        return self._send(step, lambda: self._http.request(method, path, json=json, params=params), path)

    def call(
        self, step: str, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One JSON call that must succeed; a refusal becomes the matching ``ServerRefused``."""
        response = self.request(step, method, path, json=json, params=params)
        return self.ok(step, response, path)

    @staticmethod
    def ok(step: str, response: httpx.Response, path: str) -> dict[str, Any]:
        if not response.is_success:
            raise refusal(step, response.status_code, response.text, path=path)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def upload(
        self, step: str, artifact_path: str, file: Path, size: int, meter: Meter | None = None
    ) -> None:
        """PUT one file to the server's artifact store, streamed from disk with its Content-Length."""
        path, meter = artifact_url(artifact_path), meter or NullMeter()

        def attempt() -> httpx.Response:
            meter.restart()
            return self._http.put(
                path, content=_read_chunks(file, meter), headers={"Content-Length": str(size)}
            )

        self.ok(step, self._send(step, attempt, path), path)

    def download_sha256(self, step: str, artifact_path: str, meter: Meter | None = None) -> Digest | None:
        """GET one artifact, hashing it as it streams, or None when the server says it has no such
        file. Nothing is kept."""
        path, meter = artifact_url(artifact_path), meter or NullMeter()
        result: list[Digest] = []

        def attempt() -> httpx.Response:
            result.clear()
            meter.restart()
            with self._http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    return response
                hashed = Sha256Meter()
                for chunk in response.iter_bytes(CHUNK):
                    hashed.update(chunk)
                    meter.advance(len(chunk))
                result.append(hashed.digest())
                return response

        response = self._send(step, attempt, path)
        if response.status_code == 404 and error_body(response.text).error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if response.status_code != 200:
            raise refusal(step, response.status_code, response.text, path=path)
        return result[0]


def artifact_url(artifact_path: str) -> str:
    """The proxied-artifact route for a path under the artifact root, each segment URL-quoted."""
    return f"{ARTIFACTS}/{quote(artifact_path.strip('/'), safe='/')}"


def _read_chunks(file: Path, meter: Meter) -> Iterator[bytes]:
    for chunk in read_chunks(file):
        meter.advance(len(chunk))
        yield chunk
