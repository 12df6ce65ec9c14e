"""Real processes for the tests: registry servers, a throw-away PostgreSQL cluster, moto's S3 server.

Everything binds 127.0.0.1 on a free port and is stopped by whoever started it (``tests.processes``
has the port, health and stop helpers, shared with the benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.processes import (
    free_port,
    kill_group,
    stop,
    wait_for_health,
)  # also imported from here by the tests

VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "hokusai-registry")


@dataclass
class Registry:
    """A running `hokusai-registry up`: its URL, data dir, first admin key and log."""

    url: str
    data_dir: Path
    admin_key: str
    proc: subprocess.Popen[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_env(self) -> dict[str, str]:
        """The environment `up` gives its workers, to build the app in another process as they do."""
        secrets = json.loads((self.data_dir / "secrets.json").read_text())
        return {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.data_dir / "auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets["flask_secret_key"],
            "HOKUSAI_REGISTRY_KEY_HASH_SECRET": secrets["key_hash_secret"],
            "HOKUSAI_REGISTRY_DATA_DIR": str(self.data_dir),
            "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED": "true",
            "_MLFLOW_SGI_NAME": "uvicorn",
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def create_key(self, user: str, scope: str = "write", expires_in_days: float | None = None) -> str:
        """A key for ``user`` (created if new), through the key API with the admin key: the CLI's
        own tests are in test_keys_cli.py, and a CLI process costs seconds of imports per key."""
        body = {"name": f"test-{uuid.uuid4().hex[:12]}", "user": user, "scope": scope}
        body |= {"expires_in_days": expires_in_days} if expires_in_days is not None else {}
        with self.client(self.admin_key) as http:
            response = http.post("/api/hokusai/v1/keys", json=body)
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    def third_party_env(self, key: str) -> dict[str, str]:
        """Only the two variables a third party is told to set (plus what any process needs to run)."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_TOKEN": key,
        }

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def run_registry(
    tmp: Path, *args: str, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[Registry]:
    data_dir = tmp / "data"
    port = free_port()
    full_env = {**os.environ, "HOKUSAI_REGISTRY_CACHE_TTL_SECONDS": "2", **(env or {})}
    log_path = tmp / "registry.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [CLI, "up", "--data-dir", str(data_dir), "--port", str(port), "--workers", str(workers), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_health(url, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; log:\n{log_path.read_text()[-4000:]}") from None
        match = re.search(r"MLFLOW_TRACKING_TOKEN=(\S+)", log_path.read_text())
        assert match, "up did not print the first admin key"
        yield Registry(url, data_dir, match.group(1), proc, log_path, full_env)
    finally:
        stop(proc)


@contextmanager
def run_stock_mlflow(tmp: Path, *args: str) -> Iterator[str]:
    """A stock `mlflow server` (no auth, no plugin) with extra ``args``; yields its URL.

    The job runner stays off, as in `up`, so the test machine is not loaded with huey processes.
    """
    port = free_port()
    command = [
        str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *args,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (tmp / "mlflow.log").open("w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True, cwd=tmp
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


class Postgres:
    """A throw-away PostgreSQL 15 cluster (``postgres_cluster``): its URI, and ``stop``/``start`` on the
    same port and data, to take the database away from running servers and give it back."""

    def __init__(self, uri: str, bindir: Path | None = None, root: Path | None = None, port: int = 0) -> None:
        self.uri, self._bindir, self._root, self._port = uri, bindir, root, port
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.running = False

    @property
    def controllable(self) -> bool:
        """False for a server given by HOKUSAI_TEST_POSTGRES_URI: it is not ours to stop."""
        return self._bindir is not None

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as_postgres, *cmd], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        assert self._bindir is not None and self._root is not None, "not a cluster of ours"
        self._run(str(self._bindir / "pg_ctl"), "-D", str(self._root / "data"), *args)

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        assert self._root is not None
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self._port} "
            f"-c unix_socket_directories={self._root} -c fsync=off"
        )
        self._ctl("-o", opts, "-l", str(self._root / "log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` ends every session (clients see their connections closed), ``immediate``
        as if it crashed. Connections are refused until ``start``."""
        self._ctl("-m", mode, "-w", "stop")
        self.running = False


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A throw-away PostgreSQL 15 cluster in a temp dir; as root it runs as the `postgres` user.

    HOKUSAI_TEST_POSTGRES_URI names an existing database to use instead: every PostgreSQL test then
    shares it, so run those tests serially (``pytest -n 0``)."""
    if uri := os.environ.get("HOKUSAI_TEST_POSTGRES_URI"):
        yield Postgres(uri)
        return
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="hokusai-pg-"))
    port = free_port()
    cluster = Postgres(f"postgresql://postgres@127.0.0.1:{port}/registry", bindir, root, port)
    if cluster._as_postgres:
        shutil.chown(root, "postgres", "postgres")
    try:
        cluster._run(
            str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        cluster.start()
        cluster._run(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "registry"
        )
        yield cluster
    finally:
        if cluster.running:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def run_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL 15 cluster (``postgres_cluster``); yields its URI."""
    with postgres_cluster() as cluster:
        yield cluster.uri


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client for the emulator that ``run_s3`` yields the environment of."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


class S3Server:
    """moto's S3 in server mode on loopback (``s3_server``): ``env`` for a server process to use it, and
    ``stop``/``start`` on the same port. Its buckets and objects live in this process, so they survive."""

    def __init__(self, port: int) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.running = False
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }

    def start(self) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per S3 request in test output
        self._server.start()
        self.running = True

    def stop(self) -> None:
        """Stop serving and close the listening socket: connections are refused until ``start``."""
        self._server.stop()
        wsgi = getattr(self._server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()  # moto's stop() leaves it open: connections would hang, not be refused
        self.running = False

    @contextmanager
    def stopping_after(self, request: str) -> Iterator[threading.Event]:
        """Within the block, stop the moment S3 has answered the first request whose request line holds
        ``request`` (e.g. ``"?uploads"``: a multipart upload begun), so the next one is refused; the
        event says it happened. Exact where a client-side trigger would race the server's next request."""
        fired = threading.Event()

        def stop_after(line: str) -> None:
            if not fired.is_set() and request in line:
                fired.set()
                self.stop()

        with answered_s3_requests(stop_after):
            yield fired


@contextmanager
def answered_s3_requests(on_line: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_line`` with the request line of each request moto's S3 answers in the block (its
    werkzeug logs each line once answered), in any emulator of this process."""
    import logging

    logger = logging.getLogger("werkzeug")

    class AfterRequest(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            on_line(record.getMessage())

    hook, level = AfterRequest(), logger.level
    logger.addHandler(hook)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)


@contextmanager
def s3_server(bucket: str = "registry-artifacts") -> Iterator[S3Server]:
    server = S3Server(free_port())
    server.start()
    try:
        # moto keeps every emulator's buckets in one per-process store: start empty, not with the
        # objects an earlier test in this process left (a test's S3 would otherwise list them).
        httpx.post(f"{server.env['AWS_ENDPOINT_URL']}/moto-api/reset", timeout=30).raise_for_status()
        s3_client(server.env).create_bucket(Bucket=bucket)
        yield server
    finally:
        if server.running:
            server.stop()


@contextmanager
def run_s3(bucket: str = "registry-artifacts") -> Iterator[dict[str, str]]:
    """moto's S3 in server mode on loopback; yields the environment a server process needs to use it."""
    with s3_server(bucket) as server:
        yield server.env


@dataclass
class Replica:
    """One `hokusai-registry up` of a fleet, on a fixed port and data dir, so it can be stopped (SIGTERM,
    as ECS does), killed (SIGKILL of its whole process group) and started again as the same replica."""

    name: str
    data_dir: Path
    port: int
    args: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    workers: int = 2
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 90) -> None:
        """Start it and return once /health answers; the log keeps every start's output."""
        command = [
            CLI, "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
            "--workers", str(self.workers), *self.args,
        ]  # fmt: skip
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, text=True, start_new_session=True
            )
        try:
            wait_for_health(self.url, self.proc, timeout, log=self.log_path)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the process group and wait for it to exit (SIGKILL after 20 s)."""
        if self.proc is not None:
            stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: the server, its workers and their scanners."""
        if self.proc is not None:
            kill_group(self.proc)


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CONFIG = """\
global
    maxconn 1000

defaults
    mode http
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    option redispatch
    retries 3
    timeout connect 2s
    timeout check 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    timeout http-keep-alive 10s
    timeout queue 10s
    default-server inter 500ms fall 2 rise 1

frontend registry
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
{servers}
{stats}"""
HAPROXY_STATS = """
listen stats
    bind 127.0.0.1:{port}
    stats enable
    stats uri /stats
"""


@contextmanager
def run_haproxy(
    backends: list[str], *, names: list[str] | None = None, stats_port: int | None = None
) -> Iterator[str]:
    """HAProxy in front of ``backends`` (``http://127.0.0.1:PORT`` each): round robin, a health check of
    ``GET /health`` every 500 ms (down after 2 failures, up after 1 success), up to 3 connection retries
    redispatched to another server; yields its URL once it answers /health through a healthy server.

    With ``stats_port``, HAProxy's statistics are served on it (``/stats;csv``: ``haproxy_stats``).
    The config is written to a temp file and HAProxy runs in the foreground (-db) until the block ends.
    """
    names = names or [f"r{i}" for i in range(len(backends))]
    servers = "\n".join(
        f"    server {name} {backend.removeprefix('http://')} check"
        for name, backend in zip(names, backends, strict=True)
    )
    port = free_port()
    stats = HAPROXY_STATS.format(port=stats_port) if stats_port else ""
    root = Path(tempfile.mkdtemp(prefix="hokusai-haproxy-"))
    config = root / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers, stats=stats))
    check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its config: {check.stdout}{check.stderr}")
    log_path = root / "haproxy.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, 30, log=log_path)
        yield url
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def run_throttle(url: str, bytes_per_second: float) -> Iterator[str]:
    """A TCP relay in front of ``url`` passing what clients send at most ``bytes_per_second`` per
    connection (answers at full speed), so an upload on loopback lasts long enough to be interrupted;
    yields its URL."""
    target = urlsplit(url)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, rate: float | None, done: threading.Barrier) -> None:
        try:
            while chunk := source.recv(64 * 1024):
                sink.sendall(chunk)
                if rate:
                    time.sleep(len(chunk) / rate)
            sink.shutdown(socket.SHUT_WR)  # pass the end on; the other direction may still be talking
        except OSError:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(threading.BrokenBarrierError):
            if done.wait() == 0:  # both directions over
                source.close()
                sink.close()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((target.hostname, target.port or 80))
            except OSError:
                client.close()
                continue
            done = threading.Barrier(2)
            threading.Thread(target=pump, args=(client, server, bytes_per_second, done), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, None, done), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()
        acceptor.join(5)


def haproxy_stats(stats_port: int) -> dict[str, dict[str, str]]:
    """HAProxy's counters by ``proxy/server`` (``registry/FRONTEND``, ``replicas/a``, ``replicas/BACKEND``):
    ``status`` (UP/DOWN), ``req_tot``, ``hrsp_5xx``, ``wretr`` (retries), ``wredis`` (redispatches), ``bin``
    (bytes from clients), ``scur``...; see HAProxy's management guide, section 9.1."""
    import csv
    import io

    text = httpx.get(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5).text.lstrip("# ")
    return {f"{row['pxname']}/{row['svname']}": row for row in csv.DictReader(io.StringIO(text))}
