"""The model scan on a running server: time to verdict by model size, worker memory, reads during scans.

Models are written straight into the server's artifact directory (a run's ``model/``: an MLmodel, a
small scikit-learn pickle and N MiB of tensor bytes) and registered with ``model-versions/create``, so
the time measured is the scan's, not an upload's.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from statistics import median

import httpx
from servers import Server, rss_kib

API = "/api/2.0/mlflow"
MIB = 1 << 20


def place_model(server: Server, http: httpx.Client, mib: int, tag: str) -> tuple[str, str]:
    """A run whose ``model/`` holds ``mib`` MiB of tensor data plus one pickle; (source, run id)."""
    from sklearn.linear_model import LinearRegression

    run = http.post(f"{API}/runs/create", json={"experiment_id": server.experiment_id}).json()["run"]["info"]
    assert server.data is not None
    model = server.data / "artifacts" / run["artifact_uri"].removeprefix("mlflow-artifacts:/") / "model"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nmodel_id: {tag}\n")
    (model / "model.pkl").write_bytes(pickle.dumps(LinearRegression()))  # the bench's own object
    with (model / "weights.bin").open("wb") as weights:
        block = os.urandom(MIB)
        for _ in range(mib):
            weights.write(block)
    return f"{run['artifact_uri']}/model", run["run_id"]


def time_to_verdict(server: Server, http: httpx.Client, mib: int, name: str) -> tuple[float, int, str]:
    """Seconds from create_model_version to a final status, peak worker RSS above idle (KiB), status."""
    source, run_id = place_model(server, http, mib, name)
    http.post(f"{API}/registered-models/create", json={"name": name})
    pids = server.worker_pids()
    idle = rss_kib(pids)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    body = {"name": name, "source": source, "run_id": run_id}
    status = http.post(f"{API}/model-versions/create", json=body).json()["model_version"]["status"]
    while status == "PENDING_REGISTRATION":
        time.sleep(0.05)
        got = http.get(f"{API}/model-versions/get", params={"name": name, "version": "1"}).json()
        status = got["model_version"]["status"]
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    return elapsed, peak[0] - idle, status


def bench_verdicts(server: Server, sizes: list[int]) -> str:
    http = httpx.Client(base_url=server.url, headers=server.headers, timeout=300)
    rows = []
    for mib in sizes:
        seconds, above_idle, status = time_to_verdict(server, http, mib, f"scan-{mib}-{time.monotonic_ns()}")
        rows.append(f"| {mib:,} MiB | {seconds:.2f} | {above_idle / 1024:.0f} | {status} |")
    http.close()
    header = "| model | create to verdict, s | worker RSS above idle, MiB | status |\n|---|---|---|---|"
    return "\n".join([header, *rows])


class Scans(threading.Thread):
    """Registers ``mib`` MiB models one after another, so a scan is always running."""

    def __init__(self, server: Server, mib: int) -> None:
        super().__init__(daemon=True)
        self.server, self.mib, self.done = server, mib, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        http = httpx.Client(base_url=self.server.url, headers=self.server.headers, timeout=300)
        while not self.stopping.is_set():
            time_to_verdict(self.server, http, self.mib, f"load-{time.monotonic_ns()}")
            self.done += 1
        http.close()


def bench_reads_during_scans(server: Server, rounds: int, seconds: int, mib: int) -> str:
    """wrk's p50 on registered-models/get with and without scans running, rounds interleaved."""
    from run import READ_PATH, wait_idle, warm_up, wrk

    warm_up(server.url + READ_PATH, server.headers)
    quiet: list[float] = []
    busy: list[float] = []
    scans_done = 0
    for round_ in range(rounds):
        for scanning in (False, True) if round_ % 2 == 0 else (True, False):
            wait_idle([server])
            scans = Scans(server, mib) if scanning else None
            if scans:
                scans.start()
                time.sleep(0.5)
            result = wrk(server.url + READ_PATH, server.headers, 16, seconds)
            (busy if scanning else quiet).append(result.p50_ms)
            if scans:
                scans.stopping.set()
                scans.join()
                scans_done += scans.done
    return (
        "| reads (16 connections) | p50 ms, median of rounds | rounds |\n|---|---|---|\n"
        f"| no scans | {median(quiet):.2f} | {len(quiet)} |\n"
        f"| {mib} MiB models scanned back to back ({scans_done} scans) | {median(busy):.2f} | {len(busy)} |\n"
        f"\np50 during scans minus without: {median(busy) - median(quiet):+.2f} ms"
    )


def sizes_of(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size]
