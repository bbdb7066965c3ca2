"""What meshlib's behave hooks do for the Allure report, when an Allure formatter runs (nothing otherwise):

- `start`: keep skipped scenarios with their reason, and hook failures as broken (`allure_results`);
- `describe`: each scenario's description is its feature's prose (the release policy) and its own;
- `pictures`: when a scenario ends, its traffic graph, route diagram and splits (`scenario_pictures`);
- `finish`: environment.properties (backend, Istio profile, Envoy, seed, alpha, time scale, versions) and
  categories.json in the results folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from meshlib.report.allure_run import RunFacts, run_facts, write_categories, write_environment
from meshlib.report.evidence import attach
from meshlib.report.tables import paragraphs


@dataclass
class AllureRun:
    results: Path
    plugin: Any
    profiles: set[str] = field(default_factory=set)  # Istio profiles scenarios ran on
    backend: str = "local"


def start(behave_config: Any) -> AllureRun | None:
    """None unless an Allure formatter writes results in this run."""
    try:
        from meshlib.report.allure_results import results_dir, start_scenario_results
    except ModuleNotFoundError:  # no allure-behave: no report to improve
        return None
    results = results_dir()
    if results is None:
        return None
    return AllureRun(results, start_scenario_results(behave_config))




def description_html(feature: Any, scenario: Any) -> str:
    """The feature's prose (what the release policy is), then the scenario's own description, if any."""
    parts = [f"<p><b>{escape(feature.keyword)}: {escape(feature.name)}</b></p>", paragraphs(feature.description)]
    if scenario.description:
        parts.append(f"<p><b>{escape(scenario.keyword)}: {escape(scenario.name)}</b></p>")
        parts.append(paragraphs(scenario.description))
    where = getattr(feature, "filename", "")
    if where:
        parts.append(f"<p><small>{escape(str(where))}:{scenario.line}</small></p>")
    return "".join(parts)


def describe(run: AllureRun | None, scenario: Any, profile: str | None) -> None:
    if run is None:
        return
    import allure

    allure.dynamic.description_html(description_html(scenario.feature, scenario))
    run.profiles.add(profile or "")


def pictures(run: AllureRun | None, world: Any) -> None:
    """Attach the scenario's pictures; a missing drawing tool is said once in the results, not a failure."""
    if run is None or world is None:
        return
    from meshlib.report.scenario_pictures import PicturesUnavailable, scenario_pictures

    try:
        drawn = scenario_pictures(world)
    except PicturesUnavailable as exc:
        attach("pictures left out", str(exc), "text")
        return
    except Exception as exc:  # noqa: BLE001  a picture must not turn a release check's verdict, nor stop cleanup
        attach("pictures left out", f"drawing failed: {type(exc).__name__}: {exc}", "text")
        return
    for name, svg in drawn:
        attach(name, svg, "svg")


def facts(run: AllureRun, userdata: Any, default_profile: str | None) -> RunFacts:
    import behave

    from meshlib.settings import from_mapping

    settings = from_mapping({**dict(userdata), "istio_version": default_profile})
    return run_facts(settings, run.profiles, f"behave {behave.__version__}")


def finish(run: AllureRun | None, userdata: Any, default_profile: str | None) -> None:
    if run is None:
        return
    from meshlib.report.allure_results import stop_scenario_results

    stop_scenario_results(run.plugin)
    write_environment(run.results, facts(run, userdata, default_profile))
    write_categories(run.results)
