"""The release-review report as a reviewer sees it: a small real run (the walkthrough's mirroring feature, and one
scenario of each other outcome: a failed release check, a step with bad input, a skip, a mesh that cannot start),
its living doc and its Allure report (generated twice, the history carried over) rendered in Debian's headless
Chromium. Each check is on what is VISIBLE in the rendered page; the screenshots land in reports/screenshots/.

Chromium runs with the issue's flags (headless, no GPU, no QUIC, no background networking, component updates or
sync) through Playwright, which gives it a fresh temporary profile (--user-data-dir) and removes it on close; every
request the pages make is checked, and anything but the page itself, data: URIs and the loopback report server is
refused. Needs chromium, Graphviz's dot, Java and the Allure CLI in .tools (.ci/run installs them); without one of
them the tests skip and say which.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from meshclient import ROOT, behave_project, isolated_env

from meshlib.report import allure_run, living_doc
from meshlib.report.allure_data import report_uids

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ALLURE = ROOT / ".tools" / "node_modules" / ".bin" / "allure"
SCREENSHOTS = ROOT / "reports" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
FORMAT = "allure_behave.formatter:AllureFormatter"

REVIEW = """@allure.label.epic:release-safety
Feature: Release review report
  One scenario of each outcome a review must tell apart.

  Background:
    Given the catalog service runs v1 and v2
    And the manifest "ch5/catalog-gateway.yaml" is applied
    And catalog subsets are defined for v1 and v2

  Scenario: a release that sends half of the traffic to v2 is caught
    Given the manifest "ch5/catalog-vs.yaml" is applied
    When 40 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response comes from catalog v1

  Scenario: a step with bad input breaks the test, not the release
    When 0 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway

  @istio.version>=1.28
  Scenario: a check for a later Istio is skipped with its reason
    Then every response has status 200
"""
INFRA = """Feature: A mesh that cannot start
  Scenario: Envoy is missing
    Given the catalog service runs v1
"""
MIRRORING = "Traffic mirroring to catalog v2 (5.4)"
EXPECTED = {  # scenario → the status the page must show
    "mirrored traffic never reaches clients": "passed",
    "up to Istio 1.27 mirrored requests carry the -shadow Host": "passed",
    "from Istio 1.28 mirrored requests keep their Host": "passed",
    "a release that sends half of the traffic to v2 is caught": "failed",
    "a step with bad input breaks the test, not the release": "failed",
    "a check for a later Istio is skipped with its reason": "skipped",
    "Envoy is missing": "broken",
}
CATEGORIES = {"Broken release: a release check failed": "a release that sends half of the traffic to v2 is caught",
              "Broken test: bad input or a step error": "a step with bad input breaks the test, not the release",
              "Infrastructure: the mesh or Prometheus would not start": "Envoy is missing",
              "Skipped: not for this Istio profile": "a check for a later Istio is skipped with its reason"}


def _missing() -> str:
    if CHROMIUM is None:
        return "needs Debian's chromium (apt-get install chromium)"
    if shutil.which("dot") is None:
        return "needs Graphviz's dot (apt-get install graphviz)"
    if shutil.which("java") is None or not ALLURE.is_file():
        return "needs Java 17 and the Allure CLI in .tools (npm install --prefix .tools allure-commandline@2.46.1)"
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        return "needs playwright (the dev extra)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")


@dataclass(frozen=True)
class Run:
    project: Path
    results: Path
    report: Path
    doc: Path
    features: list[str]


def _behave(project: Path, results: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "behave", "-f", FORMAT, "-o", str(results), "-f", "null",
                           "-D", f"manifests={ROOT / 'manifests'}"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def _generate(results: Path, report: Path) -> None:
    env = {**os.environ, "ALLURE_NO_ANALYTICS": "true"}  # else its page asks an analytics site for a script
    run = subprocess.run([str(ALLURE), "generate", str(results), "-o", str(report), "--clean"], capture_output=True,
                         text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("review")
    results = base / "allure-results"
    infra = behave_project(base / "infra", {"infra.feature": INFRA})
    shutil.copy(ROOT / "behave.ini", infra)
    env = isolated_env(infra) | {"MESHLIB_ENVOY": str(base / "no-such-envoy")}
    run = _behave(infra, results, env)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stdout[-2000:] + run.stderr[-2000:]
    project = behave_project(base / "project", {"mirroring.feature": (ROOT / "features" / "mirroring.feature")
                                                .read_text(), "review.feature": REVIEW})
    shutil.copy(ROOT / "behave.ini", project)
    run = _behave(project, results, isolated_env(project))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # a failed check and a broken step
    assert "Traceback" not in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    report = base / "allure-report"
    for _ in range(2):  # two `make report`s in a row: the second carries the first one's history
        allure_run.prepare(results, report, {"CI": "true"})
        _generate(results, report)
    doc = base / "living-doc" / "index.html"
    living_doc.build(results, doc, project / "features", report)
    return Run(project, results, report, doc, [MIRRORING, "Release review report"])


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser: object, allowed: tuple[str, ...], refused: list[str]):
    """A page of its own whose requests may only go to `allowed` prefixes (anything else is refused and noted)."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})  # type: ignore[attr-defined]

    def guard(route) -> None:
        url = route.request.url
        if url.startswith(allowed):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", guard)
    return page


@pytest.fixture()
def served(review: Run) -> Iterator[str]:
    """The generated Allure report over HTTP on loopback (a port of its own), shut down after the test."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=review.report))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_the_living_doc_is_one_file_that_loads_nothing(review: Run) -> None:
    html = review.doc.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html), "a resource from the network"
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc=|@import|url\(\s*['\"]?(?!data:)", html)
    assert list(review.doc.parent.iterdir()) == [review.doc]  # nothing beside it to load


def test_the_living_doc_shows_every_feature_its_results_and_pictures(review: Run, browser: object) -> None:
    refused: list[str] = []
    page = _page(browser, (review.doc.as_uri(), "data:"), refused)
    try:
        page.goto(review.doc.as_uri())
        for name in review.features:
            heading = page.locator("section.feature", has=page.locator("h2", has_text=name)).locator("h2")
            assert heading.is_visible(), name
        for scenario, status in EXPECTED.items():
            article = page.locator("article.scenario", has=page.locator("h3", has_text=scenario))
            badge = article.locator("h3 .badge")
            assert badge.is_visible() and badge.inner_text() == status, (scenario, badge.inner_text())
        mirrored = page.locator("article.scenario", has=page.locator("h3", has_text="mirrored traffic never"))
        pictures = mirrored.locator(".pictures img")
        assert pictures.count() == 2  # its traffic graph and its route table
        for i in range(pictures.count()):
            picture = pictures.nth(i)
            picture.scroll_into_view_if_needed()
            box = picture.bounding_box()
            assert picture.is_visible() and box is not None and box["width"] > 300 and box["height"] > 100
            assert picture.evaluate("img => img.complete && img.naturalWidth > 0")  # decoded, not a broken image
        graph = pictures.nth(0).get_attribute("alt")
        assert graph == "picture: traffic graph"
        caught = page.locator("article.scenario", has=page.locator("h3", has_text="half of the traffic to v2"))
        assert caught.locator(".failure", has_text="but saw").is_visible()
        assert caught.locator(".pictures img").first.is_visible()
        skipped = page.locator("article.scenario", has=page.locator("h3", has_text="later Istio is skipped"))
        assert skipped.locator(".reason", has_text="needs Istio >= 1.28").is_visible()
        infra = page.locator("article.scenario", has=page.locator("h3", has_text="Envoy is missing"))
        assert infra.locator(".failure", has_text="MESHLIB_ENVOY").is_visible()
        link = page.locator("article.scenario", has=page.locator("h3", has_text="mirrored traffic never")) \
            .get_by_role("link", name="open in Allure")
        assert link.is_visible() and "#testresult/" in (link.get_attribute("href") or "")
        _screenshot(page, "living-doc.png")
    finally:
        page.close()
    assert refused == [], refused


def test_the_allure_report_shows_environment_categories_both_runs_suites_and_pictures(
        review: Run, browser: object, served: str) -> None:
    refused: list[str] = []
    page = _page(browser, (served, "data:", "blob:"), refused)
    try:
        page.goto(f"{served}/index.html")
        for title in ("Environment", "Trend", "Categories", "Executors"):
            widget = page.locator(".widget", has=page.locator(".widget__title", has_text=title))
            widget.wait_for(state="visible", timeout=30_000)
        environment = page.locator(".widget", has=page.locator(".widget__title", has_text="Environment"))
        for text in ("backend", "istio.profile", "envoy.version", "mesh.seed"):
            assert environment.get_by_text(text, exact=True).is_visible(), text
        trend = page.locator(".widget", has=page.locator(".widget__title", has_text="Trend"))
        assert trend.locator("svg").first.is_visible()
        assert trend.get_by_text("#1", exact=True).is_visible() and trend.get_by_text("#2", exact=True).is_visible()
        executors = page.locator(".widget", has=page.locator(".widget__title", has_text="Executors"))
        assert executors.get_by_text("meshlib CI (.ci/run)").first.is_visible()
        _screenshot(page, "allure-overview.png")

        page.goto(f"{served}/index.html#categories")
        for category, scenario in CATEGORIES.items():
            title = page.locator(".node__title", has=page.get_by_text(category, exact=True))
            title.wait_for(state="visible", timeout=30_000)
            title.click()  # the category opens on its failure messages, a message on its scenarios
            title.locator("xpath=..").locator(".node__title").nth(1).click()
            assert page.get_by_text(scenario, exact=True).first.is_visible(), (category, scenario)
        _screenshot(page, "allure-categories.png")

        page.goto(f"{served}/index.html#suites")
        for name in review.features:
            suite = page.get_by_text(name, exact=True).first
            if not suite.is_visible():
                page.get_by_text("release-safety", exact=True).first.click()  # suites by feature, under the epic
            suite.wait_for(state="visible", timeout=30_000)

        uid = report_uids(review.report)[(MIRRORING, "mirrored traffic never reaches clients")]
        page.goto(f"{served}/index.html#testresult/{uid}")
        page.get_by_text("Mirroring copies live requests to v2").wait_for(state="visible", timeout=30_000)
        page.get_by_text("picture: traffic graph", exact=True).click()
        picture = page.locator("img.attachment-preview__media").first
        picture.wait_for(state="visible", timeout=30_000)
        box = picture.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
        _screenshot(page, "allure-testresult.png")
    finally:
        page.close()
    assert refused == [], refused


def test_the_second_report_carries_the_first_runs_history(review: Run) -> None:
    trend = json.loads((review.report / "widgets" / "history-trend.json").read_text())
    assert [t.get("buildOrder") for t in trend] == [2, 1]  # newest first: both runs
    assert all(t["data"]["total"] == len(EXPECTED) for t in trend)


def test_a_missing_results_folder_is_one_line(tmp_path: Path) -> None:
    for argv, module in (([str(tmp_path / "none"), "-o", str(tmp_path / "doc.html")], living_doc),
                         ([str(tmp_path / "none"), "--previous", str(tmp_path / "rep")], allure_run)):
        run = subprocess.run([sys.executable, "-m", module.__name__, *argv], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
        assert "no Allure results" in run.stderr and "Traceback" not in run.stderr
