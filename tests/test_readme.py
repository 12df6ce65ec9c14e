"""The README documents every setting (and nothing that is not one) and names every module in its Layout.

The first column of each row names settings the way the table does: ``--option`` (an option of `up`),
``HOKUSAI_REGISTRY_<NAME>``, or ``_<NAME>`` after a full variable in the same row (a grouped row).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from hokusai_registry.cli import app
from hokusai_registry.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
ENV_PREFIX = "HOKUSAI_REGISTRY_"


def configuration_rows(readme: str) -> list[str]:
    """The first cell of every row of the first table under "## Configuration"."""
    section = re.split(r"^## Configuration$", readme, maxsplit=1, flags=re.M)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    body = [line for line in table[1:] if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line)]
    return [re.split(r"(?<!\\)\|", line)[1].strip() for line in body]


def documented(cell: str) -> list[tuple[str, str]]:
    """(setting name, how the cell spells it) for each name in one first cell."""
    names: list[tuple[str, str]] = []
    tokens = re.findall(r"`([^`]+)`", cell)
    assert tokens, f"no `name` in the configuration row {cell!r}"
    for token in tokens:
        if token.startswith("--"):
            names.append((token[2:].replace("-", "_"), token))
        elif token.startswith(ENV_PREFIX):
            names.append((token.removeprefix(ENV_PREFIX).lower(), token))
        elif token.startswith("_"):
            assert tokens[0].startswith(ENV_PREFIX), f"{token} in {cell!r} shortens no full variable"
            names.append((token[1:].lower(), token))
        else:
            raise AssertionError(f"{token!r} in {cell!r} is neither --option, {ENV_PREFIX}NAME nor _NAME")
    return names


def up_options() -> set[str]:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    return {opt for param in command.commands["up"].params for opt in param.opts if opt.startswith("--")}


def test_every_setting_is_documented_and_nothing_else() -> None:
    names = [name for cell in configuration_rows(README.read_text()) for name, _ in documented(cell)]
    assert len(names) == len(set(names)), (
        f"documented twice: {sorted({n for n in names if names.count(n) > 1})}"
    )
    fields = set(Settings.model_fields)
    missing = sorted(fields - set(names))
    unknown = sorted(set(names) - fields)
    assert not missing and not unknown, (
        f"undocumented settings: {missing}; documented but no setting: {unknown}"
    )


def test_options_in_the_table_are_options_of_up_and_every_option_is_shown() -> None:
    cells = configuration_rows(README.read_text())
    shown = {spelling for cell in cells for _, spelling in documented(cell) if spelling.startswith("--")}
    options = up_options() - {"--help"}
    assert shown <= options, f"not options of `up`: {sorted(shown - options)}"
    settings_options = {opt for opt in options if opt[2:].replace("-", "_") in Settings.model_fields}
    assert settings_options <= shown, f"options of `up` shown as variables only: {settings_options - shown}"


def test_the_parser_reads_the_table_conventions() -> None:
    readme = (
        "## Configuration\n\ntext\n\n| option | default | |\n|---|---|---|\n"
        "| `--host`, `--port` | a | |\n| `HOKUSAI_REGISTRY_AUTH_URL`, `_AUTH_TIMEOUT_SECONDS` | b | |\n\n"
        "| other | table |\n|---|---|\n| `--not-read` | |\n\n## Next\n"
    )
    cells = configuration_rows(readme)
    assert [name for cell in cells for name, _ in documented(cell)] == [
        "host",
        "port",
        "auth_url",
        "auth_timeout_seconds",
    ]


def layout_paths(readme: str) -> set[str]:
    """Every module path (``server/app.py``) the README's Layout block names under ``src/hokusai_registry/``.

    A line ``  pkg/`` opens a package; the ``*.py`` names on the lines indented under it are its modules.
    """
    section = re.split(r"^## Layout$", readme, maxsplit=1, flags=re.M)[1]
    block = section.split("```")[1].split("\nscripts/")[0]
    paths, package = set(), ""
    for line in block.splitlines():
        if re.fullmatch(r"  \w+/.*", line):
            package = line.split()[0]
            continue
        names = re.findall(r"\b(\w+\.py)\b", line)
        prefix = package if line.startswith("    ") else ""
        paths |= {prefix + name for name in names}
    return paths


def test_the_layout_names_every_module() -> None:
    """A newcomer looks for a module in the Layout first: none may be missing from it."""
    src = README.parent / "src" / "hokusai_registry"
    modules = {path.relative_to(src).as_posix() for path in src.rglob("*.py") if path.name != "__init__.py"}
    assert modules - layout_paths(README.read_text()) == set()
    example = "## Layout\n```\nsrc/x/\n  app.py  x\n  pkg/   y\n    a.py, b.py  z\nscripts/\n```\n"
    assert layout_paths(example) == {"app.py", "pkg/a.py", "pkg/b.py"}
