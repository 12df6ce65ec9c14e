"""docs/failures.md says what `verify` says: its cause and fix columns are ``CATALOGUE``'s text, exactly."""

from __future__ import annotations

import re
from pathlib import Path

from hokusai_registry.verify.diagnose import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
FAILURES_DOC = ROOT / "docs" / "failures.md"
CODE = re.compile(r"\bF\d+\b")


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every catalogue row (``| F<n> | symptom | cause | fix |``), ``\\|`` unescaped."""
    rows = []
    for line in markdown.splitlines():
        if re.match(r"\|\s*F\d+\s*\|", line):
            cells = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
            rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def test_the_doc_lists_every_code_with_exactly_its_cause_and_fix() -> None:
    rows = table_rows(FAILURES_DOC.read_text())
    assert all(len(row) == 4 for row in rows), [row for row in rows if len(row) != 4]
    documented = {code: (cause, fix) for code, _symptom, cause, fix in rows}
    assert len(documented) == len(rows), "a code appears in more than one row"
    missing = sorted(CATALOGUE.keys() - documented.keys())
    unknown = sorted(documented.keys() - CATALOGUE.keys())
    assert not missing and not unknown, (
        f"missing from docs/failures.md: {missing}; not in CATALOGUE: {unknown}"
    )
    for code, (cause, fix) in CATALOGUE.items():
        expected = f"| {code} | <symptom> | {cause} | {fix} |"
        assert documented[code] == (cause, fix), (
            f"docs/failures.md {code} differs from CATALOGUE:\n{expected}"
        )
    assert [row[0] for row in rows] == list(CATALOGUE), "rows out of CATALOGUE's order"


def test_every_code_has_a_symptom() -> None:
    assert all(symptom for _code, symptom, _cause, _fix in table_rows(FAILURES_DOC.read_text()))


def test_the_docs_name_no_code_outside_the_catalogue() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        unknown = set(CODE.findall(path.read_text())) - CATALOGUE.keys()
        assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}, which CATALOGUE does not have"


def test_table_rows_reads_escaped_pipes() -> None:
    rows = table_rows("| code | symptom | cause | fix |\n|---|---|---|---|\n| F1 | a \\| b | c | d |\n")
    assert rows == [["F1", "a | b", "c", "d"]]
