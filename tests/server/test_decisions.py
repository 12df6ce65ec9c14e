"""Which requests may trust their caller's recently read auth epochs (decisions.py), over MLflow's routes."""

from __future__ import annotations

import pytest
from mlflow.server import app

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.decisions import DECIDING_VALIDATORS, REDACTIONS, decides_only
from tests.server.test_mlflow_contract import flask_requests

API = "/api/2.0/mlflow"


def deciding(path: str, method: str) -> bool:
    with app.test_request_context(path, method=method):
        from flask import request

        return decides_only(request)


@pytest.mark.parametrize(
    ("method", "path"),
    [  # the stock client's registration, but the two creates that grant its creator MANAGE
        ("POST", f"{API}/runs/create"),
        ("GET", f"{API}/runs/get"),
        ("POST", f"{API}/runs/update"),
        ("POST", f"{API}/runs/outputs"),
        ("POST", f"{API}/runs/log-batch"),
        ("POST", f"{API}/logged-models"),
        ("GET", f"{API}/logged-models/m-1"),
        ("PATCH", f"{API}/logged-models/m-1"),
        ("PATCH", f"{API}/logged-models/m-1/tags"),
        ("POST", f"{API}/model-versions/create"),
        ("GET", f"{API}/registered-models/get"),
        ("GET", "/ajax-api/2.0/mlflow/runs/get"),
    ],
)
def test_a_request_deciding_on_one_resource_trusts_recent_epochs(method: str, path: str) -> None:
    assert deciding(path, method)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"{API}/experiments/create"),  # grants MANAGE afterwards
        ("POST", f"{API}/registered-models/create"),
        ("POST", f"{API}/experiments/search"),  # rows chosen by grants
        ("GET", f"{API}/registered-models/search"),
        ("GET", f"{API}/model-versions/search"),
        ("POST", f"{API}/runs/search"),
        ("POST", f"{API}/logged-models/search"),
        ("POST", "/graphql"),
        ("POST", "/api/3.0/mlflow/users/permissions/grant"),
        ("GET", "/api/3.0/mlflow/users/current/permissions"),
    ],
)
def test_searches_grants_and_permission_management_read_the_epochs(method: str, path: str) -> None:
    assert not deciding(path, method)


def test_no_route_whose_answer_grants_or_filters_trusts_recent_epochs() -> None:
    """Over every route of MLflow's Flask app: what MLflow does after a trusted request is at most a
    redaction (a listing under one experiment or run, decided by one validator, may be trusted)."""
    validators, redactions = set(), set()
    for path, method in flask_requests():
        if deciding(path, method):
            with app.test_request_context(path, method=method):
                from flask import request

                validators.add(mlflow_adapter.flask_validator_name(request))
            after = mlflow_adapter.after_request_handler_name(path, method)
            assert after is None or after in REDACTIONS, (method, path, after)
            redactions.add(after)
    # and every name on the two lists decides some route: none is dead (an MLflow rename shows here)
    assert validators == DECIDING_VALIDATORS and redactions - {None} == REDACTIONS
