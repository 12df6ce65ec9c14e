"""deploy/grafana/registry-dashboard.json: valid Grafana, and only what server/metrics.py exports.

Every metric a panel's PromQL names must be a series one of metrics.py's families exposes
(prometheus_client appends ``_total`` to a counter, ``_bucket``/``_sum``/``_count`` to a histogram), every
label it groups or matches by must be one of that family's labels, and every family must have a panel.
Besides a family's own labels a query may use the scrape target's (``job``, ``instance``), ``le`` with a
``_bucket`` series, and a label its own ``label_replace`` creates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from hokusai_registry.server import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "registry-dashboard.json"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

METRIC_NAME = re.compile(r"\bhokusai_[a-z_]+\b")
MATCHERS = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# label_replace(v, "dst", "replacement", "src", "regex"): the last four arguments.
LABEL_REPLACE = re.compile(
    r"label_replace\(.*?,\s*\"(\w+)\"\s*,\s*\"[^\"]*\"\s*,\s*\"(\w+)\"\s*,\s*\"[^\"]*\"\s*\)"
)
LABEL_VALUES = re.compile(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)")


class Family:
    """One collector of metrics.py, as prometheus_client describes it."""

    def __init__(self, collector: MetricWrapperBase) -> None:
        (described,) = collector.describe()
        self.name: str = described.name
        self.type: str = described.type
        self.labels: set[str] = set(collector._labelnames)
        # The label values exported from the start (at 0), e.g. every refusal reason.
        children = getattr(collector, "_metrics", {})
        names = list(collector._labelnames)
        self.values: dict[str, set[str]] = {
            label: {values[i] for values in children} for i, label in enumerate(names)
        }
        self.series = {self.name + suffix for suffix in SUFFIXES[self.type]}


FAMILIES = {
    family.name: family
    for family in (Family(c) for c in vars(metrics).values() if isinstance(c, MetricWrapperBase))
}
SERIES = {series: family for family in FAMILIES.values() for series in family.series}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in graph_panels(dashboard) for t in p["targets"]]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def families_in(expr: str) -> list[Family]:
    names = METRIC_NAME.findall(expr)
    unknown = sorted(set(names) - set(SERIES))
    assert not unknown, f"{unknown} in {expr!r}: no family in metrics.py exposes it ({sorted(SERIES)})"
    return [SERIES[name] for name in dict.fromkeys(names)]


def labels_in(expr: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The label names ``expr`` groups or matches by, and its exact matches (label, value)."""
    labels: set[str] = set()
    exact = []
    for body in MATCHERS.findall(expr):
        for label, operator, value in MATCHER.findall(body):
            labels.add(label)
            if operator == "=":
                exact.append((label, value))
    for group in GROUPING.findall(expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for _, source in LABEL_REPLACE.findall(expr):
        labels.add(source)
    for _, label in LABEL_VALUES.findall(expr):
        labels.add(label)
    return labels, exact


def check(where: str, expr: str) -> list[Family]:
    families = families_in(expr)
    assert families, f"{where}: {expr!r} names no hokusai_ metric"
    labels, exact = labels_in(expr)
    allowed = set(TARGET_LABELS)
    if any(name.endswith("_bucket") for name in METRIC_NAME.findall(expr)):
        allowed.add("le")
    allowed |= {created for created, _ in LABEL_REPLACE.findall(expr)}
    for family in families:
        missing = sorted(labels - allowed - family.labels)
        assert not missing, f"{where}: {family.name} has no label {missing} (it has {sorted(family.labels)})"
        for label, value in exact:
            if label in family.labels:
                known = family.values.get(label, set())
                assert value in known, (
                    f"{where}: {label}={value!r} is not among the values metrics.py exports for "
                    f"{family.name} ({sorted(known)}); match a fixed value, or group by the label"
                )
    return families


# --- the queries against metrics.py ----------------------------------------------------------------


def test_metrics_py_has_the_families_the_dashboard_is_built_on() -> None:
    assert {
        "hokusai_requests",
        "hokusai_request_duration_seconds",
        "hokusai_auth_refusals",
        "hokusai_artifact_bytes",
        "hokusai_registrations",
        "hokusai_scans",
        "hokusai_auth_cache",
        "hokusai_key_service_seconds",
        "hokusai_key_service_errors",
    } <= set(FAMILIES)
    assert FAMILIES["hokusai_requests"].labels == {"route", "method", "status"}
    assert FAMILIES["hokusai_request_duration_seconds"].type == "histogram"


def test_every_query_uses_only_metrics_and_labels_metrics_py_exports(dashboard: dict[str, Any]) -> None:
    queries = panel_exprs(dashboard) + variable_queries(dashboard)
    assert len(queries) >= 10
    for where, expr in queries:
        check(where, expr)


def test_every_family_has_a_panel(dashboard: dict[str, Any]) -> None:
    shown = {family.name for _, expr in panel_exprs(dashboard) for family in families_in(expr)}
    missing = sorted(set(FAMILIES) - shown)
    assert not missing, f"families in metrics.py without a panel: {missing}"


def test_the_checks_catch_a_wrong_name_label_or_value() -> None:
    with pytest.raises(AssertionError, match="no family"):
        check("t", "rate(hokusai_requests[5m])")  # a counter is exposed as _total only
    with pytest.raises(AssertionError, match="no label"):
        check("t", 'sum by (path) (rate(hokusai_requests_total{job="x"}[5m]))')
    with pytest.raises(AssertionError, match="no label"):
        check("t", 'rate(hokusai_auth_refusals_total{status="401"}[5m])')
    with pytest.raises(AssertionError, match="not among the values"):
        check("t", 'rate(hokusai_auth_cache_total{result="stale"}[5m])')
    with pytest.raises(AssertionError, match="no label"):
        check("t", "sum by (le) (rate(hokusai_requests_total[5m]))")  # le only on a _bucket series
    created = (
        'sum by (class) (label_replace(rate(hokusai_requests_total[1m]), "class", "$1", "status", "(.).."))'
    )
    assert [f.name for f in check("t", created)] == ["hokusai_requests"]
    assert check("t", 'rate(hokusai_auth_refusals_total{reason="revoked"}[5m])')


def test_the_panels_the_operations_doc_describes(dashboard: dict[str, Any]) -> None:
    exprs = [expr for _, expr in panel_exprs(dashboard)]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in exprs)

    assert some(r"sum by \(route, status_class\) \(label_replace\(rate\(hokusai_requests_total")
    latency = r"sum by \(le, route\) \(rate\(hokusai_request_duration_seconds_bucket"
    for quantile in ("0.5", "0.99"):
        assert some(rf"histogram_quantile\({quantile}, {latency}")
    assert some(r'hokusai_requests_total\{[^}]*status=~"5\.\."[^}]*\}.*\) / sum')
    assert some(r"sum by \(reason\) \(rate\(hokusai_auth_refusals_total")
    assert some(r'hokusai_auth_cache_total\{[^}]*result="hit"[^}]*\}.*\) / sum')
    assert some(r"sum by \(direction\) \(rate\(hokusai_artifact_bytes_total")
    assert some(r"sum by \(outcome\) \(increase\(hokusai_registrations_total")
    assert some(r"sum by \(verdict\) \(increase\(hokusai_scans_total")
    assert some(r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(hokusai_key_service_seconds_bucket")
    assert some(r"rate\(hokusai_key_service_errors_total")
    assert "deploy/grafana/registry-dashboard.json" in OPERATIONS_DOC.read_text()


# --- Grafana ---------------------------------------------------------------------------------------


def test_the_dashboard_is_grafana_json(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["uid"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it on import
    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = graph_panels(dashboard)
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["title"] and panel["type"] == "timeseries", panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_datasource_is_a_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name
    # No datasource is named anywhere but through the variable.
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {dashboard["uid"]}
    assert uids <= {"${datasource}", "-- Grafana --"}, uids


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
