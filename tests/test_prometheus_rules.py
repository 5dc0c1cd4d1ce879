"""deploy/prometheus/: the alerting rules, their unit tests and the Grafana dashboard, checked
with the real promtool (Debian `prometheus`, installed by scripts/system-deps) against a real
scrape of `dnsfailover serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_support import API, WWW, C, D, config_text
from support import HttpEndpoints, Server

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "dnsfailover.rules.yml"
RULE_TESTS = DEPLOY / "dnsfailover.rules.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
METRIC = re.compile(r"\bdnsfailover_[a-z0-9_]+\b")
FAILED_OVER = 'dnsfailover_name_failed_over{group="",name="api.example.test.",zone="example.test."}'


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run scripts/system-deps (Debian package prometheus)"
    return subprocess.run(
        [found, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=DEPLOY
    )


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", ())]


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real `serve` whose active-passive `api` failed over to its backup."""
    tmp = tmp_path_factory.mktemp("prom")
    endpoints = HttpEndpoints()
    try:
        ports = {a: endpoints.start(a) for a in ("127.0.0.71", "127.0.0.72", C, D)}
        config = tmp / "dnsfailover.yaml"
        config.write_text(config_text(ports))
        server = Server(config, tmp / "state.db")
        try:
            assert server.api is not None

            def metrics() -> str:
                with urllib.request.urlopen(f"{server.api}/metrics", timeout=5) as r:
                    return str(r.read().decode())

            def until(line: str) -> str:
                deadline = time.monotonic() + 30
                while line not in (text := metrics()):
                    assert time.monotonic() < deadline, f"never saw {line}:\n{text}"
                    time.sleep(0.1)
                return text

            until(f"{FAILED_OVER} 0.0")
            endpoints.stop(C)
            until(f"{FAILED_OVER} 1.0")
            # the probe process sends its counts once a second
            c = f'check="web",endpoint="{C}:{ports[C]}",region="local"'
            until(f'dnsfailover_probes_total{{{c},result="failed"}}')
            assert server.answer(API) == (D,)
            assert len(server.answer(WWW)) == 2
            yield metrics()
        finally:
            server.stop()
    finally:
        endpoints.close()


def exported(text: str) -> set[str]:
    """Every series name the exposition describes (families without samples too)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", ""),
            }.get(kind, ("",))
            base = family.removesuffix("_total") if kind == "counter" else family
            names.update({family, *(base + s for s in suffixes)})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_the_rules_unit_tests_pass_and_cover_every_alert() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for c in t["alert_rule_test"]]  # fmt: skip
    for rule in alerts():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never shown silent"


def test_alerts_name_what_they_are_about() -> None:
    about = {
        "DnsfailoverNameAllDown": ("name", "zone"),
        "DnsfailoverNameFailedOver": ("name", "zone"),
        "DnsfailoverNameDegraded": ("name", "zone"),
        "DnsfailoverProviderOutOfSync": ("zone",),
        "DnsfailoverRegionIsolated": ("region",),
        "DnsfailoverDnssecSignaturesNearExpiry": ("zone",),
        "DnsfailoverDnssecProblem": ("zone",),
    }
    rules = {r["alert"]: r for r in alerts()}
    assert {
        "DnsfailoverNoClusterLeader",
        "DnsfailoverCircuitBreakerFrozen",
        "DnsfailoverProbeProcessProblem",
        "DnsfailoverProbesCannotRun",
        "DnsfailoverScrapeDown",
    } | set(about) <= set(rules)
    for name, labels in about.items():
        for label in labels:
            assert f"{{{{ $labels.{label} }}}}" in rules[name]["annotations"]["summary"], name
            by = re.search(r"by \(([^)]*)\)", rules[name]["expr"])
            assert by, name
            assert label in by.group(1).replace(" ", "").split(","), name


def test_a_real_scrape_passes_promtool_check_metrics(scrape: str) -> None:
    done = promtool("check", "metrics", stdin=scrape)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", done.stdout
    assert done.stderr.strip() == "", done.stderr
    assert "_created" not in scrape


def test_rules_and_dashboard_use_only_metrics_the_server_exports(scrape: str) -> None:
    have = exported(scrape)
    in_rules = {m for r in alerts() for m in METRIC.findall(r["expr"])}
    in_board = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert in_rules - have == set()
    assert in_board - have == set()
    # the dashboard shows answers and modes per name, failovers, probe latency and results,
    # DNS responses by rcode, provider sync and the cluster leader
    assert {
        "dnsfailover_name_answers",
        "dnsfailover_name_state",
        "dnsfailover_answer_changes_total",
        "dnsfailover_probes_total",
        "dnsfailover_probe_duration_seconds_bucket",
        "dnsfailover_dns_responses_total",
        "dnsfailover_provider_in_sync",
        "dnsfailover_cluster_leader",
    } <= in_board


def test_the_dashboard_is_grafana_json_whose_queries_promtool_parses(tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] == "dnsfailover"
    assert board["uid"]
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for p in graphs:
        assert p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"], p["title"]
        assert all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    # Grafana's variables as Prometheus would see them, each query as a recording rule
    exprs = [e.replace("$__rate_interval", "5m").replace("$job", ".+") for e in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_failed_over_name_is_in_one_state_failed_over(scrape: str) -> None:
    """The name's state says failed over (and nothing else); its mode keeps meaning the
    serving tier's completeness, which is healthy: the backup tier is whole."""
    samples = dict(line.rsplit(" ", 1) for line in scrape.splitlines() if line[:1] != "#")

    def state(name: str, state: str) -> float:  # labels print sorted
        labels = f'group="",name="{name}",state="{state}",zone="example.test."'
        return float(samples[f"dnsfailover_name_state{{{labels}}}"])

    states = {s: state(API, s) for s in ("healthy", "degraded", "failed_over", "all_down")}
    assert states == {"healthy": 0, "degraded": 0, "failed_over": 1, "all_down": 0}
    assert state(API, "no_data") == 0
    mode = f'dnsfailover_name_mode{{group="",mode="healthy",name="{API}",zone="example.test."}}'
    assert float(samples[mode]) == 1
    assert state(WWW, "healthy") == 1


def test_name_metrics_carry_zone_and_no_label_is_an_internal_key(scrape: str) -> None:
    for line in scrape.splitlines():
        if line.startswith(("dnsfailover_name_", "dnsfailover_provider_in_sync{")):
            assert 'zone="' in line, line
        if line.startswith("dnsfailover_") and "{" in line:
            labels = line[line.index("{") : line.rindex("}")]
            assert "@" not in labels, line
            assert "#" not in labels, line
    assert 'dnsfailover_probes_total{check="web",endpoint="127.0.0.73:' in scrape


def test_the_docs_list_the_metrics_a_node_exports(scrape: str) -> None:
    page = (DEPLOY.parent.parent / "docs" / "metrics.md").read_text()
    listed = page[page.index("**Metrics**") : page.index("**Alerts and dashboard**")]
    named = set(METRIC.findall(listed))
    have = exported(scrape)
    assert named - have == set()
    families = {line.split(" ")[2] for line in scrape.splitlines() if line.startswith("# TYPE")}
    assert families - named == set(), "exported but not in docs/metrics.md"
