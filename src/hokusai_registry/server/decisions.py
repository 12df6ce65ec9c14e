"""Requests that only decide allow or deny trust auth epochs read for their caller in the last second.

Every request's first use of the auth cache reads the auth epochs (auth_store.py): one round trip
on PostgreSQL, 18 a stock-client registration (docs/benchmarks.md, runs 15 and 16). Most requests
need the epochs for MLflow's yes-or-no on the caller's grants, and at most for hiding from the
response the links to resources the caller may not read.
Such a request (:func:`decides_only`: a validator in ``DECIDING_VALIDATORS`` and no after-request
handler of MLflow's other than one in ``REDACTIONS``; or an artifact transfer, permission_gate.py)
trusts the epochs its worker read for the same caller less than ``auth_store.EPOCH_INTERVAL`` (1 s,
never more than the cache TTL) ago. What it can miss is a grant changed on another worker in that
second:

- a grant added (create-then-use across workers): the decision on the older grants is a refusal,
  and before any refusal the epochs are read and MLflow decides again (:func:`install`), so no
  request is ever refused on grants older than the request; a link to a resource of someone else's
  just shared with the caller may stay hidden for that second;
- a grant removed or lowered: the request may still be allowed, and such a link shown, for up to
  that second, inside the revocation bound every cached grant already has (the TTL, at most 5 s).

Searches and listings (their rows are chosen by grants: a model just created must be in the next
search), GraphQL, the writes that grant (creating an experiment or model), permission and user
management, and every request not listed read the epochs as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import request

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.context import current_request

__all__ = ["DECIDING_VALIDATORS", "REDACTIONS", "decides_only", "install", "is_refusal"]

# MLflow's validators for the data path of the tracking and registry APIs: each reads the caller's
# grants for one resource and answers True or False (the contract test pins that each exists).
DECIDING_VALIDATORS = frozenset(
    {
        "validate_can_create_run",
        "validate_can_read_run",
        "validate_can_update_run",
        "validate_can_delete_run",
        "validate_can_log_metric",
        "validate_can_log_batch",
        "validate_can_log_inputs",
        "validate_can_log_outputs",
        "validate_can_create_logged_model",
        "validate_can_read_logged_model",
        "validate_can_update_logged_model",
        "validate_can_delete_logged_model",
        "validate_can_read_experiment",
        "validate_can_read_experiment_by_name",
        "validate_can_update_experiment",
        "_validate_can_read_registered_model_or_prompt",
        "_validate_can_update_registered_model_or_prompt",
        "validate_can_create_model_version",
        "validate_can_read_model_or_prompt_version",
        "validate_can_update_model_or_prompt_version",
    }
)
# MLflow's after-request handlers of those routes that only hide, in the response, ids of runs, logged
# models or versions the caller may not read.
REDACTIONS = frozenset(
    {
        "redact_get_run_model_links",
        "redact_created_logged_model_run_ids",
        "redact_finalize_logged_model_run_ids",
        "redact_get_logged_model_run_ids",
        "redact_set_logged_model_tags_run_ids",
        "redact_get_registered_model_versions",
        "redact_update_registered_model_versions",
        "redact_created_model_version_siblings",
        "redact_model_version_siblings",
        "redact_updated_model_version_siblings",
    }
)


def decides_only(flask_request: Any) -> bool:
    """True when MLflow's answer to the request depends on the caller's grants only through one
    validator's yes or no and, at most, a redaction of links."""
    if mlflow_adapter.flask_validator_name(flask_request) not in DECIDING_VALIDATORS:
        return False
    after = mlflow_adapter.after_request_handler_name(flask_request.path, flask_request.method)
    return after is None or after in REDACTIONS


def is_refusal(response: Any) -> bool:
    return getattr(response, "status_code", None) == 403


def install(flask_app: Any, refresh_epochs: Callable[[], None]) -> None:
    """Wrap MLflow's auth before-request hook: mark decides-only requests, and decide a refusal again
    on freshly read epochs if the first decision trusted older ones."""

    def wrap(before_request: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(before_request)
        def decide() -> Any:
            state = current_request.get()
            if state is None:
                return before_request()
            state.decides_only = decides_only(request)
            response = before_request()
            if state.epochs_skipped and is_refusal(response):
                refresh_epochs()
                response = before_request()
            return response

        return decide

    mlflow_adapter.wrap_before_request(flask_app, wrap)
