"""Start and stop the servers the benchmarks compare, each with the credentials to call it.

Kinds: ``stock`` (plain ``mlflow server``), ``basic`` (MLflow's basic-auth app, Basic admin:password)
and ``ours`` (``hokusai-registry up``; the primary credential is a ``write`` key of the user ``bench``,
which owns the fixtures, and the first admin key is kept as an extra).
Every server: 127.0.0.1, a free port, one uvicorn worker, SQLite, artifacts served by the server.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/run.py`, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from tests.processes import free_port, stop, wait_for_health  # noqa: E402 (needs ROOT on the path)

BIN = ROOT / ".venv" / "bin"
KINDS = ("stock", "basic", "ours")
# ours-noscan: HOKUSAI_REGISTRY_SCAN_POLICY=off, to price the model scan; ours-nometrics:
# HOKUSAI_REGISTRY_METRICS=false, to price the metrics; ours-base: the registry's code of another
# checkout (its src/ in BASE_SRC_ENV, e.g. from `git worktree add /tmp/base HEAD~1`), to measure a
# change against the code before it in one interleaved run.
OURS = ("ours", "ours-noscan", "ours-nometrics", "ours-base")
BASE_SRC_ENV = "HOKUSAI_BENCH_BASE_SRC"
MODEL = "bench-model"
EXPERIMENT = "bench"
BASIC_INI = """\
[mlflow]
default_permission = READ
database_uri = sqlite:///{dir}/auth.db
admin_username = admin
"""


@dataclass
class Server:
    kind: str
    url: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str]  # the primary credential (empty for stock)
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> other credentials
    env: dict[str, str] = field(default_factory=dict)  # how the mlflow client authenticates
    experiment_id: str = ""
    run_id: str = ""
    log: Path | None = None
    data: Path | None = None  # its data dir
    backend: str = ""  # its tracking database URI (for ours, the auth tables are there too unless SQLite)

    def log_failures(self, limit: int = 40) -> str:
        """The server log's lines about responses other than 200, and any traceback: why wrk saw errors."""
        if self.log is None:
            return ""
        lines = self.log.read_text(errors="replace").splitlines()
        start = next((i for i, line in enumerate(lines) if "Uvicorn running" in line), 0)
        failing = [
            line
            for line in lines[start:]
            if ('HTTP/1.1"' in line and "200 OK" not in line)
            or (line.startswith('{"time"') and '"status": 200' not in line)
            or "Traceback" in line
            or "Error" in line
        ]
        return "\n".join(failing[-limit:])

    def worker_pids(self) -> list[int]:
        """The uvicorn process(es) under the server: the processes that serve requests."""
        pids = descendants(self.proc.pid)
        return [pid for pid in pids if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()] or pids

    def api(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        response = httpx.request(method, self.url + path, headers=self.headers, timeout=30, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _admin_key(log: Path, proc: subprocess.Popen[bytes]) -> str:
    for _ in range(300):
        for line in log.read_text().splitlines():
            if line.strip().startswith("export MLFLOW_TRACKING_TOKEN="):
                return line.split("=", 1)[1].strip()
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"no admin key printed:\n{log.read_text()[-3000:]}")


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@dataclass
class _Pending:
    kind: str
    data: Path
    url: str
    proc: subprocess.Popen[bytes]
    backend: str
    password: str = ""


def _launch(kind: str, root: Path, backend: str | None = None) -> _Pending:
    data = root / kind
    data.mkdir(parents=True)
    port = free_port()
    # A registry runs no MLflow jobs; `up` turns the job runner (a dozen huey processes) off by
    # default, so the baselines run without it too.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = data / "server.log"
    backend = backend or f"sqlite:///{data}/mlflow.db"
    stock_args = [
        "--backend-store-uri", backend, "--artifacts-destination", f"{data}/artifacts",
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    password = ""
    if kind == "stock":
        command = [str(BIN / "mlflow"), "server", *stock_args]
    elif kind == "basic":
        password = secrets.token_urlsafe(24) + "Aa1!"
        (data / "auth.ini").write_text(BASIC_INI.format(dir=data))
        env |= {
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_AUTH_CONFIG_PATH": str(data / "auth.ini"),
        }
        command = [str(BIN / "mlflow"), "server", *stock_args, "--app-name", "basic-auth"]
    elif kind in OURS:
        if kind == "ours-noscan":
            env["HOKUSAI_REGISTRY_SCAN_POLICY"] = "off"
        if kind == "ours-nometrics":
            env["HOKUSAI_REGISTRY_METRICS"] = "false"
        if kind == "ours-base":
            if not os.environ.get(BASE_SRC_ENV):
                raise ValueError(f"ours-base runs the code in ${BASE_SRC_ENV} (a checkout's src/); set it")
            env["PYTHONPATH"] = os.environ[BASE_SRC_ENV]
        command = [str(BIN / "hokusai-registry"), "up", "--data-dir", str(data), "--port", str(port)]
        command += ["--workers", "1"] + (["--backend-store-uri", backend] if "sqlite" not in backend else [])
    else:
        raise ValueError(f"unknown server kind {kind!r}; one of {KINDS + OURS[1:]}")
    return _Pending(kind, data, f"http://127.0.0.1:{port}", _spawn(command, env, log), backend, password)


def _ready(p: _Pending) -> Server:
    """Wait for /health, make the credentials and the fixtures (a model, an experiment, a run)."""
    log = p.data / "server.log"
    wait_for_health(p.url, p.proc, timeout=300, log=log)
    server = Server(p.kind, p.url, p.proc, headers={}, log=log, data=p.data, backend=p.backend)
    if p.kind == "basic":
        server.headers = basic("admin", p.password)
        server.env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": p.password}
    elif p.kind in OURS:
        admin = _admin_key(log, p.proc)
        create = [str(BIN / "hokusai-registry"), "keys", "create", "--user", "bench", "--scope", "write"]
        key = subprocess.run(
            [*create, "--data-dir", str(p.data)], check=True, capture_output=True, text=True
        ).stdout.strip()
        server.headers = bearer(key)
        server.extra = {"admin key": bearer(admin)}
        server.env = {"MLFLOW_TRACKING_TOKEN": key}
    server.api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": MODEL})
    created = server.api("POST", "/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT})
    server.experiment_id = str(created["experiment_id"])
    run = server.api("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": server.experiment_id})
    server.run_id = str(run["run"]["info"]["run_id"])  # type: ignore[index]
    return server


@contextlib.contextmanager
def all_running(
    root: Path, kinds: tuple[str, ...] = KINDS, backends: dict[str, str] | None = None
) -> Iterator[list[Server]]:
    """Healthy servers of the given kinds (started in parallel), data under root/<kind>; stops them.

    ``backends`` maps a kind to its tracking database URI (default: SQLite in its data dir)."""
    pending: list[_Pending] = []
    try:
        for kind in kinds:
            pending.append(_launch(kind, root, (backends or {}).get(kind)))
        yield [_ready(p) for p in pending]
    finally:
        for p in pending:
            stop(p.proc, timeout=15)
