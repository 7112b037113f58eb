"""The Grafana dashboard and the Prometheus alerting rules shipped in docs/ (SPEC 10), checked against the product.

Pure file reading and one in-process scrape, no servers: `docs/grafana/receiver.json` is an importable
dashboard whose every panel has a title and a PromQL target on the templated Prometheus datasource;
`docs/prometheus/alerts.yml` has the SPEC's alerts, each with `expr`, `for`, a severity, a summary, a
description and a runbook hint. Every `receiver_*` metric either file queries is one the receiver
exports: the names come from GET /metrics of the product's own application (every module of `receiver`
imported first, so each Counter and Histogram it defines is registered, and the scrape-time collectors
run), never from a list kept here. `promtool check rules` and `promtool test rules`
(`docs/prometheus/alerts_test.yml`) run when promtool is on PATH.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import yaml

import receiver
from receiver.config import DEFAULT_RATE_LIMITS, Settings, load_settings
from receiver.inbox import STATES
from tests.conftest import receiver_env

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "receiver.json"
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts_test.yml"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# A metric name in PromQL: an identifier starting with receiver_ (not the tail of a longer one).
METRIC = re.compile(r"(?<![A-Za-z0-9_:])receiver_[A-Za-z0-9_:]*")
# String literals: label values, never metric names.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# --- the files ---------------------------------------------------------------------------------


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@cache
def rules_file() -> dict:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def panels(items: list[dict] | None = None) -> Iterator[dict]:
    """Every panel of the dashboard, those inside rows included (rows themselves too)."""
    for panel in dashboard()["panels"] if items is None else items:
        yield panel
        yield from panels(panel.get("panels", []))


def query_panels() -> list[dict]:
    return [panel for panel in panels() if panel.get("type") != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every target of every panel."""
    return [(f"panel {p.get('title')!r}", t["expr"]) for p in query_panels() for t in p.get("targets", [])
            if "expr" in t]


def alert_rules() -> list[dict]:
    return [rule for group in rules_file()["groups"] for rule in group["rules"]]


def rule_exprs() -> list[tuple[str, str]]:
    return [(f"alert {r.get('alert')!r}", str(r["expr"])) for r in alert_rules() if "expr" in r]


def alert(name: str) -> dict:
    [rule] = [r for r in alert_rules() if r.get("alert") == name] or [None]
    assert rule is not None, f"{RULES.relative_to(ROOT)} has no alert {name}"
    return rule


def squeezed(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


# --- metric names: those queried, those exported --------------------------------------------------


def metric_tokens(expr: str) -> set[str]:
    """Every receiver_* identifier of a PromQL expression, label values (string literals) left out."""
    return set(METRIC.findall(STRING.sub('""', expr)))


def family_of(token: str, exported: dict[str, str]) -> str:
    """The metric family a series name belongs to: a histogram's _bucket/_sum/_count name its histogram."""
    if token in exported:
        return token
    for suffix in HISTOGRAM_SUFFIXES:
        if token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def problems_with(token: str, exported: dict[str, str]) -> list[str]:
    """Why a series name in a query is not one the receiver exports ([] when it is)."""
    family = family_of(token, exported)
    if family not in exported:
        return [f"{token}: the receiver exports no metric {family}"]
    kind = exported[family]
    if kind == "histogram" and token == family:
        return [f"{token}: a histogram has no series of its own name (use _bucket, _sum or _count)"]
    if token != family and kind not in ("histogram", "summary"):
        return [f"{token}: {family} is a {kind}, it has no {token[len(family):]} series"]
    return []


@cache
def exported_metrics() -> dict[str, str]:
    """name -> type of every metric family GET /metrics of the product's application announces.

    Every module of the receiver package is imported first (entry points aside), so the Counters and
    Histograms the worker and the sweeper define are registered as they are in those processes; the
    scrape-time collectors (the inbox's gauges) run on a fresh SQLite inbox. The names are read from
    the `# TYPE` lines, which are written for a metric family even before it has a sample.
    """
    for module in pkgutil.walk_packages(receiver.__path__, "receiver."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(module.name)
    from receiver.http import create_app
    from receiver.inbox import open_inbox

    # In multiprocess mode a scrape shows only the metrics some process has written a sample of.
    multiprocess_dir = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        with tempfile.TemporaryDirectory() as directory:
            settings = load_settings(receiver_env(Path(directory)))
            inbox = open_inbox(settings)
            try:
                answer = create_app(settings, inbox).test_client().get("/metrics")
            finally:
                getattr(inbox, "close", lambda: None)()
    finally:
        if multiprocess_dir is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    assert answer.status_code == 200, answer.get_data(as_text=True)
    kinds = {}
    for line in answer.get_data(as_text=True).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            kinds[name] = kind
    return kinds


def queried_names() -> list[str]:
    """Every receiver_* series name the dashboard and the rules query (suffixes kept), sorted."""
    return sorted({token for _, expr in dashboard_exprs() + rule_exprs() for token in metric_tokens(expr)})


# --- the extraction itself --------------------------------------------------------------------------


def test_metric_names_are_read_out_of_promql():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(receiver_accept_to_forward_seconds_bucket[5m])))'
            ' / on() sum(rate(receiver_callbacks_total{outcome="receiver_not_a_metric"}[$__rate_interval]))'
            " and absent(receiver_sweeps_total) unless xreceiver_tail")
    assert metric_tokens(expr) == {"receiver_accept_to_forward_seconds_bucket", "receiver_callbacks_total",
                                   "receiver_sweeps_total"}


def test_a_misspelt_or_misused_name_is_caught():
    exported = {"receiver_callbacks_total": "counter", "receiver_callback_seconds": "histogram",
                "receiver_dead_letters": "gauge"}
    assert problems_with("receiver_callbacks_total", exported) == []
    assert problems_with("receiver_callback_seconds_bucket", exported) == []
    assert problems_with("receiver_callback_total", exported)  # misspelt
    assert problems_with("receiver_callback_seconds", exported)  # a bare histogram
    assert problems_with("receiver_dead_letters_count", exported)  # a gauge has no _count
    # The real exported set is read from the product and holds what has been there from the start.
    real = exported_metrics()
    assert real.get("receiver_callbacks_total") == "counter"
    assert real.get("receiver_callback_seconds") == "histogram"
    assert problems_with("receiver_calbacks_total", real)


# --- every name queried is exported ---------------------------------------------------------------------


def test_the_dashboard_and_rules_query_receiver_metrics():
    assert len(queried_names()) >= 10, queried_names()


@pytest.mark.parametrize("token", queried_names())
def test_every_metric_queried_is_exported_by_the_receiver(token):
    problems = problems_with(token, exported_metrics())
    where = [w for w, expr in dashboard_exprs() + rule_exprs() if token in metric_tokens(expr)]
    assert problems == [], f"{problems} (queried by {', '.join(where)})"


def test_label_values_queried_are_the_products():
    """Inbox states are receiver.inbox.STATES; each (service, action) pair has a configured rate limit."""
    for where, expr in dashboard_exprs() + rule_exprs():
        for match in re.finditer(r'state=~?"([^"]*)"', expr):
            states = set(match.group(1).split("|"))
            assert states <= set(STATES), f"{where}: unknown inbox state(s) {states - set(STATES)}"
        service = re.search(r'service="([^"]*)"', expr)
        action = re.search(r'action="([^"]*)"', expr)
        if service or action:
            assert service and action, f"{where}: a service without its action or the other way round"
            assert (service.group(1), action.group(1)) in DEFAULT_RATE_LIMITS, f"{where}: no such action"


# --- the dashboard ----------------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard():
    board = dashboard()
    assert board["title"] and board["uid"]
    assert 36 <= board["schemaVersion"] <= 41
    assert board.get("id") is None  # an id would make an import overwrite whichever dashboard has it
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_every_panel_has_a_title_and_a_target():
    assert len(query_panels()) >= 10
    for panel in panels():
        assert str(panel.get("title", "")).strip(), f"a {panel.get('type')} panel without a title"
    for panel in query_panels():
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        for target in targets:
            assert str(target.get("expr", "")).strip() and target.get("refId"), panel["title"]


def test_every_datasource_is_the_templated_one():
    def references(node, path="dashboard"):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield path, value
                else:
                    yield from references(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from references(value, f"{path}[{index}]")

    found = list(references(dashboard()["panels"], "panels"))
    assert found
    wrong = [(path, value) for path, value in found if value != DATASOURCE]
    assert wrong == []
    for panel in query_panels():
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert all(t.get("datasource") == DATASOURCE for t in panel["targets"]), panel["title"]


def panels_querying(metric: str) -> list[dict]:
    return [p for p in query_panels() if any(metric in metric_tokens(t["expr"]) for t in p["targets"])]


@pytest.mark.parametrize("metric", [
    "receiver_callbacks_total", "receiver_inbox_records", "receiver_inbox_oldest_pending_seconds",
    "receiver_events_forwarded_total", "receiver_describe_calls_total", "receiver_rejected_callbacks",
    "receiver_dead_letters", "receiver_sweeps_total", "receiver_swept_missing_total",
])
def test_the_dashboard_shows(metric):
    assert panels_querying(metric), f"no panel queries {metric}"


def test_door_answers_and_events_out_are_rates():
    for metric in ("receiver_callbacks_total", "receiver_events_forwarded_total"):
        exprs = [t["expr"] for p in panels_querying(metric) for t in p["targets"]]
        assert any(f"rate({metric}[" in squeezed(e) for e in exprs), exprs


def test_the_backlog_is_pending_plus_leased():
    exprs = [squeezed(t["expr"]) for p in panels_querying("receiver_inbox_records") for t in p["targets"]]
    assert any(re.search(r'state=~"(pending\|leased|leased\|pending)"', e) for e in exprs), exprs


def test_accept_to_forward_latency_has_p50_and_p99():
    exprs = [squeezed(t["expr"]) for p in panels_querying("receiver_accept_to_forward_seconds_bucket")
             for t in p["targets"]]
    for quantile in ("0.5", "0.99"):
        assert any(e.startswith(f"histogram_quantile({quantile},") and "by(le)" in e
                   for e in exprs), (quantile, exprs)


def limit_lines(panel: dict) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s.get("value") is not None]


@pytest.mark.parametrize("service, action", [
    ("mps", "DescribeTaskDetail"), ("vod", "DescribeTaskDetail"), ("mps", "DescribeBatchTaskDetail"),
    ("ams", "DescribeTaskDetail"), ("mps", "DescribeTasks"),
])
def test_describe_calls_are_drawn_against_the_actions_limit(service, action):
    """One panel per action, its calls per second by outcome, a threshold line at the product's default limit."""
    [panel] = [p for p in panels_querying("receiver_describe_calls_total")
               if any(f'service="{service}"' in t["expr"] and f'action="{action}"' in t["expr"]
                      for t in p["targets"])] or [None]
    assert panel is not None, f"no panel for {service} {action}"
    assert any("by(outcome)" in squeezed(t["expr"]) and "[1m]" in t["expr"] for t in panel["targets"])
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] in ("line", "line+area")
    assert limit_lines(panel) == [DEFAULT_RATE_LIMITS[(service, action)]]
    assert f"{DEFAULT_RATE_LIMITS[(service, action)]}/s" in panel["title"]


def test_panels_say_their_units():
    for metric, unit in (("receiver_inbox_oldest_pending_seconds", "s"),
                         ("receiver_accept_to_forward_seconds_bucket", "s"),
                         ("receiver_describe_calls_total", "reqps")):
        for panel in panels_querying(metric):
            assert panel["fieldConfig"]["defaults"]["unit"] == unit, panel["title"]


# --- the rules -------------------------------------------------------------------------------------


def test_the_rules_have_the_prometheus_structure():
    document = rules_file()
    assert set(document) == {"groups"} and document["groups"]
    for group in document["groups"]:
        assert group["name"] and group["rules"], group
        for rule in group["rules"]:
            name = rule.get("alert")
            assert name, f"a rule without an alert name in group {group['name']}: {rule}"
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, name
            assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), name
            assert DURATION.match(str(rule.get("for", ""))), f"{name}: for {rule.get('for')!r}"
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
            for annotation in ("summary", "description", "runbook"):
                assert str(rule["annotations"].get(annotation, "")).strip(), f"{name}: no {annotation}"
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names repeat"


def test_alert_backlog_older_than_five_minutes():
    assert squeezed(alert("ReceiverBacklogOlderThan5m")["expr"]) == "receiver_inbox_oldest_pending_seconds>300"


def test_alert_dead_letters():
    assert squeezed(alert("ReceiverDeadLetters")["expr"]) == "receiver_dead_letters>0"


def test_alert_readiness_degraded():
    rule = alert("ReceiverReadinessDegraded")
    assert squeezed(rule["expr"]) == "receiver_ready==0"
    assert "check" in rule["annotations"]["summary"]


def test_alert_describe_rate_limited():
    expr = squeezed(alert("ReceiverDescribeRateLimited")["expr"])
    assert 'increase(receiver_describe_calls_total{outcome="rate_limited"}[5m])' in expr
    assert expr.endswith(">0")
    assert "by(service,action)" in expr  # one alert per action: the one whose limit to look at


def test_alert_no_sweep_in_three_intervals():
    """Three of the product's default SWEEP_INTERVAL_SECONDS; a sweeper that never ran alerts only while the
    receiver is being scraped."""
    window = f"{3 * Settings().sweep_interval_seconds // 60}m"
    stalled = squeezed(alert("ReceiverSweeperStalled")["expr"])
    assert stalled == f"increase(receiver_sweeps_total[{window}])==0"
    never = alert("ReceiverSweeperNeverRan")
    expr = squeezed(never["expr"])
    assert expr.startswith("absent(receiver_sweeps_total)and")
    assert "receiver_inbox_records" in expr  # expected only where the receiver itself is scraped
    assert never["for"] == window


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")
    return path


def test_promtool_checks_the_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules(promtool, tmp_path):
    """alerts_test.yml over alerts.yml with the annotations left out (their wording is not what it tests)."""
    document = rules_file()
    stripped = {"groups": [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                                               for rule in group["rules"]]}
                           for group in document["groups"]]}
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(stripped, sort_keys=False), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
