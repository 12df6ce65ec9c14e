"""MLflow's own search filters, re-querying in steps, answer exactly as they do re-querying whole pages.

``filter_search_registered_models`` and ``filter_search_experiments`` run unmodified here, in a Flask
request of MLflow's app, over a store of generated rows of which the caller may read a generated
subset; only the store and the caller's predicate are stand-ins. The same response is filtered twice,
once as MLflow ships it and once wrapped as scoped_search.py installs it, and the two must be equal
(rows, order and next page token), while the wrapped one's re-queries read 1, 4, 16... rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Response
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import Experiment
from mlflow.entities.model_registry import RegisteredModel
from mlflow.server import auth
from mlflow.store.entities.paged_list import PagedList
from mlflow.utils.search_utils import SearchUtils

from hokusai_registry.server import scoped_search
from hokusai_registry.server.scoped_search import (
    EXPERIMENTS,
    REFETCH_FIRST,
    REFETCH_GROWTH,
    REGISTERED_MODELS,
    Kind,
)


@dataclass
class Rows:
    """A store of ``count`` rows in order, paged by MLflow's offset tokens; records what it was asked."""

    count: int
    asked: list[int] = field(default_factory=list)

    def page(self, max_results: int, page_token: str | None) -> tuple[range, str | None]:
        self.asked.append(max_results)
        start = SearchUtils.parse_start_offset_from_page_token(page_token)
        stop = min(start + max_results, self.count)
        return range(start, stop), SearchUtils.create_page_token(stop) if stop < self.count else None

    def search_registered_models(self, *, max_results: int, page_token: str | None = None, **_: Any) -> Any:
        found, token = self.page(max_results, page_token)
        return PagedList([RegisteredModel(f"m-{i:03d}") for i in found], token)

    def search_experiments(self, *, max_results: int, page_token: str | None = None, **_: Any) -> Any:
        found, token = self.page(max_results, page_token)
        return PagedList([Experiment(str(i), f"e-{i}", "a", "active") for i in found], token)


@dataclass(frozen=True)
class Search:
    kind: Kind
    path: str
    method: str
    filter_name: str
    store_getter: str
    store_method: str
    rows_key: str


SEARCHES = {
    "registered models": Search(
        REGISTERED_MODELS,
        "/api/2.0/mlflow/registered-models/search",
        "GET",
        "filter_search_registered_models",
        "_get_model_registry_store",
        "search_registered_models",
        "registered_models",
    ),
    "experiments": Search(
        EXPERIMENTS,
        "/api/2.0/mlflow/experiments/search",
        "POST",
        "filter_search_experiments",
        "_get_tracking_store",
        "search_experiments",
        "experiments",
    ),
}


def row_id(row: Any) -> int:
    """The row's index, from a registered model's name or an experiment's id (entity or proto)."""
    return int(row.name[2:]) if hasattr(row, "latest_versions") else int(row.experiment_id)


def filtered(
    monkeypatch: pytest.MonkeyPatch,
    search: Search,
    count: int,
    readable: set[int],
    max_results: int,
    steps: bool,
) -> tuple[dict[str, Any], list[int]]:
    """The response MLflow's filter makes of the first page of ``count`` rows, with its re-queries
    whole or in steps, and how many rows each re-query asked the store for."""
    with monkeypatch.context() as patch:
        store = Rows(count)
        method = getattr(store, search.store_method)
        wrapped = scoped_search.scoped(search.kind, lambda _store, **kwargs: method(**kwargs))
        setattr(store, search.store_method, lambda **kwargs: wrapped(store, **kwargs))
        patch.setattr(auth, search.store_getter, lambda: store)
        patch.setattr(auth, "sender_is_admin", lambda: False)
        patch.setattr(auth, "authenticate_request", lambda: type("Caller", (), {"username": "t"}))
        patch.setattr(auth, "_rm_or_prompt_read_predicate", lambda _user: lambda row: row_id(row) in readable)
        patch.setattr(auth, "_role_based_read_predicate", lambda _user, _type: lambda i: int(i) in readable)
        patch.setattr(auth, "_withhold_denied_latest_versions", lambda *_: False)
        patch.setattr(auth, "_withhold_denied_version_siblings", lambda *_: False)
        first = getattr(store, search.store_method)(max_results=max_results)  # the handler's page
        body = {search.rows_key: [json.loads(_to_json(row)) for row in first]}
        token = first.token.decode() if isinstance(first.token, bytes) else first.token
        body |= {"next_page_token": token} if token else {}
        filter_response = getattr(auth, search.filter_name)
        if steps:
            filter_response = scoped_search.refetching_in_steps(search.kind)(filter_response)
        query: dict[str, Any] = {"max_results": max_results}
        request_args = {"query_string": query} if search.method == "GET" else {"json": query}
        with auth.app.test_request_context(search.path, method=search.method, **request_args):
            response = Response(json.dumps(body), mimetype="application/json")
            filter_response(response)
        return dict(json.loads(response.get_data())), store.asked[1:]  # the re-queries only


def _to_json(row: Any) -> str:
    from mlflow.utils.proto_json_utils import message_to_json

    return str(message_to_json(row.to_proto()))


@settings(max_examples=150, deadline=None)
@given(
    search=st.sampled_from(sorted(SEARCHES)),
    count=st.integers(0, 60),
    max_results=st.integers(1, 25),
    data=st.data(),
)
def test_re_queries_in_steps_answer_as_whole_pages(
    search: str, count: int, max_results: int, data: st.DataObject
) -> None:
    readable = {i for i in range(count) if data.draw(st.booleans(), label=f"row {i} readable")}
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected, whole = filtered(monkeypatch, SEARCHES[search], count, readable, max_results, steps=False)
        found, stepped = filtered(monkeypatch, SEARCHES[search], count, readable, max_results, steps=True)
    assert found == expected
    assert all(asked == max_results for asked in whole)
    steps = [min(max_results, REFETCH_FIRST * REFETCH_GROWTH**n) for n in range(len(stepped))]
    assert stepped == steps


def test_a_caller_missing_one_row_re_queries_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's case: one row of the first page is not theirs. MLflow reads another whole page."""
    readable = set(range(300)) - {7}
    expected, whole = filtered(monkeypatch, SEARCHES["registered models"], 300, readable, 100, steps=False)
    found, stepped = filtered(monkeypatch, SEARCHES["registered models"], 300, readable, 100, steps=True)
    assert found == expected and len(found["registered_models"]) == 100
    assert whole == [100] and stepped == [1]


def test_only_the_filter_of_the_same_search_reads_in_steps() -> None:
    asked = {"max_results": 100, "filter_string": "name LIKE 'a%'"}
    assert scoped_search.in_steps(REGISTERED_MODELS, asked) is asked  # outside any filter
    refetching = scoped_search.refetching_in_steps(REGISTERED_MODELS)
    seen: list[dict[str, Any]] = []

    def mlflows_filter(_response: Any) -> None:
        for _ in range(5):
            seen.append(scoped_search.in_steps(REGISTERED_MODELS, asked))
        seen.append(scoped_search.in_steps(EXPERIMENTS, asked))

    refetching(mlflows_filter)(None)
    assert [found["max_results"] for found in seen] == [1, 4, 16, 64, 100, 100]  # the last: experiments
    assert all(found["filter_string"] == asked["filter_string"] for found in seen)
    assert scoped_search.in_steps(REGISTERED_MODELS, asked) is asked  # and after it
