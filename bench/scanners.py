"""Evaluate model-file scanners (picklescan, fickling, modelscan, modelaudit) on a corpus.

Run by hand with a separate venv that has the scanners (never the project's .venv):

    python3.11 -m venv /tmp/scanenv
    /tmp/scanenv/bin/pip install picklescan fickling modelscan modelaudit
    .venv/bin/python -m tests.scanning.corpus /tmp/scan_corpus          # writes the files + manifest.json
    /tmp/scanenv/bin/python bench/scanners.py --corpus /tmp/scan_corpus [--scanners picklescan,modelaudit]
                                              [--json results.json]
    /usr/bin/time -v /tmp/scanenv/bin/python bench/scanners.py --one modelaudit FILE   # one file, for RSS

It builds nothing: it reads ``manifest.json`` (see tests/scanning/corpus.py), scans every file with
each scanner in-process, maps each result to unsafe / suspicious / clean / error, and prints a
confusion table per scanner, the misses, and per-file verdicts with scan time.

Verdicts: unsafe = the scanner names a known-dangerous callable (or equivalent top severity);
suspicious = it flags something lesser (an unknown global, a warning); error = it could not scan
the file (parse failure, bad archive, exception); clean = none of those, including "format not
handled". A dangerous file rated clean is the failure that matters most.

An audit hook blocks process spawning, network connects, browser launches and rmtree outside the temp
dir while scanning, and records any ``pickle.find_class``: a scanner that unpickled a sample shows here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PROMPTFOO_DISABLE_TELEMETRY", "1")  # modelaudit ships PostHog telemetry
os.environ.setdefault("NO_ANALYTICS", "1")

VERDICTS = ("unsafe", "suspicious", "clean", "error")
SCANNERS = ("picklescan", "fickling", "modelscan", "modelaudit")


@dataclass
class Outcome:
    verdict: str
    findings: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Safety net: nothing a sample asks for may happen while scanners run


TRIPPED: list[str] = []
_BLOCKED = {
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "subprocess.Popen",
    "pty.spawn",
    "webbrowser.open",
    "socket.connect",
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "pickle.find_class":
        TRIPPED.append(f"pickle.find_class{args!r}")
    elif event in _BLOCKED or (
        event == "shutil.rmtree" and not str(args[0]).startswith(tempfile.gettempdir())
    ):
        TRIPPED.append(f"{event}{args!r}"[:200])
        raise PermissionError(f"bench/scanners.py blocked {event} during a scan")


# ---------------------------------------------------------------------------------------------
# Adapters: one file path in, one Outcome out


def scan_picklescan(path: Path) -> Outcome:
    from picklescan.scanner import SafetyLevel, scan_file_path

    result = scan_file_path(str(path))
    levels = {g.safety for g in result.globals}
    findings = sorted(
        {f"{g.module}.{g.name}:{g.safety.value}" for g in result.globals if g.safety != SafetyLevel.Innocuous}
    )
    if SafetyLevel.Dangerous in levels:
        return Outcome("unsafe", findings)
    if result.scan_err:
        return Outcome("error", findings, "scan_err")
    if SafetyLevel.Suspicious in levels:
        return Outcome("suspicious", findings)
    return Outcome("clean", findings, "" if result.globals else "no globals")


def scan_fickling(path: Path) -> Outcome:
    """fickling's own dispatch for local files is pickle-only; its HF-scan logic adds zip archives
    (fickling.polyglot needs torch), so: zip -> scan_zip_archive, else -> scan_file."""
    from fickling.analysis import Severity
    from fickling.loader import scan_file, scan_zip_archive

    results = (
        list(scan_zip_archive(str(path), graceful=True).values())
        if zipfile.is_zipfile(path)
        else [scan_file(str(path), graceful=True)]
    )
    if not results:
        return Outcome("clean", note="no pickle members")
    worst = max((r.severity for r in results), key=lambda s: s.value)
    errors = [e for r in results for e in r.errors]
    findings = sorted(
        {
            f"{ar.severity.name}:{ar.trigger or ar.message}"[:160]
            for r in results
            for analysis in r.results
            for ar in analysis.results
            if ar.severity > Severity.LIKELY_SAFE
        }
    )
    if worst >= Severity.LIKELY_OVERTLY_MALICIOUS:
        return Outcome("unsafe", findings, f"{worst.name}")
    if errors:
        return Outcome("error", findings, errors[0][:160])
    if worst > Severity.LIKELY_SAFE:
        return Outcome("suspicious", findings, f"{worst.name}")
    return Outcome("clean", findings)


_MODELSCAN: Any = None


def scan_modelscan(path: Path) -> Outcome:
    global _MODELSCAN
    from modelscan.modelscan import ModelScan

    if _MODELSCAN is None:
        _MODELSCAN = ModelScan()
    report = _MODELSCAN.scan(path)
    issues = report.get("issues", [])
    findings = sorted({f"{i['module']}.{i['operator']}:{i['severity']}" for i in issues})
    skipped = report["summary"]["skipped"]["skipped_files"]
    if any(i["severity"] in ("CRITICAL", "HIGH") for i in issues):
        return Outcome("unsafe", findings)
    if report.get("errors"):
        return Outcome(
            "error", findings, str(report["errors"][0].get("description", report["errors"][0]))[:160]
        )
    if issues:
        return Outcome("suspicious", findings)
    bad = [s for s in skipped if s["category"] in ("BAD_ZIP", "MAGIC_NUMBER")]
    if bad:
        return Outcome("error", findings, f"skipped {bad[0]['category']}: {bad[0]['description']}"[:160])
    if not report["summary"]["scanned"]["total_scanned"]:
        note = skipped[0]["description"] if skipped else "nothing scanned"
        return Outcome("clean", findings, f"not scanned: {note}"[:160])
    return Outcome("clean", findings)


def scan_modelaudit(path: Path) -> Outcome:
    from modelaudit.core import scan_file
    from modelaudit.scanner_results import IssueSeverity

    result = scan_file(str(path), {"cache_enabled": False})
    serious = [i for i in result.issues if i.severity in (IssueSeverity.CRITICAL, IssueSeverity.WARNING)]
    findings = sorted({f"{i.severity.value}:{i.message}"[:160] for i in serious})
    outcome = result.metadata.get("scan_outcome")
    if any(i.severity == IssueSeverity.CRITICAL for i in result.issues):
        return Outcome("unsafe", findings, result.scanner_name)
    if any(i.severity == IssueSeverity.WARNING for i in result.issues):
        return Outcome("suspicious", findings, result.scanner_name)
    if not result.success or outcome == "inconclusive" or result.metadata.get("operational_error"):
        reasons = (
            result.metadata.get("scan_outcome_reasons") or result.metadata.get("scan_outcome_reason") or ""
        )
        return Outcome("error", findings, f"{result.scanner_name}: {reasons}"[:160])
    return Outcome("clean", findings, result.scanner_name)


ADAPTERS: dict[str, Callable[[Path], Outcome]] = {
    "picklescan": scan_picklescan,
    "fickling": scan_fickling,
    "modelscan": scan_modelscan,
    "modelaudit": scan_modelaudit,
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Scanners print per finding; keep the report readable. stdout only: with sys.stderr replaced,
    modelaudit 0.2.54 rates benign sklearn pickles critical (see --stderr-redirected)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if REDIRECT_STDERR:
            with contextlib.redirect_stderr(io.StringIO()):
                yield
        else:
            yield


REDIRECT_STDERR = False


def run_one(scanner: str, path: Path) -> Outcome:
    start = time.perf_counter()
    tripped = len(TRIPPED)
    try:
        with quiet():
            outcome = ADAPTERS[scanner](path)
    except Exception as exc:  # a scanner crashing is an "error" verdict, not a bench failure
        outcome = Outcome("error", note=f"{type(exc).__name__}: {exc}"[:160])
    outcome.seconds = time.perf_counter() - start
    if len(TRIPPED) > tripped:
        outcome.note += f" AUDIT: {TRIPPED[tripped:]}"
    return outcome


def load_manifest(corpus: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((corpus / "manifest.json").read_text())
    return entries


def confusion(rows: list[tuple[dict[str, Any], Outcome]]) -> str:
    lines = ["| truth | " + " | ".join(VERDICTS) + " |", "|---|" + "---:|" * len(VERDICTS)]
    for label, dangerous in (("dangerous", True), ("benign", False)):
        counts = {v: 0 for v in VERDICTS}
        for sample, outcome in rows:
            if sample["dangerous"] == dangerous:
                counts[outcome.verdict] += 1
        lines.append(
            f"| {label} ({sum(counts.values())}) | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="directory with manifest.json (tests/scanning/corpus.py)")
    parser.add_argument("--scanners", default=",".join(SCANNERS))
    parser.add_argument("--json", type=Path, help="also write every verdict here")
    parser.add_argument("--one", nargs=2, metavar=("SCANNER", "FILE"), help="scan one file with one scanner")
    parser.add_argument("--no-audit-hook", action="store_true")
    parser.add_argument("--stderr-redirected", action="store_true", help="scan with sys.stderr replaced")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # every scanner logs per finding
    global REDIRECT_STDERR
    REDIRECT_STDERR = args.stderr_redirected
    if not args.no_audit_hook:
        sys.addaudithook(_audit)

    if args.one:
        scanner, file = args.one
        outcome = run_one(scanner, Path(file))
        print(json.dumps({"scanner": scanner, "file": file, **asdict(outcome)}, indent=1))
        return 0
    if not args.corpus:
        parser.error("--corpus or --one is required")

    samples = load_manifest(args.corpus)
    scanners = [s for s in args.scanners.split(",") if s]
    results: dict[str, list[tuple[dict[str, Any], Outcome]]] = {}
    for scanner in scanners:
        run_one(scanner, args.corpus / samples[0]["relpath"])  # warm-up: imports are not scan time
        results[scanner] = [(s, run_one(scanner, args.corpus / s["relpath"])) for s in samples]

    for scanner, rows in results.items():
        total = sum(o.seconds for _, o in rows)
        slowest = max(o.seconds for _, o in rows)
        print(f"\n## {scanner}  ({len(rows)} files, {total:.2f} s total, max {slowest:.3f} s)\n")
        print(confusion(rows))
        missed = [s["name"] for s, o in rows if s["dangerous"] and o.verdict == "clean"]
        false_unsafe = [s["name"] for s, o in rows if not s["dangerous"] and o.verdict == "unsafe"]
        print(f"\ndangerous rated clean ({len(missed)}): {', '.join(missed) or '-'}")
        print(f"benign rated unsafe ({len(false_unsafe)}): {', '.join(false_unsafe) or '-'}")

    print("\n## per-file verdicts\n")
    print("| sample | truth | " + " | ".join(scanners) + " |")
    print("|---|---|" + "---|" * len(scanners))
    for i, sample in enumerate(samples):
        cells = []
        for scanner in scanners:
            outcome = results[scanner][i][1]
            bad = (sample["dangerous"] and outcome.verdict == "clean") or (
                not sample["dangerous"] and outcome.verdict == "unsafe"
            )
            cells.append(
                f"{'**' if bad else ''}{outcome.verdict}{'**' if bad else ''} {outcome.seconds * 1000:.0f}ms"
            )
        truth = "dangerous" if sample["dangerous"] else "benign"
        print(f"| {sample['name']} | {truth} | " + " | ".join(cells) + " |")

    print("\n## details (findings / notes)\n")
    for scanner, rows in results.items():
        print(f"### {scanner}")
        for sample, outcome in rows:
            detail = "; ".join(outcome.findings[:4]) + (
                f" (+{len(outcome.findings) - 4})" if len(outcome.findings) > 4 else ""
            )
            note = f"| {outcome.note}" if outcome.note else ""
            print(f"- {sample['name']}: {outcome.verdict} {detail} {note}")
    if TRIPPED:
        print(f"\nAUDIT EVENTS ({len(TRIPPED)}): {TRIPPED[:20]}")
    else:
        print("\nno audit events: no scanner unpickled a sample or spawned/connected/deleted anything")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    scanner: [
                        {"sample": s["name"], "dangerous": s["dangerous"], **asdict(o)} for s, o in rows
                    ]
                    for scanner, rows in results.items()
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
