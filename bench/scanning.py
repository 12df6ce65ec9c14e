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
from servers import Server, descendants, rss_kib

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


def time_to_verdict(
    server: Server, http: httpx.Client, placed: tuple[str, str], name: str, poll: float = 0.05
) -> tuple[float, int, str]:
    """Seconds from create_model_version to a final status, the peak RSS of the server's processes
    (workers and their scanner processes) above what they used before (KiB), and the status."""
    source, run_id = placed
    http.post(f"{API}/registered-models/create", json={"name": name})
    idle = rss_kib(descendants(server.proc.pid))
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(descendants(server.proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    body = {"name": name, "source": source, "run_id": run_id}
    status = http.post(f"{API}/model-versions/create", json=body).json()["model_version"]["status"]
    while status == "PENDING_REGISTRATION":
        time.sleep(poll)
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
        name = f"scan-{mib}-{time.monotonic_ns()}"
        seconds, above_idle, status = time_to_verdict(
            server, http, place_model(server, http, mib, name), name
        )
        rows.append(f"| {mib:,} MiB | {seconds:.2f} | {above_idle / 1024:.0f} | {status} |")
    http.close()
    header = "| model | create to verdict, s | worker RSS above idle, MiB | status |\n|---|---|---|---|"
    return "\n".join([header, *rows])


class Scans(threading.Thread):
    """Registers models placed beforehand one after another, so a scan is always running and the
    harness writes nothing while wrk measures."""

    def __init__(self, server: Server, placed: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.server, self.placed, self.done = server, placed, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        http = httpx.Client(base_url=self.server.url, headers=self.server.headers, timeout=300)
        while not self.stopping.is_set() and self.placed:
            # Polled every 0.5 s: the harness's own requests should not be what slows the reads.
            time_to_verdict(self.server, http, self.placed.pop(), f"load-{time.monotonic_ns()}", poll=0.5)
            self.done += 1
        http.close()


def bench_reads_during_scans(server: Server, rounds: int, seconds: int, mib: int) -> str:
    """wrk's p50 on registered-models/get with and without scans running, rounds interleaved."""
    from run import READ_PATH, wait_idle, warm_up, wrk

    warm_up(server.url + READ_PATH, server.headers)
    http = httpx.Client(base_url=server.url, headers=server.headers, timeout=300)
    quiet: list[float] = []
    busy: list[float] = []
    scans_done = 0
    for round_ in range(rounds):
        for scanning in (False, True) if round_ % 2 == 0 else (True, False):
            placed = (
                [place_model(server, http, mib, f"m-{i}") for i in range(seconds * 2)] if scanning else []
            )
            wait_idle([server])
            scans = Scans(server, placed) if scanning else None
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
