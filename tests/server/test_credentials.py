"""Credential parsing and the scope rule: what a request presents and why it is refused."""

from __future__ import annotations

import base64

import pytest

from hokusai_registry.server.context import Principal
from hokusai_registry.server.credentials import Refusal, check_scope, extract_key

KEY = "hk_live_" + "a" * 43


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer   {KEY}"},
        {"x-api-key": KEY},
        {"authorization": "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(f":{KEY}".encode()).decode()},
    ],
)
def test_extracts_the_key_from_each_accepted_form(headers: dict[str, str]) -> None:
    assert extract_key(headers) == KEY


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing"),
        ({"authorization": "Bearer"}, "empty"),
        ({"authorization": "Digest abc"}, "unsupported authorization scheme"),
        ({"authorization": "Bearer short"}, "malformed"),
        ({"authorization": "Bearer " + "k" * 300}, "malformed"),
        (
            {"authorization": "Bearer hk_live_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"},
            "malformed",
        ),
        ({"authorization": "Basic %%%"}, "malformed Basic"),
    ],
)
def test_refuses_with_a_reason_and_never_echoes_the_key(headers: dict[str, str], says: str) -> None:
    with pytest.raises(Refusal) as refused:
        extract_key(headers)
    assert refused.value.status == 401
    assert says in refused.value.message
    assert refused.value.response_headers()["WWW-Authenticate"] == 'Basic realm="hokusai-registry"'
    for value in headers.values():
        token = value.partition(" ")[2]
        if len(token) > 8:
            assert token not in refused.value.message


def test_a_key_sent_without_a_scheme_is_not_quoted_back() -> None:
    with pytest.raises(Refusal) as refused:
        extract_key({"authorization": KEY})
    assert "unsupported authorization scheme" in refused.value.message
    assert "hk_live_" not in refused.value.message
    with pytest.raises(Refusal) as named:
        extract_key({"authorization": "Digest abc"})
    assert "'Digest'" in named.value.message


def test_read_scope_may_search_but_not_write() -> None:
    reader = Principal("k_1", "u", "read")
    check_scope(reader, "POST", "/api/2.0/mlflow/runs/search")
    with pytest.raises(Refusal) as refused:
        check_scope(reader, "POST", "/api/2.0/mlflow/runs/log-metric")
    assert refused.value.status == 403 and refused.value.error_code == "PERMISSION_DENIED"
    check_scope(Principal("k_2", "u", "write"), "POST", "/api/2.0/mlflow/runs/log-metric")
