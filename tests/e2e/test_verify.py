"""verify against real servers: a healthy registry passes and is left clean; broken ones get the right F-code.

Each broken server is the smallest real thing that fails that way: stock ``mlflow server
--no-serve-artifacts`` (no auth, no artifacts), a reverse proxy that forwards only tracking calls, an
experiment whose artifacts live in S3, a key the registry never issued.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import CLI, VENV_BIN, Registry, free_port, run_registry, run_stock_mlflow

PREFIX = "hokusai-verify-"


def run_verify(url: str, key: str | None, tmp: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN")}
    report = tmp / "report.json"
    cmd = [CLI, "verify", "--url", url, "--json", str(report), "--markdown", str(tmp / "report.md"), *args]
    if key:
        cmd += ["--api-key", key]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, data


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


def leftovers(registry: Registry) -> list[str]:
    with registry.client(registry.admin_key) as admin:
        flt = f"name LIKE '{PREFIX}%'"
        exps = admin.post("/api/2.0/mlflow/experiments/search", json={"max_results": 100, "filter": flt})
        models = admin.get("/api/2.0/mlflow/registered-models/search", params={"filter": flt})
    exps.raise_for_status()
    models.raise_for_status()
    found = exps.json().get("experiments", []) + models.json().get("registered_models", [])
    return [str(item["name"]) for item in found]


def leftover_artifacts(registry: Registry) -> list[str]:
    """Files still stored under verify's (soft-deleted) experiments."""
    with registry.client(registry.admin_key) as admin:
        body = {"max_results": 100, "filter": f"name LIKE '{PREFIX}%'", "view_type": "DELETED_ONLY"}
        deleted = admin.post("/api/2.0/mlflow/experiments/search", json=body).json().get("experiments", [])
        assert deleted, "verify's experiment should exist, soft-deleted"
        files = []
        for exp in deleted:
            listing = admin.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": exp["experiment_id"]})
            assert listing.status_code == 200, listing.text
            files += [f["path"] for f in listing.json().get("files", [])]
    return files


def test_healthy_registry_passes_and_cleans_up(registry: Registry, tmp_path: Path) -> None:
    key = registry.create_key("verify-writer")
    read_key = registry.create_key("verify-reader", scope="read")
    code, report = run_verify(registry.url, key, tmp_path, "--read-key", read_key, "--large-mb", "4")
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert code == 0, report
    assert report["passed"] is True
    assert set(report) >= {"url", "passed", "started_at", "duration_ms", "checks", "metrics"}
    assert all(s == "pass" for s in statuses.values()), statuses
    assert list(statuses) == [
        "reachability", "authentication", "artifact_round_trip", "artifact_locations", "registration",
        "model_scanning", "large_artifact",
    ]  # fmt: skip
    assert "write 403" in by_id(report)["authentication"]["detail"]
    assert report["metrics"]["large_upload_mb_s"] > 0
    assert "registration_upload_ms" in report["metrics"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Performance metrics" in markdown
    # SQLite, one replica (2 workers, one id), loopback http: recommended against, and still a pass (code 0).
    recommended = {r["id"]: r for r in report["recommendations"]}
    assert list(recommended) == ["sqlite_backend", "single_replica"], recommended
    assert "SQLite" in markdown and "one replica (X-Hokusai-Replica: " in markdown
    assert "No problems found" not in markdown
    assert leftovers(registry) == []
    assert leftover_artifacts(registry) == []


def test_unknown_key_is_f5(registry: Registry, tmp_path: Path) -> None:
    code, report = run_verify(registry.url, "hk_live_never_issued_0000000000000000", tmp_path)
    auth = by_id(report)["authentication"]
    assert code == 1
    assert auth["status"] == "fail" and auth["diagnosis"].startswith("F5"), auth
    assert by_id(report)["registration"]["status"] == "skip"


def test_s3_experiment_is_reported_as_f3(registry: Registry, tmp_path: Path) -> None:
    with registry.client(registry.admin_key) as admin:
        created = admin.post(
            "/api/2.0/mlflow/experiments/create",
            json={"name": "elsewhere-in-s3", "artifact_location": "s3://some-bucket/models"},
        )
        created.raise_for_status()
        try:
            code, report = run_verify(
                registry.url, registry.admin_key, tmp_path, "--skip-registration", "--large-mb", "0"
            )
        finally:
            admin.post("/api/2.0/mlflow/experiments/delete", json=created.json())
    locations = by_id(report)["artifact_locations"]
    assert locations["status"] == "warn" and locations["diagnosis"].startswith("F3"), locations
    assert "s3://some-bucket/models" in locations["detail"]
    assert code == 0  # a warning, not a failure: new experiments still get mlflow-artifacts:/


def test_nothing_listening_is_f11_and_the_rest_is_skipped(tmp_path: Path) -> None:
    code, report = run_verify(f"http://127.0.0.1:{free_port()}", "any-key", tmp_path)
    checks = by_id(report)
    assert code == 1
    assert checks["reachability"]["diagnosis"].startswith("F11: nothing healthy"), checks["reachability"]
    assert "refused" in checks["reachability"]["diagnosis"]
    assert {c["status"] for c in report["checks"][1:]} == {"skip"}


def test_no_key_is_bad_usage(tmp_path: Path) -> None:
    code, report = run_verify("http://127.0.0.1:9", None, tmp_path)
    assert (code, report) == (2, {})


@pytest.fixture
def stock_mlflow(tmp_path: Path) -> Iterator[str]:
    """Stock MLflow with no authentication and no artifact serving: F12 and F1 at once."""
    args = ("--no-serve-artifacts", "--default-artifact-root", str(tmp_path / "mlruns"))
    with run_stock_mlflow(tmp_path, *args) as url:
        yield url


def test_stock_mlflow_without_auth_or_artifacts(stock_mlflow: str, tmp_path: Path) -> None:
    code, report = run_verify(stock_mlflow, "any-key", tmp_path, "--large-mb", "1")
    checks = by_id(report)
    assert code == 1
    assert checks["authentication"]["diagnosis"].startswith("F12"), checks["authentication"]
    assert checks["artifact_round_trip"]["diagnosis"].startswith("F1"), checks["artifact_round_trip"]
    assert checks["registration"]["status"] == "skip"  # never a pass where registration cannot work


class Proxy(BaseHTTPRequestHandler):
    """A small reverse proxy in front of the registry, broken in one configurable way: it forwards only
    some path prefixes (404 HTML elsewhere), refuses bodies over ``max_body`` with 413, or sends the
    public Host header upstream."""

    upstream = ""
    forward: tuple[str, ...] = ("/",)
    max_body = 1 << 40
    host: str | None = None

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        content = self.rfile.read(length) if length else None
        if not self.path.startswith(self.forward):
            self.answer(404, b"<html><head><title>404 Not Found</title></head><body>proxy</body></html>")
            return
        if length > self.max_body:
            self.answer(413, b"<html><head><title>413 Request Entity Too Large</title></head></html>")
            return
        skip = ("host", "content-length", "transfer-encoding")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if self.host:
            headers["Host"] = self.host
        answer = httpx.request(self.command, self.upstream + self.path, headers=headers, content=content,
                               timeout=60)  # fmt: skip
        self.send_response(answer.status_code)
        for name in ("Content-Type", "WWW-Authenticate", "Retry-After"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def proxy(upstream: str, **broken: Any) -> Iterator[str]:
    handler = type("BrokenProxy", (Proxy,), {"upstream": upstream, **broken})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_that_does_not_route_artifacts_is_f4(registry: Registry, tmp_path: Path) -> None:
    with proxy(registry.url, forward=("/api/2.0/mlflow/", "/health")) as url:
        code, report = run_verify(url, registry.admin_key, tmp_path, "--large-mb", "1")
    checks = by_id(report)
    assert code == 1
    assert checks["authentication"]["status"] == "pass", checks["authentication"]
    assert checks["artifact_round_trip"]["diagnosis"].startswith("F4"), checks["artifact_round_trip"]
    assert checks["registration"]["status"] == "skip"
    assert leftovers(registry) == []


def test_proxy_body_limit_is_f9(registry: Registry, tmp_path: Path) -> None:
    with proxy(registry.url, max_body=1024 * 1024) as url:
        code, report = run_verify(url, registry.admin_key, tmp_path, "--skip-registration", "--large-mb", "2")
    large = by_id(report)["large_artifact"]
    assert code == 1
    assert by_id(report)["artifact_round_trip"]["status"] == "pass"
    assert large["status"] == "fail" and large["diagnosis"].startswith("F9"), large
    assert leftovers(registry) == []


def test_rejected_host_header_is_f7(registry: Registry, tmp_path: Path) -> None:
    with proxy(registry.url, host="registry.example.com") as url:
        code, report = run_verify(url, registry.admin_key, tmp_path, "--skip-registration", "--large-mb", "0")
    auth = by_id(report)["authentication"]
    assert code == 1
    assert auth["diagnosis"].startswith("F7"), auth


def test_key_service_down_is_f6(tmp_path: Path) -> None:
    env = {"HOKUSAI_REGISTRY_AUTH_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    (tmp_path / "server").mkdir()
    with run_registry(tmp_path / "server", workers=1, env=env) as registry:
        key = "hk_live_external_valid_0123456789abcdef"  # not a local key: the key service must answer
        code, report = run_verify(registry.url, key, tmp_path, "--skip-registration", "--large-mb", "0")
    auth = by_id(report)["authentication"]
    assert code == 1
    assert auth["diagnosis"].startswith("F6"), auth
    assert by_id(report)["artifact_round_trip"]["status"] == "skip"


def test_scanning_off_is_f13_and_the_rest_still_passes(tmp_path: Path) -> None:
    """A registry that serves a pickle naming os.system: only the model scanning check fails."""
    (tmp_path / "server").mkdir()
    env = {"HOKUSAI_REGISTRY_SCAN_POLICY": "off"}
    with run_registry(tmp_path / "server", workers=1, env=env) as registry:
        code, report = run_verify(registry.url, registry.admin_key, tmp_path, "--large-mb", "0")
        assert leftovers(registry) == []
    checks = by_id(report)
    scanning = checks["model_scanning"]
    assert code == 1
    assert scanning["status"] == "fail" and scanning["diagnosis"].startswith("F13: model scanning is off"), (
        scanning
    )
    assert "no hokusai_scan_verdict tag" in scanning["diagnosis"] and "READY" in scanning["detail"]
    assert scanning["fix"].startswith("set HOKUSAI_REGISTRY_SCAN_POLICY=block")
    assert {c["id"] for c in report["checks"] if c["status"] == "fail"} == {"model_scanning"}
    assert checks["registration"]["status"] == "pass"


def test_runbook_wrappers(registry: Registry, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.url, "HOKUSAI_API_KEY": registry.admin_key,
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}  # fmt: skip
    shell = subprocess.run(
        [str(root / "scripts/verify_mlflow_deployment.sh"), "--skip-registration", "--large-mb", "1",
         "--json", str(tmp_path / "r.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    simple = subprocess.run(
        [str(VENV_BIN / "python"), str(root / "scripts/test_model_registration_simple.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert simple.returncode == 0, simple.stderr
    assert "registration: pass" in simple.stderr
    no_key = {k: v for k, v in env.items() if k not in ("HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN")}
    missing = subprocess.run([str(root / "scripts/verify_mlflow_deployment.sh")], env=no_key, timeout=30)
    assert missing.returncode == 2
    assert leftovers(registry) == []


def test_self_signed_certificate_is_f10_and_never_bypassed(tmp_path: Path) -> None:
    """An HTTPS endpoint whose certificate the client cannot trust: F10, and verify does not go on."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, report = run_verify(f"https://127.0.0.1:{server.server_address[1]}", "any-key", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    checks = by_id(report)
    assert code == 1
    assert checks["reachability"]["diagnosis"].startswith("F10"), checks["reachability"]
    assert {c["status"] for c in report["checks"][1:]} == {"skip"}


def test_keep_leaves_what_verify_created_for_inspection(registry: Registry, tmp_path: Path) -> None:
    code, report = run_verify(
        registry.url, registry.admin_key, tmp_path, "--keep", "--skip-registration", "--large-mb", "0"
    )
    assert code == 0, report
    kept = leftovers(registry)
    assert kept, "--keep should leave the verify experiment in place"
    with registry.client(registry.admin_key) as admin:  # tidy up for the other tests
        for name in kept:
            found = admin.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
            if found.status_code == 200:
                experiment_id = found.json()["experiment"]["experiment_id"]
                admin.post("/api/2.0/mlflow/experiments/delete", json={"experiment_id": experiment_id})
            else:
                admin.request("DELETE", "/api/2.0/mlflow/registered-models/delete", json={"name": name})
    assert leftovers(registry) == []
