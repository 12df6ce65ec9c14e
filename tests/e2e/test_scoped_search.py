"""Scoped searches return what MLflow's own post-filter returns, page by page (differential, hypothesis).

The oracle is MLflow's unmodified basic-auth app (``mlflow server --app-name basic-auth``) on the same
tracking and auth databases as our server: every request is sent to both, ours with a tenant's key and
MLflow's with the same user's password, and the pages must hold the same rows in the same order. The
data is drawn once per module (tenants, models, prompts, versions, experiments, tags, grants of every
level, DENY, a ``*`` grant, a workspace grant); hypothesis draws the caller, filter, order and page size.
Two worlds: one where nobody reads without a grant (most tenants scoped: each search has its own
differential) and one where everyone may read everything (nobody scoped: one test across the searches).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hokusai_registry.server.scoped_search import SCOPED_OFFSET
from tests.processes import free_port, stop, wait_for_health
from tests.services import VENV_BIN, Registry, run_postgres, run_registry

PASSWORD = "a-long-enough-password-1A!"
TENANTS = ("t0", "t1", "t2", "t3", "t4")
TEAMS = ("red", "blue")
LEVELS = ("READ", "USE", "EDIT", "MANAGE", "DENY")
ORACLE_INI = """\
[mlflow]
default_permission = {default_permission}
database_uri = {database_uri}
admin_username = admin
"""


@dataclass
class Pair:
    """Our registry and MLflow's own auth app on the same data, with each tenant's credentials."""

    ours: Registry
    oracle_url: str
    keys: dict[str, str] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)

    def headers(self, server: str, tenant: str) -> dict[str, str]:
        if server == "ours":
            return {"Authorization": f"Bearer {self.keys[tenant]}"}
        basic = base64.b64encode(f"{tenant}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def ask(self, server: str, tenant: str, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        url = (self.ours.url if server == "ours" else self.oracle_url) + path
        headers = self.headers(server, tenant)
        if method == "GET":
            return httpx.get(url, params=body, headers=headers, timeout=60)
        return httpx.post(url, json=body, headers=headers, timeout=60)

    def pages(self, server: str, tenant: str, method: str, path: str, body: dict[str, Any]) -> list[Any]:
        """Every page of one search, following page tokens to the end."""
        found, token = [], None
        for _ in range(500):
            response = self.ask(server, tenant, method, path, body | ({"page_token": token} if token else {}))
            assert response.status_code == 200, (server, response.text)
            found.append(response.json())
            token = response.json().get("next_page_token")
            if not token:
                return found
        raise AssertionError("more than 500 pages")


@contextmanager
def run_oracle(tmp: Path, registry: Registry, backend: str, auth_db: str, default: str) -> Iterator[str]:
    ini = tmp / "oracle.ini"
    ini.write_text(ORACLE_INI.format(default_permission=default, database_uri=auth_db.replace("%", "%%")))
    port = free_port()
    env = {
        **registry.worker_env(),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("_MLFLOW_SGI_NAME", None)
    command = [
        str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", backend,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with (tmp / "oracle.log").open("w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True, cwd=tmp
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, log=tmp / "oracle.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def seed(pair: Pair, auth_db: str, rng: random.Random) -> None:
    """Each tenant creates models (some prompts), versions and experiments through our server; then
    grants of every level are written straight into MLflow's auth store, as an operator's tool would."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from hokusai_registry.server.schema import bump_epoch

    store = SqlAlchemyStore()
    store.init_db(auth_db)
    for tenant in TENANTS:
        store.create_user(tenant, PASSWORD)
        pair.keys[tenant] = pair.ours.create_key(tenant)
    api = "/api/2.0/mlflow"
    experiments = pair.experiments
    for tenant in TENANTS:
        with pair.ours.client(pair.keys[tenant]) as http:
            for i in range(rng.randint(1, 4)):
                made = http.post(f"{api}/experiments/create", json={"name": f"e-{tenant}-{i}"})
                assert made.status_code == 200, made.text
                experiments.append(made.json()["experiment_id"])
                for j in range(2 if i == 0 else rng.randint(0, 3)):
                    body = {"experiment_id": experiments[-1], "name": f"lm-{tenant}-{i}-{j}"}
                    logged = http.post(f"{api}/logged-models", json=body)
                    assert logged.status_code == 200, logged.text
            run = http.post(f"{api}/runs/create", json={"experiment_id": experiments[-1]}).json()["run"]
            source = run["info"]["artifact_uri"] + "/model"
            for i in range(rng.randint(2, 7)):
                name = f"m-{tenant}-{i:02d}"
                tags = [{"key": "team", "value": rng.choice(TEAMS)}]
                prompt = rng.random() < 0.25
                if prompt:
                    tags.append({"key": "mlflow.prompt.is_prompt", "value": "true"})
                created = http.post(f"{api}/registered-models/create", json={"name": name, "tags": tags})
                assert created.status_code == 200, created.text
                (pair.prompts if prompt else pair.models).append(name)
                for _ in range(0 if prompt else rng.randint(0, 2)):
                    body = {"name": name, "source": source, "run_id": run["info"]["run_id"]}
                    version = http.post(f"{api}/model-versions/create", json=body)
                    assert version.status_code == 200, version.text
    for tenant in TENANTS:
        for name in rng.sample(pair.models, k=min(4, len(pair.models))):
            store.grant_user_permission(tenant, "registered_model", name, rng.choice(LEVELS))
        for name in rng.sample(pair.prompts, k=min(2, len(pair.prompts))):
            store.grant_user_permission(tenant, "prompt", name, rng.choice(LEVELS))
        for experiment_id in rng.sample(experiments, k=min(3, len(experiments))):
            store.grant_user_permission(tenant, "experiment", experiment_id, rng.choice(LEVELS))
    store.grant_user_permission("t3", "registered_model", "*", "READ")  # a wildcard: not a list of names
    store.grant_user_permission("t4", "workspace", "*", "USE")  # a workspace grant: MLflow lists everything
    store.grant_user_permission("t2", "registered_model_version", "*", "DENY")  # versions withheld
    bump_epoch(store.engine)  # written behind the server's back: empty its caches now


@contextmanager
def make_pair(tmp: Path, default: str, backend: str | None) -> Iterator[Pair]:
    args = ["--backend-store-uri", backend] if backend else []
    env = {"HOKUSAI_REGISTRY_DEFAULT_PERMISSION": default}
    with run_registry(tmp, *args, env=env) as ours:
        tracking = backend or f"sqlite:///{ours.data_dir.resolve()}/mlflow.db"
        auth_db = backend or f"sqlite:///{ours.data_dir.resolve()}/auth.db"
        with run_oracle(tmp, ours, tracking, auth_db, default) as oracle_url:
            pair = Pair(ours, oracle_url)
            seed(pair, auth_db, random.Random(f"{default}-{backend is None}"))
            yield pair


class Worlds:
    """The module's server pairs, one per default permission, each started on first use."""

    def __init__(self, tmp: pytest.TempPathFactory, stack: ExitStack) -> None:
        self.tmp, self.stack = tmp, stack
        self.started: dict[str, Pair] = {}
        self.failed: dict[str, BaseException] = {}  # a world that failed to start is not tried again

    def get(self, default: str) -> Pair:
        if default in self.failed:
            raise RuntimeError(f"the {default} world failed to start") from self.failed[default]
        if default not in self.started:
            try:
                pairs = make_pair(self.tmp.mktemp(f"scoped-{default.lower()}"), default, None)
                self.started[default] = self.stack.enter_context(pairs)
            except BaseException as exc:
                self.failed[default] = exc
                raise
        return self.started[default]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worlds]:
    with ExitStack() as stack:
        yield Worlds(tmp_path_factory, stack)


@pytest.fixture(scope="module")
def grants_only(worlds: Worlds) -> Pair:
    """Nobody reads what they hold no grant on: most tenants are scoped."""
    return worlds.get("NO_PERMISSIONS")


@pytest.fixture(scope="module")
def read_pair(worlds: Worlds) -> Pair:
    """Everyone reads everything: nobody is scoped, every search is MLflow's own filter."""
    return worlds.get("READ")


@pytest.fixture(params=["NO_PERMISSIONS", "READ"])
def pair(request: pytest.FixtureRequest, worlds: Worlds) -> Pair:
    """Each of the two worlds in turn."""
    return worlds.get(request.param)


@pytest.fixture(scope="module")
def pg_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with run_postgres() as uri, make_pair(tmp_path_factory.mktemp("scoped-pg"), "NO_PERMISSIONS", uri) as pg:
        yield pg


def both(pair: Pair, tenant: str, method: str, path: str, body: dict[str, Any], rows: str) -> list[Any]:
    """The rows of every page, ours and MLflow's. MLflow's filter may hand out a token whose page is
    empty (when the rows after a full page are unreadable); a scoped search knows better and ends."""
    found = []
    for server in ("ours", "oracle"):
        pages = [page.get(rows, []) for page in pair.pages(server, tenant, method, path, body)]
        while len(pages) > 1 and not pages[-1]:
            pages.pop()
        found.append(pages)
    return found


FILTERS = st.sampled_from(
    [
        None,
        "name LIKE 'm-t1%'",
        "tags.team = 'red'",
        "name = 'm-t0-00'",
        "tags.`mlflow.prompt.is_prompt` = 'true'",
    ]
)
RM_ORDERS = st.sampled_from([[], ["name ASC"], ["name DESC"], ["last_updated_timestamp DESC"]])
EXPERIMENT_ORDERS = st.sampled_from([[], ["name ASC"], ["creation_time DESC"], ["experiment_id DESC"]])
SIZES = st.sampled_from([1, 2, 3, 5, 100])
# 15 generated requests per test (25 in both worlds took 10.5 of `make test`'s 30 minutes);
# HOKUSAI_HYPOTHESIS_EXAMPLES=100 for a deeper run before a release.
DIFFERENTIAL = settings(
    max_examples=int(os.environ.get("HOKUSAI_HYPOTHESIS_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def check_registered_models(
    pair: Pair, tenant: str, filter_: str | None, order: list[str], size: int
) -> None:
    body: dict[str, Any] = {"max_results": size} | ({"filter": filter_} if filter_ else {})
    body |= {"order_by": order} if order else {}
    path = "/api/2.0/mlflow/registered-models/search"
    ours, oracle = both(pair, tenant, "GET", path, body, "registered_models")
    assert ours == oracle
    names = [model["name"] for page in ours for model in page]
    assert len(names) == len(set(names))


def check_experiments(pair: Pair, tenant: str, order: list[str], size: int) -> None:
    body: dict[str, Any] = {"max_results": size} | ({"order_by": order} if order else {})
    ours, oracle = both(pair, tenant, "POST", "/api/2.0/mlflow/experiments/search", body, "experiments")
    assert ours == oracle
    ids = [experiment["experiment_id"] for page in ours for experiment in page]
    assert len(ids) == len(set(ids))


def check_logged_models(pair: Pair, tenant: str, order: list[Any], size: int) -> None:
    """Asked for every experiment on the server, a tenant's pages hold the logged models it may read."""
    body: dict[str, Any] = {"experiment_ids": pair.experiments, "max_results": size}
    body |= {"order_by": order} if order else {}
    ours, oracle = both(pair, tenant, "POST", "/api/2.0/mlflow/logged-models/search", body, "models")
    assert ours == oracle
    ids = [model["info"]["model_id"] for page in ours for model in page]
    assert len(ids) == len(set(ids))


def check_model_versions(pair: Pair, tenant: str, size: int) -> None:
    """MLflow's version filter drops rows without filling the page again, so its pages may be short
    or empty; ours are full. Paged to the end, both hold the same versions in the same order."""
    body = {"max_results": size, "order_by": ["name ASC", "version_number ASC"]}
    ours, oracle = both(pair, tenant, "GET", "/api/2.0/mlflow/model-versions/search", body, "model_versions")
    flat = [(v["name"], v["version"]) for page in ours for v in page]
    assert flat == [(v["name"], v["version"]) for page in oracle for v in page]
    assert len(flat) == len(set(flat))


LOGGED_MODEL_ORDERS = st.sampled_from([[], [{"field_name": "name"}]])


@DIFFERENTIAL
@given(tenant=st.sampled_from(TENANTS), filter_=FILTERS, order=RM_ORDERS, size=SIZES)
def test_registered_model_pages_match_mlflows_post_filter(
    grants_only: Pair, tenant: str, filter_: str | None, order: list[str], size: int
) -> None:
    check_registered_models(grants_only, tenant, filter_, order, size)


@DIFFERENTIAL
@given(tenant=st.sampled_from(TENANTS), order=EXPERIMENT_ORDERS, size=SIZES)
def test_experiment_pages_match_mlflows_post_filter(
    grants_only: Pair, tenant: str, order: list[str], size: int
) -> None:
    check_experiments(grants_only, tenant, order, size)


@DIFFERENTIAL
@given(tenant=st.sampled_from(TENANTS), size=SIZES, order=LOGGED_MODEL_ORDERS)
def test_logged_model_pages_match_mlflows_post_filter(
    grants_only: Pair, tenant: str, size: int, order: list[Any]
) -> None:
    check_logged_models(grants_only, tenant, order, size)


@DIFFERENTIAL
@given(tenant=st.sampled_from(TENANTS), size=SIZES)
def test_model_versions_are_every_readable_version_once(grants_only: Pair, tenant: str, size: int) -> None:
    check_model_versions(grants_only, tenant, size)


@DIFFERENTIAL
@given(search=st.sampled_from(["models", "experiments", "logged models", "versions"]), data=st.data())
def test_with_read_for_everyone_every_search_matches_mlflows_filter(
    read_pair: Pair, search: str, data: st.DataObject
) -> None:
    """Nobody is scoped here, so one test draws across the four searches: this world checks that
    choosing MLflow's filter changes nothing, not the scoped query (the tests above do)."""
    tenant, size = data.draw(st.sampled_from(TENANTS)), data.draw(SIZES)
    if search == "models":
        check_registered_models(read_pair, tenant, data.draw(FILTERS), data.draw(RM_ORDERS), size)
    elif search == "experiments":
        check_experiments(read_pair, tenant, data.draw(EXPERIMENT_ORDERS), size)
    elif search == "logged models":
        check_logged_models(read_pair, tenant, data.draw(LOGGED_MODEL_ORDERS), size)
    else:
        check_model_versions(read_pair, tenant, size)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=st.sampled_from(TENANTS), filter_=FILTERS, order=RM_ORDERS, size=SIZES)
def test_on_postgresql_too(
    pg_pair: Pair, tenant: str, filter_: str | None, order: list[str], size: int
) -> None:
    check_registered_models(pg_pair, tenant, filter_, order, size)


GRAPHQL_VERSIONS = "{ mlflowSearchModelVersions(input: {maxResults: 100}) { modelVersions { name } } }"


def test_the_ui_forms_are_scoped_alike(pair: Pair) -> None:
    """The UI asks /ajax-api/ and GraphQL: they return what the REST form returns."""
    body = {"max_results": 100}
    for tenant in TENANTS:
        rest = pair.ask("ours", tenant, "GET", "/api/2.0/mlflow/registered-models/search", body)
        ajax = pair.ask("ours", tenant, "GET", "/ajax-api/2.0/mlflow/registered-models/search", body)
        oracle = pair.ask("oracle", tenant, "GET", "/ajax-api/2.0/mlflow/registered-models/search", body)
        assert rest.json() == ajax.json() == oracle.json()
        query = {"query": GRAPHQL_VERSIONS}
        graphql = [
            pair.ask(server, tenant, "POST", "/graphql", query).json() for server in ("ours", "oracle")
        ]
        assert graphql[0] == graphql[1] and not graphql[0].get("errors"), graphql


def strategy(token: str) -> str:
    offset = json.loads(base64.b64decode(token))["offset"]
    return "scoped" if offset >= SCOPED_OFFSET else "post-filter"


def test_the_strategy_is_chosen_per_caller(pair: Pair) -> None:
    """Scoped where the readable rows are the caller's named grants; MLflow's filter where a wildcard,
    a workspace grant or a default permission lets them read rows they hold no grant on."""
    default = pair.ours.env["HOKUSAI_REGISTRY_DEFAULT_PERMISSION"]
    for tenant in TENANTS:
        first = pair.ask(
            "ours", tenant, "GET", "/api/2.0/mlflow/registered-models/search", {"max_results": 1}
        )
        token = first.json().get("next_page_token")
        assert token, f"{tenant} should see more than one model"
        expected = "post-filter" if tenant in ("t3", "t4") or default == "READ" else "scoped"
        assert strategy(token) == expected, tenant


def test_logged_model_searches_are_scoped_too(pair: Pair) -> None:
    from mlflow.utils.search_utils import SearchLoggedModelsPaginationToken as Token

    body = {"experiment_ids": pair.experiments, "max_results": 1}
    token = pair.ask("ours", "t0", "POST", "/api/2.0/mlflow/logged-models/search", body).json()[
        "next_page_token"
    ]
    scoped = pair.ours.env["HOKUSAI_REGISTRY_DEFAULT_PERMISSION"] != "READ"
    assert (Token.decode(token).offset >= SCOPED_OFFSET) == scoped
    assert Token.decode(token).experiment_ids == pair.experiments  # the caller's own request, for the filter


def test_a_token_is_read_only_by_the_strategy_that_wrote_it(pair: Pair) -> None:
    """A post-filter token sent by a caller who would now be scoped continues as a post-filter search;
    a scoped token sent by a caller who cannot be scoped is refused, never read as an offset."""
    if pair.ours.env["HOKUSAI_REGISTRY_DEFAULT_PERMISSION"] == "READ":
        pytest.skip("nobody is scoped")
    path = "/api/2.0/mlflow/registered-models/search"
    wildcard = pair.ask("ours", "t3", "GET", path, {"max_results": 1}).json()["next_page_token"]
    scoped = pair.ask("ours", "t0", "GET", path, {"max_results": 1}).json()["next_page_token"]
    continued = pair.ask("ours", "t0", "GET", path, {"max_results": 1, "page_token": wildcard})
    oracle = pair.ask("oracle", "t0", "GET", path, {"max_results": 1, "page_token": wildcard})
    assert (
        continued.status_code == 200
        and continued.json()["registered_models"] == oracle.json()["registered_models"]
    )
    refused = pair.ask("ours", "t3", "GET", path, {"max_results": 1, "page_token": scoped})
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "start the search again" in refused.json()["message"]
