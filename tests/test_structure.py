"""The shape of ``src/``: no import cycles, and the ASGI layer imports no Flask of its own.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a cycle hidden in a
function is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "hokusai_registry"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def imports(module: str) -> set[str]:
    """The modules of ours that ``module`` imports (``from pkg import sub`` names the submodule)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports(module) for module in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in GRAPH[todo.pop()]:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_the_graph_sees_our_imports() -> None:
    assert "hokusai_registry.server.middleware" in GRAPH["hokusai_registry.server.app"]
    assert len(MODULES) > 30


def test_no_import_cycles() -> None:
    cycles = sorted(module for module in GRAPH if module in reachable(module))
    assert not cycles, f"modules that import themselves through others: {cycles}"


def test_deploy_is_layered() -> None:
    """errors <- plan <- ecs, image <- rollout: the pure plan never reaches boto3's side."""
    deploy = {name.rsplit(".", 1)[-1]: GRAPH[name] for name in GRAPH if name.startswith(f"{PACKAGE}.deploy.")}
    ours = {f"{PACKAGE}.deploy.{name}" for name in deploy}
    assert deploy["errors"] & ours == set()
    assert deploy["plan"] & ours == {f"{PACKAGE}.deploy.errors"}
    assert f"{PACKAGE}.deploy.rollout" not in set().union(*deploy.values())
    assert not [name for name, found in deploy.items() if f"{PACKAGE}.deploy" in found]
    assert f"{PACKAGE}.deploy.image" not in deploy["ecs"] and f"{PACKAGE}.deploy.ecs" not in deploy["image"]


def imports_flask(module: str) -> bool:
    tree = ast.parse(MODULES[module].read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    return any(name.split(".")[0] in ("flask", "werkzeug") for name in names)


def test_the_asgi_layer_loads_no_flask() -> None:
    """The key check runs on the event loop for every request; MLflow's Flask glue stays on its side.
    (MLflow's own packages import Flask anyway: this is about which of our modules depend on it.)"""
    asgi = "hokusai_registry.server.middleware"
    assert not [name for name in {asgi} | reachable(asgi) if imports_flask(name)]
    assert imports_flask("hokusai_registry.server.flask_hook")  # the check can see a Flask import
