"""A fleet as in production: two `up` replicas on one PostgreSQL and one S3 bucket, behind a load balancer.

HAProxy stands in for the ALB (round robin, health checks of /health); moto's S3 server for S3. The
fixture starts one of each for the module; tests stop and start replicas, PostgreSQL and S3 through it,
and each leaves the fleet whole again (``Fleet.make_whole``), also when it fails.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import (
    CLI,
    Postgres,
    Replica,
    S3Server,
    free_port,
    haproxy_stats,
    postgres_cluster,
    run_haproxy,
    run_throttle,
    s3_client,
    s3_server,
)

ROOT = Path(__file__).resolve().parents[2]
API = "/api/2.0/mlflow"
KEY_API = "/api/hokusai/v1"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
BUCKET, PREFIX = "registry-artifacts", "fleet"
TIMEOUT = 15.0  # no request of these tests may take longer, outages included
CACHE_TTL = 2  # seconds; revocation must reach every worker within 5


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Fleet:
    postgres: Postgres
    s3: S3Server
    replicas: dict[str, Replica]
    url: str
    stats_port: int
    admin_key: str
    env: dict[str, str]  # what `keys` on the database needs: the shared key-hash secret

    def stats(self) -> dict[str, dict[str, str]]:
        return haproxy_stats(self.stats_port)

    def in_rotation(self) -> dict[str, bool]:
        stats = self.stats()
        return {name: stats[f"replicas/{name}"]["status"] == "UP" for name in self.replicas}

    def wait_in_rotation(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.in_rotation().values()):
            assert time.monotonic() < deadline, f"HAProxy does not see every replica up: {self.in_rotation()}"
            time.sleep(0.1)

    def make_whole(self) -> None:
        """Whatever a test stopped is started again; every replica answers and HAProxy sends it requests."""
        if not self.postgres.running:
            self.postgres.start()
        if not self.s3.running:
            self.s3.start()
        for replica in self.replicas.values():
            if not replica.running:
                replica.start()
        self.wait_in_rotation()

    def keys(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`hokusai-registry keys ...` on the shared database."""
        return subprocess.run(
            [CLI, "keys", *args, "--db-uri", self.postgres.uri],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

    def cli_key(self, user: str, scope: str = "write") -> dict[str, Any]:
        created: dict[str, Any] = json.loads(
            self.keys("create", "--user", user, "--scope", scope, "--json").stdout
        )
        return created

    def api_key(self, user: str, scope: str = "write") -> dict[str, Any]:
        """A key from the key API, through the load balancer, made by the admin."""
        with self.http(key=self.admin_key) as http:
            response = http.post(f"{KEY_API}/keys", json={"user": user, "name": unique("k"), "scope": scope})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def http(self, base: str | None = None, key: str | None = None, timeout: float = TIMEOUT) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=base or self.url, headers=headers, timeout=timeout)

    def targets(self) -> dict[str, str]:
        """Every way in: each replica directly, and the load balancer."""
        return {**{name: r.url for name, r in self.replicas.items()}, "lb": self.url}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    shared = {
        "HOKUSAI_REGISTRY_KEY_HASH_SECRET": secrets.token_urlsafe(32),
        "HOKUSAI_REGISTRY_FLASK_SECRET_KEY": secrets.token_urlsafe(32),
        "HOKUSAI_REGISTRY_ADMIN_PASSWORD": secrets.token_urlsafe(32),
    }
    with postgres_cluster() as postgres, s3_server(BUCKET) as s3:
        if not postgres.controllable:
            pytest.skip("the fleet tests stop PostgreSQL: they need a cluster of their own")
        args = ("--backend-store-uri", postgres.uri, "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}")
        replicas = {}
        for name in ("a", "b"):
            env = {
                **os.environ,
                **s3.env,
                **shared,
                "HOKUSAI_REGISTRY_CACHE_TTL_SECONDS": str(CACHE_TTL),
                # HAProxy's idle limits are 120 s (timeout client/server), as an operator would set it
                "HOKUSAI_REGISTRY_LB_IDLE_TIMEOUT_SECONDS": "120",
                "HOKUSAI_REGISTRY_REPLICA_ID": name,
                # Only the first replica prints an admin key; the second finds one exists.
                "HOKUSAI_REGISTRY_FIRST_ADMIN_KEY": "true" if name == "a" else "false",
            }
            (root / name).mkdir()
            replicas[name] = Replica(
                name, root / name / "data", free_port(), args, env, root / name / "up.log"
            )
        try:
            for replica in replicas.values():  # one at a time: the first start migrates the database
                replica.start()
            match = re.search(r"MLFLOW_TRACKING_TOKEN=(\S+)", replicas["a"].log())
            assert match, "replica a did not print the first admin key"
            stats_port = free_port()
            with run_haproxy(
                [r.url for r in replicas.values()], names=list(replicas), stats_port=stats_port
            ) as url:
                fleet = Fleet(
                    postgres, s3, replicas, url, stats_port, match.group(1), {**os.environ, **shared}
                )
                fleet.wait_in_rotation()
                yield fleet
        finally:
            with ThreadPoolExecutor() as pool:  # both at once: each takes a few seconds to stop
                list(pool.map(Replica.stop, replicas.values()))


@pytest.fixture
def whole(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet, whole before the test and again after it, whatever the test stopped."""
    fleet.make_whole()
    try:
        yield fleet
    finally:
        fleet.make_whole()


# --- helpers ---------------------------------------------------------------------------------------------


# The scanner tells a file's kind from its first bytes; about 1 in 200 random blobs starts like a pickle
# and is quarantined (and some of those break the verdict's write on PostgreSQL: see the report). These
# weights start with a header that is no pickle, then random bytes.
WEIGHTS_HEADER = b"\x00HOKUSAI-TEST-WEIGHTS\n"


def model_dir(path: Path, size: int) -> dict[str, str]:
    """A model directory MLflow and the scanner accept: an MLmodel and ``size`` bytes of weights, random
    after a fixed header. Returns {relative path: SHA-256}."""
    path.mkdir(parents=True)
    (path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: none\n")
    with (path / "weights.bin").open("wb") as out:
        out.write(WEIGHTS_HEADER)
        left = size - len(WEIGHTS_HEADER)
        while left:
            chunk = os.urandom(min(left, 4 * 1024 * 1024))
            out.write(chunk)
            left -= len(chunk)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def artifact_path(uri: str) -> str:
    """``mlflow-artifacts:/1/abc/artifacts`` -> ``1/abc/artifacts``."""
    return uri.split(":", 1)[1].lstrip("/")


def download_sha256(http: httpx.Client, path: str) -> str | None:
    """The SHA-256 of one served artifact, streamed; None if the server does not answer 200."""
    digest = hashlib.sha256()
    with http.stream("GET", f"{ARTIFACTS}/{path}") as response:
        if response.status_code != 200:
            response.read()
            return None
        for chunk in response.iter_bytes(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def version_files_match(http: httpx.Client, name: str, version: str, expected: dict[str, str]) -> bool:
    """Every file of the version comes back through ``http`` with the SHA-256 it was uploaded with."""
    got = http.get(f"{API}/model-versions/get-download-uri", params={"name": name, "version": version})
    assert got.status_code == 200, got.text
    root = artifact_path(got.json()["artifact_uri"])
    return all(download_sha256(http, f"{root}/{file}") == digest for file, digest in expected.items())


def fresh_status(url: str, key: str, path: str = f"{API}/registered-models/search") -> int:
    """One request on a new connection, so successive ones spread over a replica's workers."""
    return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT).status_code


# --- create, then use at once, on another replica ----------------------------------------------------------


def assert_outage_answered(answers: list[Any], recovered: dict[Any, float]) -> None:
    """Every answer during the outage was a 503 with Retry-After, none hung, and all recovered in 15 s."""
    wrong = sorted(
        {(a.probe, a.status, a.error_code, a.message) for a in answers if not a.is_503_with_retry_after}
    )
    assert not wrong, wrong
    assert max(a.seconds for a in answers) < TIMEOUT
    assert max(recovered.values()) <= 15, recovered


def test_a_model_created_on_one_replica_takes_a_version_on_the_other_at_once(
    whole: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = whole
    key = fleet.cli_key(unique("tenant"))["key"]  # made on the database, works on both replicas
    name = unique("cross")
    files = model_dir(tmp_path / "model", 64 * 1024)
    a, b = (fleet.http(r.url, key) for r in fleet.replicas.values())
    with a, b:
        experiment_id = a.post(f"{API}/experiments/create", json={"name": unique("exp")}).json()[
            "experiment_id"
        ]
        run = b.post(f"{API}/runs/create", json={"experiment_id": experiment_id}).json()["run"]["info"]
        root = artifact_path(run["artifact_uri"])
        for index, file in enumerate(files):  # one file through each replica
            put = (a, b)[index % 2].put(
                f"{ARTIFACTS}/{root}/model/{file}", content=(tmp_path / "model" / file).read_bytes()
            )
            assert put.status_code == 200, put.text
        created = a.post(f"{API}/registered-models/create", json={"name": name})
        assert created.status_code == 200, created.text
        source = f"{run['artifact_uri']}/model"
        version = b.post(
            f"{API}/model-versions/create", json={"name": name, "source": source, "run_id": run["run_id"]}
        )
        assert version.status_code == 200, version.text
        assert version.json()["model_version"]["status"] == "READY"
        tagged = a.post(
            f"{API}/model-versions/set-tag", json={"name": name, "version": "1", "key": "k", "value": "v"}
        )
        assert tagged.status_code == 200, tagged.text
        seen = b.get(f"{API}/model-versions/get", params={"name": name, "version": "1"}).json()[
            "model_version"
        ]
        assert {t["key"]: t["value"] for t in seen["tags"]}.get("k") == "v"
        assert version_files_match(b, name, "1", files) and version_files_match(a, name, "1", files)

    # The same through the load balancer with the stock client: consecutive calls alternate replicas.
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    before = fleet.stats()
    client = MlflowClient(tracking_uri=fleet.url)
    stock_name = unique("stock")
    experiment = client.create_experiment(unique("stock-exp"))
    stock_run = client.create_run(experiment)
    client.log_artifacts(stock_run.info.run_id, str(tmp_path / "model"), "model")
    client.create_registered_model(stock_name)
    made = client.create_model_version(
        stock_name, f"{stock_run.info.artifact_uri}/model", stock_run.info.run_id
    )
    assert made.status == "READY" and made.version == "1"
    after = fleet.stats()
    served = {
        n: int(after[f"replicas/{n}"]["req_tot"]) - int(before[f"replicas/{n}"]["req_tot"])
        for n in fleet.replicas
    }
    assert all(count >= 2 for count in served.values()), served
    with fleet.http(key=key) as lb:
        assert version_files_match(lb, stock_name, "1", files)
        answered = {
            lb.get(f"{API}/registered-models/get", params={"name": stock_name}).headers["x-hokusai-replica"]
            for _ in range(4)
        }
    assert answered == set(fleet.replicas), answered


# --- revocation reaches every worker of every replica ------------------------------------------------------


def refused_everywhere_after(fleet: Fleet, key: str, started: float, limit: float) -> dict[str, float]:
    """Seconds from ``started`` until every way in refuses ``key`` on 6 fresh connections in a row."""
    refused: dict[str, float] = {}
    while len(refused) < len(fleet.targets()):
        for target, url in fleet.targets().items():
            if target not in refused and all(fresh_status(url, key) == 401 for _ in range(6)):
                refused[target] = round(time.monotonic() - started, 2)
        assert time.monotonic() - started < limit + 1, (
            f"still accepted after {limit} s: refused only {refused}"
        )
        time.sleep(0.1)
    return refused


@pytest.mark.parametrize("how", ["cli", "key_api"])
def test_a_revoked_key_is_refused_by_both_replicas_within_5_seconds(whole: Fleet, how: str) -> None:
    fleet = whole
    user = unique("revoked")
    created = fleet.cli_key(user) if how == "cli" else fleet.api_key(user)
    key = created["key"]
    for url in fleet.targets().values():  # every worker of both replicas caches the key
        assert all(fresh_status(url, key) == 200 for _ in range(8))
    asked = time.monotonic()
    if how == "cli":
        fleet.keys("revoke", created["id"])
    else:
        with fleet.http(key=fleet.admin_key) as http:
            revoked = http.delete(f"{KEY_API}/keys/{created['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked"], revoked.text
    done = time.monotonic()  # the revocation is committed when the command or the call returns
    refused = refused_everywhere_after(fleet, key, done, limit=5)
    print(f"\nrevoked via {how} (it took {done - asked:.1f} s): refused everywhere after {refused} s")
    assert max(refused.values()) <= 5, refused
    assert all(fresh_status(url, key) == 401 for url in fleet.targets().values() for _ in range(4))


# --- 8 tenants x 5 registrations at once ---------------------------------------------------------------


def tenant_main() -> None:
    """One tenant's registrations with the stock client, ``count`` at once in threads (run as a process by
    the test below, with only MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN set); prints JSON."""
    import mlflow
    from mlflow import MlflowClient

    tenant, count, size, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    client = MlflowClient()
    experiment_id = mlflow.set_experiment(f"{tenant}-experiment").experiment_id
    name = f"{tenant}-model"
    client.create_registered_model(name)

    def register(index: int) -> dict[str, Any]:
        files = model_dir(workdir / f"v{index}", size)
        run = client.create_run(experiment_id)
        client.log_artifacts(run.info.run_id, str(workdir / f"v{index}"), "model")
        made = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_terminated(run.info.run_id)
        return {"version": made.version, "status": made.status, "files": files}

    with ThreadPoolExecutor(count) as pool:
        versions = list(pool.map(register, range(count)))
    print(json.dumps({"model": name, "versions": versions}))


def test_eight_tenants_register_five_versions_each_at_once_and_every_file_comes_back(
    whole: Fleet, tmp_path: Path
) -> None:
    fleet, tenants, count = whole, [unique(f"t{i}") for i in range(8)], 5
    keys = {tenant: fleet.api_key(tenant)["key"] for tenant in tenants}
    started = time.monotonic()
    procs = {
        tenant: subprocess.Popen(
            [sys.executable, "-c", "from tests.e2e.test_fleet import tenant_main; tenant_main()",
             tenant, str(count), str(16 * 1024), str(tmp_path / tenant)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                 "MLFLOW_TRACKING_URI": fleet.url, "MLFLOW_TRACKING_TOKEN": keys[tenant]},
        )
        for tenant in tenants
    }  # fmt: skip
    results = {}
    try:
        for tenant, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, 120 - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{tenant} still registering after 120 s: {proc.communicate()[1][-3000:]}")
            assert proc.returncode == 0, f"{tenant}: {err[-3000:]}"
            results[tenant] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    registered = time.monotonic() - started

    def check(tenant: str) -> list[tuple[str, str, bool]]:
        """Every version of the tenant's model as the registry now lists it, and whether its files match."""
        with fleet.http(key=keys[tenant]) as http:
            name = results[tenant]["model"]
            listed = http.get(f"{API}/model-versions/search", params={"filter": f"name='{name}'"}).json()
            expected = {v["version"]: v["files"] for v in results[tenant]["versions"]}
            return [
                (
                    v["version"],
                    v["status"],
                    version_files_match(http, name, v["version"], expected[v["version"]]),
                )
                for v in listed["model_versions"]
            ]

    with ThreadPoolExecutor(8) as pool:
        checked = dict(zip(tenants, pool.map(check, tenants), strict=True))
    print(
        f"\n8 x {count} registrations at once: {registered:.1f} s, "
        f"checked in {time.monotonic() - started - registered:.1f} s"
    )
    for tenant in tenants:
        assert sorted(v["version"] for v in results[tenant]["versions"]) == [
            str(i) for i in range(1, count + 1)
        ]
        assert all(v["status"] == "READY" for v in results[tenant]["versions"])
        assert sorted(checked[tenant]) == [(str(i), "READY", True) for i in range(1, count + 1)], checked[
            tenant
        ]
    # and tenants stay apart: one tenant's key does not read another's model
    with fleet.http(key=keys[tenants[0]]) as http:
        other = http.get(f"{API}/registered-models/get", params={"name": results[tenants[1]]["model"]})
    assert other.status_code == 403, other.text


# --- a replica SIGKILLed during a large upload -------------------------------------------------------------

# On loopback a 128 MiB body arrives in 0.4 s, before the kill could land in it; throttled to 32 MiB/s,
# 64 MiB (above the 16 MiB inline-scan limit: a background scan) take 2 s, and the kill lands mid-body.
BIG = 64 * 1024 * 1024
THROTTLE = 32 * 1024 * 1024  # bytes per second from the client
LONG_REQUEST = 0.3  # seconds; register's other requests take milliseconds


def kill_the_uploading_replica(
    fleet: Fleet, proc: subprocess.Popen[str], started: float
) -> tuple[str, str, str, float, float]:
    """SIGKILL the replica ``register`` is uploading to, mid-body; then wait for ``register`` to end.

    Its requests come one at a time and all but the upload take milliseconds: the replica that has been
    serving one request for LONG_REQUEST seconds is receiving the upload. (HAProxy counts a request's
    bytes only once it is over, so they cannot tell.) Returns (stdout, stderr, the victim, seconds into
    ``register``, seconds into the upload).
    """
    try:
        victim, busy_since = None, dict.fromkeys(fleet.replicas, 0.0)
        while victim is None:
            assert proc.poll() is None, "register ended before a replica could be killed"
            assert time.monotonic() - started < 60, "the upload never started"
            stats, now = fleet.stats(), time.monotonic()
            for n in fleet.replicas:
                busy = int(stats[f"replicas/{n}"]["scur"]) > 0
                busy_since[n] = (busy_since[n] or now) if busy else 0.0
                if busy and now - busy_since[n] >= LONG_REQUEST:
                    victim = n
            time.sleep(0.02)
        fleet.replicas[victim].kill()
        killed, into_upload = time.monotonic() - started, time.monotonic() - busy_since[victim]
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, err, victim, killed, into_upload


def test_a_replica_killed_during_a_large_upload_the_registration_completes_through_the_other(
    whole: Fleet, tmp_path: Path
) -> None:
    fleet = whole
    files = model_dir(tmp_path / "big", BIG)
    key, name = fleet.api_key(unique("big"))["key"], unique("big-model")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HOKUSAI_API_KEY": key}
    command = [CLI, "register", str(tmp_path / "big"), "--name", name, "--token-id", "BIG-1",
               "--metric", "r2", "--baseline", "0.9", "--json"]  # fmt: skip

    def bytes_in() -> dict[str, int]:
        stats = fleet.stats()
        return {n: int(stats[f"replicas/{n}"]["bin"]) for n in fleet.replicas}

    before = bytes_in()
    started = time.monotonic()
    with run_throttle(fleet.url, THROTTLE) as throttled:
        proc = subprocess.Popen(
            [*command, "--url", throttled], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        out, err, victim, killed, got = kill_the_uploading_replica(fleet, proc, started)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)
    after = bytes_in()
    survivor = next(r for n, r in fleet.replicas.items() if n != victim)
    cut, resent = after[victim] - before[victim], after[survivor.name] - before[survivor.name]
    print(
        f"\nkilled replica {victim} {killed:.1f} s into register, {got:.2f} s into the upload of "
        f"{BIG / 2**20:.0f} MiB, of which it had received {cut / 2**20:.0f} MiB; the survivor then received "
        f"{resent / 2**20:.0f} MiB; registration completed in {elapsed:.1f} s: {result['timings']}"
    )
    # The victim died receiving the upload (HAProxy counts a cut request's bytes once it is over), and
    # since that upload was never answered, the client sent the whole file again, to the survivor.
    assert 1024 * 1024 < cut < BIG, (
        f"the victim was not receiving the upload's body when killed ({cut} bytes)"
    )
    assert resent >= BIG, "the upload had been answered before the kill: nothing was tested"
    assert result["version"] == "1" and result["round_trip"] == "match"
    with fleet.http(key=key) as http, fleet.http(survivor.url, key) as direct:
        listed = http.get(f"{API}/model-versions/search", params={"filter": f"name='{name}'"}).json()
        assert [(v["version"], v["status"]) for v in listed["model_versions"]] == [("1", "READY")], listed
        tags = {t["key"]: t["value"] for t in listed["model_versions"][0]["tags"]}
        assert tags["hokusai_status"] == "registered"
        assert version_files_match(http, name, "1", files) and version_files_match(direct, name, "1", files)
    # No partial object in the bucket: every file stored under the run is whole.
    run_prefix = f"{PREFIX}/{artifact_path(result['source']).rsplit('/model', 1)[0]}/"
    stored = s3_client(fleet.s3.env).list_objects_v2(Bucket=BUCKET, Prefix=run_prefix).get("Contents", [])
    sizes = {o["Key"].removeprefix(run_prefix): o["Size"] for o in stored}
    assert sizes == {
        "model/MLmodel": (tmp_path / "big" / "MLmodel").stat().st_size,
        "model/weights.bin": BIG,
    }, sizes


# --- PostgreSQL away for 10 s ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    key: str
    body: Callable[[], Any] | None = None  # called for each request: a new experiment name each time
    content: bytes | None = None

    def send(self, base: str) -> httpx.Response:
        """One request; a timeout fails the test: nothing may hang during an outage."""
        try:
            return httpx.request(
                self.method, f"{base}{self.path}", json=self.body() if self.body else None,
                content=self.content, headers={"Authorization": f"Bearer {self.key}"}, timeout=TIMEOUT,
            )  # fmt: skip
        except httpx.TimeoutException:
            pytest.fail(f"{self.name} on {base} hung past its {TIMEOUT} s timeout")


@dataclass(frozen=True)
class Answer:
    target: str
    probe: str
    status: int
    retry_after: str | None
    error_code: str | None
    message: str
    seconds: float

    @property
    def is_503_with_retry_after(self) -> bool:
        return self.status == 503 and self.error_code == "TEMPORARILY_UNAVAILABLE" and bool(self.retry_after)


def ask(probe: Probe, target: str, base: str) -> Answer:
    started = time.monotonic()
    response = probe.send(base)
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:200]}
    body = body if isinstance(body, dict) else {}
    return Answer(
        target, probe.name, response.status_code, response.headers.get("retry-after"), body.get("error_code"),
        str(body.get("message", ""))[:200], round(time.monotonic() - started, 3),
    )  # fmt: skip


def during(fleet: Fleet, probes: list[Probe], seconds: float) -> list[Answer]:
    """Every probe on every way in, round after round, for ``seconds``; /health must keep answering."""
    answers: list[Answer] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for probe in probes:
            for target, base in fleet.targets().items():
                answers.append(ask(probe, target, base))
        for replica in fleet.replicas.values():
            assert httpx.get(f"{replica.url}/health", timeout=TIMEOUT).status_code == 200
    return answers


def recovery(fleet: Fleet, probes: list[Probe], since: float, limit: float) -> dict[str, float]:
    """Seconds from ``since`` until each probe succeeds on each way in (each asked until it does)."""
    recovered: dict[str, float] = {}
    while len(recovered) < len(probes) * len(fleet.targets()):
        for probe in probes:
            for target, base in fleet.targets().items():
                if f"{probe.name} @ {target}" not in recovered and ask(probe, target, base).status < 400:
                    recovered[f"{probe.name} @ {target}"] = round(time.monotonic() - since, 2)
        assert time.monotonic() - since < limit, f"not recovered after {limit} s: only {recovered}"
        time.sleep(0.1)
    return recovered


def summary(answers: list[Answer]) -> str:
    kinds = sorted({(a.status, a.error_code, a.retry_after) for a in answers}, key=str)
    return f"{len(answers)} answers {kinds}, slowest {max(a.seconds for a in answers):.2f} s"


@dataclass
class Stored:
    """A READY version registered through the load balancer, and where its files are."""

    name: str
    run_id: str
    root: str  # the run's artifact path: <experiment>/<run>/artifacts
    files: dict[str, str]


def a_version_with_files(fleet: Fleet, key: str, tmp_path: Path) -> Stored:
    name, folder = unique("model"), tmp_path / unique("files")
    files = model_dir(folder, 32 * 1024)
    with fleet.http(key=key) as http:
        experiment = http.post(f"{API}/experiments/create", json={"name": unique("exp")}).json()
        run = http.post(f"{API}/runs/create", json={"experiment_id": experiment["experiment_id"]}).json()
        info = run["run"]["info"]
        root = artifact_path(info["artifact_uri"])
        for file in files:
            put = http.put(f"{ARTIFACTS}/{root}/model/{file}", content=(folder / file).read_bytes())
            assert put.status_code == 200, put.text
        assert http.post(f"{API}/registered-models/create", json={"name": name}).status_code == 200
        body = {"name": name, "source": f"{info['artifact_uri']}/model", "run_id": info["run_id"]}
        created = http.post(f"{API}/model-versions/create", json=body)
    assert created.status_code == 200 and created.json()["model_version"]["status"] == "READY", created.text
    return Stored(name, info["run_id"], root, files)


class StockCall(threading.Thread):
    """One call of the stock MLflow client through the load balancer, timed."""

    def __init__(self, url: str, delay: float) -> None:
        super().__init__(daemon=True)
        self.url, self.delay = url, delay
        self.error: BaseException | None = None
        self.started_at, self.seconds = 0.0, 0.0

    def run(self) -> None:
        from mlflow import MlflowClient

        time.sleep(self.delay)
        self.started_at = time.monotonic()
        try:
            MlflowClient(tracking_uri=self.url).search_registered_models(max_results=5)
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.seconds = time.monotonic() - self.started_at


Retries = list[tuple[int, float, int | None, str | None]]


@pytest.fixture
def counted_retries(monkeypatch: pytest.MonkeyPatch) -> Retries:
    """Every retry urllib3 (the stock MLflow client's HTTP layer) decides on in this process:
    (thread id, when, the status it retries, the error it retries)."""
    from urllib3.util.retry import Retry

    seen: Retries = []
    original = Retry.increment

    def increment(self: Retry, *args: Any, **kwargs: Any) -> Retry:
        response, error = kwargs.get("response"), kwargs.get("error")
        status = getattr(response, "status", None)
        seen.append(
            (threading.get_ident(), time.monotonic(), status, type(error).__name__ if error else None)
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Retry, "increment", increment)
    return seen


def test_postgres_away_for_10_s_is_a_503_with_retry_after_and_the_fleet_recovers_by_itself(
    whole: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted_retries: Retries
) -> None:
    fleet = whole
    key = fleet.cli_key(unique("pg-outage"))["key"]
    fresh_key = fleet.cli_key(unique("pg-fresh"))["key"]  # never used before the outage: in no cache
    stored = a_version_with_files(fleet, key, tmp_path)
    files_at = f"{stored.root}/model"
    probes = [
        Probe("search (key cached)", "GET", f"{API}/registered-models/search", key),
        Probe("search (key never used)", "GET", f"{API}/registered-models/search", fresh_key),
        Probe("get version", "GET", f"{API}/model-versions/get?name={stored.name}&version=1", key),
        Probe("create experiment", "POST", f"{API}/experiments/create", key,
              body=lambda: {"name": unique("e")}),
        Probe("download (native)", "GET", f"{ARTIFACTS}/{files_at}/weights.bin", key),
        Probe("upload (native)", "PUT", f"{ARTIFACTS}/{stored.root}/extra/x.bin", key, content=b"x" * 1024),
        Probe("list artifacts (Flask)", "GET", f"{ARTIFACTS}?path={files_at}", key),
        Probe("key API: list keys", "GET", f"{KEY_API}/keys", key),
    ]  # fmt: skip
    for probe in probes:
        for base in fleet.targets().values():
            if probe.key == key:  # warm every cache the key has
                assert probe.send(base).status_code < 400, probe.name
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    stock = StockCall(fleet.url, delay=1.0)

    fleet.postgres.stop()
    stopped = time.monotonic()
    stock.start()
    answers = during(fleet, probes, 10)
    fleet.postgres.start()
    back = time.monotonic()
    recovered = recovery(fleet, probes, back, limit=20)
    stock.join(60)

    retries = [
        (round(t - stock.started_at, 1), s, e) for thread, t, s, e in counted_retries if thread == stock.ident
    ]
    print(
        f"\nPostgreSQL away {back - stopped:.1f} s: {summary(answers)}; after it came back, the first "
        f"request succeeded in {min(recovered.values())} s, "
        f"all {len(recovered)} in {max(recovered.values())} s\n"
        f"stock client started 1 s in: {'failed ' + repr(stock.error)[:200] if stock.error else 'succeeded'} "
        f"after {stock.seconds:.1f} s; urllib3 retries (s, status, error): {retries}"
    )
    assert_outage_answered(answers, recovered)
    assert stock.error is None and not stock.is_alive(), stock.error


# --- S3 away -----------------------------------------------------------------------------------------------

MID_TRANSFER = 24 * 1024 * 1024  # above boto3's 8 MiB multipart threshold: sent and fetched in parts


def test_s3_away_is_a_503_with_retry_after_leaves_no_partial_object_and_recovers(
    whole: Fleet, tmp_path: Path
) -> None:
    fleet = whole
    key = fleet.cli_key(unique("s3-outage"))["key"]
    stored = a_version_with_files(fleet, key, tmp_path)
    files_at = f"{stored.root}/model"
    probes = [
        Probe("upload (native)", "PUT", f"{ARTIFACTS}/{stored.root}/extra/small.bin", key,
              content=b"s" * 4096),
        Probe("download (native)", "GET", f"{ARTIFACTS}/{files_at}/weights.bin", key),
        Probe("list artifacts (Flask)", "GET", f"{ARTIFACTS}?path={files_at}", key),
        Probe("get-artifact (Flask)", "GET", f"/get-artifact?run_id={stored.run_id}&path=model/MLmodel", key),
        Probe("list run artifacts (Flask)", "GET", f"{API}/artifacts/list?run_id={stored.run_id}&path=model",
              key),
    ]  # fmt: skip
    s3 = s3_client(fleet.s3.env)

    fleet.s3.stop()
    stopped = time.monotonic()
    answers = during(fleet, probes, 3)
    fleet.s3.start()
    back = time.monotonic()
    recovered = recovery(fleet, probes, back, limit=20)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{stored.root}/extra/").get("KeyCount") == 1

    # S3 stopped in the middle of the server's multipart upload of a larger file: right after it began
    # the upload, so every part is refused.
    target = f"{stored.root}/extra/mid-transfer.bin"
    data = os.urandom(MID_TRANSFER)
    with fleet.http(key=key) as http:
        with fleet.s3.stopping_after(f"/{BUCKET}/{PREFIX}/{target}?uploads") as stopped_mid_upload:
            upload = http.put(f"{ARTIFACTS}/{target}", content=data)
        fleet.s3.start()
        left = [u for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) if target in u["Key"]]
        stored_mid_upload = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{target}").get("KeyCount")
        served_mid_upload = http.get(f"{ARTIFACTS}/{target}")
        # and in the middle of a download: listed, then gone before the file itself is fetched
        assert http.put(f"{ARTIFACTS}/{target}", content=data).status_code == 200
        with fleet.s3.stopping_after(f"prefix={PREFIX}/{target}/") as stopped_mid_download:
            download = http.get(f"{ARTIFACTS}/{target}")
        fleet.s3.start()
        again = http.get(f"{ARTIFACTS}/{target}")
    print(
        f"\nS3 away {back - stopped:.1f} s: {summary(answers)}; after it came back, the first request "
        f"succeeded in {min(recovered.values())} s, all {len(recovered)} in {max(recovered.values())} s\n"
        f"S3 stopped mid-upload of {MID_TRANSFER >> 20} MiB: {upload.status_code} {upload.text[:120]}; "
        f"incomplete multipart uploads left (never visible as objects): {len(left)}; then GET: "
        f"{served_mid_upload.status_code}\n"
        f"S3 stopped mid-download: {download.status_code} {download.text[:120]}"
    )
    assert_outage_answered(answers, recovered)
    assert stopped_mid_upload.is_set() and stopped_mid_download.is_set()
    assert upload.status_code == 503 and upload.headers.get("retry-after"), upload.text
    assert stored_mid_upload == 0 and served_mid_upload.status_code != 200, (
        "a partial upload became an artifact"
    )
    assert download.status_code == 503 and download.headers.get("retry-after"), download.text
    assert again.status_code == 200 and again.content == data


# --- a rolling restart under read load ---------------------------------------------------------------------


class ReadLoad(threading.Thread):
    """The stock client searching registered models in a loop through the load balancer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.ok, self.slowest = 0, 0.0
        self.failed: list[str] = []

    def run(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.url)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                client.search_registered_models(max_results=10)
                self.ok += 1
            except Exception as exc:
                self.failed.append(repr(exc)[:300])
            self.slowest = max(self.slowest, time.monotonic() - started)


def test_a_rolling_restart_under_read_load_fails_no_request_of_the_stock_client(
    whole: Fleet, monkeypatch: pytest.MonkeyPatch, counted_retries: Retries
) -> None:
    fleet = whole
    key = fleet.api_key(unique("reader"))["key"]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    before = fleet.stats()
    loads = [ReadLoad(fleet.url) for _ in range(3)]
    for load in loads:
        load.start()
    restarts = {}
    try:
        time.sleep(1)
        for name, replica in fleet.replicas.items():
            started = time.monotonic()
            replica.stop()  # SIGTERM, as ECS does; returns once the whole process group is gone
            stopped = time.monotonic() - started
            replica.start()
            fleet.wait_in_rotation()
            restarts[name] = (round(stopped, 1), round(time.monotonic() - started, 1))
        time.sleep(1)
    finally:
        for load in loads:
            load.stopping.set()
        for load in loads:
            load.join(60)
    after = fleet.stats()
    delta = {
        f"{proxy}.{field}": int(after[proxy][field] or 0) - int(before[proxy][field] or 0)
        for proxy in ("registry/FRONTEND", "replicas/BACKEND")
        for field in ("req_tot", "hrsp_5xx", "wretr", "wredis", "econ", "eresp")
        if field in after[proxy] and after[proxy][field] != ""
    }
    threads = {load.ident for load in loads}
    retried = [(s, e) for thread, _t, s, e in counted_retries if thread in threads]
    ok, failed = sum(load.ok for load in loads), [f for load in loads for f in load.failed]
    slowest = max(load.slowest for load in loads)
    print(
        f"\nrolling restart (seconds to stop, to be back in rotation): {restarts}; stock client: {ok} "
        f"searches succeeded, {len(failed)} failed, slowest {slowest:.2f} s; its urllib3 retries: "
        f"{len(retried)} {sorted(set(retried), key=str)}; HAProxy: {delta}"
    )
    assert not failed, failed[:5]
    assert ok > 100, "too little load to prove anything"
    assert all(load.ok for load in loads)


# --- idle connections: the load balancer closes them, never the replica ----------------------------------

IDLE = 6.0  # seconds: past uvicorn's own keep-alive default (5 s), well within the replicas' (125 s)


def test_a_replica_keeps_an_idle_connection_open_until_the_load_balancer_closes_it(whole: Fleet) -> None:
    """A load balancer reuses its idle connections to a replica. A replica that closed one first (uvicorn
    closes after 5 s unless told otherwise) races the balancer's next request on it, which then fails:
    HAProxy drops the client's connection unanswered, the ALB answers 502. `up` keeps idle connections
    5 s past ``HOKUSAI_REGISTRY_LB_IDLE_TIMEOUT_SECONDS`` instead (120 here, HAProxy's; default 60, the
    ALB's)."""
    replica = whole.replicas["a"]
    connection = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().read() == b"OK"
        assert connection.sock is not None
        local = connection.sock.getsockname()
        time.sleep(IDLE)
        connection.request("GET", "/health")  # on the same socket: http.client reopens only a closed one
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"OK")
        assert connection.sock is not None and connection.sock.getsockname() == local
    finally:
        connection.close()
