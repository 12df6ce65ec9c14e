"""Every catalogue rule verify applies, as pure functions: status/body/headers/exception -> F1-F14."""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest

from hokusai_registry.register import errors
from hokusai_registry.server import outages
from hokusai_registry.verify import diagnose
from hokusai_registry.verify.diagnose import CATALOGUE, response

WERKZEUG = "<!doctype html><title>404 Not Found</title><p>The requested URL was not found on the server.</p>"
NGINX = "<html><head><title>404 Not Found</title></head><body><center>nginx</center></body></html>"
MLFLOW_404 = '{"error_code": "ENDPOINT_NOT_FOUND", "message": "No such route"}'


def code(found: diagnose.Diagnosis | None) -> str | None:
    return found.code if found else None


def test_catalogue_is_complete() -> None:
    assert sorted(CATALOGUE, key=lambda c: int(c[1:])) == [f"F{i}" for i in range(1, 16)]
    assert all(cause and fix for cause, fix in CATALOGUE.values())


@pytest.mark.parametrize(
    ("status", "body", "headers", "route", "expected"),
    [
        (503, '{"detail":"Artifact serving is disabled. Run `mlflow server`..."}', {}, "artifact", "F1"),
        (404, MLFLOW_404, {}, "artifact", "F1"),
        (404, WERKZEUG, {}, "artifact", "F1"),
        (404, NGINX, {}, "artifact", "F4"),
        (404, NGINX, {}, "tracking", "F4"),
        (401, '{"error_code": "UNAUTHENTICATED"}', {}, "artifact", "F2"),
        (403, '{"error_code": "PERMISSION_DENIED"}', {}, "artifact", "F2"),
        (401, '{"error_code": "UNAUTHENTICATED"}', {}, "tracking", "F5"),
        (503, '{"error_code": "TEMPORARILY_UNAVAILABLE"}', {"Retry-After": "5"}, "tracking", "F6"),
        (
            503,
            json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": outages.message("database")}),
            {"Retry-After": "5"},
            "tracking",
            "F15",
        ),
        (503, "", {"retry-after": "5"}, "tracking", "F6"),
        (403, "Invalid Host header - possible DNS rebinding attack detected", {}, "tracking", "F7"),
        (403, "Invalid Host header - possible DNS rebinding attack detected", {}, "artifact", "F7"),
        (403, '{"error_code": "PERMISSION_DENIED"}', {}, "tracking", "F8"),
        (413, "<html>Request Entity Too Large</html>", {}, "artifact", "F9"),
        (504, "<html>Gateway Time-out</html>", {}, "artifact", "F9"),
        (502, "<html>Bad Gateway</html>", {}, "health", "F11"),
        (503, "<html>Service Temporarily Unavailable</html>", {}, "health", "F11"),
    ],
)
def test_response_rules(status: int, body: str, headers: dict[str, str], route: str, expected: str) -> None:
    assert code(response(status, body, headers, route=route)) == expected


def test_a_2xx_without_a_key_is_f12_and_with_one_is_fine() -> None:
    assert code(response(200, "{}", route="tracking", with_key=False)) == "F12"
    assert response(200, "{}", route="tracking") is None
    assert response(200, "OK", route="health", with_key=False) is None


def test_a_401_without_a_key_is_what_we_want() -> None:
    assert response(401, "", route="tracking", with_key=False) is None


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("mlflow-artifacts:/1", None),
        ("mlflow-artifacts://registry.example.com:5000/1", None),
        ("mlflow-artifacts://other-host/1", "F3"),
        ("s3://bucket/prefix/1", "F3"),
        ("file:///srv/mlruns/1", "F3"),
        ("/srv/mlruns/1", "F3"),
    ],
)
def test_locations(location: str, expected: str | None) -> None:
    assert code(diagnose.location(location, "https://registry.example.com:5000")) == expected


def test_transport_errors() -> None:
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed certificate")
    assert diagnose.transport(cert).code == "F10"
    try:
        raise httpx.ConnectError("boom") from cert
    except httpx.ConnectError as wrapped:
        assert diagnose.transport(wrapped).code == "F10"
    dns = diagnose.transport(socket.gaierror(-2, "Name or service not known"))
    assert (dns.code, "DNS" in dns.cause) == ("F11", True)
    refused = diagnose.transport(ConnectionRefusedError(111, "Connection refused"))
    assert (refused.code, "refused" in refused.cause) == ("F11", True)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (errors.NotAuthenticated("experiment", "401", status=401), "F5"),
        (errors.PermissionDenied("run", "403 PERMISSION_DENIED", status=403), "F8"),
        (errors.PermissionDenied("run", "403 Invalid Host header", status=403), "F7"),
        (errors.ArtifactServingDisabled("upload", "503 Artifact serving is disabled", status=503), "F1"),
        (errors.ArtifactServingDisabled("experiment", "artifacts at /srv/mlruns"), "F3"),
        (errors.PayloadTooLarge("upload", "413", status=413), "F9"),
        (errors.KeyServiceUnavailable("run", "503", status=503), "F6"),
        (errors.ServerUnavailable("run", "502", status=502), "F11"),
        (errors.ServerUnavailable("upload", "504", status=504), "F9"),
        (errors.ScanTimedOut("m", "1", 60), "F14"),
        (errors.ModelRejected("m", "1", "suspicious", ["model/model.pkl: imports x.y"], "q"), "scan"),
    ],
)
def test_registration_errors(exc: Exception, expected: str) -> None:
    assert diagnose.registration(exc).code == expected


def test_a_rejected_verify_model_names_the_findings() -> None:
    found = diagnose.registration(errors.ModelRejected("m", "1", "error", ["model.pkl: unreadable"], "q"))
    assert "model.pkl: unreadable" in found.cause and "scan show" in found.fix


@pytest.mark.parametrize(
    ("status", "verdict", "message", "says"),
    [
        ("READY", None, "", "did not scan it"),
        ("READY", "unsafe", "scan warning: unsafe: model/model.pkl: calls os.system", "policy is warn"),
        ("READY", "clean", "", "missed the os.system reference"),
        ("FAILED_REGISTRATION", "unsafe", "quarantined by ...", "quarantine is not enforced"),
    ],
)
def test_a_dangerous_version_that_was_served_is_f13_with_why(
    status: str, verdict: str | None, message: str, says: str
) -> None:
    found = diagnose.scan_served(status, verdict, message)
    assert found.code == "F13" and says in found.cause, found
    assert found.cause.startswith(diagnose.CATALOGUE["F13"][0])
