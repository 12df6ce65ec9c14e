"""Register a tokenized model and prove it arrived: the one implementation ``register`` and ``verify`` share.

Order matters for what a failure leaves behind:

1. everything is validated before the first request (bad input creates nothing);
2. files go into a new run, then a version is created from the run's ``model`` directory with the
   metadata tags;
3. the registry's model scan gives its verdict (at once for a small model; a larger one is waited for,
   polling the version, since no file of a ``PENDING_REGISTRATION`` version may be downloaded);
4. the version's files are downloaded (streamed, hashed, discarded) and compared with the upload;
5. only then is the run finished and ``hokusai_status=registered`` set, the last write.

If anything after step 2 fails, the version is deleted (and the registered model, if this call created
it), so no version points at missing or wrong artifacts; the run is marked FAILED and kept as the
record of the attempt. The one exception is a version the scan rejected (``ModelRejected``): it is kept,
quarantined, because an admin needs it to read the findings and, for a false alarm, to release it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from hokusai_registry.client import API, Digest, error_body, resolve_key, resolve_url
from hokusai_registry.key_client import KEY_API, WhoAmI
from hokusai_registry.register import fallback, metadata, progress, scan, source
from hokusai_registry.register.client import RegistryClient
from hokusai_registry.register.errors import (
    ArtifactServingDisabled,
    ModelRejected,
    RegistrationError,
    RoundTripMismatch,
    ScanTimedOut,
)
from hokusai_registry.register.files import FileRecord, manifest
from hokusai_registry.register.progress import TransferProgress
from hokusai_registry.register.retry import RetryPolicy

FALLBACK_EXPERIMENT = "hokusai-models"
CLEANUP_RETRY = RetryPolicy(budget_seconds=15)


@dataclass(frozen=True)
class Registration:
    """A registered, round-trip-checked model version; ``timings`` holds seconds per step.

    ``scan_verdict`` is the registry's model-scan verdict (``clean``, or under the server's ``warn``
    policy ``suspicious``/``error``/``unsafe`` with ``scan_findings``); None when the server did not scan.
    ``identity`` is the key it ran as (None from a server without the key API), ``identity_warning``
    what was said about its expiry or rotation, if anything.
    """

    name: str
    version: str
    model_uri: str
    source: str
    run_id: str
    experiment_id: str
    token_id: str
    metric: str
    baseline: float
    files: tuple[FileRecord, ...]
    timings: dict[str, float] = field(default_factory=dict)
    scan_verdict: str | None = None
    scan_findings: list[str] = field(default_factory=list)
    identity: WhoAmI | None = None
    identity_warning: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """Every field, with ``identity`` as the key API's whoami object plus its ``warning``."""
        out = asdict(self) | {"total_bytes": self.total_bytes, "round_trip": "match"}
        warning = out.pop("identity_warning")
        out["identity"] = self.identity.to_json() | {"warning": warning} if self.identity else None
        return out


def identify(client: RegistryClient, step: str) -> WhoAmI | None:
    """The key the client runs as (``GET /api/hokusai/v1/whoami``); None when the server cannot say (no
    key API, a refusal the next request reports properly, an answer not as the contract says)."""
    response = client.request(step, "GET", f"{KEY_API}/whoami")
    if not response.is_success:
        return None
    try:
        return WhoAmI.from_json(response.json())
    except (ValueError, TypeError, AttributeError):
        return None


def default_experiment(client: RegistryClient) -> str:
    """One experiment per user on our registry (it knows who the key is); a fixed name elsewhere."""
    response = client.request("experiment", "GET", f"{API}/users/current")
    if response.status_code in (401, 403):
        client.ok("experiment", response, f"{API}/users/current")
    if response.status_code == 200 and (user := response.json().get("user", {}).get("username")):
        return f"models-{user}"
    return FALLBACK_EXPERIMENT


def artifact_path(uri: str) -> str:
    """``mlflow-artifacts:/1/abc/artifacts`` (or ``mlflow-artifacts://host/...``) -> ``1/abc/artifacts``."""
    return urlsplit(uri).path.strip("/")


class _Flow:
    """One registration's state, so a failure knows what to undo."""

    def __init__(
        self,
        client: RegistryClient,
        api_key: str,
        meta: metadata.Metadata,
        progress: TransferProgress,
        on_step: Callable[[str], None] | None,
        scan_timeout: float = scan.WAIT_SECONDS,
    ) -> None:
        self.client, self.api_key, self.meta, self.progress = client, api_key, meta, progress
        self.on_step, self.scan_timeout = on_step, scan_timeout
        self.timings: dict[str, float] = {}
        self.identity: WhoAmI | None = None
        self.identity_warning: str | None = None
        self.run_id: str | None = None
        self.version: str | None = None
        self.created_model = False

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.on_step:
            self.on_step(name)
        started = time.monotonic()
        yield
        self.timings[name] = round(time.monotonic() - started, 3)

    def run(self, model: Any, kind: str, experiment: str | None, scratch: Path) -> Registration:
        with self.step("prepare"):
            directory = source.as_directory(model, kind, scratch)
            files = manifest(directory)
        with self.step("experiment"):
            self.announce_identity()
            experiment_id, location = self.experiment(experiment or default_experiment(self.client))
        try:
            return self.register(directory, files, experiment_id, location)
        except RegistrationError as exc:
            exc.amend(self.clean_up(keep_version=isinstance(exc, ModelRejected)))
            raise

    def announce_identity(self) -> None:
        """Say once which key this runs as, and warn when the key is about to stop working."""
        self.identity = identify(self.client, "experiment")
        if self.identity is None:
            return
        progress.note(self.progress, f"registering {self.identity.describe()}")
        if found := self.identity.warning(datetime.now(UTC)):
            self.identity_warning = found.text
            progress.note(self.progress, found.text, warning=True)

    def experiment(self, name: str) -> tuple[str, str]:
        """Get or create the experiment; refuse one whose artifacts only the server's disk can hold."""
        c, by_name = self.client, f"{API}/experiments/get-by-name"
        response = c.request("experiment", "GET", by_name, params={"experiment_name": name})
        if response.status_code == 404:
            created = c.request("experiment", "POST", f"{API}/experiments/create", json={"name": name})
            if not _already_exists(created):  # a retried create that landed, or a concurrent one
                c.ok("experiment", created, f"{API}/experiments/create")
            response = c.request("experiment", "GET", by_name, params={"experiment_name": name})
        found = c.ok("experiment", response, by_name)["experiment"]
        if found.get("lifecycle_stage") == "deleted":
            c.call(
                "experiment",
                "POST",
                f"{API}/experiments/restore",
                json={"experiment_id": found["experiment_id"]},
            )
        location = str(found.get("artifact_location", ""))
        scheme = urlsplit(location).scheme
        if not scheme or scheme == "file":
            raise ArtifactServingDisabled(
                "experiment",
                f"experiment {name!r} keeps its artifacts at {location!r}, a path on the server's disk "
                "that a client cannot write to.",
                "The server must serve artifacts (F1): run it with artifact serving on and a default "
                "artifact root of mlflow-artifacts:/ (`hokusai-registry up` does both), then use a new "
                "experiment.",
            )
        return str(found["experiment_id"]), location

    def register(
        self, directory: Path, files: tuple[FileRecord, ...], experiment_id: str, location: str
    ) -> Registration:
        c, meta = self.client, self.meta
        proxied = location.startswith("mlflow-artifacts:")
        with self.step("run"):
            body = {
                "experiment_id": experiment_id,
                "start_time": _now_ms(),
                "run_name": f"register-{meta.name}",
            }
            info = c.call("run", "POST", f"{API}/runs/create", json=body)["run"]["info"]
            self.run_id, run_uri = str(info["run_id"]), str(info["artifact_uri"])
        with self.step("upload"):
            if proxied:
                for record in files:
                    with self.progress.transfer("upload", record.path, record.size) as meter:
                        target = f"{artifact_path(run_uri)}/model/{record.path}"
                        c.upload("upload", target, directory / record.path, record.size, meter)
            else:
                fallback.upload(c.url, self.api_key, self.run_id, directory, location)
        with self.step("register"):
            created = self.create_version(f"{run_uri}/model")
        verdict = self.await_scan(created)
        with self.step("round_trip"):
            version_source = self.download_uri()
            self.round_trip(files, version_source)
        with self.step("finish"):
            self.end_run(c, "FINISHED")
            tag = {
                "name": meta.name,
                "version": self.version,
                "key": metadata.TAG_STATUS,
                "value": "registered",
            }
            c.call("finish", "POST", f"{API}/model-versions/set-tag", json=tag)
        assert self.version is not None
        return Registration(
            name=meta.name, version=self.version, model_uri=f"models:/{meta.name}/{self.version}",
            source=version_source, run_id=self.run_id, experiment_id=experiment_id, token_id=meta.token_id,
            metric=meta.metric, baseline=meta.baseline, files=files, timings=self.timings,
            scan_verdict=verdict.verdict, scan_findings=verdict.findings, identity=self.identity,
            identity_warning=self.identity_warning,
        )  # fmt: skip

    def create_version(self, run_model_uri: str) -> dict[str, Any]:
        """Create the version (and the registered model, the first time); the answer, with its status."""
        c, name = self.client, self.meta.name
        created = c.request("register", "POST", f"{API}/registered-models/create", json={"name": name})
        if not _already_exists(created):  # else: a new version of an existing model
            c.ok("register", created, f"{API}/registered-models/create")
            self.created_model = True
        tags = [{"key": k, "value": v} for k, v in self.meta.version_tags().items()]
        body = {"name": name, "source": run_model_uri, "run_id": self.run_id, "tags": tags}
        version: dict[str, Any] = c.call("register", "POST", f"{API}/model-versions/create", json=body)[
            "model_version"
        ]
        self.version = str(version["version"])
        return version

    def await_scan(self, created: Mapping[str, Any]) -> scan.ScanState:
        """The scan's verdict; a pending version is polled (step ``scan``) until it has one.

        Raises ``ModelRejected`` for a version the scan quarantined and ``ScanTimedOut`` for one still
        pending after ``scan_timeout`` seconds. Only then may the files be asked for: a version that is
        not READY is refused (403 MODEL_QUARANTINED).
        """
        current = scan.state(created)
        if current.pending:
            with self.step("scan"):
                current = self.poll_scan(created)
        if current.pending:
            raise ScanTimedOut(self.meta.name, str(self.version), self.scan_timeout)
        if current.rejected:
            raise ModelRejected(
                self.meta.name, str(self.version), current.verdict, current.findings, current.message
            )
        return current

    def poll_scan(self, created: Mapping[str, Any]) -> scan.ScanState:
        params = {"name": self.meta.name, "version": str(self.version)}
        what = f"waiting for the registry's model scan of {self.meta.name} version {self.version}"

        def fetch() -> dict[str, Any]:
            answer = self.client.call("scan", "GET", f"{API}/model-versions/get", params=params)
            version: dict[str, Any] = answer["model_version"]
            return version

        def show(waited: float) -> None:
            line.update(f"{what}… {waited:.0f}s (at most {self.scan_timeout:.0f}s)")

        with progress.status(self.progress, f"{what}…") as line:
            return scan.wait(fetch, created, timeout=self.scan_timeout, on_poll=show)

    def download_uri(self) -> str:
        params = {"name": self.meta.name, "version": str(self.version)}
        path = f"{API}/model-versions/get-download-uri"
        return str(self.client.call("round_trip", "GET", path, params=params)["artifact_uri"])

    def round_trip(self, files: tuple[FileRecord, ...], version_source: str) -> None:
        """Download what the version points at and compare every file with what was uploaded."""
        got: Mapping[str, Digest | None]
        if version_source.startswith("mlflow-artifacts:"):
            got = {}
            for record in files:
                with self.progress.transfer("verify", record.path, record.size) as meter:
                    target = f"{artifact_path(version_source)}/{record.path}"
                    got[record.path] = self.client.download_sha256("round_trip", target, meter)
        else:
            got = fallback.download_sha256s(self.client.url, self.api_key, version_source, version_source)
        wrong = [r.path for r in files if got.get(r.path) != r.digest]
        if wrong:
            raise RoundTripMismatch(
                "round_trip",
                f"{len(wrong)} of {len(files)} files came back missing or different: {', '.join(wrong[:5])}.",
                "The artifact store or something in front of it altered the files; run the command again and "
                "tell the operator if it repeats.",
            )

    def clean_up(self, keep_version: bool = False) -> str:
        """Undo what must not stay: a version (and a model this call created); the run is marked FAILED.

        With ``keep_version`` (a version the scan quarantined) the version stays for an admin to review.
        """
        c = RegistryClient(self.client.url, self.api_key, CLEANUP_RETRY)
        notes = []
        try:
            if self.version is not None and keep_version:
                notes.append(
                    f"Model version {self.version} of {self.meta.name!r} was kept, quarantined, for review."
                )
            elif self.version is not None:
                body = {"name": self.meta.name, "version": self.version}
                gone = c.request("clean_up", "DELETE", f"{API}/model-versions/delete", json=body).is_success
                if gone and self.created_model:
                    c.request(
                        "clean_up", "DELETE", f"{API}/registered-models/delete", json={"name": self.meta.name}
                    )
                notes.append(
                    f"Model version {self.version} was deleted."
                    if gone
                    else f"Model version {self.version} of {self.meta.name!r} could not be deleted and has "
                    "no hokusai_status tag: delete it in the MLflow UI or with "
                    "MlflowClient().delete_model_version."
                )
            elif self.created_model:
                gone = c.request(
                    "clean_up", "DELETE", f"{API}/registered-models/delete", json={"name": self.meta.name}
                ).is_success
                notes.append(
                    "No model version was created; the empty registered model was deleted."
                    if gone
                    else f"No model version was created; delete the empty model {self.meta.name!r}."
                )
            elif self.run_id is not None:
                notes.append("No model version was created.")
            if self.run_id is not None:
                self.end_run(c, "FAILED")
        except RegistrationError:
            notes.append("The server could not be reached to clean up.")
        finally:
            c.close()
        return " ".join(notes)

    def end_run(self, client: RegistryClient, status: str) -> None:
        body = {"run_id": self.run_id, "status": status, "end_time": _now_ms()}
        client.call("finish", "POST", f"{API}/runs/update", json=body)


def _already_exists(response: httpx.Response) -> bool:
    return response.status_code == 400 and error_body(response.text).error_code == "RESOURCE_ALREADY_EXISTS"


def _now_ms() -> int:
    return int(time.time() * 1000)


def register_model(
    model: Any,
    name: str,
    *,
    token_id: str,
    metric: str,
    baseline: float | str,
    tags: Mapping[str, str] | None = None,
    experiment: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    progress: TransferProgress | None = None,
    retry: RetryPolicy | None = None,
    on_step: Callable[[str], None] | None = None,
    scan_timeout: float = scan.WAIT_SECONDS,
) -> Registration:
    """Register ``model`` (an MLflow model directory, a scikit-learn estimator or a PythonModel) as a
    new version of ``name`` with the tokenized-model tags, and check its files came back intact.

    ``url`` defaults to ``MLFLOW_TRACKING_URI``; ``api_key`` to ``HOKUSAI_API_KEY``, then
    ``MLFLOW_TRACKING_TOKEN``. ``on_step`` is called with each step's name as it starts (``scan`` only
    when the registry scans the version in the background). ``scan_timeout`` bounds that wait, in
    seconds. Raises ``InvalidInput`` before any request, other ``RegistrationError`` subclasses after
    (see ``errors``): ``ModelRejected`` when the registry's model scan quarantined the version.
    """
    started = time.monotonic()
    meta = metadata.metadata(name, token_id, metric, baseline, tags)
    kind = source.flavor(model)
    registry_url = metadata.url(resolve_url(url))
    key = metadata.api_key(resolve_key(api_key))
    experiment = metadata.experiment_name(experiment)
    scan_timeout = metadata.scan_timeout(scan_timeout)
    from hokusai_registry.register.progress import Quiet

    with (
        tempfile.TemporaryDirectory(prefix="hokusai-register-") as scratch,
        closing(RegistryClient(registry_url, key, retry)) as client,
    ):
        flow = _Flow(client, key, meta, progress or Quiet(), on_step, scan_timeout)
        flow.timings["validate"] = round(time.monotonic() - started, 3)
        return flow.run(model, kind, experiment, Path(scratch))
