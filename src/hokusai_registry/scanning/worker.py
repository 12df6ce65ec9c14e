"""A scanner process: ``python -m hokusai_registry.scanning.worker`` reads one JSON request a line
(``{"id", "destination", "prefix"}``) and answers each with one line, ``{"id", "report"}`` (the
report's JSON) or ``{"id", "error"}``; the id lets the server tell a stray line from its answer.

The server's background scans run here, at the lowest CPU priority, so a large model's scan holds no
GIL the worker's request threads wait for, gets a CPU only when requests leave one idle, and cannot
take the worker down. It imports the scanner (about 40 MiB) and, to read from S3, MLflow's artifact
repositories (about 140 MiB more), not MLflow's server.
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
    answers = sys.stdout
    sys.stdout = sys.stderr  # nothing a library prints can be taken for an answer
    for line in sys.stdin:
        request = json.loads(line)
        try:
            report = scan_files(ModelFiles(request["destination"], request["prefix"]).open_each())
            answer = {"id": request["id"], "report": report.to_json()}
        except Exception as error:  # answered, not raised: the server grades it as an error
            answer = {"id": request["id"], "error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
