"""Requests/s through HAProxy: one replica with 2 workers vs two replicas with 1 worker each.

Both layouts run at once on one PostgreSQL, with the same secrets (so one key works on all three
servers), behind their own HAProxy (round robin, health checks on /health, as in the fleet tests).
wrk reads one registered model through each load balancer in turn, rounds interleaved, the order
alternating; the servers' workers are pinned to CPU 0 and wrk and HAProxy to CPU 1 (2 cores).

    .venv/bin/python bench/run.py fleet [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
from servers import MODEL, bearer, descendants

from tests.processes import free_port
from tests.services import Replica, postgres_cluster, run_haproxy

READ = f"/api/2.0/mlflow/registered-models/get?name={MODEL}"
LAYOUTS = {"1 replica x 2 workers": (2,), "2 replicas x 1 worker": (1, 1)}


def _replicas(
    root: Path, uri: str, shared: dict[str, str], workers: tuple[int, ...], name: str
) -> list[Replica]:
    found = []
    for index, count in enumerate(workers):
        data = root / f"{name}-{index}"
        env = {**os.environ, **shared, "HOKUSAI_REGISTRY_FIRST_ADMIN_KEY": "false"}
        args = ("--backend-store-uri", uri)
        found.append(
            Replica(f"{name}-{index}", data, free_port(), args, env, root / f"{name}-{index}.log", count)
        )
    return found


def _pin(replicas: list[Replica]) -> None:
    if (os.cpu_count() or 1) < 2:
        return
    for replica in replicas:
        assert replica.proc is not None
        for pid in [replica.proc.pid, *descendants(replica.proc.pid)]:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=False, capture_output=True)


def _wrk(url: str, key: str, seconds: int) -> tuple[float, float, float]:
    from run import parse_wrk, wrk_command

    pinned = ["taskset", "-c", "1"] if (os.cpu_count() or 1) >= 2 else []
    command = wrk_command(url, bearer(key), 16, seconds)
    result = parse_wrk(subprocess.run([*pinned, *command], check=True, capture_output=True, text=True).stdout)
    return result.rps, result.p50_ms, result.p99_ms


def bench_fleet(root: Path, rounds: int, seconds: int) -> str:
    shared = {
        "HOKUSAI_REGISTRY_KEY_HASH_SECRET": secrets.token_urlsafe(32),
        "HOKUSAI_REGISTRY_FLASK_SECRET_KEY": secrets.token_urlsafe(32),
        "HOKUSAI_REGISTRY_ADMIN_PASSWORD": secrets.token_urlsafe(32),
    }
    with ExitStack() as stack:
        postgres = stack.enter_context(postgres_cluster())
        layouts = {
            name: _replicas(root, postgres.uri, shared, workers, f"l{i}")
            for i, (name, workers) in enumerate(LAYOUTS.items())
        }
        everyone = [replica for replicas in layouts.values() for replica in replicas]
        everyone[0].start()  # alone first: it creates the schema the others then find
        for replica in everyone[1:]:
            replica.start()
        stack.callback(lambda: [replica.stop() for replica in everyone])
        _pin(everyone)
        lbs = {
            name: stack.enter_context(run_haproxy([r.url for r in replicas]))
            for name, replicas in layouts.items()
        }
        key = _admin_key(everyone[0], shared)
        headers = bearer(key)
        httpx.post(
            f"{everyone[0].url}/api/2.0/mlflow/registered-models/create",
            json={"name": MODEL},
            headers=headers,
        ).raise_for_status()
        for url in lbs.values():
            _wrk(url + READ, key, 3)  # warm up
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in lbs}
        for round_ in range(rounds):
            order = list(lbs) if round_ % 2 == 0 else list(lbs)[::-1]
            for name in order:
                results[name].append(_wrk(lbs[name] + READ, key, seconds))
                print(f"round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr)
    rows = ["| layout (server workers on CPU 0) | req/s c16 | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, runs in results.items():
        rps, p50, p99 = (statistics.median(run[i] for run in runs) for i in range(3))
        rows.append(f"| {name} | {rps:.0f} | {p50:.1f} | {p99:.1f} |")
    ratio = statistics.median(b[0] / a[0] for a, b in zip(*results.values(), strict=True))
    rows.append(f"\n2 replicas / 1 replica, req/s, paired by round: {ratio:.2f}")
    return "\n".join(rows)


def _admin_key(replica: Replica, shared: dict[str, str]) -> str:
    from tests.services import CLI

    done = subprocess.run(
        [CLI, "keys", "create", "--user", "admin", "--scope", "admin", "--data-dir", str(replica.data_dir)],
        env=replica.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()
