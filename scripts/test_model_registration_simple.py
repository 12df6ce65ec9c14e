#!/usr/bin/env python
"""Runbook step 3, "test model registration": only verify's registration check, as a third party.

Reads MLFLOW_TRACKING_URI and HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN). Registers a tiny scikit-learn
model with the shared ``register_model``, reads its tags back, loads it and compares predictions, then
deletes what it created. Exit 0 on success, 1 on failure (with the diagnosis), 2 without URL or key.
"""

from __future__ import annotations

import sys

from rich.console import Console

from hokusai_registry.client import resolve_key, resolve_url
from hokusai_registry.verify import checks
from hokusai_registry.verify.runner import plan, run_one


def main() -> int:
    url, key = resolve_url(), resolve_key()
    if not url or not key:
        print("set MLFLOW_TRACKING_URI and HOKUSAI_API_KEY", file=sys.stderr)
        return 2
    ctx = checks.Context(url, key)
    registration = next(check for check in plan() if check.id == "registration")
    result = run_one(ctx, registration)
    if ctx.experiment_id is not None:
        checks.clean_up(ctx)
    ctx.close()
    console = Console(stderr=True)
    console.print(f"registration: {result.status} in {result.duration_ms:.0f} ms — {result.detail}")
    if result.diagnosis:
        console.print(f"{result.diagnosis}\nfix: {result.fix}")
    return 0 if result.status == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
