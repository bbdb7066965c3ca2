"""The release-review report's parts, each on what a reader sees: tables with rounded numbers, names without
`(unknown)`, the traffic graph's edges, the route diagram, charts, categories, environment, the living doc."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from meshlib.config.store import ConfigStore
from meshlib.local.envoy.records import Served
from meshlib.local.metrics import Peer
from meshlib.report import allure_run, living_doc, route_diagram, traffic_graph
from meshlib.report.allure_data import read_environment
from meshlib.report.allure_results import amendment_for, hook_message
from meshlib.report.batch import batch_document
from meshlib.report.charts import split_chart
from meshlib.report.names import peer_label
from meshlib.report.tables import csv_table, html_table, number, tidy
from meshlib.traffic import Response

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
NS = "istioinaction"


def peer(workload: str, version: str | None) -> Peer:
    labels = {"app": workload.split("-")[0]} | ({"version": version} if version else {})
    return Peer.of(workload, NS, labels)


def hop(rid: str, workload: str, version: str | None, status: int = 200, at: float = 1.0,
        mirrored: bool = False, attempt: int = 1) -> Served:
    return Served(rid, f"{workload}-1", peer(workload, version), f"{workload.split('-')[0]}:80", "/items", status,
                  mirrored, at, attempt)


def response(rid: str, status: int, served: list[Served], copies: list[Served] = ()) -> Response:  # type: ignore
    r = Response(rid, status, {}, "[]", 12.5)
    r.served_by, r.mirror_copies = served, list(copies)
    return r


def test_numbers_read_without_float_noise() -> None:
    assert number(4.859999999999999) == "4.86" and number(100.0) == "100" and number(7) == "7"
    assert number(0.000123456) == "0.0001235" and number(float("nan")) == "NaN"
    assert tidy(4.859999999999999) == 4.86 and tidy(99.49999999999999) == 99.5


def test_an_html_table_escapes_cells_aligns_numbers_and_marks_bad_rows() -> None:
    doc = html_table(("status", "share"), [("<503>", 0.30000000000000004), (200, 70)], title="a & b", bad=[0],
                     notes=['query: sum(x{a="b"})'])
    assert "<td>&lt;503&gt;</td>" in doc and '<td class="n">0.3</td>' in doc and '<tr class="bad">' in doc
    assert "<h4>a &amp; b</h4>" in doc and 'sum(x{a="b"})' in doc  # quotes stay readable in text
    assert csv_table(("a", "b"), [(1, 2.50000001)]) == "a,b\n1,2.5\n"


def test_workloads_are_named_by_app_and_version_never_unknown() -> None:
    assert peer_label(peer("webapp", None)) == "webapp"  # no version label, Istio's default revision
    assert peer_label(peer("catalog-v2", "v2")) == "catalog v2"
    assert peer_label(Peer()) == "unknown"  # a peer Istio knows nothing of


def test_a_batch_reads_per_version_status_and_latency() -> None:
    responses = [response("a", 200, [hop("a", "webapp", None), hop("a", "catalog", "v1")]),
                 response("b", 503, [hop("b", "webapp", None, 503), hop("b", "catalog-v2", "v2", 503)]),
                 response("c", 200, [hop("c", "webapp", None), hop("c", "catalog", "v1")],
                          [hop("c", "catalog-v2", "v2", mirrored=True)])]
    doc = batch_document("3 requests through the ingress gateway", responses)
    assert "webapp → catalog v1" in doc and "webapp → catalog v2" in doc and "66.7%" in doc
    assert '<tr class="bad"><td>webapp → catalog v2</td>' in doc and "mirrored copies" in doc
    assert "(unknown)" not in doc and "<details><summary>sample: the first 3 requests" in doc


def test_the_traffic_graph_counts_edges_errors_and_dashes_mirrors() -> None:
    batch = [response("a", 200, [hop("a", "webapp", None, at=1), hop("a", "catalog", "v1", at=2)],
                      [hop("a", "catalog-v2", "v2", 500, at=2.1, mirrored=True)]),
             response("b", 200, [hop("b", "webapp", None, at=1), hop("b", "catalog", "v1", 503, at=2),
                                 hop("b", "catalog", "v1", 200, at=3, attempt=2)])]
    graph = traffic_graph.traffic_of([traffic_graph.Sent("ingress gateway", batch),
                                      traffic_graph.Sent("forum", [response("c", 200, [])], "jsonplaceholder.io")])
    edges = {(e.source, e.target, e.mirrored): (e.requests, e.errors) for e in graph.edges.values()}
    assert edges == {("clients", "istio-ingressgateway", False): (2, 0),
                     ("istio-ingressgateway", "webapp", False): (2, 0),
                     ("webapp", "catalog v1", False): (3, 1),  # the retry to catalog came from webapp too
                     ("webapp", "catalog v2", True): (1, 1),
                     ("forum", "jsonplaceholder.io", False): (1, 0)}
    svg = traffic_graph.draw(graph, "traffic")
    root = ET.fromstring(svg)
    texts = " ".join(t.strip() for t in root.itertext() if t.strip())
    assert "1 mirrored" in texts and "33.3% errors" in texts and "ingress gateway" in texts
    assert 'stroke-dasharray="5,2"' in svg  # the mirrored edge


def test_the_route_diagram_reads_weights_subsets_and_mirrors_from_the_manifests() -> None:
    store = ConfigStore.from_paths([MANIFESTS / "services" / "catalog" / "kubernetes" / "catalog.yaml",
                                    MANIFESTS / "ch5" / "catalog-dest-rule.yaml",
                                    MANIFESTS / "ch5" / "catalog-vs-v2-10-90-mesh.yaml"], NS)
    table = route_diagram.route_table(store)
    assert table.weights("catalog") == {"version-v1": 0.9, "version-v2": 0.1}
    [(hosts, rule)] = table.entries["mesh"]
    assert hosts == "catalog" and [d.labels for d in rule.destinations] == [(("version", "v1"),),
                                                                            (("version", "v2"),)]
    mirrored = ConfigStore.from_paths([MANIFESTS / "ch5" / "catalog-vs-v2-mirror.yaml"], NS)
    [(_, rule)] = route_diagram.route_table(mirrored).entries["mesh"]
    assert [(d.subset, d.mirror) for d in rule.destinations] == [("version-v1", False), ("version-v2", True)]
    texts = " ".join(ET.fromstring(route_diagram.draw(route_diagram.route_table(store), "routes")).itertext())
    assert "90%" in texts and "10%" in texts and "version=v2" in texts


def test_the_split_chart_shows_observed_and_expected_shares() -> None:
    svg = split_chart({"v1": 289, "v2": 31}, {"v1": 0.9, "v2": 0.1}, "catalog: observed vs routes")
    texts = " ".join(t.strip() for t in ET.fromstring(svg).itertext() if t.strip())
    assert "90.3%" in texts and "9.7%" in texts and "10%" in texts and "observed (320 requests)" in texts


@pytest.mark.parametrize(("status", "message", "category"), [
    ("failed", "meshlib.expect.ExpectationFailed: expected every response to come from catalog v1\n but saw 3",
     "Broken release"),
    ("failed", "meshlib.steps._matcher.StepNotRun: could not run the step: 0 requests: send between 1", "Broken test"),
    ("broken", "KeyError: 'x'", "Broken test"),
    ("broken", "the scenario could not run: before_scenario: envoy gateway exited with code 1", "Infrastructure"),
    ("failed", "meshlib.expect.ExpectationFailed: prometheus did not become ready on http://127.0.0.1:9", "Infra"),
    ("skipped", "skipped: needs Prometheus: install Debian's prometheus package", "Skipped: needs a tool"),
    ("skipped", "skipped: needs Istio >= 1.28 (@istio.version>=1.28)", "Skipped: not for this Istio"),
])
def test_categories_tell_a_broken_release_from_a_broken_test_from_infrastructure(
        status: str, message: str, category: str) -> None:
    """Allure takes the first category whose status and regex (Java, whole message) match."""
    first = next(c["name"] for c in allure_run.categories() if status in c["matchedStatuses"]
                 and re.fullmatch(str(c["messageRegex"]).removeprefix("(?s)"), message, re.S))
    assert str(first).startswith(category)


def test_the_environment_file_round_trips_through_java_properties_escapes(tmp_path: Path) -> None:
    facts = allure_run.RunFacts("local", "1.17 (pinned scenarios: 1.28)", "1.40.0", "1126", "0.01", "0.05",
                                "0.1.0", "CPython 3.11", "behave 1.3.3 on linux é")
    text = allure_run.write_environment(tmp_path, facts).read_text()
    assert "istio.profile=1.17 (pinned scenarios\\: 1.28)\n" in text and text.isascii()
    assert dict(read_environment(tmp_path)) == facts.properties()


def test_history_is_carried_and_the_executor_numbers_the_run(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "report"
    results.mkdir()
    (results / "x-result.json").write_text("{}")
    lines = allure_run.prepare(results, report, {})
    assert "Trend starts with this run" in lines[1]
    assert json.loads((results / "executor.json").read_text())["name"] == "make report (this machine)"
    (report / "history").mkdir(parents=True)
    (report / "history" / "history-trend.json").write_text(json.dumps([{"data": {}}]))
    allure_run.prepare(results, report, {"CI": "true"})
    assert json.loads((results / "history" / "history-trend.json").read_text()) == [{"data": {}}]
    executor = json.loads((results / "executor.json").read_text())
    assert executor["buildOrder"] == 2 and executor["name"] == "meshlib CI (.ci/run)"
    with pytest.raises(FileNotFoundError, match="no Allure results"):
        allure_run.prepare(tmp_path / "none", report, {})


class _Scenario:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def test_a_skip_keeps_its_reason_and_a_failed_hook_is_broken() -> None:
    skipped = amendment_for(_Scenario(status="Status.skipped", skip_reason="needs Prometheus", hook_failed=False))
    assert skipped is not None and skipped.status is None and skipped.message == "skipped: needs Prometheus"
    hook = amendment_for(_Scenario(status="Status.hook_error", hook_failed=True, error_message=(
        "HOOK-ERROR in before_scenario: MeshlibError: envoy gateway exited with code 1")))
    assert hook is not None and hook.status == "broken"
    assert hook.message == "the scenario could not run: before_scenario: envoy gateway exited with code 1"
    assert hook_message("HOOK-ERROR in after_scenario: oops: a b") == "after_scenario: oops: a b"
    assert amendment_for(_Scenario(status="Status.passed", skip_reason=None, hook_failed=False)) is None


FEATURE = """Feature: Mirroring
  Copies go to v2; clients only see v1.

  Background:
    Given the catalog service runs v1 and v2

  Scenario: mirrored traffic never reaches clients
    When 20 requests are sent
    Then every response has status 200

  Scenario: a later Istio
    Then every response has status 200

  Scenario: never run
    Then every response has status 200
"""


def _result(folder: Path, name: str, status: str, steps: list[dict], message: str = "",
            attachments: list[dict] = ()) -> None:  # type: ignore[assignment]
    (folder / f"{name[:5].replace(' ', '_')}-result.json").write_text(json.dumps({
        "name": name, "status": status, "historyId": name, "start": 1, "stop": 2001,
        "labels": [{"name": "feature", "value": "Mirroring"}], "steps": steps, "attachments": list(attachments),
        "statusDetails": {"message": message} if message else {}}))


def test_the_living_doc_shows_gherkin_results_pictures_and_folds_long_evidence(tmp_path: Path) -> None:
    features, results = tmp_path / "features", tmp_path / "results"
    features.mkdir()
    results.mkdir()
    (features / "mirroring.feature").write_text(FEATURE)
    (results / "p-attachment.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    (results / "t-attachment.html").write_text(html_table(("status", "requests"), [(200, 20)]))
    (results / "l-attachment.txt").write_text("\n".join(f"GET /items {i}" for i in range(30)))
    bg = {"name": "Given the catalog service runs v1 and v2", "status": "passed"}
    _result(results, "mirrored traffic never reaches clients", "failed", [
        bg, {"name": "When 20 requests are sent", "status": "passed", "attachments": [
            {"name": "20 requests", "type": "text/html", "source": "t-attachment.html"},
            {"name": "log lines", "type": "text/plain", "source": "l-attachment.txt"}]},
        {"name": "Then every response has status 200", "status": "failed",
         "statusDetails": {"message": "meshlib.expect.ExpectationFailed: expected 200\n but saw 503"}}],
        attachments=[{"name": "picture: traffic graph", "type": "image/svg+xml", "source": "p-attachment.svg"}])
    _result(results, "a later Istio", "skipped", [bg], "skipped: needs Istio >= 1.28")
    out = tmp_path / "doc" / "index.html"
    summary = living_doc.build(results, out, features)
    html = out.read_text()
    assert summary.statuses == {"failed": 1, "skipped": 1, "not run": 1} and summary.pictures == 1
    assert "Copies go to v2; clients only see v1." in html and "<span class=\"kw\">When</span>20 requests" in html
    assert 'src="data:image/svg+xml;base64,' in html and "<figcaption>traffic graph</figcaption>" in html
    assert '<td class="n">200</td>' in html  # the HTML evidence inline
    assert "<summary>log lines (30 lines)</summary>" in html  # the long excerpt folded
    assert "expected 200\n but saw 503" in html and "ExpectationFailed" not in html
    assert "skipped: needs Istio &gt;= 1.28" in html and 'data-status="not run"' in html
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", html)


def test_the_living_doc_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "meshlib.report.living_doc", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 1 and run.stderr == (f"living doc: no Allure results folder {tmp_path / 'none'}: "
                                                  "run the features first (make demo)\n")


def test_the_step_library_loads_no_drawing_library() -> None:
    probe = ("import sys, meshlib.steps, meshlib.steps.environment, meshlib.dsl.canary\n"
             "print(sorted(m for m in ('matplotlib', 'graphviz', 'playwright') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
