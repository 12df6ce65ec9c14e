"""The key API's client side without a server: parsing, errors, and what a key's expiry means (an injected
now), plus where verify and register show it (httpx.MockTransport stands in for the registry)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from rich.console import Console

from hokusai_registry.key_client import (
    KEY_API,
    CreatedKey,
    KeyApiError,
    KeyApiUnreachable,
    KeyClient,
    KeyInfo,
    WhoAmI,
    utc_text,
)
from hokusai_registry.register import Registration
from hokusai_registry.register.progress import Bars, Quiet, note
from hokusai_registry.verify import checks
from hokusai_registry.verify.checks import Context
from hokusai_registry.verify.runner import Check, run_one

URL = "http://registry.test"
NOW = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
KEY_FIELDS = {
    "id", "name", "user", "scope", "created_at", "expires_at", "revoked", "revoked_at", "last_used_at",
    "replaced_by",
}  # fmt: skip

Handler = Callable[[httpx.Request], httpx.Response]


def key_object(**changes: Any) -> dict[str, Any]:
    return {
        "id": "k_0123456789ab", "name": "ci", "user": "acme", "scope": "write",
        "created_at": "2026-04-01T08:00:00+00:00", "expires_at": None, "revoked": False, "revoked_at": None,
        "last_used_at": None, "replaced_by": None,
    } | changes  # fmt: skip


def whoami(**changes: Any) -> dict[str, Any]:
    return {
        "id": "k_0123456789ab", "name": "ci", "user": "acme", "scope": "write", "expires_at": None,
        "expires_in_seconds": None, "grace_seconds_left": None, "source": "local",
    } | changes  # fmt: skip


def expiring_in(left: timedelta, **changes: Any) -> WhoAmI:
    at = NOW + left
    data = whoami(expires_at=at.isoformat(), expires_in_seconds=left.total_seconds(), **changes)
    return WhoAmI.from_json(data)


def client(handler: Handler) -> KeyClient:
    return KeyClient(
        URL, "hk_live_secret", http=httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    )


def answer(status: int, body: Any) -> Handler:
    return lambda request: httpx.Response(status, json=body)


# -- parsing -------------------------------------------------------------------------------------------


def test_a_key_object_round_trips_with_exactly_the_contracts_fields() -> None:
    data = key_object(expires_at="2026-06-01T00:00:00+00:00", last_used_at="2026-04-02T10:11:12.123456+00:00")
    parsed = KeyInfo.from_json(data)
    assert parsed.expires_at == datetime(2026, 6, 1, tzinfo=UTC) and parsed.revoked is False
    assert parsed.to_json() == data
    assert set(parsed.to_json()) == KEY_FIELDS


def test_a_created_key_is_the_key_object_plus_the_key_and_a_rotation_also_what_it_replaced() -> None:
    created = CreatedKey.from_json(key_object() | {"key": "hk_live_new"})
    assert created.key == "hk_live_new" and created.replaces is None
    assert set(created.to_json()) == KEY_FIELDS | {"key"}
    rotated = CreatedKey.from_json(
        key_object(id="k_new")
        | {"key": "hk_live_new", "replaces": "k_old", "old_key_expires_at": NOW.isoformat()}
    )
    assert (rotated.replaces, rotated.old_key_expires_at) == ("k_old", NOW)
    assert rotated.to_json()["old_key_expires_at"] == NOW.isoformat()
    assert set(rotated.to_json()) == KEY_FIELDS | {"key", "replaces", "old_key_expires_at"}


def test_whoami_parses_into_its_dataclass_and_describes_the_key() -> None:
    who = WhoAmI.from_json(whoami(expires_at="2026-05-07T09:30:00Z", expires_in_seconds=518400))
    assert (who.id, who.name, who.user, who.scope, who.source) == (
        "k_0123456789ab",
        "ci",
        "acme",
        "write",
        "local",
    )
    assert who.expires_at == datetime(2026, 5, 7, 9, 30, tzinfo=UTC) and who.expires_in_seconds == 518400.0
    assert who.describe() == "as key k_0123456789ab (ci, user acme, scope write)"
    assert json.loads(json.dumps(who.to_json())) == who.to_json()
    # an unnamed key is named by its id: not said twice; an external key says where it comes from
    unnamed = WhoAmI.from_json(whoami(name="k_0123456789ab", source="external", scope="read"))
    assert (
        unnamed.describe() == "as key k_0123456789ab (user acme, scope read, from the external key service)"
    )


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"id": None}, "'id' is None"),
        ({"user": 3}, "'user' is 3"),
        ({"scope": ""}, "'scope' is ''"),
        ({"expires_at": "next tuesday"}, "Invalid isoformat"),
        ({"expires_in_seconds": "soon"}, "'expires_in_seconds' is 'soon'"),
    ],
)
def test_a_whoami_answer_not_as_the_contract_says_is_refused(bad: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        WhoAmI.from_json(whoami(**bad))


# -- the 7-day warning, with an injected now -------------------------------------------------------------


def test_no_warning_for_a_key_eight_days_from_expiry_or_without_expiry() -> None:
    assert expiring_in(timedelta(days=8)).warning(NOW) is None
    assert WhoAmI.from_json(whoami()).warning(NOW) is None


def test_a_key_six_days_from_expiry_is_warned_about_with_the_date_and_the_fix() -> None:
    found = expiring_in(timedelta(days=6, hours=20)).warning(NOW)
    assert found is not None
    assert found.problem == "key k_0123456789ab expires in 6 days (2026-05-08 05:30 UTC)"
    assert "hokusai-registry keys rotate" in found.fix
    assert found.text == f"{found.problem}; {found.fix}"


def test_the_warning_starts_at_exactly_seven_days_and_counts_hours_and_minutes_at_the_end() -> None:
    assert expiring_in(timedelta(days=7)).warning(NOW) is not None
    assert expiring_in(timedelta(days=7, seconds=1)).warning(NOW) is None
    hours = expiring_in(timedelta(hours=30)).warning(NOW)
    assert hours is not None and "expires in 30 hours" in hours.problem
    minute = expiring_in(timedelta(seconds=90)).warning(NOW)
    assert minute is not None and "expires in 1 minute (" in minute.problem


def test_the_servers_countdown_wins_over_a_wrong_client_clock() -> None:
    # expires_at says 20 days from this client's (wrong) now; the server says 3 days are left
    who = WhoAmI.from_json(
        whoami(expires_at=(NOW + timedelta(days=20)).isoformat(), expires_in_seconds=3 * 86400)
    )
    found = who.warning(NOW)
    assert found is not None and "expires in 3 days" in found.problem
    # without a countdown, expires_at - now decides
    only_date = WhoAmI.from_json(whoami(expires_at=(NOW + timedelta(days=2, hours=1)).isoformat()))
    assert (w := only_date.warning(NOW)) is not None and "expires in 2 days" in w.problem


def test_an_old_key_in_its_grace_period_is_warned_about_whatever_its_expiry() -> None:
    ends = NOW + timedelta(hours=5)
    who = WhoAmI.from_json(
        whoami(expires_at=ends.isoformat(), expires_in_seconds=5 * 3600, grace_seconds_left=5 * 3600)
    )
    found = who.warning(NOW)
    assert found is not None
    assert (
        found.problem
        == "key k_0123456789ab was rotated: this old key stops working in 5 hours (2026-05-01 14:30 UTC)"
    )
    assert "new key" in found.fix and "keys rotate" in found.fix
    # a grace period is worth a warning even when it is longer than the 7 days an expiry would need
    long = WhoAmI.from_json(whoami(grace_seconds_left=8 * 86400))
    assert (
        w := long.warning(NOW)
    ) is not None and "stops working in 8 days (2026-05-09 09:30 UTC)" in w.problem


def test_an_external_keys_fix_is_the_key_service_not_rotate() -> None:
    found = expiring_in(timedelta(days=1), source="external").warning(NOW)
    assert found is not None and "key service" in found.fix and "rotate" not in found.fix


def test_utc_text_converts_to_utc() -> None:
    assert utc_text(datetime.fromisoformat("2026-05-01T11:30:00+02:00")) == "2026-05-01 09:30:00 UTC"
    assert utc_text(datetime(2026, 5, 1, 9, 30), seconds=False) == "2026-05-01 09:30 UTC"


# -- the HTTP client ---------------------------------------------------------------------------------------


def test_each_call_sends_the_key_as_bearer_to_the_contracts_route() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/rotate"):
            body = key_object(id="k_new") | {
                "key": "hk_live_new",
                "replaces": "k_old",
                "old_key_expires_at": None,
            }
            return httpx.Response(201, json=body)
        if request.method == "POST":
            return httpx.Response(201, json=key_object() | {"key": "hk_live_new"})
        if request.method == "DELETE":
            return httpx.Response(200, json=key_object(revoked=True, revoked_at=NOW.isoformat()))
        if request.url.path.endswith("/whoami"):
            return httpx.Response(200, json=whoami())
        return httpx.Response(200, json={"keys": [key_object(), key_object(id="k_other")]})

    with client(handler) as api:
        created = api.create("ci", user="acme", scope="read", expires_in_days=30)
        assert created.key == "hk_live_new" and created.record.name == "ci"
        assert [k.id for k in api.list(user="acme")] == ["k_0123456789ab", "k_other"]
        assert api.list() and api.revoke("k_a/b").revoked is True
        rotated = api.rotate("k_old", grace_seconds=60)
        assert rotated.replaces == "k_old" and api.rotate("k_old").record.id == "k_new"
        assert api.whoami().user == "acme"
    assert all(r.headers["authorization"] == "Bearer hk_live_secret" for r in seen)
    assert [(r.method, *r.url.raw_path.decode().partition("?")[::2]) for r in seen] == [
        ("POST", f"{KEY_API}/keys", ""),
        ("GET", f"{KEY_API}/keys", "user=acme"),
        ("GET", f"{KEY_API}/keys", ""),
        ("DELETE", f"{KEY_API}/keys/k_a%2Fb", ""),
        ("POST", f"{KEY_API}/keys/k_old/rotate", ""),
        ("POST", f"{KEY_API}/keys/k_old/rotate", ""),
        ("GET", f"{KEY_API}/whoami", ""),
    ]
    bodies = [json.loads(r.content) for r in seen if r.method == "POST"]
    assert bodies == [
        {"name": "ci", "user": "acme", "scope": "read", "expires_in_days": 30},
        {"grace_seconds": 60},
        {},
    ]


def test_create_sends_only_the_fields_given() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(201, json=key_object() | {"key": "hk_live_new"})

    client(handler).create("ci")
    assert seen == [{"name": "ci"}]


def test_a_refusal_carries_status_error_code_and_message() -> None:
    body = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no key with id 'k_nope'"}
    with pytest.raises(KeyApiError) as caught:
        client(answer(404, body)).revoke("k_nope")
    exc = caught.value
    assert (exc.status, exc.error_code, exc.message) == (
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "no key with id 'k_nope'",
    )
    assert str(exc) == "no key with id 'k_nope' (HTTP 404 RESOURCE_DOES_NOT_EXIST)"
    forbidden = {
        "error_code": "PERMISSION_DENIED",
        "message": "only an admin may create keys for another user",
    }
    with pytest.raises(KeyApiError, match=r"only an admin .* \(HTTP 403 PERMISSION_DENIED\)"):
        client(answer(403, forbidden)).create("ci", user="someone-else")


def test_a_server_without_the_key_api_is_named_and_identify_skips_it() -> None:
    def no_route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<!doctype html><title>404 Not Found</title>")

    with pytest.raises(KeyApiError, match=f"{URL} has no key API") as caught:
        client(no_route).list()
    assert caught.value.status == 404
    assert client(no_route).identify() is None
    with pytest.raises(KeyApiError) as refused:  # only a 404 is "not offered"; a refusal is an error
        client(answer(401, {"error_code": "UNAUTHENTICATED", "message": "revoked key"})).identify()
    assert refused.value.status == 401


def test_a_proxys_error_page_is_shortened_into_the_message() -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n  <body>Bad   Gateway</body></html>")

    with pytest.raises(KeyApiError) as caught:
        client(proxy).whoami()
    assert caught.value.status == 502 and caught.value.error_code == ""
    assert (
        caught.value.message == f"GET {KEY_API}/whoami answered 502: <html> <body>Bad Gateway</body></html>"
    )


@pytest.mark.parametrize("body", [{"keys": "all"}, {"keys": [{"id": "k_1"}]}, ["not", "an", "object"]])
def test_an_answer_not_as_the_contract_says_is_a_key_api_error(body: Any) -> None:
    with pytest.raises(KeyApiError, match=f"unexpected answer to GET {KEY_API}/keys from {URL}"):
        client(answer(200, body)).list()


def test_no_answer_at_all_names_the_url_that_could_not_be_reached() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(KeyApiUnreachable) as caught:
        client(refused).whoami()
    assert caught.value.status is None
    assert str(caught.value) == f"could not reach {URL}: ConnectError: [Errno 111] Connection refused"


def test_a_real_unreachable_port_is_reported_too() -> None:
    from tests.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with (
        KeyClient(url, "k", timeout=5) as api,
        pytest.raises(KeyApiUnreachable, match=f"could not reach {url}"),
    ):
        api.list()


# -- where verify and register say it ------------------------------------------------------------------------


def registry_handler(who: dict[str, Any] | None) -> Handler:
    """The routes verify's authentication check asks: search (401 without the given key), whoami."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/whoami"):
            return httpx.Response(404, text="not found") if who is None else httpx.Response(200, json=who)
        if request.headers.get("authorization") == "Bearer hk_live_given":
            return httpx.Response(200, json={"experiments": []})
        return httpx.Response(401, json={"error_code": "UNAUTHENTICATED", "message": "no key"})

    return handler


@pytest.fixture
def verify_ctx() -> Iterator[Callable[[dict[str, Any] | None], Context]]:
    made: list[Context] = []

    def make(who: dict[str, Any] | None) -> Context:
        ctx = Context(URL, "hk_live_given")
        ctx.http.close()
        ctx.http = httpx.Client(base_url=URL, transport=httpx.MockTransport(registry_handler(who)))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def test_verify_names_the_key_in_the_authentication_check(verify_ctx: Callable[..., Context]) -> None:
    result = run_one(verify_ctx(whoami()), Check("authentication", "Authentication", checks.authentication))
    assert result.status == "pass", result
    assert result.detail.endswith("given key 200; as key k_0123456789ab (ci, user acme, scope write)")


def test_verify_warns_about_a_key_about_to_expire_without_failing(verify_ctx: Callable[..., Context]) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    ctx = verify_ctx(whoami(expires_at=soon.isoformat(), expires_in_seconds=3 * 86400 - 5))
    result = run_one(ctx, Check("authentication", "Authentication", checks.authentication))
    assert result.status == "warn" and ctx.authenticated, result
    assert "as key k_0123456789ab" in result.detail
    assert result.diagnosis.startswith("key: key k_0123456789ab expires in 2 days")
    assert "keys rotate" in result.fix


def test_verify_skips_whoami_on_a_server_without_the_key_api(verify_ctx: Callable[..., Context]) -> None:
    result = run_one(verify_ctx(None), Check("authentication", "Authentication", checks.authentication))
    assert (result.status, result.detail) == ("pass", "no key 401; made-up key 401; given key 200")


def registration(**identity: Any) -> Registration:
    return Registration(
        name="m", version="1", model_uri="models:/m/1", source="mlflow-artifacts:/1/x", run_id="r",
        experiment_id="1", token_id="T", metric="r2", baseline=0.5, files=(), **identity,
    )  # fmt: skip


def test_register_json_carries_the_identity_and_its_warning() -> None:
    who = expiring_in(timedelta(days=2))
    done = registration(identity=who, identity_warning="key k_0123456789ab expires in 2 days")
    out = json.loads(json.dumps(done.to_json()))
    assert out["identity"] == who.to_json() | {"warning": "key k_0123456789ab expires in 2 days"}
    assert "identity_warning" not in out
    assert json.loads(json.dumps(registration().to_json()))["identity"] is None


def test_registers_notes_print_on_the_bars_console_only() -> None:
    console = Console(record=True, width=200)
    note(Bars(console), "registering as key k_1 (user [acme], scope write)")
    note(Bars(console), "key k_1 expires in 2 days", warning=True)
    note(Quiet(), "nowhere")
    assert console.export_text().splitlines() == [
        "registering as key k_1 (user [acme], scope write)",
        "warning: key k_1 expires in 2 days",
    ]
