from __future__ import annotations

import pytest

from hokusai_registry.server.policy import is_public, is_write, shares_reads


@pytest.mark.parametrize(
    "path", ["/health", "/favicon.ico", "/static-files/js/main.js", "/api/3.0/mlflow/server-info"]
)
def test_public_paths(path: str) -> None:
    assert is_public(path)


@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/health/../api", "/version", "/api/2.0/mlflow/server-info/x", "/static/x", "/graphql"],
)
def test_everything_else_needs_a_key(path: str) -> None:
    assert not is_public(path)


@pytest.mark.parametrize(
    ("method", "path", "writes"),
    [
        ("GET", "/api/2.0/mlflow/registered-models/get", False),
        ("HEAD", "/api/2.0/mlflow-artifacts/artifacts/x", False),
        ("POST", "/api/2.0/mlflow/runs/search", False),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", False),
        ("POST", "/api/3.0/mlflow/traces/search", False),
        ("POST", "/api/2.0/mlflow/runs/search/extra", True),
        ("POST", "/api/2.0/mlflow/runs/create", True),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/x", True),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", True),
        ("PATCH", "/api/2.0/mlflow/users/update-password", True),
        ("POST", "/graphql", False),
        ("POST", "/graphql/x", True),
    ],
)
def test_writes_are_everything_not_known_to_be_read_only(method: str, path: str, writes: bool) -> None:
    assert is_write(method, path) is writes


def test_graphql_cannot_change_data() -> None:
    """A read key may POST /graphql because MLflow's GraphQL schema has no data-changing mutation."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    mutations = set(schema.graphql_schema.mutation_type.fields)
    assert mutations == {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}, (
        f"MLflow's GraphQL mutations changed ({mutations}): review policy.GRAPHQL_PATH before allowing "
        "read keys to POST /graphql"
    )


@pytest.mark.parametrize(
    ("method", "path", "shares"),
    [
        ("GET", "/api/2.0/mlflow/runs/get", True),
        ("GET", "/ajax-api/2.0/mlflow/runs/get", True),
        ("GET", "/api/2.0/mlflow/registered-models/get", True),
        ("GET", "/api/2.0/mlflow/logged-models/m-0123456789abcdef0123456789abcdef", True),
        ("GET", "/api/2.0/mlflow/metrics/get-history", False),
        ("GET", "/api/2.0/mlflow/model-versions/get", False),
        ("GET", "/api/2.0/mlflow/logged-models/m-1/artifacts/directories", False),
        ("PATCH", "/api/2.0/mlflow/logged-models/m-1", False),
        ("POST", "/api/2.0/mlflow/runs/get", False),
    ],
)
def test_the_reads_by_id_that_share(method: str, path: str, shares: bool) -> None:
    """The reads by id whose check's full read the handler reuses (shared_reads.py)."""
    assert shares_reads(method, path) is shares
