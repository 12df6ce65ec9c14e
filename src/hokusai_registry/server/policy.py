"""Which requests need no key, and which requests change data.

Both lists are explicit and fail closed: a path not on the public list needs a key, and a request
not known to be read-only counts as a write (so a ``read`` key is refused).
"""

from __future__ import annotations

import re

# Liveness for load balancers, the UI's static files, and MLflow's capability discovery (it holds
# no tenant data and `verify` reads it before it has proved a key works).
PUBLIC_PATHS = frozenset({"/health", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static-files/",)
_SERVER_INFO = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/server-info")

# Prometheus metrics (metrics.py), served by our ASGI layer for admin and ``metrics`` keys.
METRICS_PATH = "/metrics"

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# MLflow endpoints that use POST but only read.
_READ_ONLY_POSTS = (
    "/mlflow/experiments/search",
    "/mlflow/experiments/search-datasets",
    "/mlflow/runs/search",
    "/mlflow/logged-models/search",
    "/mlflow/registered-models/get-latest-versions",
    "/mlflow/artifacts/presigned-download-url",
    "/mlflow/datasets/search",
    "/mlflow/issues/search",
    "/mlflow/prompt-optimization/jobs/search",
    "/mlflow/traces/search",
    "/mlflow/traces/batchGetInfos",
    "/mlflow/traces/calculate-filter-correlation",
)
_READ_ONLY_POST = re.compile(
    r"/(?:ajax-)?api/\d+\.\d+(?:" + "|".join(re.escape(p) for p in _READ_ONLY_POSTS) + r")"
)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or bool(_SERVER_INFO.fullmatch(path))


# MLflow's GraphQL endpoint (the UI's run and model pages) only reads: its schema's "mutations" are
# searches and an echo. tests/server/test_policy.py fails if an MLflow upgrade adds a real one.
GRAPHQL_PATH = "/graphql"


# The searches MLflow post-filters row by row, which scoped_search.py scopes in the query instead.
_SCOPED_SEARCH = re.compile(
    r"/(?:ajax-)?api/2\.0/mlflow/(?:registered-models|model-versions|experiments|logged-models)/search|"
    + GRAPHQL_PATH
)


def is_scoped_search(path: str) -> bool:
    return bool(_SCOPED_SEARCH.fullmatch(path))


def is_write(method: str, path: str) -> bool:
    if method in READ_METHODS:
        return False
    return not (method == "POST" and (path == GRAPHQL_PATH or _READ_ONLY_POST.fullmatch(path)))


# The reads by id whose handler reads in full, again, what MLflow's permission check reads to decide
# (a run's, logged model's or registered model's experiment, prompt flag or workspace): there the
# check's read is the handler's (shared_reads.py). Elsewhere the check reads the one row it needs.
_READ_BY_ID = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/(?:runs/get|registered-models/get|logged-models/[^/]+)")


def shares_reads(method: str, path: str) -> bool:
    return method == "GET" and bool(_READ_BY_ID.fullmatch(path))
