"""The checks, one function each, in the order they run; each returns an ``Outcome`` or raises ``Failed``.

Checks talk plain HTTP (httpx) so they see every status, header and body a third party would, and they
share one ``Context`` holding the scratch experiment and what earlier checks learned (a failed
reachability check skips the rest). Everything verify creates is named ``hokusai-verify-<stamp>`` so a
clean-up, or an operator, can find it.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from hokusai_registry.client import API, ARTIFACTS, CHUNK, error_body, hash_stream
from hokusai_registry.key_client import KEY_API, KeyApiError, KeyClient, KeyWarning
from hokusai_registry.verify import diagnose, recommend
from hokusai_registry.verify.diagnose import Diagnosis
from hokusai_registry.verify.recommend import Observations

if TYPE_CHECKING:
    from hokusai_registry.register import Registration

Status = Literal["pass", "fail", "warn", "skip"]
PREFIX = "hokusai-verify-"
# A pickle that names os.system and calls nothing: PROTO 2, GLOBAL "os system", BINPUT 0, STOP. Built by
# hand so verify never pickles (nor loads) anything dangerous; unpickling it would only return the function.
OS_SYSTEM_PICKLE = b"\x80\x02cos\nsystem\nq\x00."
SCAN_MLMODEL = (
    "artifact_path: model\n"
    "flavors:\n"
    "  python_function:\n"
    "    loader_module: mlflow.pyfunc.model\n"
    "    python_model: model.pkl\n"
)


@dataclass
class CheckResult:
    """One check's outcome; ``diagnosis`` and ``fix`` are set for every fail and warn."""

    id: str
    title: str
    status: Status
    duration_ms: float = 0.0
    detail: str = ""
    diagnosis: str = ""
    fix: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "status": self.status, "duration_ms": self.duration_ms,
            "detail": self.detail, "diagnosis": self.diagnosis, "fix": self.fix,
        }  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What a check that passed returns: the detail for the report and what it measured, if anything."""

    detail: str
    metrics: dict[str, float] = field(default_factory=dict)


class Failed(Exception):
    """Raised inside a check to end it with ``status`` and a diagnosis."""

    def __init__(self, detail: str, found: Diagnosis | None = None, status: Status = "fail") -> None:
        super().__init__(detail)
        self.detail, self.found, self.status = detail, found, status


@dataclass
class Context:
    """What the checks share: the target, the keys, and what earlier checks found or created."""

    url: str
    api_key: str
    read_key: str | None = None
    timeout: float = 30.0
    large_mb: int = 16
    keep: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    reachable: bool = False
    authenticated: bool = False
    artifacts_ok: bool = False
    experiment_id: str | None = None
    notes: list[str] = field(default_factory=list)
    observed: Observations = field(default_factory=Observations)  # for recommend, never for pass/fail

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.observed.url = self.url
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(self.timeout, connect=10.0))

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.stamp}"

    @property
    def scan_model(self) -> str:
        """The registered model the scanning check creates (the registration check's is ``name``)."""
        return f"{self.name}-scan"

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}", "User-Agent": "hokusai-registry-verify"}

    def scratch(self, filename: str) -> str:
        return f"{ARTIFACTS}/{self.experiment_id}/{quote(self.name)}/{filename}"

    def experiment(self) -> str:
        """The scratch experiment every artifact check writes under (our server checks the id prefix)."""
        if self.experiment_id is None:
            r = self.http.post(f"{API}/experiments/create", json={"name": self.name}, headers=self.auth())
            expect(r, "tracking", "creating the scratch experiment")
            self.experiment_id = str(r.json()["experiment_id"])
        return self.experiment_id

    def close(self) -> None:
        self.http.close()


def seen(response: httpx.Response) -> str:
    """``METHOD path -> status body`` with the body trimmed, for the report."""
    body = " ".join(response.text.split())[:160]
    return f"{response.request.method} {response.request.url.path} -> {response.status_code} {body}".strip()


def expect(response: httpx.Response, route: diagnose.Route, what: str, *, with_key: bool = True) -> None:
    """Raise ``Failed`` with the diagnosis unless the answer is 2xx."""
    if not response.is_success:
        found = diagnose.response(
            response.status_code, response.text, response.headers, route=route, with_key=with_key
        )
        raise Failed(f"{what}: {seen(response)}", found)


def reachability(ctx: Context) -> Outcome:
    """DNS, TCP and TLS first (each has its own root cause), then /health, version and server info."""
    parts = urlsplit(ctx.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Failed(f"{ctx.url!r} is not an http(s) URL", diagnose.entry("F11", "bad URL"))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        with socket.create_connection((str(infos[0][4][0]), port), timeout=10) as sock:
            if parts.scheme == "https":
                with ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname):
                    pass
    except OSError as exc:
        raise Failed(f"{parts.hostname}:{port}: {exc}", diagnose.transport(exc)) from exc
    notes = [f"{parts.hostname} -> {infos[0][4][0]}:{port}"]
    ctx.observed.address = str(infos[0][4][0])
    try:
        health = ctx.http.get("/health")
    except httpx.HTTPError as exc:
        raise Failed(f"GET /health: {exc}", diagnose.transport(exc)) from exc
    if health.status_code != 200:
        raise Failed(seen(health), diagnose.response(health.status_code, health.text, route="health"))
    ctx.reachable = True
    notes.append("health 200")
    version = ctx.http.get("/version", headers=ctx.auth())
    notes.append(f"MLflow {version.text.strip()[:20]}" if version.is_success else seen(version))
    info = ctx.http.get("/api/3.0/mlflow/server-info")
    notes.append(f"server-info {info.text.strip()[:240]}" if info.is_success else seen(info))
    if info.is_success:
        with suppress(ValueError, AttributeError):  # not JSON, or not an object
            store_type = info.json().get("store_type")
            ctx.observed.store_type = store_type if isinstance(store_type, str) else None
    ids = ctx.observed.replica_ids = replicas(ctx)
    if ids:
        notes.append(f"{len(set(ids))} replica(s) answered {len(ids)} separate connections")
    return Outcome("; ".join(notes))


def replicas(ctx: Context, probes: int = recommend.REPLICA_PROBES) -> list[str] | None:
    """The ``X-Hokusai-Replica`` of ``probes`` keyed ``GET /version`` sent at once, each on its own
    connection, so a load balancer may send each elsewhere (public routes carry no such header); None when
    an answer has none (a server from before the header). Probes that get no answer are left out."""

    def probe(_: int) -> str | None:
        # "Connection: close", so no connection serves two probes; no cookie, so a load balancer's
        # stickiness cookie (from an earlier answer) does not pick the replica for it.
        request = ctx.http.build_request("GET", "/version", headers=ctx.auth() | {"Connection": "close"})
        request.headers.pop("Cookie", None)
        try:
            answer = ctx.http.send(request)
        except httpx.HTTPError:
            return None
        return str(answer.headers.get(recommend.REPLICA_HEADER, ""))

    with ThreadPoolExecutor(max_workers=probes, thread_name_prefix="verify-replica") as pool:
        answers = [a for a in pool.map(probe, range(probes)) if a is not None]
    return None if "" in answers else answers


def authentication(ctx: Context) -> Outcome:
    """No key and a made-up key must get 401; the given key 200; a read key may not write. Then which key
    that is (a warn when it is about to stop working)."""
    search = f"{API}/experiments/search"
    body = {"max_results": 1}
    # The given key first: later checks can still run against a server that lets everyone in (F12).
    given = ctx.http.post(search, json=body, headers=ctx.auth())
    ctx.authenticated = given.is_success
    anonymous = ctx.http.post(search, json=body)
    if anonymous.status_code != 401:
        found = diagnose.response(anonymous.status_code, anonymous.text, anonymous.headers,
                                  route="tracking", with_key=False)  # fmt: skip
        raise Failed(f"without a key: {seen(anonymous)} (expected 401)", found)
    made_up = ctx.http.post(search, json=body, headers=ctx.auth(f"hk_verify_{uuid.uuid4().hex}"))
    if made_up.status_code != 401:
        found = diagnose.response(made_up.status_code, made_up.text, made_up.headers,
                                  route="tracking", with_key=False)  # fmt: skip
        raise Failed(f"with a made-up key: {seen(made_up)} (expected 401)", found)
    expect(given, "tracking", "with the given key")
    notes = ["no key 401", "made-up key 401", "given key 200"]
    if ctx.read_key:
        read = ctx.http.post(search, json=body, headers=ctx.auth(ctx.read_key))
        expect(read, "tracking", "read with --read-key")
        name = f"{ctx.name}-readkey"
        write = ctx.http.post(
            f"{API}/experiments/create", json={"name": name}, headers=ctx.auth(ctx.read_key)
        )
        if write.is_success:
            ctx.http.post(f"{API}/experiments/delete", json=write.json(), headers=ctx.auth())
            raise Failed(
                f"a write with --read-key succeeded: {seen(write)}", diagnose.entry("F8", "read key writes")
            )
        if write.status_code != 403:
            raise Failed(f"a write with --read-key: {seen(write)} (expected 403)", None)
        notes.append("read key: read 200, write 403")
    if warning := identity(ctx, notes):
        raise Failed("; ".join(notes), Diagnosis("key", warning.problem, warning.fix), status="warn")
    return Outcome("; ".join(notes))


def identity(ctx: Context, notes: list[str]) -> KeyWarning | None:
    """Which key verify runs as (``as key k_… (name, user, scope)``) into ``notes``; the warning when that
    key stops working within 7 days or is an old key in its rotation grace period. A server without the
    key API (404) is skipped; any other trouble asking is only noted, as the key itself just worked."""
    try:
        who = KeyClient(ctx.url, ctx.api_key, http=ctx.http).identify()
    except KeyApiError as exc:
        notes.append(f"whoami: {exc}")
        return None
    if who is None:
        return None
    notes.append(who.describe())
    warning = who.warning(datetime.now(UTC))
    ctx.observed.key_warning, ctx.observed.key_rotated = warning, who.grace_seconds_left is not None
    return warning


def artifact_round_trip(ctx: Context) -> Outcome:
    """PUT, list, GET (SHA-256 compared) and DELETE a small object; only a 2xx round trip passes (F2)."""
    ctx.experiment()
    payload = f"hokusai-registry verify {ctx.stamp}\n".encode() * 64
    path = ctx.scratch("verify.txt")
    put = ctx.http.put(path, content=payload, headers=ctx.auth())
    expect(put, "artifact", "upload")
    listing = ctx.http.get(ARTIFACTS, params={"path": f"{ctx.experiment_id}/{ctx.name}"}, headers=ctx.auth())
    expect(listing, "artifact", "list")
    if "verify.txt" not in listing.text:
        raise Failed(f"the uploaded file is not listed: {seen(listing)}", diagnose.entry("F4", "listing"))
    got = ctx.http.get(path, headers=ctx.auth())
    expect(got, "artifact", "download")
    if got.content != payload:
        raise Failed(f"downloaded {len(got.content)} bytes differ from the {len(payload)} uploaded", None)
    deleted = ctx.http.delete(path, headers=ctx.auth())
    expect(deleted, "artifact", "delete")
    ctx.artifacts_ok = True
    return Outcome(
        f"PUT {put.status_code}, list {listing.status_code}, GET {got.status_code} sha256 match, "
        f"DELETE {deleted.status_code}"
    )


def artifact_locations(ctx: Context) -> Outcome:
    """Experiments whose artifacts bypass this server (F3); fail if new experiments get such a location."""
    server_facts(ctx)
    response = ctx.http.post(f"{API}/experiments/search", json={"max_results": 1000}, headers=ctx.auth())
    expect(response, "tracking", "experiments/search")
    experiments = response.json().get("experiments", [])
    bad = [
        (e["name"], e.get("artifact_location", ""))
        for e in experiments
        if diagnose.location(e.get("artifact_location", ""), ctx.url)
    ]
    mine = [loc for name, loc in bad if name == ctx.name]
    if mine:
        raise Failed(f"new experiments get {mine[0]}", diagnose.location(mine[0], ctx.url))
    if bad:
        listed = ", ".join(f"{name!r}: {loc}" for name, loc in bad[:5])
        raise Failed(f"{len(bad)} of {len(experiments)} experiments not served here: {listed}",
                     diagnose.location(bad[0][1], ctx.url), status="warn")  # fmt: skip
    return Outcome(f"all {len(experiments)} experiments use mlflow-artifacts:/")


def server_facts(ctx: Context) -> None:
    """What the registry says of itself at ``GET /api/hokusai/v1/server`` (its database kind, scan
    policy): MLflow's server-info says only ``SqlStore``. An older server without the route says nothing."""
    try:
        answer = ctx.http.get(f"{KEY_API}/server", headers=ctx.auth())
        facts = answer.json() if answer.is_success else {}
    except (httpx.HTTPError, ValueError):
        return
    if isinstance(facts, dict):
        backend, policy = facts.get("backend"), facts.get("scan_policy")
        ctx.observed.database = backend if isinstance(backend, str) else None
        if ctx.observed.scan_policy is None and isinstance(policy, str):
            ctx.observed.scan_policy = policy


def large_artifact(ctx: Context) -> Outcome:
    """Upload and download ``large_mb`` MiB, streamed both ways, timing each (F9 on 413/504/timeout)."""
    ctx.experiment()
    size = ctx.large_mb * CHUNK
    path = ctx.scratch("large.bin")
    block = os.urandom(CHUNK)

    def chunks() -> Iterator[bytes]:
        for _ in range(ctx.large_mb):
            yield block

    expected = hash_stream(chunks())

    headers = ctx.auth() | {"Content-Length": str(size)}
    try:
        started = time.monotonic()
        put = ctx.http.put(path, content=chunks(), headers=headers)
        up = time.monotonic() - started
        expect(put, "artifact", f"upload of {ctx.large_mb} MiB")
        started = time.monotonic()
        with ctx.http.stream("GET", path, headers=ctx.auth()) as response:
            if response.status_code != 200:
                response.read()
                expect(response, "artifact", f"download of {ctx.large_mb} MiB")
            got = hash_stream(response.iter_bytes(CHUNK))
        down = time.monotonic() - started
    except httpx.TimeoutException as exc:
        raise Failed(f"timed out after {ctx.timeout}s: {exc}", diagnose.entry("F9", "timeout")) from exc
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # A proxy that enforces a body limit often answers early and closes mid-upload.
        found = diagnose.entry("F9", "connection closed during the transfer")
        raise Failed(f"{type(exc).__name__}: {exc}", found) from exc
    finally:
        with suppress(httpx.HTTPError):
            ctx.http.delete(path, headers=ctx.auth())
    if got != expected:
        raise Failed(
            f"downloaded {got.size} bytes differ from the {size} uploaded", diagnose.entry("F9", "altered")
        )
    mb = size / 1e6
    rates = {"large_upload_mb_s": round(mb / up, 1), "large_download_mb_s": round(mb / down, 1)}
    ctx.observed.large_mib, ctx.observed.rates_mb_s = ctx.large_mb, dict(rates)
    return Outcome(
        f"{ctx.large_mb} MiB up {rates['large_upload_mb_s']} MB/s, down {rates['large_download_mb_s']} MB/s",
        rates,
    )


def registration(ctx: Context) -> Outcome:
    """Register a tiny scikit-learn model with the shared ``register_model``, read tags back, load it
    from the registry's files and compare predictions."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    ctx.experiment()
    x = np.arange(12, dtype=float).reshape(6, 2)
    model = LinearRegression().fit(x, x @ np.array([1.5, -2.0]) + 3.0)
    token = f"VERIFY-{ctx.stamp[-6:].upper()}"
    with tempfile.TemporaryDirectory(prefix=PREFIX) as scratch:
        done = _register(ctx, model, token, Path(scratch) / "model")
    metrics = {f"registration_{step}_ms": round(s * 1000, 1) for step, s in done.timings.items()}
    params = {"name": done.name, "version": done.version}
    got = ctx.http.get(f"{API}/model-versions/get", params=params, headers=ctx.auth())
    expect(got, "tracking", "model-versions/get")
    tags = {t["key"]: t["value"] for t in got.json()["model_version"].get("tags", [])}
    wanted = {"hokusai_token_id": token, "benchmark_metric": "accuracy", "hokusai_status": "registered"}
    if any(tags.get(k) != v for k, v in wanted.items()) or float(tags.get("benchmark_value", "nan")) != 0.5:
        raise Failed(f"version tags read back wrong: {tags}", None)
    started = time.monotonic()
    predictions = load_and_predict(ctx, done.source, [f.path for f in done.files], x)
    metrics["registration_load_predict_ms"] = round((time.monotonic() - started) * 1000, 1)
    if not np.allclose(predictions, model.predict(x)):
        raise Failed("predictions of the downloaded model differ from the original", None)
    return Outcome(
        f"{done.model_uri}: {len(done.files)} files round-tripped, tags read back, predictions match, "
        f"scan {done.scan_verdict or 'not run'}",
        metrics,
    )


def _register(ctx: Context, model: Any, token: str, directory: Path) -> Registration:
    """Save with explicit requirements (MLflow would otherwise infer them in a subprocess, ~7 s), then
    register the directory with the one shared implementation."""
    import mlflow.sklearn
    import sklearn

    from hokusai_registry.register import RegistrationError, RetryPolicy, register_model

    mlflow.sklearn.save_model(
        model, str(directory), pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
    )
    try:
        return register_model(
            directory, ctx.name, token_id=token, metric="accuracy", baseline=0.5, experiment=ctx.name,
            url=ctx.url, api_key=ctx.api_key, retry=RetryPolicy(budget_seconds=ctx.timeout),
            scan_timeout=ctx.timeout,
        )  # fmt: skip
    except RegistrationError as exc:
        raise Failed(f"register_model: {exc}", diagnose.registration(exc)) from exc


def model_scanning(ctx: Context) -> Outcome:
    """A version whose pickle references os.system must be quarantined: ``FAILED_REGISTRATION``, and
    both doors its files could leave by (``get-download-uri``, the file itself) 403 MODEL_QUARANTINED.

    The model is built by hand (``OS_SYSTEM_PICKLE`` and a minimal MLmodel), uploaded into a run of
    verify's experiment and registered with plain REST calls, as any client would; nothing is loaded.
    """
    from hokusai_registry.register import scan

    run_id, model = _upload_scan_model(ctx)
    name = ctx.scan_model
    created = _create_scan_version(ctx, name, model, run_id)
    version = str(created["version"])
    params = {"name": name, "version": version}

    def fetch() -> dict[str, Any]:
        got = ctx.http.get(f"{API}/model-versions/get", params=params, headers=ctx.auth())
        expect(got, "tracking", "model-versions/get")
        found: dict[str, Any] = got.json()["model_version"]
        return found

    state = scan.wait(fetch, created, timeout=ctx.timeout)
    if state.pending:
        waited = f"{name} version {version} still PENDING_REGISTRATION after {ctx.timeout:.0f}s"
        raise Failed(waited, diagnose.entry("F14", f"after {ctx.timeout:.0f}s"))
    if not state.rejected:
        ctx.observed.scan_policy = recommend.served_policy(state.verdict)
        graded = f"graded {state.verdict}" if state.verdict else "with no hokusai_scan_verdict tag"
        said = f"{name} version {version} (its pickle names os.system) is {state.status}, {graded}"
        raise Failed(said, diagnose.scan_served(state.status, state.verdict, state.message))
    doors = {
        "get-download-uri": f"{API}/model-versions/get-download-uri?name={quote(name)}&version={version}",
        "model.pkl": f"{ARTIFACTS}/{quote(model)}/model.pkl",
    }
    for door, path in doors.items():
        response = ctx.http.get(path, headers=ctx.auth())
        if not (response.status_code == 403 and error_body(response.text).error_code == scan.QUARANTINED):
            found = diagnose.scan_served(state.status, state.verdict, state.message)
            raise Failed(f"{door} of the quarantined version: {seen(response)} (expected 403)", found)
    ctx.observed.scan_policy = "block"
    first = state.findings[0] if state.findings else state.message
    return Outcome(
        f"{name}/{version}: {state.status} ({state.verdict}: {first}); get-download-uri and model.pkl "
        f"403 {scan.QUARANTINED}"
    )


def _upload_scan_model(ctx: Context) -> tuple[str, str]:
    """A run in verify's experiment holding ``model/model.pkl`` and ``model/MLmodel``: (run id, the
    model directory's path under the artifact root)."""
    body = {"experiment_id": ctx.experiment(), "start_time": int(time.time() * 1000), "run_name": "scan"}
    created = ctx.http.post(f"{API}/runs/create", json=body, headers=ctx.auth())
    expect(created, "tracking", "runs/create")
    info = created.json()["run"]["info"]
    model = f"{urlsplit(info['artifact_uri']).path.strip('/')}/model"
    for filename, content in (("model.pkl", OS_SYSTEM_PICKLE), ("MLmodel", SCAN_MLMODEL.encode())):
        put = ctx.http.put(f"{ARTIFACTS}/{quote(model)}/{filename}", content=content, headers=ctx.auth())
        expect(put, "artifact", f"upload {filename}")
    return str(info["run_id"]), model


def _create_scan_version(ctx: Context, name: str, model: str, run_id: str) -> dict[str, Any]:
    """Register ``model`` (a path under the artifact root) as version 1 of a new model ``name``."""
    made = ctx.http.post(f"{API}/registered-models/create", json={"name": name}, headers=ctx.auth())
    expect(made, "tracking", "registered-models/create")
    body = {"name": name, "source": f"mlflow-artifacts:/{model}", "run_id": run_id}
    created = ctx.http.post(f"{API}/model-versions/create", json=body, headers=ctx.auth())
    expect(created, "tracking", "model-versions/create")
    version: dict[str, Any] = created.json()["model_version"]
    return version


def load_and_predict(ctx: Context, source: str, files: list[str], x: Any) -> Any:
    """Download the version's files over the artifact route (as a client would) and load them."""
    import mlflow.pyfunc

    base = urlsplit(source).path.strip("/")
    with tempfile.TemporaryDirectory(prefix="hokusai-verify-") as scratch:
        for name in files:
            response = ctx.http.get(f"{ARTIFACTS}/{quote(base)}/{quote(name)}", headers=ctx.auth())
            expect(response, "artifact", f"download {name}")
            target = Path(scratch, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(response.content)
        return mlflow.pyfunc.load_model(scratch).predict(x)


def clean_up(ctx: Context) -> str:
    """Delete the model, the runs, their artifacts and the scratch experiment (unless ``--keep``)."""
    if ctx.keep:
        return f"kept {ctx.name!r} (experiment, runs, model) and model {ctx.scan_model!r} (--keep)"
    done: list[str] = []
    h = ctx.auth()
    models = {"model": ctx.name, "scan model": ctx.scan_model}  # its owner may delete a quarantined version
    for label, name in models.items():
        deleted = ctx.http.request(
            "DELETE", f"{API}/registered-models/delete", json={"name": name}, headers=h
        )
        if deleted.is_success:
            done.append(label)
    if ctx.experiment_id is not None:
        runs = ctx.http.post(f"{API}/runs/search", json={"experiment_ids": [ctx.experiment_id]}, headers=h)
        for run in runs.json().get("runs", []) if runs.is_success else []:
            run_id = run["info"]["run_id"]
            ctx.http.delete(f"{ARTIFACTS}/{ctx.experiment_id}/{run_id}", headers=h)
            ctx.http.post(f"{API}/runs/delete", json={"run_id": run_id}, headers=h)
            done.append(f"run {run_id[:8]}")
        ctx.http.delete(f"{ARTIFACTS}/{ctx.experiment_id}", headers=h)
        gone = ctx.http.post(
            f"{API}/experiments/delete", json={"experiment_id": ctx.experiment_id}, headers=h
        )
        if gone.is_success:
            done.append("experiment")
    return "deleted " + (", ".join(done) or "nothing")
