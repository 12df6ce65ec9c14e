#!/usr/bin/env python
"""Runbook steps 2-4 in one: the full third-party flow with a written report.

Runs every verify check (reachability, authentication, artifact round trip, artifact locations,
registration, large artifact) against MLFLOW_TRACKING_URI with HOKUSAI_API_KEY and writes
``verify-report.json`` and ``verify-report.md`` (or the paths given as the two arguments), the
"document the results" step. Exit codes as ``hokusai-registry verify``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hokusai_registry.client import resolve_key, resolve_url
from hokusai_registry.verify import Context, verify


def main(argv: list[str]) -> int:
    url, key = resolve_url(), resolve_key()
    if not url or not key:
        print("set MLFLOW_TRACKING_URI and HOKUSAI_API_KEY", file=sys.stderr)
        return 2
    json_path = Path(argv[0] if argv else "verify-report.json")
    md_path = Path(argv[1] if len(argv) > 1 else "verify-report.md")
    report = verify(Context(url, key))
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    md_path.write_text(report.to_markdown())
    print(f"{'PASSED' if report.passed else 'FAILED'}; reports: {json_path}, {md_path}", file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
