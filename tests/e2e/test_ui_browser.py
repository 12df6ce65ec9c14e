"""The MLflow web UI in a real browser, as a tenant: it sees exactly its own models and experiments.

Debian's Chromium, driven by Playwright (``executable_path``: Playwright's own browser download is
not used). The tenant logs in through the browser's Basic prompt with its key as the password, as
the README tells a user to; every request the page makes must succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import CHROMIUM, CHROMIUM_FLAGS
from tests.services import Registry, run_registry

OWN_MODELS = ("ui-a-model-1", "ui-a-model-2", "ui-a-model-3")
OTHER_MODELS = ("ui-b-model-1", "ui-b-model-2")


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[str, str]]]:
    """A registry where tenant A owns three models and two experiments, and B owns others."""
    if not Path(CHROMIUM).exists():
        pytest.fail("the browser test needs Debian's chromium: apt-get install chromium")
    with run_registry(tmp_path_factory.mktemp("ui")) as registry:
        keys = {"a": registry.create_key("ui-tenant-a"), "b": registry.create_key("ui-tenant-b")}
        for tenant, models, experiments in (
            ("a", OWN_MODELS, ("ui-a-exp-1", "ui-a-exp-2")),
            ("b", OTHER_MODELS, ("ui-b-exp-1",)),
        ):
            with registry.client(keys[tenant]) as http:
                for name in models:
                    assert http.post(
                        "/api/2.0/mlflow/registered-models/create", json={"name": name}
                    ).is_success
                for name in experiments:
                    assert http.post("/api/2.0/mlflow/experiments/create", json={"name": name}).is_success
        yield registry, keys


def visit(registry: Registry, key: str, route: str, wait_for: str) -> tuple[str, list[str]]:
    """The page's text once ``wait_for`` shows, and every failed request it made (status >= 400)."""
    from playwright.sync_api import sync_playwright

    failed: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            context = browser.new_context(http_credentials={"username": "tenant-a", "password": key})
            page = context.new_page()
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(f"{registry.url}/#{route}", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text(wait_for).first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # the page's remaining requests (counts, tags) answer too
            text = page.inner_text("body")
        finally:
            browser.close()
    return text, failed


def test_a_tenant_sees_its_own_registered_models_and_nothing_else(
    tenants: tuple[Registry, dict[str, str]],
) -> None:
    registry, keys = tenants
    text, failed = visit(registry, keys["a"], "/models", OWN_MODELS[0])
    assert all(name in text for name in OWN_MODELS), text[:2000]
    assert not any(name in text for name in OTHER_MODELS), text[:2000]
    assert failed == []


def test_a_tenant_sees_its_own_experiments_and_nothing_else(tenants: tuple[Registry, dict[str, str]]) -> None:
    registry, keys = tenants
    text, failed = visit(registry, keys["a"], "/experiments", "ui-a-exp-1")
    assert "ui-a-exp-1" in text and "ui-a-exp-2" in text, text[:2000]
    assert "ui-b-exp-1" not in text
    assert failed == []
