"""Benchmarks: stock MLflow vs MLflow basic-auth vs hokusai-registry, measured interleaved in one run.

Run by hand from the repository root; each command starts the servers and prints Markdown tables:

    .venv/bin/python bench/run.py requests [--rounds 3] [--seconds 8]       # wrk: registered-models/get
    .venv/bin/python bench/run.py latency [--requests 2000]                 # 1 client, request by request
    .venv/bin/python bench/run.py cpu [--rounds 3] [--seconds 8]            # worker CPU ms per request
    .venv/bin/python bench/run.py artifacts [--artifact-rounds 2] [--mib 256]  # PUT/GET via the server
    .venv/bin/python bench/run.py registration [--runs 20] [--postgres]     # client log + register
    .venv/bin/python bench/run.py mixed [--rate 5] [--rounds 3] [--seconds 8] [--readers 16]  # reads while
                                        # others register; --readers 1,4,16: the gap against queue depth
    .venv/bin/python bench/run.py statements [--registrations 5]            # SQL a registration sends
    .venv/bin/python bench/run.py profile [--profile-seconds 10]            # py-spy on our worker
    .venv/bin/python bench/run.py all                                       # all of them, one server set
    .venv/bin/python bench/run.py scale [--sizes 1000,10000,100000] [--scale-kind models|experiments]
                                        [--scale-requests 40] [--postgres]  # cost vs other tenants' rows
    .venv/bin/python bench/run.py keys [--requests 2000]                    # auth with 100,000 keys
    .venv/bin/python bench/run.py ui [--ui-size 10000] [--ui-loads 5]       # the UI's models page, Chromium
    .venv/bin/python bench/run.py scanning [--scan-sizes 10,300,2048] [--scan-load-mib 300]  # model scan
    .venv/bin/python bench/run.py registration --kinds stock,ours,ours-noscan  # scanning on vs off
    .venv/bin/python bench/run.py requests --kinds stock,ours,ours-nometrics  # metrics on vs off
    HOKUSAI_BENCH_BASE_SRC=/tmp/base/src .venv/bin/python bench/run.py registration \
        --kinds stock,ours,ours-base      # this checkout vs another (git worktree add /tmp/base HEAD~1)
    .venv/bin/python bench/run.py fleet [--rounds 3] [--seconds 8]          # HAProxy: 1 vs 2 replicas

`--kinds stock,ours` skips MLflow's basic-auth server (slow to measure: scrypt per request).
`--postgres` gives every server its own database in one throw-away PostgreSQL 15 instead of SQLite
(requests, latency, cpu, artifacts, registration, mixed, profile, all and scale; the basic-auth
server's users stay in SQLite; `fleet` always runs on PostgreSQL). On SQLite, ours runs its
databases write-ahead logged (`up` does) and stock and basic in SQLite's default rollback journal.

Needs wrk (apt-get install wrk) and, for `profile`, py-spy in the venv (pip install py-spy).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from servers import BIN, MODEL, Server, all_running, bearer, rss_kib

READ_PATH = f"/api/2.0/mlflow/registered-models/get?name={MODEL}"
Target = tuple[str, Server, dict[str, str]]  # label, server, request headers


def targets(servers: list[Server]) -> list[Target]:
    labels = {
        "stock": "stock",
        "basic": "basic-auth (admin)",
        "ours": "ours (write key)",
        "ours-noscan": "ours, scanning off",
        "ours-nometrics": "ours, metrics off",
        "ours-base": "ours-base (write key)",
    }
    found: list[Target] = []
    for server in servers:
        found.append((labels[server.kind], server, server.headers))
        if server.kind == "ours":  # the admin key once, not per variant
            found += [(f"ours ({label})", server, headers) for label, headers in server.extra.items()]
    return found


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# --- requests: wrk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float = float("nan")


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    if bad := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise RuntimeError(f"wrk got {bad.group(1)} error responses:\n{output}")
    if re.search(r"Socket errors:.*timeout [1-9]", output):
        raise RuntimeError(f"wrk timed out:\n{output}")
    if re.search(r"^\s+0 requests in", output, re.M):  # e.g. basic-auth's scrypt under 16 clients
        return WrkResult(0.0, float("nan"), float("nan"))
    percentile = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None or len(percentile) != 2:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    mean = re.search(r"^\s+Latency\s+(\S+)", output, re.M)
    return WrkResult(
        float(rps.group(1)),
        _ms(percentile["50"]),
        _ms(percentile["99"]),
        _ms(mean.group(1)) if mean else float("nan"),
    )


# On a 2-core machine wrk and the server worker compete for the same cores unless they are kept
# apart, and the scheduler moving them around moves c1 latency by several ms between rounds.
# `pin_cpus` puts every server's worker on one core and wrk on the other (all servers alike).
_WRK_CPU: str | None = None


def pin_cpus(servers: list[Server]) -> str:
    """Workers on CPU 0, wrk on CPU 1; returns what was done, for the report."""
    global _WRK_CPU
    if (os.cpu_count() or 1) < 2:
        return "not pinned (one CPU)"
    for server in servers:
        for pid in server.worker_pids():
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True)
    _WRK_CPU = "1"
    return "server workers pinned to CPU 0, wrk to CPU 1"


def pin_client() -> None:
    """Run this harness where wrk would run, when it is the client (latency, artifacts)."""
    if hasattr(os, "sched_setaffinity") and _WRK_CPU:
        os.sched_setaffinity(0, {int(_WRK_CPU)})


def wrk_command(url: str, headers: dict[str, str], connections: int, seconds: int) -> list[str]:
    pinned = ["taskset", "-c", _WRK_CPU] if _WRK_CPU else []
    command = [*pinned, "wrk", "--latency", "--timeout", "10s", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, url]


def wrk(url: str, headers: dict[str, str], connections: int, seconds: int) -> WrkResult:
    command = wrk_command(url, headers, connections, seconds)
    return parse_wrk(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def warm_up(url: str, headers: dict[str, str]) -> None:
    subprocess.run(wrk_command(url, headers, 16, 3), check=True, capture_output=True)


def wait_idle(servers: list[Server], timeout: float = 120) -> None:
    """Wait until no worker burns CPU: basic-auth keeps hashing queued requests after wrk stops,
    and on the shared core that would slow whichever server is measured next."""
    pids = [pid for server in servers for pid in server.worker_pids()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.02:
            return


def bench_requests(servers: list[Server], rounds: int, seconds: int) -> str:
    found = targets(servers)
    for _label, server, headers in found:
        warm_up(server.url + READ_PATH, headers)
    results: dict[tuple[str, int], list[WrkResult]] = {}
    for round_ in range(rounds):
        for connections in (1, 16):
            # Alternate the order so drift in the machine's speed within a round favours no one.
            for label, server, headers in found if round_ % 2 == 0 else found[::-1]:
                wait_idle(servers)
                try:
                    result = wrk(server.url + READ_PATH, headers, connections, seconds)
                except RuntimeError as error:
                    raise RuntimeError(
                        f"{label}: {error}\nits server log:\n{server.log_failures()}"
                    ) from None
                results.setdefault((label, connections), []).append(result)
                print(f"round {round_ + 1} c={connections} {label}: {result}", file=sys.stderr)

    def med(label: str, connections: int, metric: str) -> float:
        return median([getattr(r, metric) for r in results[(label, connections)]])

    def paired(label: str, connections: int, compare: Callable[[WrkResult, WrkResult], float]) -> float:
        """Median over rounds of a comparison with stock's run in the same round: the machine's
        speed drifts between rounds by more than the difference being measured."""
        pairs = zip(results[(label, connections)], results[("stock", connections)], strict=True)
        return median([compare(ours, stock) for ours, stock in pairs])

    rows = []
    for label, _server, _headers in found:
        p50_1, rps_16 = med(label, 1, "p50_ms"), med(label, 16, "rps")
        rows.append(
            [
                label,
                f"{p50_1:.2f}",
                f"{med(label, 1, 'p99_ms'):.2f}",
                f"{med(label, 1, 'rps'):.0f}",
                f"{rps_16:.0f}",
                f"{med(label, 16, 'p50_ms'):.2f}",
                f"{med(label, 16, 'p99_ms'):.2f}",
                f"{paired(label, 1, lambda ours, stock: ours.p50_ms - stock.p50_ms):+.2f}",
                f"{paired(label, 16, lambda ours, stock: ours.rps / stock.rps):.0%}",
            ]
        )
    header = ["server", "c1 p50 ms", "c1 p99 ms", "c1 req/s", "c16 req/s", "c16 p50 ms", "c16 p99 ms"]
    return table([*header, "c1 p50 vs stock (ms)", "c16 req/s vs stock"], rows)


def bench_latency(servers: list[Server], requests: int) -> str:
    """One client, alternating between the targets request by request: the added latency per read.

    wrk's rounds last seconds, and this machine's speed drifts between them by more than the
    difference being measured. Here each request to ours is paired with the request to stock made
    just before or after it, and the difference is the median of those pairs.
    """
    found = [t for t in targets(servers) if t[1].kind != "basic"]  # scrypt: 0.5 s a request
    pin_client()
    wait_idle(servers)
    clients = {label: httpx.Client(headers=headers) for label, _server, headers in found}
    urls = {label: server.url + READ_PATH for label, server, _headers in found}
    times: dict[str, list[float]] = {label: [] for label in clients}
    for index in range(requests + 50):
        for label in clients if index % 2 == 0 else reversed(clients):
            started = time.perf_counter()
            clients[label].get(urls[label]).raise_for_status()
            if index >= 50:  # the first 50 warm the connections and caches
                times[label].append((time.perf_counter() - started) * 1000)
    for client in clients.values():
        client.close()
    rows = []
    for label, ms in times.items():
        added = median([ours - stock for ours, stock in zip(ms, times["stock"], strict=True)])
        q = statistics.quantiles(ms, n=100)
        rows.append([label, f"{median(ms):.2f}", f"{q[89]:.2f}", f"{q[98]:.2f}", f"{added:+.2f}"])
    header = ["server", "p50 ms", "p90 ms", "p99 ms", "added vs stock, median of pairs (ms)"]
    return table(header, rows)


# --- artifacts -------------------------------------------------------------------------------


@contextmanager
def peak_rss(pids: list[int]) -> Iterator[Callable[[], float]]:
    """Samples the RSS of pids every 10 ms; yields a function giving the peak growth in MiB."""
    before = rss_kib(pids)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_kib(pids))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: (peak - before) / 1024
    finally:
        done.set()
        thread.join()
        peak = max(peak, rss_kib(pids))


def make_blob(path: Path, mib: int) -> None:
    with path.open("wb") as file:
        for _ in range(mib):
            file.write(os.urandom(1 << 20))


@dataclass
class Transfer:
    """One direction of one transfer: throughput, the worker's RSS growth and its CPU time."""

    mb_per_s: float
    rss_growth_mib: float
    worker_cpu_s: float


@contextmanager
def measured(pids: list[int], size: int) -> Iterator[Callable[[], Transfer]]:
    with peak_rss(pids) as rss:
        cpu, started = cpu_seconds(pids), time.perf_counter()
        yield lambda: Transfer(size / (ended - started) / 1e6, rss(), cpu_after - cpu)
        ended, cpu_after = time.perf_counter(), cpu_seconds(pids)


def transfer(server: Server, blob: Path, name: str) -> tuple[Transfer, Transfer]:
    """Upload then download blob through the server: (upload, download)."""
    url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{server.experiment_id}/{server.run_id}/{name}"
    size = blob.stat().st_size
    pids = server.worker_pids()
    with httpx.Client(headers=server.headers, timeout=600) as client:
        with blob.open("rb") as file, measured(pids, size) as up:
            client.put(url, content=file).raise_for_status()
        received = 0
        with measured(pids, size) as down, client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                received += len(chunk)
        if received != size:
            raise RuntimeError(f"{server.kind}: downloaded {received} bytes of {size}")
    return up(), down()


def bench_artifacts(servers: list[Server], root: Path, rounds: int, mib: int) -> str:
    blob, small = root / "blob.bin", root / "small.bin"
    make_blob(blob, mib)
    make_blob(small, 1)
    pin_client()
    for server in servers:
        transfer(server, small, "warm-up.bin")
    results: dict[str, list[tuple[Transfer, Transfer]]] = {}
    for round_ in range(rounds):
        for server in servers if round_ % 2 == 0 else servers[::-1]:
            # Flush the previous upload's dirty pages first, or this transfer pays for their writeback.
            os.sync()
            wait_idle(servers)
            result = transfer(server, blob, f"blob-{round_}.bin")
            results.setdefault(server.kind, []).append(result)
            print(f"round {round_ + 1} {server.kind}: {result}", file=sys.stderr)

    def med(kind: str, direction: int, metric: str) -> float:
        return median([getattr(r[direction], metric) for r in results[kind]])

    def paired(kind: str, direction: int) -> float:
        """Median over rounds of the MB/s ratio to stock in the same round (the machine drifts)."""
        pairs = zip(results[kind], results["stock"], strict=True)
        return median([r[direction].mb_per_s / s[direction].mb_per_s for r, s in pairs])

    rows = []
    for server in servers:
        row = [server.kind]
        for direction in (0, 1):
            row += [
                f"{med(server.kind, direction, 'mb_per_s'):.0f}",
                f"{paired(server.kind, direction):.0%}",
                f"{med(server.kind, direction, 'worker_cpu_s'):.2f}",
                f"{max(r[direction].rss_growth_mib for r in results[server.kind]):.1f}",
            ]
        rows.append(row)
    columns = ["MB/s", "vs stock (paired)", "worker CPU s", "RSS growth MiB (max)"]
    return table(["server", *[f"{d} {c}" for d in ("up", "down") for c in columns]], rows)


# --- registration ----------------------------------------------------------------------------

CLIENT_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


ID_SEGMENT = re.compile(r"^(?:[0-9a-f]{32}|m-[0-9a-f]{32}|\d+)$")


def endpoint(method: str, url: str) -> str:
    """A request's kind: ids become ``{id}``; an artifact upload keeps only its file name."""
    path = httpx.URL(url).path
    if "/mlflow-artifacts/artifacts/" in path:
        return f"{method} artifacts .../{path.rsplit('/', 1)[-1]}"
    return f"{method} " + "/".join("{id}" if ID_SEGMENT.match(p) else p for p in path.split("/"))


@contextmanager
def timed_requests() -> Iterator[list[tuple[str, float]]]:
    """Every HTTP request the MLflow client sends in the block, with its time in ms (client side)."""
    import requests

    calls: list[tuple[str, float]] = []
    send = requests.Session.send

    def timed_send(session: requests.Session, request: requests.PreparedRequest, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return send(session, request, **kwargs)
        finally:
            calls.append(
                (endpoint(str(request.method), str(request.url)), (time.perf_counter() - started) * 1000)
            )

    requests.Session.send = timed_send  # type: ignore[method-assign,assignment]
    try:
        yield calls
    finally:
        requests.Session.send = send  # type: ignore[method-assign]


def registration_workload() -> Callable[[Server], float]:
    """The stock client's log + register of a small scikit-learn model on a server; ms it took."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = np.arange(20, dtype=float).reshape(10, 2)
    y = x @ np.array([1.0, 2.0]) + 3
    model = LinearRegression().fit(x, y)
    signature = infer_signature(x, model.predict(x))

    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    def log_and_register(server: Server) -> float:
        for name in CLIENT_ENV:
            os.environ.pop(name, None)
        os.environ.update(server.env)
        mlflow.set_tracking_uri(server.url)
        started = time.perf_counter()
        with mlflow.start_run(experiment_id=server.experiment_id):
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                registered_model_name="bench-registration",
                pip_requirements=["scikit-learn"],  # skip client-side inference: same on every server
            )
        return (time.perf_counter() - started) * 1000

    return log_and_register


def bench_registration(servers: list[Server], runs: int, warmup: int = 2) -> str:
    """The stock client's log + register, timed whole, by request, and in worker CPU."""
    log_and_register = registration_workload()
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    by_request: dict[str, dict[str, list[float]]] = {}
    for i in range(warmup + runs):
        for server in servers[i % len(servers) :] + servers[: i % len(servers)]:  # each goes first in turn
            workers = server.worker_pids()
            cpu_before = cpu_seconds(workers)
            with timed_requests() as calls:
                elapsed = log_and_register(server)
            if i >= warmup:
                times.setdefault(server.kind, []).append(elapsed)
                cpu.setdefault(server.kind, []).append((cpu_seconds(workers) - cpu_before) * 1000)
                per_kind = by_request.setdefault(server.kind, {})
                for name, ms in calls:
                    per_kind.setdefault(name, []).append(ms)
    # CPU is read in 10 ms ticks: the mean over all runs, not a median of quantized values.
    mean_cpu = {kind: statistics.fmean(values) for kind, values in cpu.items()}
    stock, stock_cpu = median(times["stock"]), mean_cpu["stock"]
    rows = [
        [
            kind,
            f"{median(values):.0f}",
            f"{max(values):.0f}",
            f"{median(values) - stock:+.0f}",
            f"{median(values) / stock:.2f}x",
            f"{mean_cpu[kind]:.1f} ({mean_cpu[kind] - stock_cpu:+.1f})",
        ]
        for kind, values in times.items()
    ]
    header = ["server", "p50 ms", "max ms", "p50 vs stock (ms)", "p50 ratio", "worker CPU ms, mean (vs)"]
    whole = table(header, rows)
    kinds = list(by_request)
    per_run = {kind: {n: len(v) / runs for n, v in by_request[kind].items()} for kind in kinds}
    everyone = {name for kind in kinds for name in by_request[kind]}  # a server may send more requests

    def weight(name: str) -> float:
        return max(median(by_request[k][name]) * per_run[k][name] for k in kinds if name in by_request[k])

    def cell(kind: str, name: str) -> str:
        if name not in by_request[kind]:
            return "-"
        ms = median(by_request[kind][name])
        if name not in by_request["stock"]:
            return f"{ms:.1f} (x{per_run[kind][name]:g})"
        return f"{ms:.1f} ({ms - median(by_request['stock'][name]):+.1f})"

    request_rows = [
        [f"`{name}`", f"{per_run['stock'].get(name, 0):g}", *(cell(kind, name) for kind in kinds)]
        for name in sorted(everyone, key=weight, reverse=True)
    ]
    detail = table(
        ["request (client side)", "per registration", *(f"{k} p50 ms" for k in kinds)], request_rows
    )
    note = "p50 of each request, and its difference to stock's; (xN): requests stock does not send, N a run"
    return f"{whole}\n\nBy request ({note}):\n\n{detail}"


# --- mixed: reads while other tenants register -------------------------------------------------


STATEMENT = re.compile(r"^(\w+) .*?LOG:  (?:statement|execute [^:]*): (.*)$")


def log_every_statement(base_uri: str) -> Path:
    """Have the throw-away PostgreSQL log each statement with its database's name; its log file."""
    import sqlalchemy as sa

    engine = sa.create_engine(base_uri.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        data = Path(conn.execute(sa.text("SHOW data_directory")).scalar_one())
        conn.execute(sa.text("ALTER SYSTEM SET log_line_prefix = '%d '"))
        conn.execute(sa.text("ALTER SYSTEM SET log_statement = 'all'"))
        conn.execute(sa.text("SELECT pg_reload_conf()"))
    engine.dispose()
    return data.parent / "log"  # where tests.services.postgres_cluster has pg_ctl write it


def bench_statements(servers: list[Server], log: Path, registrations: int, warmup: int = 3) -> str:
    """Statements each server's database received per stock-client registration, by kind, and the
    statements ours sends more or fewer of than stock (steadier on a busy VM than any timing)."""
    log_and_register = registration_workload()
    for server in servers:
        for _ in range(warmup):
            log_and_register(server)
    time.sleep(1)  # the log is written asynchronously
    start = log.stat().st_size
    for server in servers:
        for _ in range(registrations):
            log_and_register(server)
    time.sleep(1)
    counts: dict[str, Counter[str]] = {}
    for line in log.read_bytes()[start:].decode(errors="replace").splitlines():
        if match := STATEMENT.match(line):
            database, statement = match.groups()
            counts.setdefault(database, Counter())[re.sub(r"\s+", " ", statement)[:100]] += 1
    databases = {server.kind: server.kind.replace("-", "_") for server in servers}

    def per(kind: str, statement: str | None = None) -> float:
        found = counts.get(databases[kind], Counter())
        return (found[statement] if statement else sum(found.values())) / registrations

    kinds = list(databases)
    rows = [["all statements", *(f"{per(kind):.1f}" for kind in kinds)]]
    for word in ("BEGIN", "COMMIT", "ROLLBACK", ";"):
        rows.append([f"`{word}`", *(f"{per(kind, word):.1f}" for kind in kinds)])
    whole = table(["per registration", *kinds], rows)
    if "stock" not in databases or len(kinds) < 2:
        return whole
    other = next(kind for kind in kinds if kind != "stock")
    everything = set().union(*counts.values())
    moved = sorted(everything, key=lambda st: -abs(per(other, st) - per("stock", st)))
    rows = [
        [f"`{st[:90]}`", f"{per('stock', st):.1f}", f"{per(other, st):.1f}"]
        for st in moved
        if per(other, st) != per("stock", st)
    ][:25]
    return f"{whole}\n\n{table(['statement (first 90 characters)', 'stock', other], rows)}"


class Writers(threading.Thread):
    """Other tenants creating registered models at ``rate`` a second, each new model's creator getting
    MANAGE (on ours: the grant that used to empty every worker's auth cache)."""

    def __init__(self, server: Server, keys: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.server, self.rate, self.done = server, rate, 0
        self.clients = [
            httpx.Client(base_url=server.url, headers=bearer(key) if key else {}, timeout=60) for key in keys
        ]
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            client = self.clients[self.done % len(self.clients)]
            name = f"mixed-{os.getpid()}-{threading.get_ident()}-{self.done}-{time.monotonic_ns()}"
            client.post("/api/2.0/mlflow/registered-models/create", json={"name": name}).raise_for_status()
            self.done += 1
            next_at += 1 / self.rate
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> float:
        """Stop; the registrations a second it achieved."""
        self.stopping.set()
        self.join()
        for client in self.clients:
            client.close()
        return float(self.done)


def bench_mixed(servers: list[Server], rounds: int, seconds: int, rate: float, readers: int = 16) -> str:
    """wrk's ``readers`` connections read while writers register models; stock (no auth), ours and
    ours-base (another checkout's code, for a change measured in the same run) with write keys.

    wrk's connections send their next request as soon as the last is answered, so one worker is
    saturated and a read waits behind the others: its p50 is about ``readers`` times the worker's
    time per request, and so is any difference in that time between two servers."""
    from scale import key

    writer_keys = {
        s.kind: [key(s, f"writer-{i}") for i in range(4)] if s.kind.startswith("ours") else [""]
        for s in servers
    }
    found = [t for t in targets(servers) if t[0] in ("stock", "ours (write key)", "ours-base (write key)")]
    for _label, server, headers in found:
        warm_up(server.url + READ_PATH, headers)
    results: dict[str, list[WrkResult]] = {}
    achieved: dict[str, list[float]] = {}
    for round_ in range(rounds):
        for label, server, headers in found if round_ % 2 == 0 else found[::-1]:
            wait_idle(servers)
            writers = Writers(server, writer_keys[server.kind], rate)
            started = time.monotonic()
            writers.start()
            result = wrk(server.url + READ_PATH, headers, readers, seconds)
            results.setdefault(label, []).append(result)
            achieved.setdefault(label, []).append(writers.stop() / (time.monotonic() - started))
            print(f"round {round_ + 1} {label}: {result}", file=sys.stderr)

    def paired(label: str) -> list[float]:
        """p50 minus stock's p50 in the same round: the machine drifts between rounds by more."""
        pairs = zip(results[label], results["stock"], strict=True)
        return sorted(ours.p50_ms - stock.p50_ms for ours, stock in pairs)

    rows = [
        [
            label,
            f"{median([r.rps for r in runs]):.0f}",
            f"{median([r.p50_ms for r in runs]):.2f}",
            f"{median([r.p99_ms for r in runs]):.1f}",
            f"{median([r.mean_ms for r in runs]):.2f}",
            f"{median(paired(label)):+.2f}",
            " ".join(f"{d:+.1f}" for d in paired(label)),
            f"{median(achieved[label]):.1f}",
        ]
        for label, runs in results.items()
    ]
    header = [
        "server", "req/s", "p50 ms", "p99 ms", "mean ms", "p50 vs stock, median of rounds (ms)",
        "each round, sorted (ms)", "registrations/s achieved",
    ]  # fmt: skip
    return table(header, rows)


# --- profile ---------------------------------------------------------------------------------

GROUPS = {
    "our code (hokusai_registry/)": ("hokusai_registry/",),
    "  our ASGI middleware (middleware.py)": ("hokusai_registry/server/middleware.py",),
    "MLflow auth app (mlflow/server/auth/)": ("mlflow/server/auth/",),
    "  MLflow auth store (auth/sqlalchemy_store.py)": ("mlflow/server/auth/sqlalchemy_store.py",),
    "MLflow handlers (mlflow/server/handlers.py)": ("mlflow/server/handlers.py",),
    "MLflow tracking/registry SQL stores (mlflow/store/), all callers": ("mlflow/store/",),
    "SQLAlchemy (all callers)": ("sqlalchemy/",),
    "Flask + Werkzeug": ("flask/", "werkzeug/"),
    "ASGI: uvicorn + starlette + WSGI bridge": ("uvicorn/", "starlette/", "a2wsgi/", "fastapi/"),
}


AUTH_CALLS = {  # stacks under mlflow/server/auth/ that also reach...
    "  MLflow auth app -> SQLAlchemy (all SQL made for auth)": "sqlalchemy/",
    "  MLflow auth app -> registry store (re-reads for permission checks and redaction)": "mlflow/store/",
}


def frame_file(frame: str) -> str:
    match = re.search(r"\((.*):\d+\)$", frame)
    return match.group(1) if match else frame


def frame_function(frame: str) -> str:
    """'fn (path:line)' -> 'fn (short/path)', so lines of one function aggregate."""
    name = frame.split(" (", 1)[0]
    path = frame_file(frame)
    short = path.split("site-packages/", 1)[-1].split("/src/", 1)[-1]
    return f"{name} ({short})"


def summarize_profile(raw: Path, top: int = 15) -> str:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    total = sum(count for _, count in stacks)
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        files = [frame_file(f) for f in frames]
        for group, needles in GROUPS.items():
            if any(needle in file for file in files for needle in needles):
                groups[group] += count
        if any("mlflow/server/auth/" in f for f in files):
            for label, needle in AUTH_CALLS.items():
                groups[label] += count if any(needle in f for f in files) else 0
        for function in {frame_function(f) for f in frames}:
            inclusive[function] += count
        own[frame_function(frames[-1])] += count

    def pct(n: int) -> str:
        return f"{n / total:.1%}"

    parts = [f"{total} samples of the thread holding the GIL (py-spy record --gil --nonblocking -r 50)\n"]
    order = [*GROUPS, *AUTH_CALLS]
    parts.append(table(["component (inclusive)", "% of samples"], [[g, pct(groups[g])] for g in order]))
    ours_or_auth = [
        [f"`{fn}`", pct(n)]
        for fn, n in inclusive.most_common()
        if "mlflow/server/auth/" in fn or "hokusai_registry/" in fn
    ][:top]
    parts.append(table(["auth-path function (inclusive)", "% of samples"], ours_or_auth))
    parts.append(
        table(["function (self)", "% of samples"], [[f"`{f}`", pct(n)] for f, n in own.most_common(top)])
    )
    return "\n\n".join(parts)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (all their threads), from /proc."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def bench_cpu(servers: list[Server], rounds: int, seconds: int) -> str:
    """Worker CPU per request, at 4 clients: what each request costs, whatever else runs on the machine.

    Latency and req/s move with the machine's load; CPU time per request barely does, and when the
    worker is CPU-bound it sets the req/s ceiling (a worker is one core under the GIL).
    """
    found = targets(servers)
    for _label, server, headers in found:
        warm_up(server.url + READ_PATH, headers)
    costs: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, server, headers in found:
            wait_idle(servers)
            workers = server.worker_pids()
            before = cpu_seconds(workers)
            command = [*wrk_command(server.url + READ_PATH, headers, 4, seconds)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            parse_wrk(output)
            requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
            costs.setdefault(label, []).append((cpu_seconds(workers) - before) * 1000 / requests)
    stock = median(costs["stock"])
    rows = [
        [label, f"{median(ms):.2f}", f"{median(ms) - stock:+.2f}", f"{stock / median(ms):.0%}"]
        for label, ms in costs.items()
    ]
    return table(["server", "worker CPU ms/request", "vs stock (ms)", "stock/ours (req/s ceiling)"], rows)


def bench_profile(servers: list[Server], raw: Path, seconds: int, kind: str = "ours") -> str:
    server = next(s for s in servers if s.kind == kind)
    (worker,) = server.worker_pids()
    url = server.url + READ_PATH
    warm_up(url, server.headers)
    load = subprocess.Popen(
        wrk_command(url, server.headers, 16, seconds + 4), stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)
        spy = [str(BIN / "py-spy"), "record", "--gil", "--nonblocking", "-r", "50", "-f", "raw"]
        subprocess.run([*spy, "-d", str(seconds), "-p", str(worker), "-o", str(raw)], check=True)
    finally:
        output, _ = load.communicate()
    print(f"wrk under profiling:\n{output}", file=sys.stderr)
    return summarize_profile(raw)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    commands = (
        "requests",
        "latency",
        "cpu",
        "artifacts",
        "registration",
        "mixed",
        "profile",
        "all",
        "statements",
        "scale",
        "keys",
        "ui",
        "scanning",
        "fleet",
    )
    parser.add_argument("command", choices=commands)
    parser.add_argument("--kinds", default="stock,basic,ours", help="servers to start, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="requests: interleaved rounds")
    parser.add_argument("--seconds", type=int, default=8, help="requests: seconds per wrk run")
    parser.add_argument("--requests", type=int, default=2000, help="latency: requests per target")
    parser.add_argument("--artifact-rounds", type=int, default=2)
    parser.add_argument("--mib", type=int, default=256, help="artifacts: file size")
    parser.add_argument("--runs", type=int, default=20, help="registration: timed runs per server")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--profile-kind", default="ours", choices=("stock", "basic", "ours"))
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place wrk and workers")
    parser.add_argument("--profile-raw", type=Path, help="keep py-spy's collapsed stacks in this file")
    parser.add_argument("--rate", type=float, default=5.0, help="mixed: registrations a second")
    parser.add_argument("--readers", default="16", help="mixed: wrk connections, comma-separated")
    parser.add_argument("--registrations", type=int, default=5, help="statements: registrations counted")
    parser.add_argument("--sizes", default="1000,10000,100000", help="scale: foreign rows, growing")
    parser.add_argument("--scale-kind", default="models", choices=("models", "experiments"))
    parser.add_argument("--scale-requests", type=int, default=40, help="scale: first pages per target")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL, not SQLite (not ui)")
    parser.add_argument("--ui-size", type=int, default=10_000, help="ui: foreign registered models")
    parser.add_argument("--ui-loads", type=int, default=5, help="ui: timed page loads per server")
    parser.add_argument("--scan-sizes", default="10,300,2048", help="scanning: model sizes in MiB")
    parser.add_argument("--scan-load-mib", type=int, default=300, help="scanning: model size under reads")
    args = parser.parse_args()
    if args.command in ("scale", "keys", "ui", "scanning", "fleet"):
        runners = {
            "scale": run_scale,
            "keys": run_keys,
            "ui": run_ui,
            "scanning": run_scanning,
            "fleet": run_fleet,
        }
        runners[args.command](args)
        return
    wanted = set(commands[: commands.index("all")]) if args.command == "all" else {args.command}
    kinds = (args.profile_kind,) if wanted == {"profile"} else tuple(args.kinds.split(","))

    from scale import pg_databases

    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        postgres = args.postgres or "statements" in wanted  # counted in PostgreSQL's statement log
        backends = stack.enter_context(contextmanager(pg_databases)(root, kinds)) if postgres else None
        statement_log = log_every_statement(next(iter(backends.values()))) if backends else None
        servers = stack.enter_context(all_running(root, kinds, backends))
        print(f"database: {'PostgreSQL 15' if postgres else 'SQLite'}", flush=True)
        print(f"load average before: {os.getloadavg()}", file=sys.stderr)
        print(f"CPUs: {'not pinned (--no-pin)' if args.no_pin else pin_cpus(servers)}\n", flush=True)
        if "requests" in wanted:
            print(f"## requests\n\n{bench_requests(servers, args.rounds, args.seconds)}\n", flush=True)
        if "latency" in wanted:
            print(f"## latency\n\n{bench_latency(servers, args.requests)}\n", flush=True)
        if "cpu" in wanted:
            print(f"## cpu\n\n{bench_cpu(servers, args.rounds, args.seconds)}\n", flush=True)
        if "artifacts" in wanted:
            result = bench_artifacts(servers, root, args.artifact_rounds, args.mib)
            print(f"## artifacts\n\n{result}\n", flush=True)
        if "registration" in wanted:
            print(f"## registration\n\n{bench_registration(servers, args.runs)}\n", flush=True)
        if "statements" in wanted and statement_log is not None:
            result = bench_statements(servers, statement_log, args.registrations)
            print(f"## statements per stock-client registration\n\n{result}\n", flush=True)
        if "mixed" in wanted:
            for readers in (int(n) for n in args.readers.split(",")):
                result = bench_mixed(servers, args.rounds, args.seconds, args.rate, readers)
                title = f"mixed: {readers} readers, other tenants registering {args.rate:g}/s"
                print(f"## {title}\n\n{result}\n", flush=True)
        if "profile" in wanted:
            raw = args.profile_raw or root / "profile.txt"
            result = bench_profile(servers, raw.resolve(), args.profile_seconds, args.profile_kind)
            print(f"## profile\n\n{result}\n", flush=True)
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


def run_scale(args: argparse.Namespace) -> None:
    from scale import bench_scale, pg_databases

    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp, ExitStack() as stack:
        backends = stack.enter_context(contextmanager(pg_databases)(Path(tmp))) if args.postgres else None
        stock, ours = stack.enter_context(all_running(Path(tmp), ("stock", "ours"), backends))
        print(f"CPUs: {'not pinned (--no-pin)' if args.no_pin else pin_cpus([stock, ours])}", flush=True)
        pin_client()
        where = "PostgreSQL 15" if args.postgres else "SQLite"
        print(f"## scale: {args.scale_kind} on {where}\n", flush=True)
        print(bench_scale(stock, ours, args.scale_kind, sizes, args.scale_requests), flush=True)


def run_fleet(args: argparse.Namespace) -> None:
    from fleet import bench_fleet

    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
        print(f"## fleet: through HAProxy\n\n{bench_fleet(Path(tmp), args.rounds, args.seconds)}", flush=True)


def run_ui(args: argparse.Namespace) -> None:
    from scale import bench_ui

    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp, ExitStack() as stack:
        stock, ours = stack.enter_context(all_running(Path(tmp), ("stock", "ours")))
        print(f"CPUs: {'not pinned (--no-pin)' if args.no_pin else pin_cpus([stock, ours])}", flush=True)
        pin_client()
        print(f"## ui\n\n{bench_ui(stock, ours, args.ui_size, args.ui_loads)}", flush=True)


def run_scanning(args: argparse.Namespace) -> None:
    from scanning import bench_reads_during_scans, bench_verdicts, sizes_of

    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp, ExitStack() as stack:
        (ours,) = stack.enter_context(all_running(Path(tmp), ("ours",)))
        print(f"CPUs: {'not pinned (--no-pin)' if args.no_pin else pin_cpus([ours])}", flush=True)
        pin_client()
        print(
            f"## scanning: time to verdict\n\n{bench_verdicts(ours, sizes_of(args.scan_sizes))}\n", flush=True
        )
        reads = bench_reads_during_scans(ours, args.rounds, args.seconds, args.scan_load_mib)
        print(f"## scanning: reads during scans\n\n{reads}", flush=True)


def run_keys(args: argparse.Namespace) -> None:
    from scale import bench_keys

    os.environ["HOKUSAI_REGISTRY_CACHE_TTL_SECONDS"] = "0"  # every request reads the key table
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp, ExitStack() as stack:
        (small,) = stack.enter_context(all_running(Path(tmp) / "small", ("ours",)))
        (large,) = stack.enter_context(all_running(Path(tmp) / "large", ("ours",)))
        print(f"CPUs: {'not pinned (--no-pin)' if args.no_pin else pin_cpus([small, large])}", flush=True)
        pin_client()
        print(f"## keys\n\n{bench_keys(small, large, args.requests)}", flush=True)


if __name__ == "__main__":
    main()
