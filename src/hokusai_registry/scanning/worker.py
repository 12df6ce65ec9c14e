"""A scanner process: ``python -m hokusai_registry.scanning.worker`` reads one JSON request a line
(``{"destination", "prefix"}``) and answers each with one line, the report's JSON (or ``{"error"}``).

The server's background scans run here, at the lowest CPU priority, so a large model's scan holds no
GIL the worker's request threads wait for, gets a CPU only when requests leave one idle, and cannot
take the worker down. It imports only the scanner (about 40 MiB), not MLflow's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from hokusai_registry.scanning.engine import scan_files
from hokusai_registry.scanning.sources import ModelFiles


def main() -> None:
    with contextlib.suppress(OSError):
        os.nice(19)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            report = scan_files(ModelFiles(request["destination"], request["prefix"]).open_each())
            answer = report.to_json()
        except Exception as error:  # answered, not raised: the server grades it as an error
            answer = json.dumps({"error": f"{type(error).__name__}: {error}"})
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
