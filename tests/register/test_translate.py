"""Each refusal becomes the error type and message a third party can act on."""

from __future__ import annotations

import json

import pytest

from hokusai_registry.register import errors
from hokusai_registry.register.translate import refusal, transient

PUT = "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model/MLmodel"
CREATE = "/api/2.0/mlflow/runs/create"


def body(code: str, message: str) -> str:
    return json.dumps({"error_code": code, "message": message})


@pytest.mark.parametrize(
    ("status", "text", "path", "kind", "says"),
    [
        (401, body("UNAUTHENTICATED", "revoked API key"), CREATE, errors.NotAuthenticated, "or expired"),
        (403, body("PERMISSION_DENIED", "read-only key"), CREATE, errors.PermissionDenied, "write key"),
        (403, body("MODEL_QUARANTINED", "m version 1 is quarantined"), PUT, errors.PermissionDenied,
         "scan show"),
        (503, json.dumps({"detail": "Artifact serving is disabled. Run ..."}), PUT,
         errors.ArtifactServingDisabled, "F1"),
        (404, "<html>Not Found</html>", PUT, errors.ArtifactServingDisabled, "/api/2.0/mlflow-artifacts/"),
        (413, "<html><h1>413 Request Entity Too Large</h1></html>", PUT, errors.PayloadTooLarge, "body size"),
        (503, body("TEMPORARILY_UNAVAILABLE", "key service unreachable"), CREATE,
         errors.KeyServiceUnavailable, "F6"),
        (502, "Bad Gateway", CREATE, errors.ServerUnavailable, "no healthy server"),
        (404, body("RESOURCE_DOES_NOT_EXIST", "no such run"), CREATE, errors.ServerRefused, "no such run"),
    ],
)  # fmt: skip
def test_refusals(status: int, text: str, path: str, kind: type, says: str) -> None:
    error = refusal("upload", status, text, path=path, attempts=3, elapsed=12)
    assert type(error) is kind
    assert error.status == status and error.step == "upload"
    assert str(error).startswith("upload: ") and says in str(error)


def test_a_404_outside_the_artifact_routes_is_not_blamed_on_artifact_serving() -> None:
    assert type(refusal("run", 404, "Not Found", path=CREATE)) is errors.ServerRefused


def test_the_message_says_how_long_it_tried() -> None:
    error = refusal(
        "upload", 503, body("TEMPORARILY_UNAVAILABLE", "down"), path=CREATE, attempts=4, elapsed=61
    )
    assert "4 tries over 61s" in str(error)


def test_a_missing_file_on_a_serving_server_is_not_blamed_on_artifact_serving() -> None:
    error = refusal("round_trip", 404, body("RESOURCE_DOES_NOT_EXIST", "No such artifact"), path=PUT)
    assert type(error) is errors.ServerRefused


def test_disabled_artifact_serving_is_permanent_other_503s_are_transient() -> None:
    assert not transient(503, json.dumps({"detail": "Artifact serving is disabled. Run ..."}))
    assert transient(503, body("TEMPORARILY_UNAVAILABLE", "key service down"))
    assert transient(429, "") and transient(504, "") and not transient(500, "") and not transient(401, "")


def test_a_database_outage_is_named_as_one_not_as_the_key_service() -> None:
    from hokusai_registry.server import outages

    error = refusal("run", 503, body("TEMPORARILY_UNAVAILABLE", outages.message("database")), path=CREATE)
    assert type(error) is errors.ServerUnavailable
    assert "F15" in str(error) and "F6" not in str(error)
