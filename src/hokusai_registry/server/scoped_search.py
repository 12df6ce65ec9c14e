"""Searches scoped in the store query, so a tenant's cost does not grow with other tenants' rows.

MLflow's auth app runs every search unscoped, then drops the rows the caller may not read and queries
again, page after page, until it has ``max_results`` rows (``filter_search_*`` in ``mlflow.server.auth``):
a tenant who can read 10 of 100,000 models pays for all of them. Here, when the rows a non-admin caller
may read are the resources named in their own grants, the store query gets ``name IN (...)``
(experiments: ``experiment_id IN (...)``; logged models: only the readable ones of the requested
experiments), so the database returns those rows only. MLflow's filter still
runs on what comes back and decides every row, and redacts, as before: scoping only removes rows it
would have dropped, so the pages hold the same rows in the same order.

Which names: a row is decided by MLflow's predicate over the caller's grants (mlflow_adapter.py). A
grant names one resource or ``*``, so every row with no grant of its own is decided exactly like a name
nobody holds a grant on (the sentinel). If the sentinel is readable (the default permission, a
workspace grant or a ``*`` grant lets the caller read rows it holds no grant on), or the names are more
than ``MAX_NAMES`` (MLflow's filter parser costs about 30 µs a name), the search runs unscoped and
MLflow's own filter does the work: most rows pass it then, so it is cheap.

Page tokens: both ways use MLflow's offset tokens, but their offsets count different rows. A scoped
search adds ``SCOPED_OFFSET`` to every offset it hands out (MLflow's filter only adds to an offset it
was given, so the mark survives its re-queries), and a token is only ever read by the way that wrote
it: an unscoped token continues unscoped; a scoped token whose caller can no longer be scoped is
refused with 400 INVALID_PARAMETER_VALUE, never read as the other kind.

Re-queries in steps: when MLflow's filter dropped rows from a page of registered models or
experiments, it queries the store again for a whole page from the page's token, keeps as many rows
as it is missing, moves the token by those, and repeats while rows are missing. A caller who may read
nearly everything (the unscoped way) misses one or two rows, and paid for a second full page: 10.5
ms of an owner's page of 100 on PostgreSQL, where a re-query of one row takes 5.5 ms
(docs/benchmarks.md, run 18). Inside the filter its re-queries read 1, 4, 16... rows
(``REFETCH_FIRST``, ``REFETCH_GROWTH``), capped at the page. A re-query that reads no more rows
than are missing keeps them all, and the next continues after them; one that reads more keeps the
missing count. So the filter looks at the same rows in the same order, and stops at the same row (as
MLflow's own re-queries, each reads the table as it is then: rows written during the request can
shift the offsets of either). The cost: a caller who misses many rows of a page pays up to
log4(page size) more queries, each at the page's offset.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.context import current_request

MAX_NAMES = 500  # MLflow parses an IN list at about 30 µs a name: 15 ms at most, per store query
SCOPED_OFFSET = 1 << 50  # far above any real offset, and exact in a JSON number
# A resource id no grant names: every row without a grant of its own is decided like this one.
SENTINEL = "\x00hokusai-no-grant-" + secrets.token_hex(8)
REFETCH_FIRST, REFETCH_GROWTH = 1, 4  # the rows of MLflow's filter's re-queries: 1, 4, 16...


@dataclass(frozen=True)
class Kind:
    """What decides a row of one search: the filter attribute holding its id, and per grant type that
    can decide it (a prompt and a registered model share the registry's rows) the sub-tier MLflow's
    filter also requires not to be denied."""

    attribute: str
    tiers: tuple[tuple[str, str | None], ...]


REGISTERED_MODELS = Kind("name", (("registered_model", None), ("prompt", None)))
MODEL_VERSIONS = Kind(
    "name", (("registered_model", "registered_model_version"), ("prompt", "prompt_version"))
)
EXPERIMENTS = Kind("experiment_id", (("experiment", None),))
LOGGED_MODELS = Kind("experiment_id", (("experiment", "logged_model"),))


def readable_ids(username: str, kind: Kind) -> frozenset[str] | None:
    """The ids of every row ``username`` may read, or None when that is not a short list of ids."""
    types = {resource_type for resource_type, _ in kind.tiers}
    named: dict[str, set[str]] = {resource_type: set() for resource_type in types}
    for resource_type, pattern in mlflow_adapter.grant_patterns(username, frozenset(types)):
        if resource_type in named and pattern != "*":
            named[resource_type].add(pattern)
            if sum(map(len, named.values())) > MAX_NAMES:
                return None  # an IN list of thousands: MLflow's filter is cheaper (most rows pass)
    readable: set[str] = set()
    for resource_type, also in kind.tiers:
        can_read = mlflow_adapter.read_predicate(username, resource_type, also)
        if can_read(SENTINEL):
            return None
        readable |= {pattern for pattern in named[resource_type] if can_read(pattern)}
    if not all(name.isprintable() and "'" not in name and "\\" not in name for name in readable):
        return None  # not written the same in MLflow's filter grammar: let MLflow's filter decide
    return frozenset(readable)


def scope_for(kind: Kind) -> frozenset[str] | None:
    """The readable ids when this request's search is to be scoped, else None."""
    state = current_request.get()
    if state is None or not state.scoped_search or state.principal.is_admin:
        return None
    if kind not in state.readable:
        state.readable[kind] = readable_ids(state.principal.username, kind)
    found: frozenset[str] | None = state.readable[kind]
    return found


def restricted(filter_string: str | None, attribute: str, ids: frozenset[str]) -> str:
    """``filter_string AND attribute IN ('a', 'b')`` in MLflow's filter grammar."""
    clause = f"{attribute} IN ({', '.join(repr(str(i)) for i in sorted(ids))})"
    return f"{filter_string} AND {clause}" if filter_string and filter_string.strip() else clause


def read_offset(token: Any) -> int:
    """The offset in one of MLflow's page tokens (base64 of ``{"offset": n}``)."""
    try:
        return int(json.loads(base64.b64decode(token))["offset"])
    except (ValueError, TypeError, KeyError):
        return -1  # not a token we can read: MLflow's own code will refuse it


def offset_token(offset: int, like: Any) -> Any:
    """MLflow's page token for ``offset``, as bytes or text like the token it replaces."""
    token = base64.b64encode(json.dumps({"offset": offset}).encode())
    return token.decode() if isinstance(like, str) else token


def access_changed() -> Exception:
    """A scoped page token whose caller can no longer be scoped: refused, never read as an offset."""
    from mlflow.exceptions import MlflowException

    refusal: Exception = MlflowException.invalid_parameter_value(
        "this page token belongs to a search scoped to the resources you could read, and your "
        "access has changed since; start the search again without a page token"
    )
    return refusal


@dataclass
class Refetching:
    """MLflow's filter of one search is running: its store queries are its re-queries."""

    kind: Kind
    steps_taken: int = 0

    def step(self, max_results: int) -> int:
        rows: int = min(max_results, REFETCH_FIRST * REFETCH_GROWTH**self.steps_taken)
        self.steps_taken += 1
        return rows


_refetching: ContextVar[Refetching | None] = ContextVar("hokusai_refetching", default=None)


def refetching_in_steps(kind: Kind) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Wrap MLflow's after-request filter of ``kind``'s search so its re-queries read in steps."""

    def wrap(filter_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(filter_response)
        def filter_in_steps(response: Any) -> Any:
            token = _refetching.set(Refetching(kind))
            try:
                return filter_response(response)
            finally:
                _refetching.reset(token)

        return filter_in_steps

    return wrap


def in_steps(kind: Kind, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A re-query of MLflow's filter of ``kind`` reads its next step of rows; any other, all it asks."""
    refetching = _refetching.get()
    if refetching is None or refetching.kind is not kind or not kwargs.get("max_results"):
        return kwargs
    return kwargs | {"max_results": refetching.step(int(kwargs["max_results"]))}


def scoped(kind: Kind, search: Callable[..., Any]) -> Callable[..., Any]:
    """``search`` (a store's ``search_*``) with the request's readable ids applied in its query."""

    def scoped_search(store: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.store.entities.paged_list import PagedList

        if args:  # the handlers and MLflow's filters pass keywords; anything else is left alone
            return search(store, *args, **kwargs)
        kwargs = in_steps(kind, kwargs)
        token = kwargs.get("page_token")
        offset = read_offset(token) if token else 0
        ids = scope_for(kind)
        if offset < SCOPED_OFFSET and (token or ids is None):
            return search(store, **kwargs)  # an unscoped token continues unscoped
        if ids is None:
            raise access_changed()
        if not ids:
            return PagedList([], None)
        inner = offset - SCOPED_OFFSET if token else 0
        kwargs["page_token"] = offset_token(inner, token) if inner > 0 else None
        kwargs["filter_string"] = restricted(kwargs.get("filter_string"), kind.attribute, ids)
        page = search(store, **kwargs)
        next_token = page.token and offset_token(read_offset(page.token) + SCOPED_OFFSET, page.token)
        return PagedList(list(page), next_token)

    return scoped_search


def scoped_logged_models(search: Callable[..., Any]) -> Callable[..., Any]:
    """``search_logged_models`` over the readable ones of the requested experiments only.

    Its page token names the experiments, filter and order it was made for, and the store checks
    them against the request: the store sees a token for the readable experiments, the caller one
    for the experiments it asked for, with the offset shifted like every scoped token.
    """

    def scoped_search(store: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.store.entities.paged_list import PagedList
        from mlflow.utils.search_utils import SearchLoggedModelsPaginationToken as Token

        token = kwargs.get("page_token")
        offset = Token.decode(token).offset if token else 0
        ids = scope_for(LOGGED_MODELS)
        if args or (offset < SCOPED_OFFSET and (token or ids is None)):
            return search(store, *args, **kwargs)
        if ids is None:
            raise access_changed()
        asked = list(kwargs.get("experiment_ids") or [])
        readable = [experiment_id for experiment_id in asked if str(experiment_id) in ids]
        if not readable:
            return PagedList([], None)
        params = {"filter_string": kwargs.get("filter_string"), "order_by": kwargs.get("order_by")}
        inner = offset - SCOPED_OFFSET if token else 0
        kwargs["page_token"] = Token(readable, offset=inner, **params).encode() if inner > 0 else None
        page = search(store, **(kwargs | {"experiment_ids": readable}))
        next_token = None
        if page.token:
            next_token = Token(
                asked, offset=Token.decode(page.token).offset + SCOPED_OFFSET, **params
            ).encode()
        return PagedList(list(page), next_token)

    return scoped_search


def install() -> None:
    """Scope the SQL stores' searches (MLflow's handlers and its filters' re-queries call them), and
    have those filters re-query in steps."""
    intercept = mlflow_adapter.intercept_store_method
    intercept("registry", "search_registered_models", lambda s: scoped(REGISTERED_MODELS, s))
    intercept("registry", "search_model_versions", lambda s: scoped(MODEL_VERSIONS, s))
    intercept("tracking", "search_experiments", lambda s: scoped(EXPERIMENTS, s))
    intercept("tracking", "search_logged_models", scoped_logged_models)
    mlflow_adapter.wrap_after_request_handlers(
        {
            "filter_search_registered_models": refetching_in_steps(REGISTERED_MODELS),
            "filter_search_experiments": refetching_in_steps(EXPERIMENTS),
        }
    )
