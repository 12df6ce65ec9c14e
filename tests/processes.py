"""Starting and stopping server processes, shared by the tests (``tests/services.py``) and the benchmarks
(``bench/servers.py``): a free loopback port, waiting for ``/health``, stopping a process group.

Only the standard library and httpx, so the benchmarks can import it without the test dependencies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["free_port", "kill_group", "stop", "wait_for_health"]


# Debian's Chromium, which the UI test and the UI benchmark drive through Playwright (its own browser
# download is not used). As root it needs --no-sandbox; the rest keep it off this machine's network.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_health(
    url: str, proc: subprocess.Popen[Any], timeout: float = 90, *, log: Path | None = None
) -> None:
    """Return once ``GET {url}/health`` answers 200; raise if ``proc`` exits first or ``timeout`` passes.

    With ``log``, the error carries the last 3000 characters of the server's log.
    """

    def tail() -> str:
        return ":\n" + log.read_text(errors="replace")[-3000:] if log else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before becoming healthy{tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout}s{tail()}")


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads (start it with ``start_new_session=True``), as an
    operator's Ctrl-C or ECS would; SIGKILL if it has not exited after ``timeout`` seconds.

    The group is signalled even when the leader has already exited: its workers may outlive it.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def kill_group(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGKILL the process group ``proc`` leads, all at once (a crash, or ECS's SIGKILL after its stop
    timeout), and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
